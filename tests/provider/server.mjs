// A real OpenID provider for oidc-bff's tests and demo: panva's oidc-provider
// with two users, two confidential clients, its own login page, and (with
// --test-api) a control API the tests use to inspect and steer it.
//
// Not for production: fixed cookie keys, in-memory storage, any loopback
// redirect URI accepted.

import { createServer } from 'node:http';
import { randomUUID, generateKeyPairSync, createSign, createPrivateKey } from 'node:crypto';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    host: { type: 'string', default: '127.0.0.1' },
    issuer: { type: 'string' },
    'exit-on-stdin-close': { type: 'boolean', default: false },
    'access-token-ttl': { type: 'string', default: '300' },
    'id-token-ttl': { type: 'string', default: '3600' },
    'refresh-token-ttl': { type: 'string', default: '86400' },
    'test-api': { type: 'boolean', default: false },
    'jwt-access-tokens': { type: 'string' },
    'client-base': { type: 'string', multiple: true, default: [] },
    'jwks-file': { type: 'string' },
    'backchannel-logout-uri': { type: 'string' },
  },
});

const log = (...a) => console.error('[provider]', ...a);

// ---------------------------------------------------------------------------
// Accounts
// ---------------------------------------------------------------------------

const USERS = {
  alice: {
    password: 'alice-password',
    claims: {
      sub: 'alice', name: 'Alice Example', given_name: 'Alice', family_name: 'Example',
      preferred_username: 'alice', email: 'alice@example.com', email_verified: true,
    },
  },
  bob: {
    password: 'bob-password',
    claims: {
      sub: 'bob', name: 'Bob Example', given_name: 'Bob', family_name: 'Example',
      preferred_username: 'bob', email: 'bob@example.com', email_verified: true,
    },
  },
};

// Besides alice and bob, any lowercase name logs in with "<name>-password",
// so tests can each use their own user and never see each other's sessions.
function userFor(login) {
  if (USERS[login]) return USERS[login];
  if (!/^[a-z0-9][a-z0-9-]{0,39}$/.test(login)) return undefined;
  const name = login[0].toUpperCase() + login.slice(1);
  return {
    password: `${login}-password`,
    claims: {
      sub: login, name: `${name} Test`, given_name: name, family_name: 'Test',
      preferred_username: login, email: `${login}@example.com`, email_verified: true,
    },
  };
}

async function findAccount(ctx, id) {
  const user = userFor(id);
  if (!user) return undefined;
  return { accountId: id, claims: async () => ({ ...user.claims }) };
}

// ---------------------------------------------------------------------------
// Storage: a Map-backed adapter we can inspect (tokens, grants, clients).
// ---------------------------------------------------------------------------

const storage = new Map(); // key -> { payload, expiresAt }
const grantIndex = new Map(); // grantId -> Set(keys)
const now = () => Math.floor(Date.now() / 1000);

function live(key) {
  const e = storage.get(key);
  if (!e) return undefined;
  if (e.expiresAt && e.expiresAt <= now()) {
    storage.delete(key);
    return undefined;
  }
  return e.payload;
}

class MapAdapter {
  constructor(model) { this.model = model; }
  key(id) { return `${this.model}:${id}`; }
  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    storage.set(key, { payload, expiresAt: expiresIn ? now() + expiresIn : undefined });
    if (payload.grantId) {
      if (!grantIndex.has(payload.grantId)) grantIndex.set(payload.grantId, new Set());
      grantIndex.get(payload.grantId).add(key);
    }
    if (this.model === 'Session' && payload.uid) {
      storage.set(`sessionUid:${payload.uid}`, { payload: id, expiresAt: expiresIn ? now() + expiresIn : undefined });
    }
  }
  async find(id) { return live(this.key(id)); }
  async findByUid(uid) {
    const id = live(`sessionUid:${uid}`);
    return id ? this.find(id) : undefined;
  }
  async findByUserCode() { return undefined; }
  async consume(id) {
    const p = live(this.key(id));
    if (p) p.consumed = now();
  }
  async destroy(id) { storage.delete(this.key(id)); }
  async revokeByGrantId(grantId) {
    for (const key of grantIndex.get(grantId) ?? []) storage.delete(key);
    grantIndex.delete(grantId);
    storage.delete(`Grant:${grantId}`);
  }
}

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

function generateJwk() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), use: 'sig', alg: 'RS256' };
}

function loadJwks() {
  const file = args['jwks-file'];
  if (file && existsSync(file)) return JSON.parse(readFileSync(file, 'utf8'));
  const jwks = { keys: [generateJwk()] };
  if (file) writeFileSync(file, JSON.stringify(jwks), { mode: 0o600 });
  return jwks;
}

