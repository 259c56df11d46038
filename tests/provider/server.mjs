// A real OpenID Provider for oidc-bff's tests and demo: panva's oidc-provider 8
// with two users, two confidential clients, its own login page, and (with
// --test-api) a control API the tests use to inspect and steer it.
//
// TEST-ONLY: fixed cookie keys, in-memory storage, any loopback redirect URI
// accepted, an API that signs arbitrary JWTs with the provider's key.
//
// Flags and the control API are documented in README.md beside this file.
//
// stdout carries exactly one line, the ready line; everything else goes to
// stderr (harnesses read stdout line by line and parse it as JSON).

import { createServer, Agent } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import { AsyncLocalStorage } from 'node:async_hooks';
import { createHash, randomBytes, randomUUID, X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { parseArgs } from 'node:util';

// oidc-provider prints its notices with console.info, i.e. to stdout. Route
// every console method to stderr *before* loading it (hence the dynamic
// imports below), so the ready line stays the only stdout output.
for (const m of ['log', 'info', 'debug']) console[m] = console.error;

const { default: Provider, errors, interactionPolicy } = await import('oidc-provider');
const jose = await import('jose');

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

function die(msg) {
  console.error(`[provider] ${msg}`);
  process.exit(2);
}

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      port: { type: 'string', default: '0' },
      host: { type: 'string', default: '127.0.0.1' },
      // Not in the original brief but used by scripts/demo and the browser
      // test: an issuer other than http://HOST:PORT (e.g.
      // http://localhost:9000 while listening on 127.0.0.1, or a proxy in
      // front of the provider).
      issuer: { type: 'string' },
      'exit-on-stdin-close': { type: 'boolean', default: false },
      'access-token-ttl': { type: 'string', default: '300' },
      'id-token-ttl': { type: 'string', default: '3600' },
      'refresh-token-ttl': { type: 'string', default: '86400' },
      'test-api': { type: 'boolean', default: false },
      'jwt-access-tokens': { type: 'string' },
      // Two APIs for derived user tokens (RFC 8707): https://api-a.test
      // (scope a.read) and https://api-b.test (scope b.read). Every
      // authorization is for both; a refresh grant naming one gets a JWT
      // access token with that audience; the login's own is opaque.
      'derived-resources': { type: 'boolean', default: false },
      'client-base': { type: 'string', multiple: true, default: [] },
      'jwks-file': { type: 'string' },
      // Gives the two static clients a back-channel logout URI (the demo's
      // gateway). Tests register their own clients instead.
      'backchannel-logout-uri': { type: 'string' },
      // Serve HTTPS with this PEM certificate and key (tests of a provider
      // behind a private CA); the default issuer becomes https://.
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      // With HTTPS: ask for a client certificate signed by this CA, and
      // refuse the gateway-facing endpoints (discovery, token, JWKS,
      // userinfo, revocation, introspection) to connections without one.
      // Browser-facing endpoints (authorization, interaction, end session)
      // stay open, as at a provider that protects only its back channel.
      'tls-client-ca': { type: 'string' },
      // DPoP (RFC 9449): the token endpoint binds tokens to a proof's key
      // and requires its nonces (use_dpop_nonce); GET/POST /resource/dpop
      // is a resource server that accepts only a DPoP-bound token with a
      // valid proof of its key.
      dpop: { type: 'boolean', default: false },
    },
    strict: true,
  }));
} catch (e) {
  die(`${e.message} (see tests/provider/README.md)`);
}

function seconds(name) {
  const v = Number(args[name]);
  if (!Number.isInteger(v) || v <= 0) die(`--${name} must be a positive integer (seconds), got ${args[name]}`);
  return v;
}

const PORT = Number(args.port);
if (!Number.isInteger(PORT) || PORT < 0 || PORT > 65535) die(`--port must be 0..65535, got ${args.port}`);
const ACCESS_TOKEN_TTL = seconds('access-token-ttl');
const ID_TOKEN_TTL = seconds('id-token-ttl');
const REFRESH_TOKEN_TTL = seconds('refresh-token-ttl');
const TEST_API = args['test-api'];
const JWT_AUDIENCE = args['jwt-access-tokens'];
if (JWT_AUDIENCE !== undefined) {
  // Resource indicators must be absolute URIs (RFC 8707); fail here rather
  // than with invalid_target at the first login.
  try { new URL(JWT_AUDIENCE); } catch { die(`--jwt-access-tokens must be an absolute URI, got ${JWT_AUDIENCE}`); }
}

const DERIVED = args['derived-resources'];
if (DERIVED && JWT_AUDIENCE !== undefined) die('--derived-resources and --jwt-access-tokens exclude each other');
/// --derived-resources: resource -> its scopes.
const DERIVED_RESOURCES = {
  'https://api-a.test/': ['a.read'],
  'https://api-b.test/': ['b.read'],
};

// RFC 8693, registered as a custom grant with --derived-resources.
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';

const DPOP = args.dpop;

const log = (...a) => console.error('[provider]', ...a);

// ---------------------------------------------------------------------------
// Accounts
// ---------------------------------------------------------------------------

// Group and role claims for authorization tests: logins starting with
// "admin" are in the "admins" group and hold the Keycloak-style realm role
// "admin"; everyone is in "staff" with the role "reader".
function person(login, family) {
  const given = login[0].toUpperCase() + login.slice(1);
  const admin = login.startsWith('admin');
  return {
    password: `${login}-password`,
    claims: {
      sub: login,
      name: `${given} ${family}`,
      given_name: given,
      family_name: family,
      preferred_username: login,
      email: `${login}@example.com`,
      email_verified: true,
      groups: admin ? ['admins', 'staff'] : ['staff'],
      realm_access: { roles: admin ? ['reader', 'admin'] : ['reader'] },
    },
  };
}

const USERS = { alice: person('alice', 'Example'), bob: person('bob', 'Example') };

// Besides alice and bob, any short lowercase name logs in with
// "<name>-password" (family name "Test"), so parallel Rust tests can each use
// a user of their own and never see each other's sessions or tokens.
function userFor(login) {
  if (Object.hasOwn(USERS, login)) return USERS[login];
  if (/^[a-z0-9][a-z0-9-]{0,39}$/.test(login)) return person(login, 'Test');
  return undefined;
}

async function findAccount(ctx, sub) {
  const user = userFor(sub);
  if (!user) return undefined;
  return { accountId: sub, claims: async () => ({ ...user.claims }) };
}

// ---------------------------------------------------------------------------
// Storage: one Map for every model (sessions, grants, tokens, runtime
// clients). Our own instead of the built-in dev adapter so the control API can
// look inside (tokens by account, sessions and their sids).
// ---------------------------------------------------------------------------

const store = new Map(); // `${model}:${id}` -> { payload, expiresAt (ms) | undefined }
const byGrant = new Map(); // grantId -> Set of store keys
const sessionByUid = new Map(); // Session uid -> Session id
// JWT access tokens are never handed to the adapter (oidc-provider only emits
// `access_token.issued` for them), so we track them ourselves to be able to
// answer /__test/access-token/check and to forget them when their grant is
// revoked. jti -> { grantId, exp }
const issuedJwts = new Map();

