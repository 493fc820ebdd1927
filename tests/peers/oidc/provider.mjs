// A real OpenID Provider (npm `oidc-provider`, pinned in package.json) for Flowgate's
// integration tests. One provider per process, configured by a JSON file, bound to 127.0.0.1.
//
//   node provider.mjs CONFIG.json        (or PEER_CONFIG=CONFIG.json node provider.mjs)
//
// Prints exactly one JSON line on stdout once listening:
//   {"issuer": "...", "port": N, "discovery": "...", "jwks_uri": "...", "pid": N}
// Everything else (oidc-provider notices included) goes to stderr.
// The config schema, the browser-less login and the /__test endpoints are described in
// ../README.md.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';

import Provider from 'oidc-provider';

// oidc-provider prints its notices with console.info (stdout); keep stdout for our JSON line.
console.log = console.info = (...args) => console.error(...args);

function fail(message) {
  console.error(`oidc peer: ${message}`);
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------
// configuration

const configPath = process.argv[2] || process.env.PEER_CONFIG;
if (!configPath) fail('usage: node provider.mjs CONFIG.json (or set PEER_CONFIG)');

let cfg;
try {
  cfg = JSON.parse(fs.readFileSync(configPath, 'utf8'));
} catch (err) {
  fail(`cannot read config ${configPath}: ${err.message}`);
}

const PRESETS = new Set(['generic', 'azure_ad', 'okta', 'google']);
const preset = cfg.preset ?? 'generic';
if (!PRESETS.has(preset)) fail(`preset must be one of ${[...PRESETS].join(', ')}`);

const tenantId = cfg.tenant_id ?? (preset === 'azure_ad' ? '9188040d-6c67-4c5b-b112-36a304b66dad' : undefined);
const DEFAULT_ISSUER_PATH = {
  generic: '/',
  azure_ad: '/{tid}/v2.0',
  okta: '/oauth2/default',
  google: '/',
};
// azure_multi_tenant: "organizations" | "common" plays Entra ID's multi-tenant endpoint of that
// name: mounted at /<endpoint>/v2.0 (the issuer Flowgate is configured with), its discovery
// document's `issuer` is the template http://127.0.0.1:PORT/{tenantid}/v2.0 (literally), and
// each ID token (and the callback's RFC 9207 `iss`) carries the issuer of its account's `tid`,
// http://127.0.0.1:PORT/<tid>/v2.0. See multiTenantIssuer() and the middleware in buildProvider.
const MULTI_TENANT_ENDPOINTS = new Set(['organizations', 'common']);
const azureMultiTenant = cfg.azure_multi_tenant;
if (azureMultiTenant !== undefined) {
  if (preset !== 'azure_ad') fail('azure_multi_tenant is only for the azure_ad preset');
  if (!MULTI_TENANT_ENDPOINTS.has(azureMultiTenant)) fail('azure_multi_tenant must be "organizations" or "common"');
  if (cfg.issuer !== undefined || cfg.issuer_path !== undefined) fail('azure_multi_tenant sets the issuer path; give no issuer');
}
let issuerPath = azureMultiTenant ? `/${azureMultiTenant}/v2.0`
  : cfg.issuer ?? cfg.issuer_path ?? DEFAULT_ISSUER_PATH[preset];
if (issuerPath.includes('{tid}')) {
  if (!tenantId) fail('issuer contains {tid} but no tenant_id is set');
  issuerPath = issuerPath.replaceAll('{tid}', tenantId);
}
if (!issuerPath.startsWith('/')) fail('issuer must be a path starting with "/" (the host is always 127.0.0.1)');
// "/" means no path at all (Google's issuer has no trailing slash); otherwise drop a trailing "/".
const mount = issuerPath.replace(/\/+$/, '');

const port = Number(process.env.PEER_PORT ?? cfg.port ?? 0);
if (!Number.isInteger(port) || port < 0 || port > 65535) fail('port must be an integer 0..65535');

const azureOverage = cfg.azure_overage === true;
const overageThreshold = Number(cfg.overage_threshold ?? 5);
const idTokenTtl = Number(cfg.id_token_ttl ?? 600);
const accessTokenTtl = Number(cfg.access_token_ttl ?? 600);

if (!Array.isArray(cfg.clients) || cfg.clients.length === 0) fail('clients: at least one client is required');
if (!Array.isArray(cfg.accounts) || cfg.accounts.length === 0) fail('accounts: at least one account is required');

const SIGNING_ALGS = new Set(['RS256', 'ES256']);
const clients = cfg.clients.map((c, i) => {
  if (!c.client_id) fail(`clients[${i}].client_id is required`);
  if (!Array.isArray(c.redirect_uris) || c.redirect_uris.length === 0) fail(`clients[${i}].redirect_uris is required`);
  const alg = c.id_token_signed_response_alg ?? 'RS256';
  if (!SIGNING_ALGS.has(alg)) fail(`clients[${i}].id_token_signed_response_alg must be RS256 or ES256`);
  const method = c.token_endpoint_auth_method ?? 'client_secret_basic';
  if (method !== 'none' && !c.client_secret) fail(`clients[${i}].client_secret is required for ${method}`);
  return {
    client_id: c.client_id,
    ...(c.client_secret ? { client_secret: c.client_secret } : {}),
    redirect_uris: c.redirect_uris,
    post_logout_redirect_uris: c.post_logout_redirect_uris ?? [],
    token_endpoint_auth_method: method,
    id_token_signed_response_alg: alg,
    grant_types: c.grant_types ?? ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    application_type: 'web',
  };
});

// accounts: id -> claims (mutable at run time through PUT /__test/accounts/:id)
const accounts = new Map();
function putAccount(id, claims) {
  const c = { ...(claims ?? {}) };
  if (preset === 'azure_ad' && tenantId && c.tid === undefined) c.tid = tenantId;
  accounts.set(String(id), c);
}
cfg.accounts.forEach((a, i) => {
  if (!a.id) fail(`accounts[${i}].id is required`);
  putAccount(a.id, a.claims);
});

// Which scope releases which claim. With conformIdTokenClaims: false every claim granted by
// the requested scopes goes into the ID token (not only into userinfo).
const EMAIL_CLAIMS = ['email', 'email_verified'];
const PROFILE_CLAIMS = ['name', 'given_name', 'family_name', 'middle_name', 'nickname',
  'preferred_username', 'profile', 'picture', 'website', 'gender', 'birthdate', 'zoneinfo',
  'locale', 'updated_at'];
const SESSION_CLAIMS = new Set(['sub', 'amr', 'acr', 'auth_time', 'sid', 'iss']);
function scopeClaims() {
  if (cfg.scope_claims) return cfg.scope_claims;
  const extra = new Set(['groups']);
  for (const claims of accounts.values()) {
    for (const k of Object.keys(claims)) {
      if (!EMAIL_CLAIMS.includes(k) && !PROFILE_CLAIMS.includes(k) && !SESSION_CLAIMS.has(k)) extra.add(k);
    }
  }
  // everything that is neither email nor profile (tid, hd, groups, oid, department, ...)
  // comes with the `openid` scope, as Entra ID's tid/oid and Google's hd do; `amr` (from the
  // login, see the interaction handler) too, else oidc-provider only sends it when asked for
  // through the claims parameter.
  return { openid: ['sub', 'amr', ...extra], email: EMAIL_CLAIMS, profile: PROFILE_CLAIMS };
}

// ---------------------------------------------------------------------------------------------
// keys

function newKey(alg) {
  const { privateKey } = alg === 'RS256'
    ? crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
    : crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = privateKey.export({ format: 'jwk' });
  jwk.alg = alg;
  jwk.use = 'sig';
  jwk.kid = `${alg.toLowerCase()}-${crypto.randomBytes(6).toString('hex')}`;
  return jwk;
}

// The first key of each alg signs; all are published in the JWKS.
let signingKeys = Array.isArray(cfg.signing_keys) && cfg.signing_keys.length
  ? cfg.signing_keys
  : [newKey('RS256'), newKey('ES256')];

function currentKey(alg) {
  return signingKeys.find((k) => k.alg === alg || (!k.alg && (alg === 'RS256' ? k.kty === 'RSA' : k.kty === 'EC')));
}

function publicJwk(jwk) {
  const pub = crypto.createPublicKey({ key: jwk, format: 'jwk' }).export({ format: 'jwk' });
  return { ...pub, kid: jwk.kid, alg: jwk.alg, use: 'sig' };
}

// Cookie signing keys survive key rotation (the provider object is rebuilt then).
const cookieKeys = [crypto.randomBytes(32).toString('base64url')];

// ---------------------------------------------------------------------------------------------
// test knobs

const stats = { discovery: 0, jwks: 0, authorization: 0, token: 0, userinfo: 0, logins: 0 };
const tamperQueue = []; // one entry is applied to the next successful token response

function b64url(input) {
  return Buffer.from(typeof input === 'string' ? input : JSON.stringify(input)).toString('base64url');
}

function signJwt(header, payload, how) {
  const alg = header.alg;
  const h = { ...header };
  if (how === 'none') {
    h.alg = 'none';
    delete h.kid;
    return `${b64url(h)}.${b64url(payload)}.`;
  }
  const key = currentKey(alg === 'ES256' ? 'ES256' : 'RS256');
  if (how === 'hs256-public-key') {
    // The classic confusion attack: HMAC keyed with the issuer's public key (SPKI PEM text).
    h.alg = 'HS256';
    const secret = crypto.createPublicKey({ key, format: 'jwk' }).export({ type: 'spki', format: 'pem' });
    const input = `${b64url(h)}.${b64url(payload)}`;
    return `${input}.${crypto.createHmac('sha256', secret).update(input).digest('base64url')}`;
  }
  let privateKey;
  if (how === 'foreign') {
    // same kid and alg as the real key, but a key nobody published
    privateKey = crypto.createPrivateKey({ key: newKey(h.alg === 'ES256' ? 'ES256' : 'RS256'), format: 'jwk' });
  } else if (how === 'issuer') {
    privateKey = crypto.createPrivateKey({ key, format: 'jwk' });
  } else {
    throw new Error(`unknown sign mode ${how}`);
  }
  const input = `${b64url(h)}.${b64url(payload)}`;
  const sig = crypto.sign('sha256', Buffer.from(input), h.alg === 'ES256'
    ? { key: privateKey, dsaEncoding: 'ieee-p1363' } : privateKey);
  return `${input}.${sig.toString('base64url')}`;
}

// Multi-tenant mode: the issuer of directory `tid` (or the discovery template, for '{tenantid}').
function multiTenantIssuer(tid) {
  return `${origin}/${tid}/v2.0`;
}

// Multi-tenant mode: the ID token re-signed (issuer key) with the `iss` of its own `tid`.
function withDirectoryIssuer(idToken) {
  const payload = JSON.parse(Buffer.from(idToken.split('.')[1], 'base64url'));
  return tamperIdToken(idToken, { claims: { iss: multiTenantIssuer(payload.tid) } });
}

function tamperIdToken(idToken, spec) {
  const [h, p] = idToken.split('.');
  const header = { ...JSON.parse(Buffer.from(h, 'base64url')), ...(spec.header ?? {}) };
  const payload = JSON.parse(Buffer.from(p, 'base64url'));
  for (const [k, v] of Object.entries(spec.claims ?? {})) {
    if (v === null) delete payload[k]; else payload[k] = v;
  }
  return signJwt(header, payload, spec.sign ?? 'issuer');
}

// ---------------------------------------------------------------------------------------------
// the provider (rebuilt, with the same storage and cookie keys, when keys rotate)

let origin; // http://127.0.0.1:PORT, known once listening
let provider;
let providerHandler; // provider.callback(), rebuilt with the provider

function buildProvider() {
  const p = new Provider(`${origin}${mount}`, {
    clients: clients.map((c) => ({ ...c })),
    jwks: { keys: signingKeys },
    cookies: { keys: cookieKeys },
    claims: { ...scopeClaims(), acr: null, auth_time: null, sid: null },
    scopes: ['openid', 'offline_access', 'email', 'profile', ...Object.keys(cfg.scope_claims ?? {})],
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    responseTypes: ['code'],
    features: {
      devInteractions: { enabled: false },
      claimsParameter: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      userinfo: { enabled: true },
    },
    ttl: {
      IdToken: idTokenTtl,
      AccessToken: accessTokenTtl,
      AuthorizationCode: 60,
      Interaction: 600,
      Session: 3600,
      Grant: 3600,
      RefreshToken: 3600,
    },
    interactions: {
      url: (ctx, interaction) => `${mount}/interaction/${interaction.uid}`,
    },
    // First-party test clients: consent is implied, so every requested scope/claim is granted
    // and the consent prompt never shows.
    async loadExistingGrant(ctx) {
      const { session, client } = ctx.oidc;
      if (!session?.accountId) return undefined;
      const grantId = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
      let grant = grantId ? await ctx.oidc.provider.Grant.find(grantId) : undefined;
      if (!grant || grant.accountId !== session.accountId) {
        grant = new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
      }
      grant.addOIDCScope([...ctx.oidc.requestParamScopes].join(' '));
      const claims = [...ctx.oidc.requestParamClaims];
      if (claims.length) grant.addOIDCClaims(claims);
      await grant.save();
      return grant;
    },
    async findAccount(ctx, sub) {
      const base = accounts.get(sub);
      if (!base) return undefined;
      return {
        accountId: sub,
        async claims() {
          const c = { ...base, sub };
          delete c.amr; // amr/acr come from the login (session), not from the account
          delete c.acr;
          if (azureOverage && Array.isArray(c.groups) && c.groups.length > overageThreshold) {
            // Entra ID's group overage: no groups, a pointer to where they can be fetched.
            delete c.groups;
            c._claim_names = { groups: 'src1' };
            c._claim_sources = { src1: { endpoint: `${origin}/__test/graph/users/${encodeURIComponent(sub)}/getMemberObjects` } };
          }
          return c;
        },
      };
    },
    renderError(ctx, out) {
      ctx.type = 'json';
      ctx.body = out;
    },
  });

  p.use(async (ctx, next) => {
    await next();
    const route = ctx.oidc?.route;
    if (azureMultiTenant) rewriteForMultiTenant(ctx, route);
    if (route === 'discovery') stats.discovery += 1;
    else if (route === 'jwks') stats.jwks += 1;
    else if (route === 'authorization') stats.authorization += 1;
    else if (route === 'userinfo') stats.userinfo += 1;
    else if (route === 'token') {
      stats.token += 1;
      if (ctx.status === 200 && ctx.body?.id_token && tamperQueue.length) {
        ctx.body = { ...ctx.body, id_token: tamperIdToken(ctx.body.id_token, tamperQueue.shift()) };
      }
    }
  });
  p.on('server_error', (ctx, err) => console.error('oidc peer server_error:', err));
  return p;
}

// Multi-tenant mode, applied to every answer of the provider (before any queued tampering): the
// discovery document names the {tenantid} template, the authorization response's `iss` and the
// ID token's `iss` name the directory of the signed-in account.
function rewriteForMultiTenant(ctx, route) {
  if (route === 'discovery' && ctx.status === 200 && ctx.body?.issuer) {
    ctx.body = { ...ctx.body, issuer: multiTenantIssuer('{tenantid}') };
  } else if ((route === 'authorization' || route === 'resume') && ctx.status === 303) {
    const location = ctx.response.get('Location');
    const url = location ? new URL(location, origin) : undefined;
    if (!url?.searchParams.has('iss')) return; // not the response to the client
    const tid = accounts.get(ctx.oidc.session?.accountId ?? '')?.tid;
    if (tid) url.searchParams.set('iss', multiTenantIssuer(tid));
    else url.searchParams.delete('iss'); // an error response: no account, no directory
    ctx.redirect(url.href); // keeps the 303
  } else if (route === 'token' && ctx.status === 200 && ctx.body?.id_token) {
    ctx.body = { ...ctx.body, id_token: withDirectoryIssuer(ctx.body.id_token) };
  }
}

// ---------------------------------------------------------------------------------------------
// HTTP: our interaction routes, the /__test routes, then the provider under its mount path

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

function send(res, status, body, type = 'application/json') {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(text);
}

function htmlEscape(s) {
  return String(s).replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

async function interaction(req, res, uid, action) {
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    return send(res, 400, { error: 'invalid_request', error_description: `interaction: ${err.message}` });
  }
  if (details.uid !== uid) {
    return send(res, 400, { error: 'invalid_request', error_description: 'interaction cookie does not match the URL' });
  }
  const promptName = details.prompt.name;

  if (action === 'abort') {
    return provider.interactionFinished(req, res, {
      error: 'access_denied', error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
  }

  if (promptName === 'consent') {
    // Should not happen (loadExistingGrant grants everything), but finish it if it does.
    const grant = new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    if (details.prompt.details.missingOIDCScope) grant.addOIDCScope(details.prompt.details.missingOIDCScope.join(' '));
    if (details.prompt.details.missingOIDCClaims) grant.addOIDCClaims(details.prompt.details.missingOIDCClaims);
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }

  if (action === 'login' && req.method === 'POST') {
    const form = new URLSearchParams(await readBody(req));
    const login = form.get('login');
    const account = login ? accounts.get(login) : undefined;
    if (!account) {
      return send(res, 400, { error: 'unknown_account', error_description: `no account "${login ?? ''}"` });
    }
    stats.logins += 1;
    const result = { login: { accountId: login, remember: false } };
    if (Array.isArray(account.amr)) result.login.amr = account.amr;
    if (typeof account.acr === 'string') result.login.acr = account.acr;
    return provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
  }

  // GET: a tiny login page for people (tests POST directly).
  const options = [...accounts.keys()].map((id) => `<option value="${htmlEscape(id)}">${htmlEscape(id)}</option>`).join('');
  return send(res, 200, `<!doctype html><html><head><meta charset="utf-8"><title>Test IdP sign-in</title></head>
<body><h1>Test IdP (${htmlEscape(preset)})</h1><p>client: ${htmlEscape(details.params.client_id)}</p>
<form method="post" action="${htmlEscape(`${mount}/interaction/${uid}/login`)}">
<label>account <select name="login">${options}</select></label> <button type="submit">Sign in</button></form>
<p><a href="${htmlEscape(`${mount}/interaction/${uid}/abort`)}">Cancel</a></p></body></html>`, 'text/html; charset=utf-8');
}

async function testRoute(req, res, path) {
  const m = (re) => path.match(re);
  let match;
  if (path === '/__test/health') return send(res, 200, { ok: true });
  if (path === '/__test/stats' && req.method === 'GET') return send(res, 200, stats);
  if (path === '/__test/keys' && req.method === 'GET') {
    return send(res, 200, {
      signing: { RS256: currentKey('RS256')?.kid, ES256: currentKey('ES256')?.kid },
      published: signingKeys.map((k) => k.kid),
    });
  }
  if (path === '/__test/signing-key' && req.method === 'GET') {
    // Test-only: the private JWK that signs now, so a test can mint tokens the RP will trust.
    const alg = new URL(req.url, origin).searchParams.get('alg') ?? 'RS256';
    const key = currentKey(alg);
    return key ? send(res, 200, key) : send(res, 404, { error: `no ${alg} key` });
  }
  if (path === '/__test/rotate-keys' && req.method === 'POST') {
    const text = await readBody(req);
    const body = text ? JSON.parse(text) : {};
    const fresh = [newKey('RS256'), newKey('ES256')];
    signingKeys = body.keep_old === false ? fresh : [...fresh, ...signingKeys];
    provider = buildProvider();
    providerHandler = provider.callback();
    return send(res, 200, {
      signing: { RS256: currentKey('RS256').kid, ES256: currentKey('ES256').kid },
      published: signingKeys.map((k) => k.kid),
    });
  }
  if (path === '/__test/tamper-next-id-token' && req.method === 'POST') {
    const spec = JSON.parse((await readBody(req)) || '{}');
    const modes = ['issuer', 'foreign', 'none', 'hs256-public-key'];
    if (spec.sign && !modes.includes(spec.sign)) return send(res, 400, { error: `sign must be one of ${modes.join(', ')}` });
    tamperQueue.push(spec);
    return send(res, 200, { queued: tamperQueue.length });
  }
  if ((match = m(/^\/__test\/accounts\/([^/]+)$/))) {
    const id = decodeURIComponent(match[1]);
    if (req.method === 'GET') return accounts.has(id) ? send(res, 200, { id, claims: accounts.get(id) }) : send(res, 404, { error: 'no such account' });
    if (req.method === 'PUT') {
      const body = JSON.parse((await readBody(req)) || '{}');
      putAccount(id, body.claims);
      return send(res, 200, { id, claims: accounts.get(id) });
    }
    if (req.method === 'DELETE') {
      accounts.delete(id);
      return send(res, 204, '');
    }
  }
  if ((match = m(/^\/__test\/graph\/users\/([^/]+)\/getMemberObjects$/))) {
    // Stand-in for Microsoft Graph's getMemberObjects, the overage claim source.
    const claims = accounts.get(decodeURIComponent(match[1]));
    if (!claims) return send(res, 404, { error: 'no such user' });
    return send(res, 200, { value: claims.groups ?? [] });
  }
  return send(res, 404, { error: 'no such test route' });
}

async function handle(req, res) {
  const path = new URL(req.url, 'http://127.0.0.1').pathname;
  if (path.startsWith('/__test/')) return testRoute(req, res, path);

  const im = path.match(/^(.*)\/interaction\/([^/]+)(?:\/(login|abort))?$/);
  if (im && im[1] === mount) return interaction(req, res, im[2], im[3]);

  if (mount) {
    if (path !== mount && !path.startsWith(`${mount}/`)) return send(res, 404, { error: 'not_found' });
    // Mounted like express' app.use(mount, ...): oidc-provider derives its URLs from
    // originalUrl minus url.
    req.originalUrl = req.url;
    req.url = req.url.slice(mount.length) || '/';
  }
  return providerHandler(req, res);
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => {
    console.error('oidc peer error:', err);
    if (!res.headersSent) send(res, 500, { error: 'server_error', error_description: err.message });
    else res.end();
  });
});

server.listen(port, '127.0.0.1', () => {
  const actual = server.address().port;
  origin = `http://127.0.0.1:${actual}`;
  provider = buildProvider();
  providerHandler = provider.callback();
  const issuer = provider.issuer;
  process.stdout.write(`${JSON.stringify({
    issuer,
    port: actual,
    discovery: `${issuer}/.well-known/openid-configuration`,
    jwks_uri: `${issuer}/jwks`,
    pid: process.pid,
  })}\n`);
});

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
    setTimeout(() => process.exit(0), 1000).unref();
  });
}