const jwks = loadJwks();
const signingKey = jwks.keys[0];

function b64url(input) {
  return Buffer.from(typeof input === 'string' ? input : JSON.stringify(input)).toString('base64url');
}

function signJwt(payload, header, jwk) {
  const h = { alg: 'RS256', kid: jwk.kid, ...header };
  const input = `${b64url(h)}.${b64url(payload)}`;
  const signer = createSign('RSA-SHA256');
  signer.update(input);
  const sig = signer.sign(createPrivateKey({ key: jwk, format: 'jwk' })).toString('base64url');
  return `${input}.${sig}`;
}

// ---------------------------------------------------------------------------
// Provider configuration
// ---------------------------------------------------------------------------

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);
const extraOrigins = args['client-base'].flatMap((s) => s.split(',')).filter(Boolean).map((u) => new URL(u).origin);

function originAllowed(value) {
  let u;
  try { u = new URL(value); } catch { return false; }
  return (u.protocol === 'http:' && LOOPBACK.has(u.hostname)) || extraOrigins.includes(u.origin);
}

const jwtAudience = args['jwt-access-tokens'];
const accessTokenTTL = Number(args['access-token-ttl']);

const baseClient = {
  client_secret: 'oidc-bff-secret',
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  redirect_uris: ['http://127.0.0.1/auth/callback'],
  post_logout_redirect_uris: ['http://127.0.0.1/'],
  id_token_signed_response_alg: 'RS256',
  ...(args['backchannel-logout-uri']
    ? { backchannel_logout_uri: args['backchannel-logout-uri'], backchannel_logout_session_required: true }
    : {}),
};

const configuration = {
  adapter: MapAdapter,
  clients: [
    { ...baseClient, client_id: 'oidc-bff', token_endpoint_auth_method: 'client_secret_basic' },
    { ...baseClient, client_id: 'oidc-bff-post', token_endpoint_auth_method: 'client_secret_post' },
  ],
  findAccount,
  jwks,
  claims: {
    openid: ['sub'],
    profile: ['name', 'given_name', 'family_name', 'preferred_username'],
    email: ['email', 'email_verified'],
  },
  scopes: ['openid', 'offline_access', 'profile', 'email', 'api'],
  // Put the scope's claims in the ID token too: the BFF shows them from there.
  conformIdTokenClaims: false,
  cookies: {
    keys: ['oidc-bff-test-provider-cookie-key-1'],
  },
  interactions: {
    url: (ctx, interaction) => `/interaction/${interaction.uid}`,
  },
  features: {
    devInteractions: { enabled: false },
    revocation: { enabled: true },
    introspection: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      // A browser submits the confirmation by itself; scripts can parse the form.
      logoutSource: async (ctx, form) => {
        ctx.body = `<!doctype html><html><head><meta charset="utf-8"><title>Signing out</title></head>
<body><h1>Signing out of the test provider</h1>${form}
<button autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>
<script>var f=document.getElementById('op.logoutForm');var i=document.createElement('input');i.type='hidden';i.name='logout';i.value='yes';f.appendChild(i);f.submit();</script>
</body></html>`;
      },
    },
    resourceIndicators: {
      enabled: !!jwtAudience,
      defaultResource: () => jwtAudience,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'api',
        audience: jwtAudience,
        accessTokenTTL,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  pkce: { required: () => true, methods: ['S256'] },
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: true,
  ttl: {
    AccessToken: accessTokenTTL,
    AuthorizationCode: 60,
    IdToken: Number(args['id-token-ttl']),
    RefreshToken: Number(args['refresh-token-ttl']),
    Interaction: 600,
    Session: 86400,
    Grant: 86400,
  },
  clockTolerance: 2,
  renderError: async (ctx, out) => {
    ctx.type = 'html';
    ctx.body = `<!doctype html><title>Provider error</title><h1>${out.error}</h1><p>${out.error_description ?? ''}</p>`;
  },
};

// ---------------------------------------------------------------------------
// Login page (our own interaction)
// ---------------------------------------------------------------------------

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}