function live(key) {
  const e = store.get(key);
  if (!e) return undefined;
  if (e.expiresAt !== undefined && e.expiresAt <= Date.now()) {
    store.delete(key);
    return undefined;
  }
  return e.payload;
}

function liveEntries(model) {
  const out = [];
  for (const key of store.keys()) {
    if (!key.startsWith(`${model}:`)) continue;
    const payload = live(key);
    if (payload) out.push([key.slice(model.length + 1), payload]);
  }
  return out;
}

class MemoryAdapter {
  constructor(model) { this.model = model; }

  key(id) { return `${this.model}:${id}`; }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    store.set(key, { payload, expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : undefined });
    if (payload.grantId) {
      if (!byGrant.has(payload.grantId)) byGrant.set(payload.grantId, new Set());
      byGrant.get(payload.grantId).add(key);
    }
    if (this.model === 'Session' && payload.uid) sessionByUid.set(payload.uid, id);
  }

  async find(id) { return live(this.key(id)); }

  async findByUid(uid) {
    const id = sessionByUid.get(uid);
    return id === undefined ? undefined : live(this.key(id));
  }

  async findByUserCode() { return undefined; } // device flow is off

  async consume(id) {
    const payload = live(this.key(id));
    if (payload) payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    const key = this.key(id);
    const e = store.get(key);
    if (this.model === 'Session' && e?.payload.uid) sessionByUid.delete(e.payload.uid);
    store.delete(key);
  }

  // Called once per model (AccessToken, RefreshToken, AuthorizationCode) when
  // a grant is revoked: logout, RFC 7009 revocation of a refresh token,
  // refresh-token or code reuse, /__test/revoke-grants.
  async revokeByGrantId(grantId) {
    const keys = byGrant.get(grantId);
    if (keys) {
      for (const key of keys) {
        if (key.startsWith(`${this.model}:`)) {
          store.delete(key);
          keys.delete(key);
        }
      }
      if (keys.size === 0) byGrant.delete(grantId);
    }
    if (this.model === 'AccessToken') {
      for (const [jti, t] of issuedJwts) if (t.grantId === grantId) issuedJwts.delete(jti);
    }
  }
}

// Expired entries are dropped when read; sweep the rest now and then so a
// long-running demo does not grow forever.
setInterval(() => {
  for (const key of store.keys()) live(key);
  for (const [jti, t] of issuedJwts) if (t.exp * 1000 <= Date.now()) issuedJwts.delete(jti);
}, 60_000).unref();

// ---------------------------------------------------------------------------
// Signing key
// ---------------------------------------------------------------------------

async function generateSigningJwk() {
  const { privateKey } = await jose.generateKeyPair('RS256', { modulusLength: 2048, extractable: true });
  const jwk = await jose.exportJWK(privateKey);
  return { ...jwk, kid: await jose.calculateJwkThumbprint(jwk), use: 'sig', alg: 'RS256' };
}

// --jwks-file keeps the key across restarts (the demo: browsers and the demo
// API keep validating tokens after the provider restarts).
async function loadJwks() {
  const file = args['jwks-file'];
  if (file && existsSync(file)) {
    let jwks;
    try { jwks = JSON.parse(readFileSync(file, 'utf8')); } catch (e) { die(`${file}: ${e.message}`); }
    const first = jwks?.keys?.[0];
    if (!first || first.kty !== 'RSA' || !first.d || !first.kid) {
      die(`${file}: expected a private JWKS whose first key is an RSA key with a kid`);
    }
    return jwks;
  }
  const jwks = { keys: [await generateSigningJwk()] };
  if (file) writeFileSync(file, `${JSON.stringify(jwks, null, 2)}\n`, { mode: 0o600 });
  return jwks;
}

const JWKS = await loadJwks();
// The provider signs with the first key matching the client's alg (RS256).
const SIGNING_JWK = { ...JWKS.keys[0], alg: 'RS256' };
const SIGNING_KEY = await jose.importJWK(SIGNING_JWK, 'RS256');
const VERIFY_KEY = await jose.importJWK({ kty: 'RSA', n: SIGNING_JWK.n, e: SIGNING_JWK.e }, 'RS256');

async function signJws(payload, header, key, kid) {
  const protectedHeader = { alg: 'RS256', kid, ...header };
  if (protectedHeader.alg === 'none') {
    // For "alg: none must be rejected" tests: an unsecured JWS.
    const enc = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
    return `${enc(protectedHeader)}.${enc(payload)}.`;
  }
  return new jose.CompactSign(new TextEncoder().encode(JSON.stringify(payload)))
    .setProtectedHeader(protectedHeader)
    .sign(key);
}

// ---------------------------------------------------------------------------
// Redirect URI policy
// ---------------------------------------------------------------------------

const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]']);
const EXTRA_ORIGINS = new Set(
  args['client-base']
    .flatMap((s) => s.split(','))
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => {
      try { return new URL(s).origin; } catch { return die(`--client-base: not a URL: ${s}`); }
    }),
);

function allowedOrigin(url) {
  return (url.protocol === 'http:' && LOOPBACK_HOSTS.has(url.hostname)) || EXTRA_ORIGINS.has(url.origin);
}

function parseUrl(value) {
  try { return new URL(value); } catch { return undefined; }
}

// Gateways under test listen on random ports, so no fixed list of redirect
// URIs can name them: any /auth/callback on an allowed origin is accepted, with
// nothing else (no query, no fragment, no other path, no credentials). A
// gateway mounted under a path (`/app/auth/callback`) is one too.
const CALLBACK_PATH = /^(\/[A-Za-z0-9._~-]+)*\/auth\/callback$/;
function loopbackCallback(value) {
  const u = parseUrl(value);
  return !!u && allowedOrigin(u) && CALLBACK_PATH.test(u.pathname)
    && !value.includes('?') && !value.includes('#') && !u.username && !u.password;
}

