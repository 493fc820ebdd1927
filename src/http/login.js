// Flowgate's login page: the WebAuthn ceremonies (enrollment, sign-in assertion, step-up and
// break-glass) with the browser's own navigator.credentials, and `flowgate.call`, which makes a
// tenant API call and, when the answer is `mfa_required` or `step_up_required`, asks the person
// to confirm with their passkey and retries once. No external code; served from this server.
'use strict';

(() => {
  const root = document.getElementById('passkeys');
  if (!root) return;
  const tenant = root.dataset.tenant;
  const auth = `/t/${tenant}/auth`;
  const api = `/t/${tenant}/api/v1`;
  const $ = (id) => document.getElementById(id);

  // base64url <-> bytes: webauthn-rs writes and reads binary fields as base64url.
  const toBytes = (text) => {
    const b64 = text.replace(/-/g, '+').replace(/_/g, '/');
    const raw = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
    return Uint8Array.from(raw, (c) => c.charCodeAt(0));
  };
  const toText = (buffer) => {
    if (!buffer) return null;
    const bytes = new Uint8Array(buffer);
    let raw = '';
    for (const b of bytes) raw += String.fromCharCode(b);
    return btoa(raw).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  };
  const withIds = (list) => (list || []).map((c) => ({ ...c, id: toBytes(c.id) }));

  async function post(path, body) {
    const response = await fetch(path, {
      method: 'POST',
      credentials: 'same-origin',
      headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const answer = await response.json().catch(() => null);
    if (!response.ok) {
      throw new Error((answer && answer.detail) || `${path}: ${response.status}`);
    }
    return answer;
  }

  function status(text, error) {
    const line = $('passkey-status');
    line.textContent = text;
    line.className = error ? 'error' : 'note';
  }

  async function enroll() {
    const { publicKey } = await post(`${auth}/webauthn/register/start`);
    const created = await navigator.credentials.create({
      publicKey: {
        ...publicKey,
        challenge: toBytes(publicKey.challenge),
        user: { ...publicKey.user, id: toBytes(publicKey.user.id) },
        excludeCredentials: withIds(publicKey.excludeCredentials),
      },
    });
    return post(`${auth}/webauthn/register/finish?name=${encodeURIComponent('Passkey')}`, {
      id: created.id,
      rawId: toText(created.rawId),
      type: created.type,
      response: {
        attestationObject: toText(created.response.attestationObject),
        clientDataJSON: toText(created.response.clientDataJSON),
      },
      extensions: {},
    });
  }

  // One assertion: `start` gives the request options, `finish` takes the answer.
  async function assertion(start, finish, body) {
    const { publicKey } = await post(start, body);
    const got = await navigator.credentials.get({
      publicKey: {
        ...publicKey,
        challenge: toBytes(publicKey.challenge),
        allowCredentials: withIds(publicKey.allowCredentials),
      },
    });
    return post(finish, {
      id: got.id,
      rawId: toText(got.rawId),
      type: got.type,
      response: {
        authenticatorData: toText(got.response.authenticatorData),
        clientDataJSON: toText(got.response.clientDataJSON),
        signature: toText(got.response.signature),
        userHandle: toText(got.response.userHandle),
      },
      extensions: {},
    });
  }

  const assertWithPasskey = () =>
    assertion(`${auth}/webauthn/authenticate/start`, `${auth}/webauthn/authenticate/finish`);

  // Asks the person to confirm with their passkey; resolves once they did, rejects if they
  // cancel.
  function confirmWithPasskey(reason) {
    const dialog = $('step-up');
    $('step-up-reason').textContent = reason;
    dialog.showModal();
    return new Promise((resolve, reject) => {
      $('step-up-confirm').onclick = async () => {
        try {
          await assertWithPasskey();
          dialog.close();
          resolve();
        } catch (e) {
          $('step-up-reason').textContent = e.message;
        }
      };
      $('step-up-cancel').onclick = () => {
        dialog.close();
        reject(new Error('Cancelled.'));
      };
    });
  }

  // The challenges met so far, oldest first (for scripts and tests).
  const challenges = [];

  // A tenant API call with the session; a step-up or MFA challenge is met once, then retried.
  async function call(method, path, body, retried) {
    const response = await fetch(`${api}${path}`, {
      method,
      credentials: 'same-origin',
      headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const answer = await response.json().catch(() => null);
    const code = answer && answer.code;
    if (!retried && (code === 'step_up_required' || code === 'mfa_required')) {
      challenges.push(code);
      await confirmWithPasskey(answer.detail);
      return call(method, path, body, true);
    }
    return { status: response.status, body: answer };
  }

  async function refresh() {
    const me = await call('GET', '/me', undefined, true);
    if (me.status !== 200) {
      root.hidden = true;
      return;
    }
    const list = await call('GET', '/me/credentials', undefined, true);
    const count = list.status === 200 ? list.body.items.length : 0;
    const { mfa, mfa_owed: owed } = me.body.auth;
    root.hidden = false;
    $('passkey-enroll').hidden = count > 0 && !mfa;
    $('passkey-assert').hidden = count === 0 || mfa;
    status(
      `Signed in as ${me.body.email}. ` +
        (mfa
          ? 'Passkey confirmed.'
          : owed
            ? count === 0
              ? 'This organisation requires a passkey: add one.'
              : 'Confirm with your passkey to continue.'
            : 'Passkey not used in this session.'),
      false,
    );
  }

  const act = (id, work) =>
    $(id).addEventListener('click', async (event) => {
      event.preventDefault();
      try {
        await work();
        await refresh();
      } catch (e) {
        status(e.message, true);
      }
    });
  act('passkey-enroll', enroll);
  act('passkey-assert', assertWithPasskey);
  act('break-glass-enroll', () => post(`${auth}/break-glass/enroll`, { token: $('break-glass-token').value }));
  act('break-glass-sign-in', () =>
    assertion(`${auth}/break-glass/start`, `${auth}/break-glass/finish`, {
      email: $('break-glass-email').value,
    }),
  );

  window.flowgate = { call, refresh, challenges };
  refresh().catch((e) => status(e.message, true));
})();
