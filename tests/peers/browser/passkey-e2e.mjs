// Drives Debian's Chromium through Flowgate's login page with a virtual WebAuthn authenticator
// (DevTools protocol): SSO at the test OpenID provider, enroll a passkey, sign out, SSO again,
// assert with the passkey, an API call from the page, then a role change that asks for a fresh
// assertion (step-up) through the page's prompt.
//
// Environment: FLOWGATE_BASE (https://localhost:PORT), FLOWGATE_TENANT, FLOWGATE_PROVIDER (the
// provider's name on the login page), FLOWGATE_ACCOUNT (the account at the provider),
// FLOWGATE_CERT (the server's self-signed certificate, trusted by its public-key hash),
// FLOWGATE_GROUP (the group the role change binds). Between the two API calls it prints `AGE`
// and waits for a line on stdin: the test makes the session's assertion old meanwhile.
// Exits 0 when every step held; otherwise prints what failed and exits 1.

import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { chromium } from 'playwright-core';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const base = env('FLOWGATE_BASE');
const tenant = env('FLOWGATE_TENANT');
const providerName = env('FLOWGATE_PROVIDER');
const account = env('FLOWGATE_ACCOUNT');
const group = env('FLOWGATE_GROUP');
const cert = new crypto.X509Certificate(fs.readFileSync(env('FLOWGATE_CERT')));
const spki = crypto
  .createHash('sha256')
  .update(cert.publicKey.export({ type: 'spki', format: 'der' }))
  .digest('base64');

const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const check = (ok, what) => {
  if (!ok) throw new Error(what);
  console.error(`ok: ${what}`);
};

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'flowgate-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    // The test server's certificate is trusted by its key, so the page is a secure context
    // without certificate errors (WebAuthn refuses pages with them).
    `--ignore-certificate-errors-spki-list=${spki}`,
  ],
});
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(15000);
  page.on('console', (msg) => console.error(`page: ${msg.text()}`));
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      transport: 'internal',
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  const login = `${base}/t/${tenant}/auth/login`;
  const status = () => page.locator('#passkey-status').textContent();

  async function singleSignOn() {
    await page.goto(login);
    await page.getByRole('link', { name: providerName }).click();
    // The provider asks who signs in, unless its own session still knows.
    const chooser = page.locator('select[name=login]');
    await Promise.race([page.waitForURL(/signed_in=1/), chooser.waitFor()]);
    if (await chooser.isVisible()) {
      await chooser.selectOption(account);
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.waitForURL(/signed_in=1/);
    }
  }

  await singleSignOn();
  await page.locator('#passkey-enroll').waitFor({ state: 'visible' });
  check((await status()).includes('requires a passkey'), 'after SSO the tenant asks for a passkey');
  const blocked = await page.evaluate(() => window.flowgate.call('GET', '/users', undefined, true));
  check(blocked.status === 401 && blocked.body.code === 'mfa_required', 'no tenant data before the passkey');
  await page.locator('#passkey-enroll').click();
  await page.locator('#passkey-assert').waitFor({ state: 'visible' });
  await page.locator('#passkey-assert').click();
  await page.waitForFunction(() => document.getElementById('passkey-status').textContent.includes('Passkey confirmed'));
  check(true, 'enrolled a passkey and asserted with it');

  await page.locator('#sign-out').click();
  await page.waitForURL(/signed_out=1/);
  check(true, 'signed out');

  await singleSignOn();
  await page.locator('#passkey-assert').waitFor({ state: 'visible' });
  check((await status()).includes('Confirm with your passkey'), 'the second SSO asks for the passkey');
  await page.locator('#passkey-assert').click();
  await page.waitForFunction(() => document.getElementById('passkey-status').textContent.includes('Passkey confirmed'));
  const users = await page.evaluate(() => window.flowgate.call('GET', '/users'));
  check(users.status === 200 && users.body.items.some((u) => u.email), 'an API call from the page succeeds');

  console.log('AGE');
  await lines.next();

  const binding = { role: 'Viewer', subject: { type: 'group', id: group }, scope: { type: 'tenant' } };
  const change = page.evaluate((body) => window.flowgate.call('POST', '/role-bindings', body), binding);
  await page.locator('#step-up').waitFor({ state: 'visible' });
  check(true, 'a step-up prompt appears for a role change');
  await page.locator('#step-up-confirm').click();
  const changed = await change;
  const met = await page.evaluate(() => window.flowgate.challenges);
  check(met.includes('step_up_required'), 'the prompt answered step_up_required');
  check(changed.status === 201, `the role change went through after the assertion (${changed.status})`);
  console.log('DONE');
} catch (e) {
  console.error(`FAILED: ${e.stack ?? e}`);
  process.exitCode = 1;
} finally {
  await context.close();
  fs.rmSync(profile, { recursive: true, force: true });
  process.exit(process.exitCode ?? 0);
}