function loopbackPostLogout(value) {
  const u = parseUrl(value);
  return !!u && allowedOrigin(u) && !u.username && !u.password;
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

// Applied to static and runtime clients alike unless they say otherwise.
const CLIENT_DEFAULTS = {
  // Every ID token carries auth_time (step-up checks it against max_age).
  require_auth_time: true,
  // client_credentials: the gateway's own tokens (`token = "client"` routes).
  grant_types: ['authorization_code', 'refresh_token', 'client_credentials', ...(DERIVED ? [TOKEN_EXCHANGE] : [])],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic',
  id_token_signed_response_alg: 'RS256',
};

// Placeholders: the schema wants at least one redirect URI; the loopback
// override above accepts the real ones.
const PLACEHOLDER_URIS = {
  redirect_uris: ['http://127.0.0.1/auth/callback'],
  post_logout_redirect_uris: ['http://127.0.0.1/'],
};

const STATIC_CLIENTS = ['oidc-bff', 'oidc-bff-post'].map((clientId) => ({
  ...CLIENT_DEFAULTS,
  ...PLACEHOLDER_URIS,
  client_id: clientId,
  client_secret: 'oidc-bff-secret',
  token_endpoint_auth_method: clientId === 'oidc-bff' ? 'client_secret_basic' : 'client_secret_post',
  ...(args['backchannel-logout-uri'] ? {
    backchannel_logout_uri: args['backchannel-logout-uri'],
    backchannel_logout_session_required: true,
  } : {}),
}));
const STATIC_IDS = new Set(STATIC_CLIENTS.map((c) => c.client_id));

// ---------------------------------------------------------------------------
// Provider configuration
// ---------------------------------------------------------------------------

// The resource server the JWT access tokens are for (--jwt-access-tokens).
// Its only scope is "api"; OIDC scopes stay out of the access token.
const RESOURCE_SCOPES = ['api'];

// The Koa context of the provider request being handled (see
// compareClientSecret below).
const requestContext = new AsyncLocalStorage();

// Lets /__test/backchannel-logout report the HTTP status the client answered:
// oidc-provider makes the request through `httpOptions`, which runs inside our
// AsyncLocalStorage context, so it can hand out an agent that records it.
const httpCapture = new AsyncLocalStorage();

function httpOptions(url) {
  const capture = httpCapture.getStore();
  if (!capture || url.protocol !== 'http:') return {};
  const agent = new Agent({ keepAlive: false });
  const addRequest = agent.addRequest.bind(agent);
  agent.addRequest = (req, options) => {
    req.once('response', (res) => { capture.status = res.statusCode; });
    return addRequest(req, options);
  };
  return { agent };
}

// Authentication context classes, weakest first. A password login is
// `pwd`; a login whose authorization request asked for `mfa` (acr_values)
// counts as the stronger one -- the password form stands in for the second
// factor. Any other requested value is not supported and never granted.
const ACR_VALUES = ['pwd', 'mfa'];

function requestedAcrs(params) {
  return String(params?.acr_values ?? '').split(' ').filter(Boolean);
}

// The acr a login through the form earns for an authorization request.
function acrFor(params) {
  return requestedAcrs(params).find((a) => ACR_VALUES.includes(a)) ?? 'pwd';
}

// The default policy, plus: a provider session whose acr is not one of the
// requested acr_values must log in again (v8 treats acr_values as voluntary
// and would otherwise answer from the weaker session). With prompt=none this
// is login_required.
function loginPolicy() {
  const { base, Check } = interactionPolicy;
  const policy = base();
  policy.get('login').checks.add(new Check(
    'acr_values_not_met',
    'the provider session does not meet the requested acr_values',
    'login_required',
    (ctx) => {
      const asked = requestedAcrs(ctx.oidc.params);
      // Just logged in through the form: that is the best this provider
      // can do (an unsupported value stays unmet, and the client decides).
      if (asked.length === 0 || ctx.oidc.result?.login) return Check.NO_NEED_TO_PROMPT;
      return asked.includes(ctx.oidc.session?.acr) ? Check.NO_NEED_TO_PROMPT : Check.REQUEST_PROMPT;
    },
  ));
  return policy;
}


// RFC 8705 client authentication (tls_client_auth, self_signed_tls_client_auth)
// when the fixture serves HTTPS and asks for client certificates
// (--tls-client-ca): the certificate is the TLS connection's own, so no
// terminating proxy is involved. Not bound to access tokens.
function peerCertificate(ctx) {
  const raw = ctx.socket?.getPeerCertificate?.()?.raw;
  return raw ? new X509Certificate(raw) : undefined;
}
const MTLS_FEATURE = args['tls-client-ca'] ? {
  enabled: true,
  certificateBoundAccessTokens: false,
  tlsClientAuth: true,
  selfSignedTlsClientAuth: true,
  getCertificate: (ctx) => peerCertificate(ctx)?.toString(),
  // Signed by --tls-client-ca (the listener verified the chain).
  certificateAuthorized: (ctx) => ctx.socket?.authorized === true,
  // Only the subject DN (tls_client_auth_subject_dn), as "CN=a,O=b".
  certificateSubjectMatches: (ctx, property, expected) => property === 'tls_client_auth_subject_dn'
    && peerCertificate(ctx)?.subject.split('\n').join(',') === expected,
} : { enabled: false };

const CLIENT_AUTH_METHODS = ['client_secret_basic', 'client_secret_jwt', 'client_secret_post', 'private_key_jwt', 'none',
  ...(MTLS_FEATURE.enabled ? ['tls_client_auth', 'self_signed_tls_client_auth'] : [])];

const configuration = {
  adapter: MemoryAdapter,
  acrValues: ACR_VALUES,
  clientAuthMethods: CLIENT_AUTH_METHODS,
  clients: STATIC_CLIENTS,
  clientDefaults: CLIENT_DEFAULTS,
  findAccount,
  jwks: JWKS,
  responseTypes: ['code'],
  scopes: ['openid', 'offline_access', 'profile', 'email', ...RESOURCE_SCOPES, ...(DERIVED ? Object.values(DERIVED_RESOURCES).flat() : [])],
  claims: {
    // acr with every openid login, not only when a client asks for it: the
    // gateway keeps it in the session for step-up.
    openid: ['sub', 'acr'],
    profile: ['name', 'given_name', 'family_name', 'preferred_username', 'groups', 'realm_access'],
    email: ['email', 'email_verified'],
  },
  // oidc-provider's default puts scope-requested claims only in userinfo;
  // the gateway reads the user's name and email from the ID token.
  conformIdTokenClaims: false,
  pkce: { required: () => true, methods: ['S256'] },
  // By default refresh tokens need the offline_access scope, which v8 also
  // silently drops unless prompt=consent is sent. These are first-party
  // clients: every code exchange gets one.
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: true,
  ttl: {
    AccessToken: ACCESS_TOKEN_TTL,
    ClientCredentials: ACCESS_TOKEN_TTL,
    AuthorizationCode: 60,
    IdToken: ID_TOKEN_TTL,
    RefreshToken: REFRESH_TOKEN_TTL,
    Interaction: 3600,
    // Refresh tokens are bound to the provider session (no offline_access),
    // and all of them to their grant: both must outlive any refresh token.
    Session: Math.max(REFRESH_TOKEN_TTL, 14 * 86400),
    Grant: Math.max(REFRESH_TOKEN_TTL, 14 * 86400),
  },
  clockTolerance: 1,
  httpOptions,
  cookies: {
    // Fixed keys: the fixture is test-only and restarts must not matter.
    keys: ['oidc-bff-test-provider-cookie-key-1', 'oidc-bff-test-provider-cookie-key-2'],
    // The v8 default for the session cookie is SameSite=None, which browsers
    // drop unless it is also Secure -- impossible on plain-http loopback.
    // Lax works for every flow here (all top-level navigations or same-origin
    // posts). Secure is only set when the request is https (it never is).
    long: { httpOnly: true, sameSite: 'lax', signed: true },
    short: { httpOnly: true, sameSite: 'lax', signed: true },
  },
  interactions: {
    url: (ctx, interaction) => `/interaction/${interaction.uid}`,
    policy: loginPolicy(),
  },
  features: {
    devInteractions: { enabled: false },
    // --dpop: nonces are always required, so every client meets
    // use_dpop_nonce once (and again when the nonce rotates, every minute).
    dPoP: DPOP ? { enabled: true, nonceSecret: randomBytes(32), requireNonce: () => true } : { enabled: false },
    mTLS: MTLS_FEATURE,
    revocation: { enabled: true },
    // The gateway's own tokens for `token = "client"` routes.
    clientCredentials: { enabled: true },
    // Only the client a token was issued to may introspect it.
    introspection: {
      enabled: true,
      allowedPolicy: async (ctx, client, token) => !token.clientId || token.clientId === client.clientId,
    },
    userinfo: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      logoutSource,
      postLogoutSuccessSource,
    },
    resourceIndicators: JWT_AUDIENCE ? {
      enabled: true,
      // Every authorization request is for our one API unless it names one.
      defaultResource: async () => JWT_AUDIENCE,
      // At the token endpoint (code and refresh grants) use the granted
      // resource without the client sending `resource`; otherwise v8 issues
      // an opaque userinfo-only token whenever scope includes openid.
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, resourceIndicator) => {
        if (resourceIndicator !== JWT_AUDIENCE) throw new errors.InvalidTarget();
        return {
          scope: RESOURCE_SCOPES.join(' '),
          audience: JWT_AUDIENCE,
          accessTokenTTL: ACCESS_TOKEN_TTL,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    } : DERIVED ? {
      enabled: true,
      // Authorization requests are for every API (so a refresh grant may
      // name either); the token endpoint names none by default, and then
      // the login's token is the opaque userinfo one.
      defaultResource: async (ctx) => (ctx.oidc.route === 'token' ? undefined : Object.keys(DERIVED_RESOURCES)),
      useGrantedResource: async () => false,
      getResourceServerInfo: async (ctx, resourceIndicator) => {
        const scopes = DERIVED_RESOURCES[resourceIndicator];
        if (!scopes) throw new errors.InvalidTarget();
        return {
          scope: scopes.join(' '),
          audience: resourceIndicator,
          accessTokenTTL: ACCESS_TOKEN_TTL,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    } : { enabled: false },
  },
  renderError,
};

// ---------------------------------------------------------------------------
// HTML
// ---------------------------------------------------------------------------

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  }[c]));
}

