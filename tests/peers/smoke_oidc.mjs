// Smoke test of the OIDC peer: starts oidc/provider.mjs with each example config, then does
// what Flowgate's tests will do over plain HTTP, without a browser:
// discovery -> authorize (PKCE S256 + state + nonce) -> POST login -> follow to redirect_uri
// -> code exchange with the client secret -> verify the ID token against the JWKS.
// Also checks the overage claim source, key rotation (new kid, both published), tampered ID
// tokens (alg none, foreign key, HS256 with the public key) and an account changed at run time.
//
//   cd tests/peers/oidc && npm ci && cd .. && node smoke_oidc.mjs
//
// Exits non-zero on the first failure.

import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const REDIRECT_URI = 'http://127.0.0.1:9/t/acme/auth/oidc/idp1/callback'; // never contacted

function check(cond, msg) {
  if (!cond) throw new Error(`check failed: ${msg}`);
}

async function startPeer(exampleName) {
  const cfg = JSON.parse(fs.readFileSync(path.join(here, 'oidc/examples', `${exampleName}.json`), 'utf8'));
  cfg.clients[0].redirect_uris = [REDIRECT_URI]; // what the harness does once it knows its port
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'oidc-peer-')), 'config.json');
  fs.writeFileSync(file, JSON.stringify(cfg));
  const child = spawn(process.execPath, [path.join(here, 'oidc/provider.mjs'), file], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const line = await new Promise((resolve, reject) => {
    const rl = readline.createInterface({ input: child.stdout });
    rl.once('line', resolve);
    child.once('exit', (code) => reject(new Error(`peer exited ${code}: ${stderr}`)));
  });
  return { child, cfg, info: JSON.parse(line) };
}

// A cookie jar that honours Path, enough for oidc-provider's cookies.
class Jar {
  cookies = new Map();