function loginPage(uid, clientId, error) {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in - test provider</title>
<style>body{font-family:system-ui,sans-serif;max-width:22rem;margin:4rem auto}label,input,button{display:block;width:100%;margin:.4rem 0}input{padding:.5rem}button{padding:.6rem}.error{color:#b00020}</style>
</head><body>
<h1>Sign in</h1>
<p>to <strong>${escapeHtml(clientId)}</strong> (test users: alice / alice-password, bob / bob-password)</p>
${error ? `<p class="error" id="error">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/interaction/${escapeHtml(uid)}/login" autocomplete="off">
  <label for="login">Username</label><input id="login" name="login" autofocus>
  <label for="password">Password</label><input id="password" name="password" type="password">
  <button id="submit" type="submit">Sign in</button>
</form>
</body></html>`;
}

async function readBody(req, limit = 1 << 20) {
  let size = 0;
  const chunks = [];
  for await (const c of req) {
    size += c.length;
    if (size > limit) throw new Error('body too large');
    chunks.push(c);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function send(res, status, body, type = 'text/html; charset=utf-8') {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

function json(res, status, value) {
  send(res, status, JSON.stringify(value), 'application/json');
}

// Finishes the interaction with login and consent at once: these clients are
// first-party, so every requested scope and claim is granted.
async function finish(req, res, details, accountId) {
  const { params } = details;
  let grant;
  if (details.grantId) grant = await provider.Grant.find(details.grantId);
  if (!grant) grant = new provider.Grant({ accountId, clientId: params.client_id });
  grant.addOIDCScope(String(params.scope ?? 'openid'));
  if (params.claims) {
    try {
      const claims = JSON.parse(params.claims);
      for (const use of ['id_token', 'userinfo']) {
        if (claims[use]) grant.addOIDCClaims(Object.keys(claims[use]));
      }
    } catch { /* ignore malformed claims parameter */ }
  }
  if (jwtAudience) grant.addResourceScope(jwtAudience, 'api');
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, {
    login: { accountId },
    consent: { grantId },
  }, { mergeWithLastSubmission: false });
}

async function interaction(req, res, path) {
  const details = await provider.interactionDetails(req, res);
  const uid = details.uid;
  if (req.method === 'GET') {
    if (details.prompt.name === 'login') return send(res, 200, loginPage(uid, details.params.client_id));
    // Already logged in (consent only): grant it.
    return finish(req, res, details, details.session.accountId);
  }
  if (req.method === 'POST' && path.endsWith('/login')) {
    const form = new URLSearchParams(await readBody(req));
    const login = form.get('login') ?? '';
    const user = userFor(login);
    if (!user || user.password !== form.get('password')) {
      return send(res, 200, loginPage(uid, details.params.client_id, 'Invalid login or password'));
    }
    return finish(req, res, details, login);
  }
  return send(res, 405, 'method not allowed');
}

// ---------------------------------------------------------------------------
// Test control API
// ---------------------------------------------------------------------------

const stats = { token_grants: {}, refresh_failures: 0, revocations: 0, backchannel_logouts_sent: 0 };
const sessionsBySub = new Map(); // sub -> Set(sid)

function resetStats() {
  stats.token_grants = {};
  stats.refresh_failures = 0;
  stats.revocations = 0;
  stats.backchannel_logouts_sent = 0;
}

function tokensOf(model) {
  const out = [];
  for (const [key, e] of storage) {
    if (!key.startsWith(`${model}:`)) continue;
    if (e.expiresAt && e.expiresAt <= now()) continue;
    out.push([key.slice(model.length + 1), e.payload]);
  }
  return out;
}

function decodeJwtPayload(token) {
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  try { return JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8')); } catch { return undefined; }
}

async function controlApi(req, res, path) {
  const body = req.method === 'POST' ? JSON.parse((await readBody(req)) || '{}') : {};
  switch (`${req.method} ${path}`) {
    case 'GET /__test/stats':
      return json(res, 200, stats);
    case 'POST /__test/stats/reset':
      resetStats();
      return json(res, 200, stats);
    case 'POST /__test/clients': {
      const metadata = { ...baseClient, ...body };
      delete metadata.backchannel_logout_uri;
      Object.assign(metadata, body);
      await new MapAdapter('Client').upsert(metadata.client_id, metadata);
      return json(res, 200, { ok: true });
    }
    case 'POST /__test/access-token/check': {
      const token = String(body.token ?? '');
      const jwt = decodeJwtPayload(token);
      if (jwt?.jti) {
        const stored = live(`AccessToken:${jwt.jti}`);
        const active = !!stored && jwt.exp > now();
        return json(res, 200, { active, sub: jwt.sub, client_id: jwt.client_id, exp: jwt.exp, format: 'jwt' });
      }
      const stored = live(`AccessToken:${token}`);
      if (!stored) return json(res, 200, { active: false });
      return json(res, 200, {
        active: true, sub: stored.accountId, client_id: stored.clientId, exp: stored.exp, format: 'opaque',
      });
    }
    case 'POST /__test/revoke-grants': {
      let n = 0;
      for (const [id, rt] of tokensOf('RefreshToken')) {
        if (rt.accountId !== body.sub) continue;
        await new MapAdapter('RefreshToken').revokeByGrantId(rt.grantId);
        storage.delete(`RefreshToken:${id}`);
        n += 1;
      }
      return json(res, 200, { revoked: n });
    }
    case 'POST /__test/backchannel-logout': {
      const client = await provider.Client.find(String(body.client_id));
      if (!client) return json(res, 404, { error: 'unknown client' });
      const sids = [...(sessionsBySub.get(body.sub) ?? [])];
      const sid = body.sid ?? sids[sids.length - 1];
      try {
        await client.backchannelLogout(String(body.sub), sid);
        stats.backchannel_logouts_sent += 1;
        return json(res, 200, { ok: true, sid });
      } catch (e) {
        return json(res, 200, { ok: false, sid, error: e.message, status: e.response?.statusCode });
      }
    }
    case 'POST /__test/sign':
      return json(res, 200, { jwt: signJwt(body.payload ?? {}, body.header ?? {}, signingKey) });
    case 'POST /__test/sign-with-foreign-key': {
      const foreign = generateJwk();
      if (body.header?.kid) foreign.kid = body.header.kid;
      return json(res, 200, { jwt: signJwt(body.payload ?? {}, body.header ?? {}, foreign) });
    }
    case 'GET /__test/sessions': {
      const out = [];
      for (const [sub, sids] of sessionsBySub) for (const sid of sids) out.push({ sub, sid });
      return json(res, 200, out);
    }
    case 'GET /__test/refresh-tokens':
      return json(res, 200, tokensOf('RefreshToken').map(([id, rt]) => ({ id, sub: rt.accountId, consumed: !!rt.consumed })));
    default:
      return json(res, 404, { error: `no control endpoint ${req.method} ${path}` });
  }
}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

const server = createServer();
await new Promise((resolve) => server.listen(Number(args.port), args.host, resolve));
const port = server.address().port;
const issuer = args.issuer ?? `http://${args.host}:${port}`;

const provider = new Provider(issuer, configuration);
// Tests register loopback gateways on random ports.
const { Client } = provider;
const ownRedirect = Client.prototype.redirectUriAllowed;
Client.prototype.redirectUriAllowed = function redirectUriAllowed(value) {
  if (ownRedirect.call(this, value)) return true;
  try { return originAllowed(value) && new URL(value).pathname === '/auth/callback'; } catch { return false; }
};
const ownPostLogout = Client.prototype.postLogoutRedirectUriAllowed;
Client.prototype.postLogoutRedirectUriAllowed = function postLogoutRedirectUriAllowed(value) {
  return ownPostLogout.call(this, value) || originAllowed(value);
};

provider.on('grant.success', (ctx) => {
  const type = ctx.oidc.params.grant_type;
  stats.token_grants[type] = (stats.token_grants[type] ?? 0) + 1;
});
provider.on('grant.error', (ctx, err) => {
  if (ctx.oidc?.params?.grant_type === 'refresh_token') stats.refresh_failures += 1;
  log('token endpoint error:', err.message, err.error_description ?? '');
});
provider.on('backchannel.success', () => { stats.backchannel_logouts_sent += 1; });
provider.on('backchannel.error', (ctx, err) => log('back-channel logout failed:', err.message));
provider.on('session.saved', (session) => {
  if (session.accountId && session.uid) {
    // The `sid` claim is the session's uid.
    if (!sessionsBySub.has(session.accountId)) sessionsBySub.set(session.accountId, new Set());
    sessionsBySub.get(session.accountId).add(session.uid);
  }
});
provider.on('server_error', (ctx, err) => log('server error:', err));

const callback = provider.callback();
server.on('request', async (req, res) => {
  const path = new URL(req.url, issuer).pathname;
  try {
    if (path.startsWith('/__test/')) {
      if (!args['test-api']) return json(res, 404, { error: 'not found' });
      return await controlApi(req, res, path);
    }
    if (path.startsWith('/interaction/')) return await interaction(req, res, path);
    if (req.method === 'POST' && path === '/token/revocation') stats.revocations += 1;
    return callback(req, res);
  } catch (e) {
    log('request failed:', path, e);
    if (!res.headersSent) json(res, 500, { error: 'fixture_error', message: String(e.message ?? e) });
    return undefined;
  }
});

process.stdout.write(`${JSON.stringify({ ready: true, issuer, port })}\n`);
log(`listening on ${issuer}`);

if (args['exit-on-stdin-close']) {
  process.stdin.resume();
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('close', () => process.exit(0));
}
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