const STYLE = 'body{font-family:system-ui,sans-serif;max-width:24rem;margin:4rem auto;padding:0 1rem}'
  + 'label,input,button{display:block;width:100%;box-sizing:border-box;margin:.4rem 0}'
  + 'input{padding:.5rem}button{padding:.6rem}.error{color:#b00020}.hint{color:#555;font-size:.9em}';

function page(title, body) {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(title)} - test provider</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>${STYLE}</style></head>
<body>
${body}
</body></html>`;
}

function loginPage(uid, clientId, error) {
  return page('Sign in', `<h1>Sign in</h1>
<p>to <strong>${esc(clientId)}</strong></p>
${error ? `<p class="error" id="error" role="alert">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}/login" autocomplete="off">
  <label for="login">Username</label>
  <input id="login" name="login" type="text" autofocus required>
  <label for="password">Password</label>
  <input id="password" name="password" type="password" required>
  <button id="submit" type="submit">Sign in</button>
</form>
<p class="hint">Test users: alice / alice-password, bob / bob-password.
<a href="/interaction/${esc(uid)}/abort">Cancel</a></p>`);
}

// RP-initiated logout confirmation. `form` is oidc-provider's
// <form id="op.logoutForm" ...> with the hidden xsrf input. The button carries
// logout=yes (end the provider session, not just this client's); the script
// adds the same field and submits, so a browser passes through untouched. A
// non-browser client posts the form's hidden inputs plus logout=yes. (Not a
// hidden input: v8 rejects a repeated parameter, and clients written against
// the default page add logout=yes themselves.)
async function logoutSource(ctx, form) {
  ctx.type = 'html';
  ctx.body = page('Signing out', `<h1>Signing out</h1>
${form}
<button id="logout" autofocus type="submit" form="op.logoutForm" name="logout" value="yes">Yes, sign me out</button>
<script>
  var f = document.getElementById('op.logoutForm');
  var i = document.createElement('input');
  i.type = 'hidden'; i.name = 'logout'; i.value = 'yes';
  f.appendChild(i);
  f.submit();
</script>`);
}

async function postLogoutSuccessSource(ctx) {
  ctx.type = 'html';
  ctx.body = page('Signed out', '<h1>Signed out</h1><p>You are signed out of the test provider.</p>');
}

async function renderError(ctx, out) {
  ctx.type = 'html';
  ctx.body = page('Error', `<h1>${esc(out.error)}</h1><p id="error_description">${esc(out.error_description ?? '')}</p>`);
}

// ---------------------------------------------------------------------------
// Small HTTP helpers (the interaction and control routes sit in front of the
// provider's own Koa app on a plain node:http server).
// ---------------------------------------------------------------------------

async function readBody(req, limit = 1 << 20) {
  const chunks = [];
  let size = 0;
  for await (const c of req) {
    size += c.length;
    if (size > limit) throw Object.assign(new Error('request body too large'), { status: 413 });
    chunks.push(c);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function send(res, status, body, type = 'text/html; charset=utf-8', extra = {}) {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', ...extra });
  res.end(body);
}

function sendHtml(res, status, html) {
  // The login page loads nothing and runs no script.
  send(res, status, html, 'text/html; charset=utf-8', {
    'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    'x-frame-options': 'DENY',
  });
}

function sendJson(res, status, value) {
  send(res, status, `${JSON.stringify(value)}\n`, 'application/json');
}

// ---------------------------------------------------------------------------
// Login interaction
// ---------------------------------------------------------------------------

function asList(v) {
  if (v === undefined || v === null || v === '') return [];
  return Array.isArray(v) ? v : [v];
}

// No consent screen: these are first-party clients, so everything the
// authorization request asked for is granted, and the interaction ends with
// login and consent at once.
async function grantEverything(details, accountId) {
  const { params, prompt } = details;
  let grant;
  if (details.grantId) {
    grant = await provider.Grant.find(details.grantId);
    // A different user signing in on this browser needs a grant of their own.
    if (grant && grant.accountId !== accountId) grant = undefined;
  }
  grant ??= new provider.Grant({ accountId, clientId: params.client_id });

  const scopes = String(params.scope ?? 'openid').split(' ').filter(Boolean);
  grant.addOIDCScope(scopes.join(' '));
  if (params.claims) {
    try {
      const claims = JSON.parse(params.claims);
      for (const use of ['id_token', 'userinfo']) {
        if (claims?.[use]) grant.addOIDCClaims(Object.keys(claims[use]));
      }
    } catch { /* malformed claims parameter: the provider rejects it itself */ }
  }
  for (const resource of asList(params.resource)) {
    const known = DERIVED ? (DERIVED_RESOURCES[resource] ?? []) : RESOURCE_SCOPES;
    grant.addResourceScope(resource, scopes.filter((s) => known.includes(s)).join(' '));
  }
  // Whatever the consent prompt still reports missing (e.g. on a second
  // round), grant it too, so the flow can never loop back here.
  const missing = prompt?.details ?? {};
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, s] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, s.join(' '));
  }
  return grant.save();
}