  store(res) {
    for (const sc of res.headers.getSetCookie()) {
      const [pair, ...attrs] = sc.split(';').map((s) => s.trim());
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq);
      const p = attrs.find((a) => a.toLowerCase().startsWith('path='))?.slice(5) || '/';
      const expired = attrs.some((a) => /^expires=thu, 01 jan 1970/i.test(a));
      if (expired) this.cookies.delete(`${name} ${p}`); else this.cookies.set(`${name} ${p}`, { name, value: pair.slice(eq + 1), path: p });
    }
  }

  header(url) {
    const { pathname } = new URL(url);
    return [...this.cookies.values()]
      .filter((c) => pathname === c.path || pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`))
      .map((c) => `${c.name}=${c.value}`).join('; ');
  }
}

async function req(jar, url, init = {}) {
  const headers = { ...(init.headers ?? {}) };
  const cookie = jar.header(url);
  if (cookie) headers.cookie = cookie;
  const res = await fetch(url, { ...init, headers, redirect: 'manual' });
  jar.store(res);
  return res;
}

function decodeJwt(jwt) {
  const [h, p] = jwt.split('.');
  return { header: JSON.parse(Buffer.from(h, 'base64url')), payload: JSON.parse(Buffer.from(p, 'base64url')) };
}

function verifyJwt(jwt, jwks) {
  const { header, payload } = decodeJwt(jwt);
  const jwk = jwks.keys.find((k) => k.kid === header.kid);
  check(jwk, `kid ${header.kid} is in the JWKS`);
  const [h, p, s] = jwt.split('.');
  const key = crypto.createPublicKey({ key: jwk, format: 'jwk' });
  const ok = crypto.verify('sha256', Buffer.from(`${h}.${p}`), header.alg === 'ES256'
    ? { key, dsaEncoding: 'ieee-p1363' } : key, Buffer.from(s, 'base64url'));
  check(ok, 'ID token signature verifies');
  return { header, payload };
}

async function login(peer, accountId) {
  const { info, cfg } = peer;
  const client = cfg.clients[0];
  const jar = new Jar();
  const disco = await (await fetch(info.discovery)).json();
  check(disco.issuer === info.issuer, 'discovery issuer equals the printed issuer');
  check(disco.code_challenge_methods_supported.includes('S256'), 'S256 advertised');

  const verifier = crypto.randomBytes(32).toString('base64url');
  const challenge = crypto.hash('sha256', verifier, 'base64url');
  const state = crypto.randomBytes(16).toString('base64url');
  const nonce = crypto.randomBytes(16).toString('base64url');
  const authz = new URL(disco.authorization_endpoint);
  authz.search = new URLSearchParams({
    response_type: 'code', client_id: client.client_id, redirect_uri: REDIRECT_URI,
    scope: 'openid email profile', state, nonce, code_challenge: challenge, code_challenge_method: 'S256',
  });

  // 1. authorization request -> 303 to the interaction page
  let res = await req(jar, authz.href);
  check(res.status === 303, `authorize answers 303 (got ${res.status} ${await res.clone().text()})`);
  const interactionUrl = new URL(res.headers.get('location'), info.issuer).href;
  // 2. one POST with the account id -> 303 back to the provider (/auth/:uid)
  res = await req(jar, `${interactionUrl}/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ login: accountId }),
  });
  check(res.status === 303, `login POST answers 303 (got ${res.status})`);
  // 3. follow -> 303 to redirect_uri?code=...&state=...&iss=...
  res = await req(jar, new URL(res.headers.get('location'), info.issuer).href);
  check(res.status === 303, `resume answers 303 (got ${res.status} ${await res.clone().text()})`);
  const cb = new URL(res.headers.get('location'));
  check(cb.href.startsWith(REDIRECT_URI), `redirected to the client's redirect_uri (${cb.href})`);
  check(cb.searchParams.get('state') === state, 'state passed through');
  const code = cb.searchParams.get('code');
  check(code, 'code present');

  // 4. code exchange with the client secret
  const form = new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, code_verifier: verifier });
  const headers = { 'content-type': 'application/x-www-form-urlencoded' };
  if (client.token_endpoint_auth_method === 'client_secret_post') {
    form.set('client_id', client.client_id);
    form.set('client_secret', client.client_secret);
  } else {
    headers.authorization = `Basic ${Buffer.from(`${encodeURIComponent(client.client_id)}:${encodeURIComponent(client.client_secret)}`).toString('base64')}`;
  }
  res = await fetch(disco.token_endpoint, { method: 'POST', headers, body: form });
  const tokens = await res.json();
  check(res.status === 200, `token endpoint 200 (got ${res.status} ${JSON.stringify(tokens)})`);

  // replaying the code must fail
  const replay = await fetch(disco.token_endpoint, { method: 'POST', headers, body: form });
  check(replay.status === 400, `replayed code refused (got ${replay.status})`);

  const jwks = await (await fetch(disco.jwks_uri)).json();
  return { tokens, jwks, nonce, disco, client };
}

function show(label, header, payload) {
  const keep = Object.fromEntries(Object.entries(payload).filter(([k]) => !['at_hash', 'sid', 'jti'].includes(k)));
  console.log(`${label}: header ${JSON.stringify(header)}\n  claims ${JSON.stringify(keep)}`);
}

async function flow(peer, accountId, label) {
  const { tokens, jwks, nonce, client } = await login(peer, accountId);
  const { header, payload } = verifyJwt(tokens.id_token, jwks);
  check(payload.iss === peer.info.issuer, 'iss');
  check(payload.aud === client.client_id, 'aud');
  check(payload.nonce === nonce, 'nonce passed through');
  check(header.alg === (client.id_token_signed_response_alg ?? 'RS256'), 'alg as registered');
  show(label, header, payload);
  return { header, payload, jwks };
}