async function interactionRoute(req, res, path) {
  const m = /^\/interaction\/([^/]+)(\/login|\/abort)?$/.exec(path);
  if (!m) return sendHtml(res, 404, page('Not found', '<h1>Not found</h1>'));
  const [, uid, action] = m;

  let details;
  try {
    // Bound to this browser: found through the _interaction cookie, whose
    // path is /interaction/<uid>.
    details = await provider.interactionDetails(req, res);
  } catch (e) {
    if (e.name !== 'SessionNotFound') throw e;
    return sendHtml(res, 400, page('Sign-in expired', `<h1>Sign-in expired</h1>
<p id="error">This sign-in attempt has expired, was already used, or this browser does not send cookies. Start again from the application.</p>`));
  }
  if (details.uid !== uid) {
    return sendHtml(res, 400, page('Sign-in mismatch', `<h1>Sign-in mismatch</h1>
<p id="error">This page belongs to another sign-in attempt. Start again from the application.</p>`));
  }
  const clientId = details.params.client_id;

  if (action === '/abort') {
    return provider.interactionFinished(req, res, {
      error: 'access_denied', error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
  }

  if (action === '/login') {
    if (req.method !== 'POST') return send(res, 405, 'method not allowed', 'text/plain', { allow: 'POST' });
    const form = new URLSearchParams(await readBody(req));
    const login = (form.get('login') ?? '').trim();
    const user = userFor(login);
    if (!user || user.password !== form.get('password')) {
      log(`login failed for ${JSON.stringify(login)}`);
      return sendHtml(res, 200, loginPage(uid, clientId, 'Invalid login or password'));
    }
    const grantId = await grantEverything(details, login);
    return provider.interactionFinished(req, res, {
      login: { accountId: login, amr: ['pwd'], acr: acrFor(details.params) },
      consent: { grantId },
    }, { mergeWithLastSubmission: false });
  }

  if (req.method !== 'GET') return send(res, 405, 'method not allowed', 'text/plain', { allow: 'GET' });
  // Already signed in and only consent is missing (e.g. a grant was revoked,
  // or another client in the same browser): grant it without a page.
  const accountId = details.session?.accountId;
  if (details.prompt.name !== 'login' && accountId) {
    const grantId = await grantEverything(details, accountId);
    return provider.interactionFinished(req, res, { consent: { grantId } });
  }
  return sendHtml(res, 200, loginPage(uid, clientId));
}

// ---------------------------------------------------------------------------
// Test control API (--test-api)
// ---------------------------------------------------------------------------

const stats = {};
function resetStats() {
  Object.assign(stats, {
    token_grants: { authorization_code: 0, refresh_token: 0, client_credentials: 0 },
    // Successful token grants that named a resource, by resource.
    resource_grants: {},
    refresh_failures: 0,
    revocations: 0,
    backchannel_logouts_sent: 0,
    backchannel_logout_failures: 0,
    // --dpop: use_dpop_nonce answers of the token endpoint, and what the
    // resource server (/resource/dpop) answered, by outcome.
    token_dpop_nonce_challenges: 0,
    resource: { ok: 0, nonce_challenges: 0, refused: {} },
  });
}
resetStats();

// Provider sessions with the per-client sid that went into ID tokens
// (oidc-provider's `sid` is per session *and* client, not the session uid).
function currentSessions() {
  const out = [];
  for (const [, s] of liveEntries('Session')) {
    if (!s.accountId) continue;
    for (const [clientId, a] of Object.entries(s.authorizations ?? {})) {
      if (a.sid) out.push({ sub: s.accountId, sid: a.sid, client_id: clientId, session_uid: s.uid, login_ts: s.loginTs });
    }
  }
  return out.sort((a, b) => (a.login_ts ?? 0) - (b.login_ts ?? 0));
}

async function checkAccessToken(token) {
  if (token.split('.').length === 3) {
    let payload;
    try {
      ({ payload } = await jose.jwtVerify(token, VERIFY_KEY, {
        issuer: provider.issuer, typ: 'at+jwt', clockTolerance: 0,
      }));
    } catch (e) {
      return { active: false, format: 'jwt', reason: e.code ?? e.message };
    }
    // Signed by us and not expired; still tracked unless its grant was revoked.
    const active = issuedJwts.has(payload.jti);
    return {
      active, format: 'jwt', sub: payload.sub, client_id: payload.client_id, exp: payload.exp,
      aud: payload.aud, scope: payload.scope, ...(active ? {} : { reason: 'grant revoked' }),
    };
  }
  // Opaque: the provider's own lookup (expiry, session binding, revocation).
  const at = await provider.AccessToken.find(token);
  if (!at) {
    // A client-credentials token: the client's own, no user.
    const cc = await provider.ClientCredentials.find(token);
    if (!cc) return { active: false, format: 'opaque' };
    return { active: true, format: 'opaque', kind: 'client_credentials', client_id: cc.clientId, exp: cc.exp, scope: cc.scope };
  }
  return {
    active: true, format: 'opaque', sub: at.accountId, client_id: at.clientId, exp: at.exp, scope: at.scope,
  };
}

async function revokeGrantsOf(sub) {
  const grantIds = new Set();
  let refreshTokens = 0;
  for (const [, rt] of liveEntries('RefreshToken')) {
    if (rt.accountId !== sub) continue;
    grantIds.add(rt.grantId);
    if (!rt.consumed) refreshTokens += 1;
  }
  for (const [id, g] of liveEntries('Grant')) if (g.accountId === sub) grantIds.add(id);
  for (const grantId of grantIds) {
    for (const model of ['AccessToken', 'RefreshToken', 'AuthorizationCode']) {
      await new MemoryAdapter(model).revokeByGrantId(grantId);
    }
    await new MemoryAdapter('Grant').destroy(grantId);
  }
  return { ok: true, refresh_tokens: refreshTokens, grants: grantIds.size };
}

async function backchannelLogout(body) {
  const clientId = String(body.client_id ?? '');
  const sub = String(body.sub ?? '');
  const client = await provider.Client.find(clientId);
  if (!client) return [404, { ok: false, error: `unknown client ${clientId}` }];
  if (!client.backchannelLogoutUri) return [400, { ok: false, error: `client ${clientId} has no backchannel_logout_uri` }];
  let { sid } = body;
  if (sid === undefined) {
    const mine = currentSessions().filter((s) => s.sub === sub);
    sid = (mine.filter((s) => s.client_id === clientId).at(-1) ?? mine.at(-1))?.sid;
  }
  const capture = {};
  try {
    // The provider's own implementation: a logout token signed like its ID
    // tokens, POSTed as application/x-www-form-urlencoded `logout_token`.
    await httpCapture.run(capture, () => client.backchannelLogout(sub, sid));
    stats.backchannel_logouts_sent += 1;
    return [200, { ok: true, status: capture.status ?? null, sid: sid ?? null }];
  } catch (e) {
    stats.backchannel_logout_failures += 1;
    log(`back-channel logout to ${client.backchannelLogoutUri} failed: ${e.message}`);
    return [200, {
      ok: false, status: e.response?.statusCode ?? capture.status ?? null, sid: sid ?? null, error: e.message,
    }];
  }
}

async function registerClient(body) {
  if (!body || typeof body !== 'object' || typeof body.client_id !== 'string' || !body.client_id) {
    return [400, { ok: false, error: 'client_id is required' }];
  }
  if (STATIC_IDS.has(body.client_id)) {
    return [409, { ok: false, error: `${body.client_id} is a static client and cannot be replaced` }];
  }
  const metadata = { ...PLACEHOLDER_URIS, client_secret: 'oidc-bff-secret', ...body };
  try {
    await provider.Client.validate(metadata); // clientDefaults applied, schema checked
  } catch (e) {
    return [400, { ok: false, error: e.error ?? e.name, error_description: e.error_description ?? e.message }];
  }
  // Read back through Client.find; its cache is keyed by the metadata, so a
  // replaced registration takes effect at once.
  await new MemoryAdapter('Client').upsert(metadata.client_id, metadata);
  return [200, { ok: true }];
}

// ---------------------------------------------------------------------------
// ID token tweaks: hostile-provider tests (POST /__test/id-token-tweaks)
// ---------------------------------------------------------------------------

// Original sub -> what to do to the ID tokens of that account's token
// responses: { grant_type, remove: [claim], set: {claim: value}, pad_bytes },
// and `response`: fields of the token response itself to replace
// (`access_token`, `token_type`, `expires_in`, ...).
const idTokenTweaks = new Map();

function setIdTokenTweak(body) {
  if (typeof body.sub !== 'string' || !body.sub) return [400, { ok: false, error: 'sub is required' }];
  const { sub, grant_type: grantType = null, remove = [], set = {}, pad_bytes: padBytes = 0, response = {} } = body;
  if (grantType !== null && grantType !== 'authorization_code' && grantType !== 'refresh_token') {
    return [400, { ok: false, error: 'grant_type must be authorization_code, refresh_token or absent' }];
  }
  if (!Array.isArray(remove) || !remove.every((c) => typeof c === 'string')) return [400, { ok: false, error: 'remove must be a list of claim names' }];
  if (set === null || typeof set !== 'object' || Array.isArray(set)) return [400, { ok: false, error: 'set must be an object' }];
  if (!Number.isInteger(padBytes) || padBytes < 0 || padBytes > 16 << 20) return [400, { ok: false, error: 'pad_bytes must be an integer in 0..16 MiB' }];
  if (response === null || typeof response !== 'object' || Array.isArray(response)) return [400, { ok: false, error: 'response must be an object' }];
  if (!remove.length && !Object.keys(set).length && !padBytes && !Object.keys(response).length) {
    idTokenTweaks.delete(sub);
    return [200, { ok: true, cleared: true }];
  }
  idTokenTweaks.set(sub, { grantType, remove, set, padBytes, response });
  return [200, { ok: true }];
}

// Re-signs (provider key and kid) the ID token of a token response whose
// account has a tweak for this grant type.
async function tweakIdToken(ctx) {
  const idToken = ctx.body?.id_token;
  if (typeof idToken !== 'string') return;
  let payload;
  try { payload = JSON.parse(Buffer.from(idToken.split('.')[1], 'base64url').toString('utf8')); } catch { return; }
  const tweak = idTokenTweaks.get(payload.sub);
  if (!tweak) return;
  const grantType = ctx.oidc.params?.grant_type;
  if (tweak.grantType && tweak.grantType !== grantType) return;
  for (const claim of tweak.remove) delete payload[claim];
  Object.assign(payload, tweak.set);
  if (tweak.padBytes) payload.pad = 'x'.repeat(tweak.padBytes);
  ctx.body = { ...ctx.body, id_token: await signJws(payload, {}, SIGNING_KEY, SIGNING_JWK.kid), ...tweak.response };
  log(`id token for ${grantType} of ${tweak.set.sub ?? payload.sub} tweaked (${idToken.length} -> ${ctx.body.id_token.length} chars)`);
}

async function controlApi(req, res, path) {
  let body = {};
  if (req.method === 'POST') {
    const text = await readBody(req);
    try { body = text ? JSON.parse(text) : {}; } catch { return sendJson(res, 400, { error: 'body must be JSON' }); }
    if (body === null || typeof body !== 'object') return sendJson(res, 400, { error: 'body must be a JSON object' });
  }
  const reply = ([status, value]) => sendJson(res, status, value);
  switch (`${req.method} ${path}`) {
    case 'GET /__test/stats': return sendJson(res, 200, stats);
    case 'POST /__test/stats/reset': resetStats(); return sendJson(res, 200, stats);
    case 'POST /__test/clients': return reply(await registerClient(body));
    case 'POST /__test/access-token/check': return sendJson(res, 200, await checkAccessToken(String(body.token ?? '')));
    case 'POST /__test/revoke-grants':
      if (typeof body.sub !== 'string') return sendJson(res, 400, { error: 'sub is required' });
      return sendJson(res, 200, await revokeGrantsOf(body.sub));
    case 'POST /__test/backchannel-logout': return reply(await backchannelLogout(body));
    case 'POST /__test/id-token-tweaks': return reply(setIdTokenTweak(body));
    case 'POST /__test/jwks-status': {
      // Test-only: the JWKS endpoint answers this status (with no keys)
      // until set back to null; for key-cache outage tests.
      const status = body.status ?? null;
      if (status !== null && !(Number.isInteger(status) && status >= 400 && status <= 599)) {
        return sendJson(res, 400, { error: 'status must be null or an HTTP error status' });
      }
      jwksFailStatus = status;
      return sendJson(res, 200, { ok: true, status });
    }
    case 'POST /__test/sign':
      return sendJson(res, 200, { jwt: await signJws(body.payload ?? {}, body.header ?? {}, SIGNING_KEY, SIGNING_JWK.kid) });
    case 'POST /__test/sign-with-foreign-key': {
      const { privateKey } = await jose.generateKeyPair('RS256', { modulusLength: 2048 });
      const kid = body.header?.kid ?? randomUUID();
      return sendJson(res, 200, { jwt: await signJws(body.payload ?? {}, body.header ?? {}, privateKey, kid) });
    }
    case 'GET /__test/authorization-requests':
      return sendJson(res, 200, authorizationRequests);
    case 'POST /__test/authorization-requests/reset':
      authorizationRequests.length = 0;
      return sendJson(res, 200, authorizationRequests);
    case 'GET /__test/sessions':
      return sendJson(res, 200, currentSessions().map(({ login_ts: _, ...s }) => s));
    // Live access tokens as an attacker with a copy of the provider's (or
    // a resource server's) storage would have them: value, user, binding.
    case 'GET /__test/access-tokens':
      return sendJson(res, 200, liveEntries('AccessToken').map(([id, at]) => ({
        token: id, sub: at.accountId, client_id: at.clientId, jkt: at.jkt ?? null, exp: at.exp,
      })));
    case 'POST /__test/token-type':
      tokenTypeOverride = typeof body.token_type === 'string' ? body.token_type : undefined;
      return sendJson(res, 200, { ok: true, token_type: tokenTypeOverride ?? null });
    case 'POST /__test/resource/rotate-nonce':
      resourceNonce = randomBytes(16).toString('base64url');
      return sendJson(res, 200, { ok: true });
    case 'GET /__test/refresh-tokens':
      return sendJson(res, 200, liveEntries('RefreshToken').map(([id, rt]) => ({
        id, sub: rt.accountId, client_id: rt.clientId, grant_id: rt.grantId, consumed: !!rt.consumed, exp: rt.exp,
      })));
    default:
      return sendJson(res, 404, { error: `no control endpoint ${req.method} ${path}` });
  }
}

// The token_type every token answer claims instead of its own, when set.
let tokenTypeOverride;

// ---------------------------------------------------------------------------
// DPoP resource server (--dpop): GET/POST /resource/dpop
// ---------------------------------------------------------------------------

// The resource server's own nonce (RFC 9449 §9): every proof must carry it.
// Rotated by POST /__test/resource/rotate-nonce.
let resourceNonce = randomBytes(16).toString('base64url');
// Proof jtis seen within the iat window (replay detection).
const seenProofs = new Map();
const PROOF_WINDOW_S = 60;

// Checks, in order: a token sent with the DPoP scheme, known and bound
// (cnf.jkt); one proof, signed (typ dpop+jwt) with the key it embeds,
// which is the token's (thumbprint = jkt); htm, htu (no query), ath, a
// recent iat; the resource's current nonce; a jti not seen before. 200
// with the token's subject and the proof's public key; otherwise 401 with
// a DPoP challenge naming what failed.
async function dpopResource(req, res, path) {
  const refuse = (error, description, extra = {}) => {
    if (error === 'use_dpop_nonce') stats.resource.nonce_challenges += 1;
    else stats.resource.refused[description] = (stats.resource.refused[description] ?? 0) + 1;
    return send(res, 401, JSON.stringify({ error, error_description: description }), 'application/json', {
      'www-authenticate': `DPoP error="${error}", error_description="${description}", algs="ES256"`,
      ...extra,
    });
  };
  const m = /^(\S+) +(\S+)$/.exec(req.headers.authorization ?? '');
  if (!m) return refuse('invalid_token', 'no access token');
  const [, scheme, token] = m;
  const at = await provider.AccessToken.find(token);
  if (!at || at.isExpired) return refuse('invalid_token', 'unknown or expired access token');
  if (!at.jkt) return refuse('invalid_token', 'the access token is not DPoP-bound');
  if (scheme.toLowerCase() !== 'dpop') return refuse('invalid_token', 'a DPoP-bound token sent as Bearer');
  const proof = req.headers.dpop;
  if (typeof proof !== 'string' || !proof) return refuse('invalid_dpop_proof', 'no DPoP proof');
  if (proof.includes(',')) return refuse('invalid_dpop_proof', 'more than one DPoP proof');
  let header;
  let payload;
  try {
    ({ protectedHeader: header, payload } = await jose.jwtVerify(proof, jose.EmbeddedJWK, {
      typ: 'dpop+jwt', algorithms: ['ES256', 'ES384', 'PS256', 'RS256', 'EdDSA'],
    }));
  } catch (e) {
    return refuse('invalid_dpop_proof', `the proof does not verify (${e.code ?? e.name})`);
  }
  if (await jose.calculateJwkThumbprint(header.jwk) !== at.jkt) {
    return refuse('invalid_dpop_proof', 'the proof is signed by another key than the token is bound to');
  }
  if (payload.htm !== req.method) return refuse('invalid_dpop_proof', 'htm mismatch');
  let htu;
  try {
    htu = new URL(payload.htu);
    htu.search = '';
    htu.hash = '';
  } catch {
    return refuse('invalid_dpop_proof', 'htu is not a URL');
  }
  if (htu.href !== new URL(path, `${provider.issuer}/`).href) return refuse('invalid_dpop_proof', 'htu mismatch');
  const ath = createHash('sha256').update(token).digest('base64url');
  if (payload.ath !== ath) return refuse('invalid_dpop_proof', 'ath mismatch');
  const now = Math.floor(Date.now() / 1000);
  if (typeof payload.iat !== 'number' || Math.abs(now - payload.iat) > PROOF_WINDOW_S) {
    return refuse('invalid_dpop_proof', 'iat is not recent');
  }
  if (payload.nonce !== resourceNonce) {
    return refuse('use_dpop_nonce', 'the resource requires its nonce', { 'dpop-nonce': resourceNonce });
  }
  for (const [jti, until] of seenProofs) if (until < now) seenProofs.delete(jti);
  if (typeof payload.jti !== 'string' || seenProofs.has(payload.jti)) {
    return refuse('invalid_dpop_proof', 'replayed proof (jti seen before)');
  }
  seenProofs.set(payload.jti, now + 2 * PROOF_WINDOW_S);
  stats.resource.ok += 1;
  return sendJson(res, 200, {
    sub: at.accountId, jkt: at.jkt, method: req.method, jwk: { x: header.jwk.x, y: header.jwk.y },
  });
}

// ---------------------------------------------------------------------------
// Start
// ---------------------------------------------------------------------------

if (!args['tls-cert'] !== !args['tls-key']) die('--tls-cert and --tls-key go together');
if (args['tls-client-ca'] && !args['tls-cert']) die('--tls-client-ca needs --tls-cert and --tls-key');
const TLS = args['tls-cert']
  ? { cert: readFileSync(args['tls-cert']), key: readFileSync(args['tls-key']) }
  : null;
if (args['tls-client-ca']) {
  Object.assign(TLS, { ca: readFileSync(args['tls-client-ca']), requestCert: true, rejectUnauthorized: false });
}
const BACK_CHANNEL = new Set(['/.well-known/openid-configuration', '/token', '/token/revocation',
  '/token/introspection', '/jwks', '/me']);
const server = TLS ? createTlsServer(TLS) : createServer();
server.on('error', (e) => die(`cannot listen on ${args.host}:${PORT}: ${e.message}`));
await new Promise((resolve) => server.listen(PORT, args.host, resolve));
const { port } = server.address();
const hostForUrl = args.host.includes(':') ? `[${args.host}]` : args.host;
const issuer = (args.issuer ?? `${TLS ? 'https' : 'http'}://${hostForUrl}:${port}`).replace(/\/+$/, '');

const provider = new Provider(issuer, configuration);

// RFC 8693 token exchange (--derived-resources): an access token this
// provider issued to the calling client (the subject) becomes a JWT access
// token for one of the known APIs, with scopes of that API only.
async function tokenExchange(ctx) {
  const { params, client } = ctx.oidc;
  if (params.subject_token_type !== ACCESS_TOKEN_TYPE) {
    throw new errors.InvalidRequest('subject_token_type must be an access token');
  }
  if (params.requested_token_type && params.requested_token_type !== ACCESS_TOKEN_TYPE) {
    throw new errors.InvalidRequest('only access tokens are issued');
  }
  const subject = await provider.AccessToken.find(String(params.subject_token ?? ''));
  if (!subject || subject.isExpired || subject.clientId !== client.clientId) {
    throw new errors.InvalidGrant('subject_token is not a valid access token of this client');
  }
  const resource = params.resource ?? params.audience;
  const allowed = DERIVED_RESOURCES[resource];
  if (!allowed) throw new errors.InvalidTarget();
  const scopes = String(params.scope ?? allowed.join(' ')).split(' ').filter(Boolean);
  if (scopes.some((s) => !allowed.includes(s))) throw new errors.InvalidScope('scope not granted for this resource', scopes.join(' '));
  const at = new provider.AccessToken({
    accountId: subject.accountId,
    client,
    grantId: subject.grantId,
    gty: 'token_exchange',
    sessionUid: subject.sessionUid,
  });
  at.resourceServer = new provider.ResourceServer(resource, await configuration.features.resourceIndicators.getResourceServerInfo(ctx, resource, client));
  at.scope = scopes.join(' ');
  ctx.oidc.entity('AccessToken', at);
  const value = await at.save();
  ctx.body = {
    access_token: value,
    issued_token_type: ACCESS_TOKEN_TYPE,
    token_type: 'Bearer',
    expires_in: at.expiration,
    scope: at.scope,
  };
}
if (DERIVED) {
  provider.registerGrantType(TOKEN_EXCHANGE, tokenExchange, [
    'subject_token', 'subject_token_type', 'requested_token_type', 'resource', 'audience', 'scope',
  ]);
}

{
  const { prototype } = provider.Client;
  // Redirect URI policy (see loopbackCallback) on top of exact matching. The
  // prototype is shared by static and runtime clients.
  const exactRedirect = prototype.redirectUriAllowed;
  prototype.redirectUriAllowed = function redirectUriAllowed(value) {
    return exactRedirect.call(this, value) || loopbackCallback(value);
  };
  const exactPostLogout = prototype.postLogoutRedirectUriAllowed;
  prototype.postLogoutRedirectUriAllowed = function postLogoutRedirectUriAllowed(value) {
    return exactPostLogout.call(this, value) || loopbackPostLogout(value);
  };
  // v8 accepts client_secret_basic and client_secret_post interchangeably
  // for either registration. Enforce the registered one, so a gateway
  // configured for the wrong method fails here as at a strict provider.
  const compareSecret = prototype.compareClientSecret;
  prototype.compareClientSecret = async function compareClientSecret(actual) {
    const ctx = requestContext.getStore();
    const registered = this.tokenEndpointAuthMethod;
    if (ctx && (registered === 'client_secret_basic' || registered === 'client_secret_post')) {
      const used = /^basic\s/i.test(ctx.get('authorization')) ? 'client_secret_basic' : 'client_secret_post';
      if (used !== registered) {
        log(`client ${this.clientId} is registered for ${registered} but used ${used}: invalid_client`);
        return false;
      }
    }
    return compareSecret.call(this, actual);
  };
  // v8 only puts `sid` into ID tokens for clients registered with
  // backchannel_logout_session_required; the gateway wants it always (it
  // matches back-channel logout tokens against it).
  prototype.includeSid = () => true;
}

provider.on('grant.success', (ctx) => {
  const type = ctx.oidc.params.grant_type;
  stats.token_grants[type] = (stats.token_grants[type] ?? 0) + 1;
  const resource = ctx.oidc.params.resource;
  if (typeof resource === 'string') stats.resource_grants[resource] = (stats.resource_grants[resource] ?? 0) + 1;
});
provider.on('grant.error', (ctx, err) => {
  const type = ctx.oidc?.params?.grant_type;
  if (type === 'refresh_token') stats.refresh_failures += 1;
  log(`token endpoint (${type}): ${err.error ?? err.message}: ${err.error_detail ?? err.error_description ?? ''}`);
});
// Back-channel logouts the provider sends by itself (at end_session).
provider.on('backchannel.success', () => { stats.backchannel_logouts_sent += 1; });
provider.on('backchannel.error', (ctx, err) => {
  stats.backchannel_logout_failures += 1;
  log(`back-channel logout failed: ${err.message}`);
});
provider.on('access_token.issued', (token) => {
  // Only JWT access tokens are "issued" (opaque ones are "saved").
  issuedJwts.set(token.jti, { grantId: token.grantId, exp: token.exp ?? Math.floor(Date.now() / 1000) + ACCESS_TOKEN_TTL });
});
provider.on('server_error', (ctx, err) => log('server error:', err));

// Runs around every provider route (provider.use inserts before its router).
provider.use(async (ctx, next) => {
  await requestContext.run(ctx, next);
  if (ctx.oidc?.route === 'token' && ctx.status === 200) await tweakIdToken(ctx);
  // A provider that ignores DPoP proofs (POST /__test/token-type).
  if (ctx.oidc?.route === 'token' && ctx.status === 200 && tokenTypeOverride) {
    ctx.body = { ...ctx.body, token_type: tokenTypeOverride };
  }
  // v8 has no revocation success event: count 200 answers of the route.
  if (ctx.oidc?.route === 'revocation' && ctx.status === 200) stats.revocations += 1;
  if (ctx.oidc?.route === 'token' && ctx.body?.error === 'use_dpop_nonce') stats.token_dpop_nonce_challenges += 1;
});

// The last authorization requests' parameters (without state, nonce and
// PKCE), newest last: GET /__test/authorization-requests.
const authorizationRequests = [];
const UNRECORDED = new Set(['state', 'nonce', 'code_challenge', 'code_challenge_method']);

// POST /__test/jwks-status: a status the JWKS endpoint answers instead of the keys.
let jwksFailStatus = null;

const callback = provider.callback();
server.on('request', async (req, res) => {
  let path;
  try {
    path = new URL(req.url, 'http://x').pathname;
  } catch {
    return send(res, 400, 'bad request', 'text/plain');
  }
  try {
    if (path === '/__test' || path.startsWith('/__test/')) {
      if (!TEST_API) return sendJson(res, 404, { error: 'not found' });
      return await controlApi(req, res, path);
    }
    if (path === '/jwks' && jwksFailStatus !== null) return sendJson(res, jwksFailStatus, { error: 'jwks_failure_set_by_test' });
    if (path.startsWith('/interaction/')) return await interactionRoute(req, res, path);
    if (DPOP && path === '/resource/dpop') return await dpopResource(req, res, path);
    if (path === '/auth' && req.method === 'GET') {
      const params = {};
      for (const [k, v] of new URL(req.url, 'http://x').searchParams) {
        if (!UNRECORDED.has(k)) params[k] = v;
      }
      authorizationRequests.push(params);
      if (authorizationRequests.length > 50) authorizationRequests.shift();
    }
    if (args['tls-client-ca'] && BACK_CHANNEL.has(path) && !req.socket.authorized) {
      return sendJson(res, 403, { error: 'client_certificate_required', message: 'this endpoint needs a client certificate from the test CA' });
    }
    return callback(req, res);
  } catch (e) {
    log(`request ${req.method} ${path} failed:`, e);
    if (!res.headersSent) sendJson(res, e.status ?? 500, { error: 'fixture_error', message: String(e.message ?? e) });
    else res.destroy();
    return undefined;
  }
});

process.stdout.write(`${JSON.stringify({ ready: true, issuer, port })}\n`);
log(`listening on ${args.host}:${port}, issuer ${issuer}${TEST_API ? ', test API on' : ''}${JWT_AUDIENCE ? `, JWT access tokens for ${JWT_AUDIENCE}` : ''}`);

if (args['exit-on-stdin-close']) {
  // The harness holds our stdin open; when it exits (or crashes) the pipe
  // closes and so do we.
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('close', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();
}
for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(sig, () => process.exit(0));