const peers = [];
try {
  // Azure AD-like: tid, issuer with the tid, groups, and overage above 5 groups
  const azure = await startPeer('azure_ad');
  peers.push(azure);
  console.log(`azure_ad peer: ${JSON.stringify(azure.info)}`);
  const a = await flow(azure, '00000000-0000-0000-0000-00000000a11c', 'azure alice');
  check(a.payload.tid === azure.cfg.tenant_id && azure.info.issuer.includes(azure.cfg.tenant_id), 'tid claim and issuer');
  check(Array.isArray(a.payload.groups) && a.payload.department === 'finance', 'groups and department');
  check(JSON.stringify(a.payload.amr) === '["pwd","mfa"]', 'amr');
  const b = await flow(azure, '00000000-0000-0000-0000-000000000b0b', 'azure bob (overage)');
  check(!b.payload.groups && b.payload._claim_names?.groups === 'src1', 'overage replaces groups');
  const graph = await (await fetch(b.payload._claim_sources.src1.endpoint, { method: 'POST' })).json();
  check(graph.value.length === 7, 'overage source lists the groups');
  console.log(`  overage source -> ${JSON.stringify(graph)}`);

  // key rotation: a new kid signs, the old one stays published
  const before = a.header.kid;
  const rot = await (await fetch(`http://127.0.0.1:${azure.info.port}/__test/rotate-keys`, { method: 'POST' })).json();
  const r = await flow(azure, '00000000-0000-0000-0000-00000000a11c', 'azure after rotate-keys');
  check(r.header.kid !== before && r.header.kid === rot.signing.RS256, 'new kid signs after rotation');
  check(r.jwks.keys.some((k) => k.kid === before), 'old kid still published');
  console.log(`  rotate-keys: ${before} -> ${r.header.kid}; JWKS kids ${r.jwks.keys.map((k) => k.kid).join(', ')}`);

  // a tampered ID token on the next token response
  await fetch(`http://127.0.0.1:${azure.info.port}/__test/tamper-next-id-token`, {
    method: 'POST', body: JSON.stringify({ sign: 'none', claims: { nonce: 'not-yours' } }),
  });
  const t = await login(azure, '00000000-0000-0000-0000-00000000a11c');
  const td = decodeJwt(t.tokens.id_token);
  check(td.header.alg === 'none' && td.payload.nonce === 'not-yours' && t.tokens.id_token.endsWith('.'), 'tampered token served');
  console.log(`  tamper-next-id-token {sign:none}: header ${JSON.stringify(td.header)}, nonce ${td.payload.nonce}`);
  for (const sign of ['foreign', 'hs256-public-key']) {
    await fetch(`http://127.0.0.1:${azure.info.port}/__test/tamper-next-id-token`, {
      method: 'POST', body: JSON.stringify({ sign, claims: { exp: 1000 } }),
    });
    const f = await login(azure, '00000000-0000-0000-0000-00000000a11c');
    const fd = decodeJwt(f.tokens.id_token);
    let verified = true;
    try { verifyJwt(f.tokens.id_token, f.jwks); } catch { verified = false; }
    check(fd.payload.exp === 1000 && !verified, `${sign}: modified and not verifiable with the JWKS`);
    console.log(`  tamper-next-id-token {sign:${sign}}: header ${JSON.stringify(fd.header)}, exp ${fd.payload.exp}, verifies with JWKS: ${verified}`);
  }
  // an account changed at run time: a group removed at the IdP
  await fetch(`http://127.0.0.1:${azure.info.port}/__test/accounts/00000000-0000-0000-0000-00000000a11c`, {
    method: 'PUT',
    body: JSON.stringify({ claims: { email: 'alice@acme.example', name: 'Alice Admin', groups: ['g-finance'] } }),
  });
  const changed = await flow(azure, '00000000-0000-0000-0000-00000000a11c', 'azure alice after PUT /__test/accounts');
  check(JSON.stringify(changed.payload.groups) === '["g-finance"]', 'group removed');
  const stats = await (await fetch(`http://127.0.0.1:${azure.info.port}/__test/stats`)).json();
  console.log(`  stats ${JSON.stringify(stats)}`);

  // Google-like: issuer without a path, hd, email_verified
  const google = await startPeer('google');
  peers.push(google);
  console.log(`google peer: ${JSON.stringify(google.info)}`);
  const g = await flow(google, '112233445566778899001', 'google dave');
  check(g.payload.hd === 'acme.example' && g.payload.email_verified === true, 'hd and email_verified');
  const g2 = await flow(google, '998877665544332211000', 'google eve');
  check(g2.payload.hd === undefined && g2.payload.email_verified === false, 'no hd, unverified');

  // Okta-like: custom authorization server path, groups, ES256
  const okta = await startPeer('okta');
  peers.push(okta);
  console.log(`okta peer: ${JSON.stringify(okta.info)}`);
  const o = await flow(okta, '00u1carol', 'okta carol');
  check(o.payload.groups.includes('flowgate-editors') && o.header.alg === 'ES256', 'okta groups, ES256');

  console.log('smoke_oidc: OK');
} finally {
  for (const p of peers) p.child.kill('SIGTERM');
}
