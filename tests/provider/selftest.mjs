// Self-test of the provider fixture: starts server.mjs as a child process and
// walks the flows a confidential client (the gateway) goes through, with
// Node's fetch only (redirect: 'manual', cookies by hand). Exits non-zero and
// lists what failed if anything does.
//
//   node tests/provider/selftest.mjs
//
// Scenarios: opaque access tokens (the default), JWT access tokens
// (--jwt-access-tokens), and flags without the test API (404s, --client-base,
// --jwks-file).

import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import * as jose from 'jose';

const HERE = dirname(fileURLToPath(import.meta.url));
const SERVER = join(HERE, 'server.mjs');
const BASIC = (id, secret) => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;
const SECRET = 'oidc-bff-secret';

// ---------------------------------------------------------------------------
// Tiny assertion framework: every check is recorded; a failed check inside a
// step is reported and the step continues where it can.
// ---------------------------------------------------------------------------

let passed = 0;
const failures = [];
let scenario = '';

function check(cond, what, detail) {
  if (cond) {
    passed += 1;
  } else {
    const msg = `[${scenario}] ${what}${detail === undefined ? '' : `: ${typeof detail === 'string' ? detail : JSON.stringify(detail)}`}`;
    failures.push(msg);
    console.error(`FAIL ${msg}`);
  }
  return cond;
}

function must(cond, what, detail) {
  if (!check(cond, what, detail)) throw new Error(`stopping scenario: ${what}`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const b64url = (buf) => buf.toString('base64url');
const now = () => Math.floor(Date.now() / 1000);

// ---------------------------------------------------------------------------
// The provider as a child process
// ---------------------------------------------------------------------------

async function startProvider(flags) {
  const child = spawn(process.execPath, [SERVER, '--exit-on-stdin-close', ...flags], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const stderr = [];
  child.stderr.on('data', (d) => {
    stderr.push(d.toString());
    if (process.env.SELFTEST_VERBOSE) process.stderr.write(`  provider: ${d}`);
  });
  const lines = createInterface({ input: child.stdout });
  const extraStdout = [];
  const ready = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`provider not ready in 15 s; stderr: ${stderr.join('')}`)), 15000);
    let first = true;
    lines.on('line', (line) => {
      if (first) {
        first = false;
        clearTimeout(timer);
        try { resolve({ line, json: JSON.parse(line) }); } catch (e) { reject(new Error(`ready line is not JSON: ${line}`)); }
      } else {
        extraStdout.push(line);
      }
    });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`provider exited (${code}) before ready: ${stderr.join('')}`)); });
  });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return { child, ready, extraStdout, stderr, exited };
}

// Closing stdin must end it (--exit-on-stdin-close); SIGKILL as a fallback.
async function stopProvider(p) {
  p.child.stdin.end();
  const res = await Promise.race([p.exited, sleep(3000).then(() => undefined)]);
  check(res !== undefined, 'provider exits when its stdin closes');
  if (res === undefined) p.child.kill('SIGKILL');
  else check(res.code === 0, 'provider exit code is 0 after stdin closed', res);
  check(p.extraStdout.length === 0, 'nothing on stdout after the ready line', p.extraStdout.slice(0, 5));
}

// ---------------------------------------------------------------------------
// A browser, by hand: cookie jar (name + path), manual redirects.
// ---------------------------------------------------------------------------

class Browser {
  constructor() {
    this.jar = new Map(); // `${name}\t${path}` -> { name, value, path }
    this.setCookies = []; // every Set-Cookie line seen, for attribute checks
  }

  cookieHeader(url) {
    const { pathname } = new URL(url);
    return [...this.jar.values()]
      .filter((c) => pathname === c.path || pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`))
      .map((c) => `${c.name}=${c.value}`)
      .join('; ');
  }

  store(url, res) {
    for (const sc of res.headers.getSetCookie()) {
      this.setCookies.push(sc);
      const [pair, ...attrs] = sc.split(';').map((s) => s.trim());
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq);
      const value = pair.slice(eq + 1);
      let path = '/';
      let expired = value === '';
      for (const a of attrs) {
        const [k, v] = a.split('=');
        if (k.toLowerCase() === 'path') path = v;
        if (k.toLowerCase() === 'expires' && Date.parse(v) <= Date.now()) expired = true;
        if (k.toLowerCase() === 'max-age' && Number(v) <= 0) expired = true;
      }
      const key = `${name}\t${path}`;
      if (expired) this.jar.delete(key); else this.jar.set(key, { name, value, path });
    }
  }

  async request(url, { method = 'GET', form, headers = {} } = {}) {
    const h = { ...headers };
    const cookie = this.cookieHeader(url);
    if (cookie) h.cookie = cookie;
    let body;
    if (form) {
      body = new URLSearchParams(form).toString();
      h['content-type'] = 'application/x-www-form-urlencoded';
    }
    const res = await fetch(url, { method, headers: h, body, redirect: 'manual' });
    this.store(url, res);
    const text = await res.text();
    const location = res.headers.get('location');
    return { status: res.status, text, headers: res.headers, location: location ? new URL(location, url).href : undefined };
  }
}

function formOf(html, id) {
  const re = id ? new RegExp(`<form[^>]*id="${id.replace('.', '\\.')}"[^>]*>([\\s\\S]*?)</form>`) : /<form[^>]*>([\s\S]*?)<\/form>/;
  const m = re.exec(html);
  if (!m) return undefined;
  const tag = m[0].slice(0, m[0].indexOf('>') + 1);
  const action = /action="([^"]*)"/.exec(tag)?.[1]?.replace(/&amp;/g, '&');
  const hidden = {};
  for (const im of m[1].matchAll(/<input[^>]*>/g)) {
    if (!/type="hidden"/.test(im[0])) continue;
    const name = /name="([^"]*)"/.exec(im[0])?.[1];
    const value = /value="([^"]*)"/.exec(im[0])?.[1] ?? '';
    if (name) hidden[name] = value;
  }
  return { action, hidden };
}

// ---------------------------------------------------------------------------
// OIDC client steps
// ---------------------------------------------------------------------------

function pkce() {
  const verifier = b64url(randomBytes(32));
  const challenge = b64url(createHash('sha256').update(verifier).digest());
  return { verifier, challenge };
}

function authorizeUrl(disco, { clientId, redirectUri, scope = 'openid profile email', extra = {} }) {
  const { verifier, challenge } = pkce();
  const state = b64url(randomBytes(12));
  const nonce = b64url(randomBytes(12));
  const u = new URL(disco.authorization_endpoint);
  Object.entries({
    response_type: 'code', client_id: clientId, redirect_uri: redirectUri, scope, state, nonce,
    code_challenge: challenge, code_challenge_method: 'S256', ...extra,
  }).forEach(([k, v]) => u.searchParams.set(k, v));
  return { url: u.href, verifier, state, nonce, redirectUri };
}

// Follows the provider's pages from the authorization URL to the client's
// redirect URI (never fetched: nobody listens there). Returns the callback URL.
async function signIn(browser, disco, { clientId, redirectUri, user, password, wrongPasswordFirst = false, scope, expectForm = true, extra }) {
  const req = authorizeUrl(disco, { clientId, redirectUri, scope, extra });
  let url = req.url;
  let sawForm = false;
  for (let i = 0; i < 10; i += 1) {
    if (url.startsWith(redirectUri)) {
      check(sawForm === expectForm, expectForm ? 'a login form was shown' : 'no login form when already signed in (SSO)');
      const cb = new URL(url);
      check(cb.searchParams.get('state') === req.state, 'callback carries our state', cb.href);
      check(cb.searchParams.get('iss') === disco.issuer, 'callback carries iss (RFC 9207)', cb.href);
      must(cb.searchParams.get('code'), 'callback carries a code', cb.href);
      return { ...req, code: cb.searchParams.get('code') };
    }
    const r = await browser.request(url);
    if (r.location) { url = r.location; continue; }
    must(r.status === 200, `provider page ${url} answers 200`, `${r.status} ${r.text.slice(0, 300)}`);
    const form = formOf(r.text);
    must(form && /name="password"/.test(r.text), `login form on ${url}`, r.text.slice(0, 300));
    sawForm = true;
    check(/^\/interaction\/[^/]+\/login$/.test(form.action), 'form action is /interaction/:uid/login', form.action);
    check(/<input[^>]*id="login"[^>]*name="login"/.test(r.text) && /<input[^>]*id="password"[^>]*name="password"[^>]*type="password"/.test(r.text)
      && /id="submit"/.test(r.text), 'login form has #login, #password (type=password) and #submit');
    check(!/(src|href)="https?:/.test(r.text), 'login page loads no external resources');
    const action = new URL(form.action, url).href;
    if (wrongPasswordFirst) {
      wrongPasswordFirst = false;
      const bad = await browser.request(action, { method: 'POST', form: { login: user, password: 'wrong' } });
      check(bad.status === 200 && bad.text.includes('Invalid login or password'), 'wrong password re-renders the form with the error', `${bad.status} ${bad.text.slice(0, 200)}`);
      check(!bad.location, 'wrong password does not redirect');
      const unknown = await browser.request(action, { method: 'POST', form: { login: 'Nobody!', password: 'x' } });
      check(unknown.status === 200 && unknown.text.includes('Invalid login or password'), 'unknown user gets the same error');
    }
    const ok = await browser.request(action, { method: 'POST', form: { login: user, password } });
    must(ok.status === 303 && ok.location, 'correct credentials redirect (303)', `${ok.status} ${ok.text.slice(0, 300)}`);
    url = ok.location;
  }
  throw new Error(`never reached ${redirectUri}; last ${url}`);
}

async function token(disco, clientId, auth, params) {
  const headers = { 'content-type': 'application/x-www-form-urlencoded' };
  const body = new URLSearchParams(params);
  if (auth === 'basic') headers.authorization = BASIC(clientId, SECRET);
  else { body.set('client_id', clientId); body.set('client_secret', SECRET); }
  const res = await fetch(disco.token_endpoint, { method: 'POST', headers, body });
  return { status: res.status, json: await res.json() };
}

function exchange(disco, clientId, auth, login) {
  return token(disco, clientId, auth, {
    grant_type: 'authorization_code', code: login.code, redirect_uri: login.redirectUri, code_verifier: login.verifier,
  });
}

function refresh(disco, clientId, auth, rt) {
  return token(disco, clientId, auth, { grant_type: 'refresh_token', refresh_token: rt });
}

async function api(issuer, method, path, body) {
  const res = await fetch(`${issuer}${path}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = text; }
  return { status: res.status, json };
}

async function verifyIdToken(jwks, disco, idToken, { clientId, nonce }) {
  const { payload, protectedHeader } = await jose.jwtVerify(idToken, jwks, { issuer: disco.issuer, audience: clientId });
  check(protectedHeader.alg === 'RS256', 'ID token is RS256', protectedHeader);
  check(payload.nonce === nonce, 'ID token nonce matches', payload);
  check(typeof payload.sid === 'string' && payload.sid.length > 0, 'ID token has sid', payload);
  check(payload.aud === clientId, 'ID token aud is the client', payload.aud);
  return payload;
}

// ---------------------------------------------------------------------------
// Scenario: opaque access tokens, the whole flow
// ---------------------------------------------------------------------------

async function opaqueScenario() {
  scenario = 'opaque';
  const ttl = { at: 5, id: 600, rt: 1200 };
  const p = await startProvider(['--test-api', '--access-token-ttl', String(ttl.at), '--id-token-ttl', String(ttl.id), '--refresh-token-ttl', String(ttl.rt)]);
  const bcl = await startLogoutReceiver();
  try {
    const { issuer, port } = p.ready.json;
    check(p.ready.line === JSON.stringify({ ready: true, issuer: `http://127.0.0.1:${port}`, port }), 'exact ready line', p.ready.line);
    check(Number.isInteger(port) && port > 0, 'a free port was picked');

    // Discovery
    const disco = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
    check(disco.issuer === issuer, 'discovery issuer', disco.issuer);
    for (const k of ['authorization_endpoint', 'token_endpoint', 'jwks_uri', 'end_session_endpoint', 'revocation_endpoint', 'introspection_endpoint', 'userinfo_endpoint']) {
      check(typeof disco[k] === 'string' && disco[k].startsWith(issuer), `discovery has ${k}`);
    }
    check(disco.backchannel_logout_supported === true && disco.backchannel_logout_session_supported === true, 'discovery: back-channel logout supported (with sid)');
    check(JSON.stringify(disco.code_challenge_methods_supported) === '["S256"]', 'discovery: PKCE S256 only', disco.code_challenge_methods_supported);
    check(['client_secret_basic', 'client_secret_post'].every((m) => disco.token_endpoint_auth_methods_supported.includes(m)), 'discovery: basic and post auth');
    const jwksDoc = await (await fetch(disco.jwks_uri)).json();
    check(jwksDoc.keys.length === 1 && jwksDoc.keys[0].kty === 'RSA' && !jwksDoc.keys[0].d && jwksDoc.keys[0].kid, 'JWKS: one public RSA key with a kid', jwksDoc);
    const jwks = jose.createLocalJWKSet(jwksDoc);
    const redirectUri = 'http://127.0.0.1:1/auth/callback';

    // Authorization requests that must be refused
    {
      const b = new Browser();
      const noPkce = new URL(authorizeUrl(disco, { clientId: 'oidc-bff', redirectUri }).url);
      noPkce.searchParams.delete('code_challenge');
      noPkce.searchParams.delete('code_challenge_method');
      const r = await b.request(noPkce.href);
      check(r.location?.startsWith(redirectUri) && new URL(r.location).searchParams.get('error') === 'invalid_request', 'authorize without PKCE is refused', r.location);
      const plain = new URL(authorizeUrl(disco, { clientId: 'oidc-bff', redirectUri }).url);
      plain.searchParams.set('code_challenge_method', 'plain');
      const r2 = await b.request(plain.href);
      check(r2.location && new URL(r2.location).searchParams.get('error') === 'invalid_request', 'PKCE plain is refused', r2.location);
      for (const bad of ['http://evil.test/auth/callback', 'http://127.0.0.1:1/other', 'http://127.0.0.1:1/auth/callback?x=1', 'https://127.0.0.1:1/auth/callback']) {
        const r3 = await b.request(authorizeUrl(disco, { clientId: 'oidc-bff', redirectUri: bad }).url);
        check(r3.status === 400 && !r3.location, `redirect_uri ${bad} is refused`, `${r3.status} ${r3.location}`);
      }
      const r4 = await b.request(authorizeUrl(disco, { clientId: 'oidc-bff', redirectUri: 'http://localhost:65000/auth/callback' }).url);
      check(r4.status === 303 && r4.location?.includes('/interaction/'), 'http://localhost:<port>/auth/callback is accepted', `${r4.status} ${r4.location}`);
    }

    // Login as alice with oidc-bff, client_secret_basic
    const alice = new Browser();
    const login1 = await signIn(alice, disco, { clientId: 'oidc-bff', redirectUri, user: 'alice', password: 'alice-password', wrongPasswordFirst: true });
    const sessionCookie = alice.setCookies.find((c) => c.startsWith('_session='));
    check(sessionCookie && /samesite=lax/i.test(sessionCookie) && !/;\s*secure/i.test(sessionCookie) && /httponly/i.test(sessionCookie),
      'session cookie is HttpOnly, SameSite=Lax, not Secure (plain-http loopback)', sessionCookie);
    const t1 = await exchange(disco, 'oidc-bff', 'basic', login1);
    must(t1.status === 200, 'code exchange (client_secret_basic)', t1);
    check(t1.json.token_type === 'Bearer' && typeof t1.json.access_token === 'string', 'access token issued');
    check(t1.json.access_token.split('.').length === 1, 'access token is opaque by default', t1.json.access_token);
    check(t1.json.expires_in === ttl.at, '--access-token-ttl: expires_in', t1.json.expires_in);
    check(typeof t1.json.refresh_token === 'string' && t1.json.refresh_token.length > 20, 'a refresh token was issued (no offline_access, no consent)');
    const id1 = await verifyIdToken(jwks, disco, t1.json.id_token, { clientId: 'oidc-bff', nonce: login1.nonce });
    check(id1.sub === 'alice' && id1.name === 'Alice Example' && id1.given_name === 'Alice' && id1.family_name === 'Example'
      && id1.email === 'alice@example.com' && id1.email_verified === true && id1.preferred_username === 'alice', 'ID token carries alice\'s claims', id1);
    check(id1.exp - id1.iat === ttl.id, '--id-token-ttl', id1.exp - id1.iat);
    check(JSON.stringify(id1.groups) === '["staff"]' && JSON.stringify(id1.realm_access) === '{"roles":["reader"]}',
      'ID token carries the group and realm-role claims', id1);

    const atCheck1 = await api(issuer, 'POST', '/__test/access-token/check', { token: t1.json.access_token });
    check(atCheck1.json.active === true && atCheck1.json.sub === 'alice' && atCheck1.json.client_id === 'oidc-bff' && atCheck1.json.exp - now() <= ttl.at, 'access-token/check: active', atCheck1.json);
    const rts = await api(issuer, 'GET', '/__test/refresh-tokens');
    const rt1 = rts.json.find((t) => t.sub === 'alice' && !t.consumed);
    check(rt1 && Math.abs(rt1.exp - (now() + ttl.rt)) <= 3, '--refresh-token-ttl', rt1);

    check(id1.acr === 'pwd' && Number.isInteger(id1.auth_time) && Math.abs(id1.auth_time - now()) <= 5,
      'ID token carries acr "pwd" and auth_time', id1);
    const asked = (await api(issuer, 'GET', '/__test/authorization-requests')).json;
    check(asked.some((r) => r.client_id === 'oidc-bff' && r.redirect_uri === redirectUri) && asked.every((r) => !('state' in r) && !('nonce' in r)),
      '/__test/authorization-requests records requests without state and nonce', asked);

    const sessions = await api(issuer, 'GET', '/__test/sessions');
    check(sessions.json.some((s) => s.sub === 'alice' && s.sid === id1.sid && s.client_id === 'oidc-bff'), '/__test/sessions lists alice with the ID token sid', sessions.json);

    // Userinfo with the opaque token
    const ui = await fetch(disco.userinfo_endpoint, { headers: { authorization: `Bearer ${t1.json.access_token}` } });
    check(ui.status === 200 && (await ui.json()).email === 'alice@example.com', 'userinfo accepts the access token');

    // Introspection (RFC 7662)
    const intro = await fetch(disco.introspection_endpoint, {
      method: 'POST', headers: { authorization: BASIC('oidc-bff', SECRET), 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: t1.json.access_token }),
    });
    const introJson = await intro.json();
    check(introJson.active === true && introJson.sub === 'alice', 'introspection: active', introJson);

    // Refresh: rotation
    const t2 = await refresh(disco, 'oidc-bff', 'basic', t1.json.refresh_token);
    must(t2.status === 200, 'refresh grant', t2);
    check(t2.json.refresh_token && t2.json.refresh_token !== t1.json.refresh_token, 'refresh rotates the refresh token');
    check(t2.json.access_token !== t1.json.access_token && t2.json.expires_in === ttl.at, 'refresh returns a new access token');
    const id2 = jose.decodeJwt(t2.json.id_token);
    check(id2.sid === id1.sid && id2.sub === 'alice', 'refreshed ID token keeps sub and sid', id2);
    const atCheck2 = await api(issuer, 'POST', '/__test/access-token/check', { token: t2.json.access_token });
    check(atCheck2.json.active === true, 'access-token/check: refreshed token active', atCheck2.json);

    let stats = (await api(issuer, 'GET', '/__test/stats')).json;
    check(stats.token_grants.authorization_code === 1 && stats.token_grants.refresh_token === 1 && stats.refresh_failures === 0, 'stats after one exchange and one refresh', stats);

    // client_credentials: the gateway's own token, no user, counted apart.
    const cc = await token(disco, 'oidc-bff', 'basic', { grant_type: 'client_credentials' });
    must(cc.status === 200 && cc.json.access_token && !cc.json.refresh_token, 'client_credentials grant', cc);
    check(cc.json.expires_in === ttl.at, 'client_credentials: expires_in is --access-token-ttl', cc.json.expires_in);
    const ccCheck = await api(issuer, 'POST', '/__test/access-token/check', { token: cc.json.access_token });
    check(ccCheck.json.active === true && ccCheck.json.kind === 'client_credentials' && ccCheck.json.client_id === 'oidc-bff' && ccCheck.json.sub === undefined,
      'access-token/check: a client-credentials token is active and has no sub', ccCheck.json);
    stats = (await api(issuer, 'GET', '/__test/stats')).json;
    check(stats.token_grants.client_credentials === 1, 'stats count client_credentials grants', stats);

    const reuse = await refresh(disco, 'oidc-bff', 'basic', t1.json.refresh_token);
    check(reuse.status === 400 && reuse.json.error === 'invalid_grant', 'reusing the old refresh token: invalid_grant', reuse);
    // oidc-provider treats reuse as theft and revokes the whole grant.
    const afterReuse = await refresh(disco, 'oidc-bff', 'basic', t2.json.refresh_token);
    check(afterReuse.status === 400 && afterReuse.json.error === 'invalid_grant', 'reuse revoked the grant: the new refresh token is dead too', afterReuse);
    const atCheck3 = await api(issuer, 'POST', '/__test/access-token/check', { token: t2.json.access_token });
    check(atCheck3.json.active === false, 'reuse revoked the grant: its access token is dead too', atCheck3.json);
    stats = (await api(issuer, 'GET', '/__test/stats')).json;
    check(stats.refresh_failures === 2 && stats.token_grants.refresh_token === 1, 'stats count refresh failures', stats);

    // Same browser again: SSO (no form), consent granted silently since the grant is gone.
    const login2 = await signIn(alice, disco, { clientId: 'oidc-bff', redirectUri, user: 'alice', password: 'alice-password', expectForm: false });
    const t3 = await exchange(disco, 'oidc-bff', 'basic', login2);
    must(t3.status === 200 && t3.json.refresh_token, 'code exchange after SSO', t3);
    check(jose.decodeJwt(t3.json.id_token).sid === id1.sid, 'same provider session: same sid');

    // RFC 7009 revocation of the access token
    const rev = await fetch(disco.revocation_endpoint, {
      method: 'POST', headers: { authorization: BASIC('oidc-bff', SECRET), 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: t3.json.access_token, token_type_hint: 'access_token' }),
    });
    check(rev.status === 200, 'revocation endpoint answers 200', rev.status);
    const atCheck4 = await api(issuer, 'POST', '/__test/access-token/check', { token: t3.json.access_token });
    check(atCheck4.json.active === false, 'revoked access token is inactive', atCheck4.json);
    stats = (await api(issuer, 'GET', '/__test/stats')).json;
    check(stats.revocations === 1, 'stats count revocations', stats);

    // revoke-grants
    const rg = await api(issuer, 'POST', '/__test/revoke-grants', { sub: 'alice' });
    check(rg.status === 200 && rg.json.ok === true && rg.json.refresh_tokens === 1 && rg.json.grants >= 1, 'revoke-grants reports what it destroyed', rg.json);
    const afterRevoke = await refresh(disco, 'oidc-bff', 'basic', t3.json.refresh_token);
    check(afterRevoke.status === 400 && afterRevoke.json.error === 'invalid_grant', 'refresh after revoke-grants: invalid_grant', afterRevoke);
    check(!(await api(issuer, 'GET', '/__test/refresh-tokens')).json.some((t) => t.sub === 'alice'), 'alice has no refresh tokens left');

    // ID token tweaks: validly signed hostile ID tokens for one account.
    {
      const bad = await api(issuer, 'POST', '/__test/id-token-tweaks', { sub: 'tweaky', pad_bytes: -1 });
      check(bad.status === 400, 'id-token-tweaks refuses bad input', bad.json);
      const set = await api(issuer, 'POST', '/__test/id-token-tweaks', { sub: 'tweaky', grant_type: 'authorization_code', remove: ['iat'], set: { sub: 'mallory' }, pad_bytes: 1000 });
      check(set.status === 200 && set.json.ok === true, 'id-token-tweaks accepts a tweak', set.json);
      const b = new Browser();
      const login = await signIn(b, disco, { clientId: 'oidc-bff', redirectUri, user: 'tweaky', password: 'tweaky-password' });
      const t = await exchange(disco, 'oidc-bff', 'basic', login);
      must(t.status === 200, 'code exchange with a tweak', t);
      const { payload } = await jose.jwtVerify(t.json.id_token, jwks, { issuer: disco.issuer, audience: 'oidc-bff' });
      check(payload.iat === undefined && payload.sub === 'mallory' && payload.pad?.length === 1000 && payload.nonce === login.nonce,
        'tweaked ID token: iat removed, sub set, padded, still signed by the provider key', payload);
      const r = await refresh(disco, 'oidc-bff', 'basic', t.json.refresh_token);
      const p2 = r.json.id_token ? jose.decodeJwt(r.json.id_token) : {};
      check(r.status === 200 && p2.sub === 'tweaky' && typeof p2.iat === 'number', 'a tweak for authorization_code leaves refresh ID tokens alone', p2);
      const clear = await api(issuer, 'POST', '/__test/id-token-tweaks', { sub: 'tweaky' });
      check(clear.json.cleared === true, 'id-token-tweaks with only sub clears the tweak', clear.json);
    }

    // A code works once; replaying it revokes what it was exchanged for.
    const login2b = await signIn(alice, disco, { clientId: 'oidc-bff', redirectUri, user: 'alice', password: 'alice-password', expectForm: false });
    const t3b = await exchange(disco, 'oidc-bff', 'basic', login2b);
    must(t3b.status === 200, 'code exchange before replay', t3b);
    const replay = await exchange(disco, 'oidc-bff', 'basic', login2b);
    check(replay.status === 400 && replay.json.error === 'invalid_grant', 'a code works only once', replay);
    const afterReplay = await refresh(disco, 'oidc-bff', 'basic', t3b.json.refresh_token);
    check(afterReplay.status === 400 && afterReplay.json.error === 'invalid_grant', 'code replay revoked the refresh token issued for it', afterReplay);

    // oidc-bff-post with client_secret_post (bob, on localhost)
    const bob = new Browser();
    const bobRedirect = 'http://localhost:2/auth/callback';
    const login3 = await signIn(bob, disco, { clientId: 'oidc-bff-post', redirectUri: bobRedirect, user: 'bob', password: 'bob-password' });
    const wrongAuth = await exchange(disco, 'oidc-bff-post', 'basic', login3);
    check(wrongAuth.status === 401 && wrongAuth.json.error === 'invalid_client', 'oidc-bff-post refuses client_secret_basic', wrongAuth);
    const t4 = await exchange(disco, 'oidc-bff-post', 'post', login3);
    must(t4.status === 200, 'code exchange (client_secret_post)', t4);
    const id4 = await verifyIdToken(jwks, disco, t4.json.id_token, { clientId: 'oidc-bff-post', nonce: login3.nonce });
    check(id4.sub === 'bob' && id4.name === 'Bob Example', 'ID token for bob', id4);
    const t5 = await refresh(disco, 'oidc-bff-post', 'post', t4.json.refresh_token);
    check(t5.status === 200 && t5.json.refresh_token !== t4.json.refresh_token, 'refresh with client_secret_post rotates', t5);
    const bobAt = t5.json.access_token;
    const bobAtIssued = now();

    // Runtime client with a back-channel logout URI
    const clientId = `bcl-${randomBytes(4).toString('hex')}`;
    const reg = await api(issuer, 'POST', '/__test/clients', {
      client_id: clientId, client_secret: SECRET, token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['authorization_code', 'refresh_token'],
      backchannel_logout_uri: `${bcl.url}/auth/backchannel-logout`, backchannel_logout_session_required: true,
    });
    check(reg.status === 200 && reg.json.ok === true, 'register a runtime client', reg);
    const badReg = await api(issuer, 'POST', '/__test/clients', { client_id: 'broken', token_endpoint_auth_method: 'nope' });
    check(badReg.status === 400 && badReg.json.error === 'invalid_client_metadata', 'invalid client metadata is refused with 400', badReg);
    const staticReg = await api(issuer, 'POST', '/__test/clients', { client_id: 'oidc-bff' });
    check(staticReg.status === 409, 'static clients cannot be replaced', staticReg);

    const carol = new Browser();
    const rtRedirect = `${bcl.url}/auth/callback`;
    const login5 = await signIn(carol, disco, { clientId, redirectUri: rtRedirect, user: 'alice', password: 'alice-password' });
    const t6 = await exchange(disco, clientId, 'basic', login5);
    must(t6.status === 200, 'code exchange for the runtime client', t6);
    const id6 = await verifyIdToken(jwks, disco, t6.json.id_token, { clientId, nonce: login5.nonce });

    const bc = await api(issuer, 'POST', '/__test/backchannel-logout', { client_id: clientId, sub: 'alice' });
    check(bc.status === 200 && bc.json.ok === true && bc.json.status === 200 && bc.json.sid === id6.sid, 'backchannel-logout: sent with the current sid, client answered 200', bc.json);
    const got = bcl.received.shift();
    must(got, 'the client received a back-channel logout POST');
    check(got.method === 'POST' && got.path === '/auth/backchannel-logout' && got.contentType.startsWith('application/x-www-form-urlencoded'), 'logout POST is form-encoded to the registered URI', got);
    const logoutToken = new URLSearchParams(got.body).get('logout_token');
    must(logoutToken, 'logout_token form field');
    const { payload: lt, protectedHeader: lth } = await jose.jwtVerify(logoutToken, jwks, { issuer, audience: clientId });
    check(lt.events && 'http://schemas.openid.net/event/backchannel-logout' in lt.events, 'logout token has the back-channel event', lt);
    check(lt.sid === id6.sid && lt.sub === 'alice' && lt.aud === clientId && typeof lt.jti === 'string' && !('nonce' in lt), 'logout token sid, sub, aud, jti, no nonce', lt);
    check(lth.kid === jwksDoc.keys[0].kid, 'logout token signed with the published key', lth);
    check(typeof lt.iat === 'number' && typeof lt.exp === 'number' && lt.exp > lt.iat, 'logout token has iat and exp', lt);

    bcl.status = 500;
    const bcFail = await api(issuer, 'POST', '/__test/backchannel-logout', { client_id: clientId, sub: 'alice', sid: 'explicit-sid' });
    check(bcFail.json.ok === false && bcFail.json.status === 500 && bcFail.json.sid === 'explicit-sid', 'backchannel-logout reports a client error status', bcFail.json);
    bcl.received.length = 0;
    bcl.status = 200;
    stats = (await api(issuer, 'GET', '/__test/stats')).json;
    check(stats.backchannel_logouts_sent === 1 && stats.backchannel_logout_failures === 1, 'stats count back-channel logouts', stats);

    // RP-initiated logout with id_token_hint and post_logout_redirect_uri
    const postLogout = `${bcl.url}/logged-out`;
    const endUrl = new URL(disco.end_session_endpoint);
    endUrl.searchParams.set('id_token_hint', t6.json.id_token);
    endUrl.searchParams.set('post_logout_redirect_uri', postLogout);
    endUrl.searchParams.set('state', 'bye');
    const confirmPage = await carol.request(endUrl.href);
    check(confirmPage.status === 200, 'end_session renders a confirmation page', `${confirmPage.status} ${confirmPage.text.slice(0, 200)}`);
    check(/<script>[\s\S]*submit\(\)[\s\S]*<\/script>/.test(confirmPage.text), 'the confirmation page auto-submits in a browser');
    const lf = formOf(confirmPage.text, 'op.logoutForm');
    must(lf?.action && lf.hidden.xsrf, 'confirmation form with action and xsrf', confirmPage.text.slice(0, 500));
    const done = await carol.request(new URL(lf.action, endUrl).href, { method: 'POST', form: { ...lf.hidden, logout: 'yes' } });
    check(done.status === 303 && done.location === `${postLogout}?state=bye`, 'confirmation redirects to the post-logout URI with state', `${done.status} ${done.location}`);
    const bcAtEnd = bcl.received.shift();
    check(bcAtEnd && jose.decodeJwt(new URLSearchParams(bcAtEnd.body).get('logout_token')).sid === id6.sid, 'end_session sent a back-channel logout for the session', bcAtEnd);
    const afterLogout = await refresh(disco, clientId, 'basic', t6.json.refresh_token);
    check(afterLogout.status === 400 && afterLogout.json.error === 'invalid_grant', 'refresh token dies with the provider session', afterLogout);
    check(!(await api(issuer, 'GET', '/__test/sessions')).json.some((s) => s.sid === id6.sid), 'the session is gone from /__test/sessions');
    // Without a provider session: an auto-posting form that already says logout=yes.
    const stepper = new Browser();
    await signIn(stepper, disco, { clientId: 'oidc-bff', redirectUri, user: 'stepper', password: 'stepper-password' });
    // Step-up: a session at "pwd" asked for acr_values=mfa shows the form
    // again and the new ID token says "mfa"; prompt=none would not do.
    const silent = await stepper.request(authorizeUrl(disco, { clientId: 'oidc-bff', redirectUri, extra: { acr_values: 'mfa', prompt: 'none' } }).url);
    let silentLoc = silent.location ?? '';
    for (let i = 0; i < 5 && silentLoc && !silentLoc.startsWith(redirectUri); i += 1) {
      silentLoc = (await stepper.request(silentLoc)).location ?? '';
    }
    check(new URL(silentLoc || 'http://x/').searchParams.get('error') === 'login_required',
      'prompt=none with a weaker session than acr_values asks: login_required', silentLoc);
    const up = await signIn(stepper, disco, { clientId: 'oidc-bff', redirectUri, user: 'stepper', password: 'stepper-password', extra: { acr_values: 'mfa' } });
    const tUp = await exchange(disco, 'oidc-bff', 'basic', up);
    must(tUp.status === 200, 'code exchange after step-up', tUp);
    check(jose.decodeJwt(tUp.json.id_token).acr === 'mfa', 'the step-up ID token carries acr "mfa"', jose.decodeJwt(tUp.json.id_token));

    const nobody = await new Browser().request(authorizeUrl(disco, { clientId: 'oidc-bff', redirectUri, extra: { prompt: 'none' } }).url);
    let nobodyLoc = nobody.location ?? '';
    check(nobodyLoc.startsWith(redirectUri) && new URL(nobodyLoc).searchParams.get('error') === 'login_required',
      'prompt=none without a provider session: login_required at the redirect URI', nobodyLoc);
    const stranger = new Browser();
    const noSession = await stranger.request(endUrl.href);
    const nsf = formOf(noSession.text);
    check(noSession.status === 200 && nsf?.hidden.logout === 'yes' && nsf.hidden.xsrf, 'end_session without a session: auto-posting form with logout=yes', noSession.text.slice(0, 300));
    if (nsf?.action) {
      const nsDone = await stranger.request(new URL(nsf.action, endUrl).href, { method: 'POST', form: nsf.hidden });
      check(nsDone.status === 303 && nsDone.location === `${postLogout}?state=bye`, 'posting it as is redirects to the post-logout URI', `${nsDone.status} ${nsDone.location}`);
    }
    const badPostLogout = new URL(endUrl);
    badPostLogout.searchParams.set('post_logout_redirect_uri', 'http://evil.test/');
    const refused = await new Browser().request(badPostLogout.href);
    check(refused.status === 400, 'a foreign post_logout_redirect_uri is refused', refused.status);

    // /__test/sign and /__test/sign-with-foreign-key
    const signed = await api(issuer, 'POST', '/__test/sign', { payload: { iss: issuer, aud: 'x', sub: 'alice' }, header: { typ: 'logout+jwt' } });
    const sv = await jose.jwtVerify(signed.json.jwt, jwks, { issuer });
    check(sv.protectedHeader.kid === jwksDoc.keys[0].kid && sv.protectedHeader.typ === 'logout+jwt' && sv.payload.sub === 'alice', '/__test/sign verifies against the JWKS with its kid', sv.protectedHeader);
    const forged = await api(issuer, 'POST', '/__test/sign-with-foreign-key', { payload: { iss: issuer }, header: { kid: jwksDoc.keys[0].kid } });
    let forgedOk = false;
    try { await jose.jwtVerify(forged.json.jwt, jwks); forgedOk = true; } catch { /* expected */ }
    check(!forgedOk && jose.decodeProtectedHeader(forged.json.jwt).kid === jwksDoc.keys[0].kid, 'foreign-key JWT has the asked kid but does not verify');

    // --access-token-ttl takes effect
    await sleep(Math.max(0, (bobAtIssued + ttl.at + 1 - now()) * 1000));
    const expired = await api(issuer, 'POST', '/__test/access-token/check', { token: bobAt });
    check(expired.json.active === false, 'access token inactive after --access-token-ttl', expired.json);

    stats = (await api(issuer, 'POST', '/__test/stats/reset')).json;
    check(stats.token_grants.authorization_code === 0 && stats.token_grants.refresh_token === 0 && stats.refresh_failures === 0
      && stats.revocations === 0 && stats.backchannel_logouts_sent === 0, 'stats reset', stats);
  } finally {
    bcl.close();
    await stopProvider(p);
  }
}

// A stand-in for the gateway's back-channel logout endpoint.
async function startLogoutReceiver() {
  const received = [];
  const state = { status: 200 };
  const server = createServer(async (req, res) => {
    let body = '';
    for await (const c of req) body += c;
    received.push({ method: req.method, path: req.url, contentType: req.headers['content-type'] ?? '', body });
    res.writeHead(state.status, { 'cache-control': 'no-store' });
    res.end();
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return Object.assign(state, {
    url: `http://127.0.0.1:${server.address().port}`,
    received,
    close: () => server.close(),
  });
}

// ---------------------------------------------------------------------------
// Scenario: JWT access tokens
// ---------------------------------------------------------------------------

async function jwtScenario() {
  scenario = 'jwt';
  const aud = 'http://api.test';
  const p = await startProvider(['--test-api', '--access-token-ttl', '60', '--jwt-access-tokens', aud]);
  try {
    const { issuer } = p.ready.json;
    const disco = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
    const jwks = jose.createLocalJWKSet(await (await fetch(disco.jwks_uri)).json());
    const redirectUri = 'http://127.0.0.1:3/auth/callback';

    for (const [clientId, auth, scope] of [['oidc-bff', 'basic', 'openid profile email'], ['oidc-bff-post', 'post', 'openid profile email api']]) {
      const b = new Browser();
      const login = await signIn(b, disco, { clientId, redirectUri, user: 'alice', password: 'alice-password', scope });
      const t = await exchange(disco, clientId, auth, login);
      must(t.status === 200, `code exchange (${clientId}, scope ${scope})`, t);
      must(t.json.access_token.split('.').length === 3, 'access token is a JWT', t.json.access_token);
      const { payload: at, protectedHeader } = await jose.jwtVerify(t.json.access_token, jwks, { issuer, audience: aud, typ: 'at+jwt' });
      check(protectedHeader.alg === 'RS256', 'JWT access token is RS256');
      check(at.sub === 'alice' && at.client_id === clientId && at.aud === aud && at.exp - at.iat === 60, 'JWT access token claims (sub, client_id, aud, ttl)', at);
      check(scope.includes('api') ? at.scope === 'api' : at.scope === undefined, 'JWT access token scope holds only the API scope', at.scope);
      check(t.json.scope === (scope.includes('api') ? 'api' : ''), 'token response scope is the access token\'s (API) scope', t.json.scope);
      const id = await verifyIdToken(jwks, disco, t.json.id_token, { clientId, nonce: login.nonce });
      check(id.email === 'alice@example.com', 'ID token still carries the profile claims', id);
      check(typeof t.json.refresh_token === 'string', 'refresh token issued in JWT mode');
      const c1 = await api(issuer, 'POST', '/__test/access-token/check', { token: t.json.access_token });
      check(c1.json.active === true && c1.json.sub === 'alice' && c1.json.client_id === clientId && c1.json.exp === at.exp, 'access-token/check: JWT active', c1.json);

      const r = await refresh(disco, clientId, auth, t.json.refresh_token);
      must(r.status === 200, 'refresh in JWT mode', r);
      must(r.json.access_token.split('.').length === 3, 'refreshed access token is a JWT', r.json.access_token);
      check(r.json.refresh_token !== t.json.refresh_token, 'refresh rotates in JWT mode');
      const { payload: at2 } = await jose.jwtVerify(r.json.access_token, jwks, { issuer, audience: aud, typ: 'at+jwt' });
      check(at2.sub === 'alice' && at2.jti !== at.jti, 'refreshed access token is a JWT for the API', at2);
      check(jose.decodeJwt(r.json.id_token).sid === id.sid, 'refreshed ID token keeps sid');

      const rg = await api(issuer, 'POST', '/__test/revoke-grants', { sub: 'alice' });
      check(rg.json.refresh_tokens === 1, 'revoke-grants in JWT mode', rg.json);
      const c2 = await api(issuer, 'POST', '/__test/access-token/check', { token: r.json.access_token });
      check(c2.json.active === false, 'access-token/check: JWT of a revoked grant is inactive', c2.json);
      const r2 = await refresh(disco, clientId, auth, r.json.refresh_token);
      check(r2.status === 400 && r2.json.error === 'invalid_grant', 'refresh after revoke-grants: invalid_grant', r2);
    }
    const forged = await api(issuer, 'POST', '/__test/sign-with-foreign-key', { payload: { iss: issuer, aud, jti: 'x', exp: now() + 60 }, header: { typ: 'at+jwt' } });
    const c3 = await api(issuer, 'POST', '/__test/access-token/check', { token: forged.json.jwt });
    check(c3.json.active === false, 'access-token/check: foreign-signed JWT is inactive', c3.json);
    const stats = (await api(issuer, 'GET', '/__test/stats')).json;
    check(stats.token_grants.authorization_code === 2 && stats.token_grants.refresh_token === 2 && stats.refresh_failures === 2, 'stats in JWT mode', stats);
  } finally {
    await stopProvider(p);
  }
}

// ---------------------------------------------------------------------------
// Scenario: no test API; --client-base; --jwks-file
// ---------------------------------------------------------------------------

async function flagsScenario() {
  scenario = 'flags';
  const dir = mkdtempSync(join(tmpdir(), 'provider-selftest-'));
  const jwksFile = join(dir, 'jwks.json');
  try {
    const p = await startProvider(['--client-base', 'http://app.test:8080,https://other.test', '--client-base', 'http://third.test', '--jwks-file', jwksFile]);
    let kid;
    try {
      const { issuer } = p.ready.json;
      const r = await api(issuer, 'GET', '/__test/stats');
      check(r.status === 404, 'without --test-api /__test/ paths are 404', r.status);
      const r2 = await api(issuer, 'POST', '/__test/sign', { payload: {} });
      check(r2.status === 404, 'without --test-api /__test/sign is 404', r2.status);
      const disco = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
      for (const base of ['http://app.test:8080', 'https://other.test', 'http://third.test']) {
        const a = await new Browser().request(authorizeUrl(disco, { clientId: 'oidc-bff', redirectUri: `${base}/auth/callback` }).url);
        check(a.status === 303 && a.location?.includes('/interaction/'), `--client-base ${base} accepted as redirect origin`, `${a.status} ${a.location}`);
      }
      const a2 = await new Browser().request(authorizeUrl(disco, { clientId: 'oidc-bff', redirectUri: 'http://app.test:8081/auth/callback' }).url);
      check(a2.status === 400, 'other ports of a --client-base host are refused', a2.status);
      check(existsSync(jwksFile), '--jwks-file is written when missing');
      kid = (await (await fetch(disco.jwks_uri)).json()).keys[0].kid;
      check(JSON.parse(readFileSync(jwksFile, 'utf8')).keys[0].kid === kid, 'the written JWKS is the published key');
    } finally {
      await stopProvider(p);
    }
    const fixedPort = await freePort();
    const p2 = await startProvider(['--jwks-file', jwksFile, '--port', String(fixedPort)]);
    try {
      check(p2.ready.line === JSON.stringify({ ready: true, issuer: `http://127.0.0.1:${fixedPort}`, port: fixedPort }), '--port N is used', p2.ready.line);
      const jwksDoc = await (await fetch(`${p2.ready.json.issuer}/jwks`)).json();
      check(jwksDoc.keys[0].kid === kid, '--jwks-file keeps the key across restarts');
    } finally {
      await stopProvider(p2);
    }
    const bad = spawn(process.execPath, [SERVER, '--access-token-ttl', 'soon'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    bad.stdout.on('data', (d) => { out += d; });
    const code = await new Promise((r) => bad.on('exit', r));
    check(code === 2 && out === '', 'a bad flag exits 2 with nothing on stdout', { code, out });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------
// Scenario: private_key_jwt and PAR for runtime clients; mTLS methods only
// with --tls-client-ca
// ---------------------------------------------------------------------------

async function clientAuthScenario() {
  scenario = 'client-auth';
  const p = await startProvider(['--test-api']);
  try {
    const { issuer } = p.ready.json;
    const disco = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
    check(typeof disco.pushed_authorization_request_endpoint === 'string', 'discovery has pushed_authorization_request_endpoint');
    check(disco.token_endpoint_auth_methods_supported?.includes('private_key_jwt'), 'private_key_jwt is supported');
    check(!disco.token_endpoint_auth_methods_supported?.includes('tls_client_auth'), 'tls_client_auth only with --tls-client-ca');
    const mtls = await api(issuer, 'POST', '/__test/clients', { client_id: 'selftest-mtls', token_endpoint_auth_method: 'tls_client_auth', tls_client_auth_subject_dn: 'CN=x' });
    check(mtls.status === 400, 'a tls_client_auth client is refused without --tls-client-ca', mtls);

    const { publicKey, privateKey } = await jose.generateKeyPair('ES256');
    const jwk = { ...(await jose.exportJWK(publicKey)), kid: 'selftest-client', alg: 'ES256', use: 'sig' };
    const reg = await api(issuer, 'POST', '/__test/clients', {
      client_id: 'selftest-pkjwt', token_endpoint_auth_method: 'private_key_jwt', token_endpoint_auth_signing_alg: 'ES256',
      jwks: { keys: [jwk] }, require_pushed_authorization_requests: true,
    });
    must(reg.status === 200, 'a private_key_jwt client requiring PAR registers', reg);
    const assertion = (aud) => new jose.SignJWT({ jti: b64url(randomBytes(12)) })
      .setProtectedHeader({ alg: 'ES256', kid: 'selftest-client' })
      .setIssuer('selftest-pkjwt').setSubject('selftest-pkjwt').setAudience(aud)
      .setIssuedAt().setExpirationTime('60s').sign(privateKey);
    const request = authorizeUrl(disco, { clientId: 'selftest-pkjwt', redirectUri: 'http://127.0.0.1:9/auth/callback' });
    const params = new URL(request.url).searchParams;
    const push = async (extra, headers = {}) => {
      const res = await fetch(disco.pushed_authorization_request_endpoint, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
        body: new URLSearchParams([...params, ...Object.entries(extra)]),
      });
      return { status: res.status, json: await res.json() };
    };
    const assertionType = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
    const pushed = await push({ client_assertion_type: assertionType, client_assertion: await assertion(disco.token_endpoint) });
    check(pushed.status === 201 && pushed.json.request_uri?.startsWith('urn:'), 'PAR with a client assertion gives a request_uri', pushed);
    const secret = await push({}, { authorization: BASIC('selftest-pkjwt', SECRET) });
    check(secret.status === 401 && secret.json.error === 'invalid_client', 'PAR with the secret is refused for a private_key_jwt client', secret);
    const wrongAud = await push({ client_assertion_type: assertionType, client_assertion: await assertion('https://elsewhere.test') });
    check(wrongAud.status === 401, 'an assertion for another audience is refused', wrongAud);

    const direct = await new Browser().request(request.url);
    check(direct.status === 400 || direct.location?.includes('error=invalid_request'), 'without PAR the authorization request is refused', `${direct.status} ${direct.location}`);
    if (pushed.json.request_uri) {
      const u = new URL(disco.authorization_endpoint);
      u.searchParams.set('client_id', 'selftest-pkjwt');
      u.searchParams.set('request_uri', pushed.json.request_uri);
      const viaPar = await new Browser().request(u.href);
      check(viaPar.status === 303 && viaPar.location?.includes('/interaction/'), 'the pushed request starts an interaction', `${viaPar.status} ${viaPar.location}`);
    }
  } finally {
    await stopProvider(p);
  }
}

// ---------------------------------------------------------------------------
// Scenario: --derived-resources (RFC 8707 refresh grants, RFC 8693 exchange)
// ---------------------------------------------------------------------------

async function derivedScenario() {
  scenario = 'derived';
  const A = 'https://api-a.test/';
  const B = 'https://api-b.test/';
  const TE = 'urn:ietf:params:oauth:grant-type:token-exchange';
  const AT_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
  const p = await startProvider(['--test-api', '--access-token-ttl', '60', '--derived-resources']);
  try {
    const { issuer } = p.ready.json;
    const disco = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
    check(disco.grant_types_supported.includes(TE), 'discovery advertises token exchange', disco.grant_types_supported);
    const jwks = jose.createLocalJWKSet(await (await fetch(disco.jwks_uri)).json());
    const redirectUri = 'http://127.0.0.1:3/auth/callback';
    const b = new Browser();
    const login = await signIn(b, disco, { clientId: 'oidc-bff', redirectUri, user: 'alice', password: 'alice-password', scope: 'openid profile a.read b.read' });
    const t = await exchange(disco, 'oidc-bff', 'basic', login);
    must(t.status === 200, 'code exchange with two resources granted', t);
    check(t.json.access_token.split('.').length !== 3, 'the login token is opaque (no resource named)', t.json.access_token);

    const ra = await token(disco, 'oidc-bff', 'basic', { grant_type: 'refresh_token', refresh_token: t.json.refresh_token, resource: A, scope: 'a.read' });
    must(ra.status === 200, 'refresh grant with resource A', ra);
    const { payload: a } = await jose.jwtVerify(ra.json.access_token, jwks, { issuer, audience: A, typ: 'at+jwt' });
    check(a.sub === 'alice' && a.scope === 'a.read', 'token for A: aud A, scope a.read', a);
    check(typeof ra.json.refresh_token === 'string' && ra.json.refresh_token !== t.json.refresh_token, 'the grant rotates the refresh token');
    const rb = await token(disco, 'oidc-bff', 'basic', { grant_type: 'refresh_token', refresh_token: ra.json.refresh_token, resource: B, scope: 'b.read' });
    must(rb.status === 200, 'refresh grant with resource B (rotated token)', rb);
    const { payload: bb } = await jose.jwtVerify(rb.json.access_token, jwks, { issuer, audience: B, typ: 'at+jwt' });
    check(bb.scope === 'b.read', 'token for B: aud B, scope b.read', bb);
    const cross = await token(disco, 'oidc-bff', 'basic', { grant_type: 'refresh_token', refresh_token: rb.json.refresh_token, resource: A, scope: 'b.read' });
    must(cross.status === 200, 'refresh grant for A asking a scope of B', cross);
    const { payload: ax } = await jose.jwtVerify(cross.json.access_token, jwks, { issuer, audience: A, typ: 'at+jwt' });
    check(ax.scope === undefined && cross.json.scope === '', 'a scope of B never goes into a token for A', ax);

    const x = await token(disco, 'oidc-bff', 'basic', { grant_type: TE, subject_token: t.json.access_token, subject_token_type: AT_TYPE, resource: B, audience: B, scope: 'b.read' });
    must(x.status === 200, 'token exchange for B', x);
    check(x.json.issued_token_type === AT_TYPE, 'exchange answers issued_token_type', x.json);
    const { payload: xb } = await jose.jwtVerify(x.json.access_token, jwks, { issuer, audience: B, typ: 'at+jwt' });
    check(xb.sub === 'alice' && xb.scope === 'b.read', 'exchanged token: aud B, scope b.read, same user', xb);
    const bad = await token(disco, 'oidc-bff', 'basic', { grant_type: TE, subject_token: 'not-a-token', subject_token_type: AT_TYPE, resource: B });
    check(bad.status === 400 && bad.json.error === 'invalid_grant', 'exchange of an unknown subject token: invalid_grant', bad);
    const other = await token(disco, 'oidc-bff', 'basic', { grant_type: TE, subject_token: t.json.access_token, subject_token_type: AT_TYPE, resource: 'https://elsewhere.test/' });
    check(other.status === 400 && other.json.error === 'invalid_target', 'exchange for an unknown API: invalid_target', other);
    const stats = (await api(issuer, 'GET', '/__test/stats')).json;
    check(stats.token_grants[TE] === 1 && stats.resource_grants[A] === 2 && stats.resource_grants[B] === 2, 'grants counted by type and resource', stats);
  } finally {
    await stopProvider(p);
  }
}

// --dpop: a DPoP proof (RFC 9449) for `htm` `htu` made with `key`.
async function dpopProof(key, jwk, htm, htu, { nonce, token, iat = now(), jti = randomUUID(), typ = 'dpop+jwt' } = {}) {
  const payload = { htm, htu, iat, jti };
  if (nonce) payload.nonce = nonce;
  if (token) payload.ath = createHash('sha256').update(token).digest('base64url');
  return new jose.SignJWT(payload).setProtectedHeader({ alg: 'ES256', typ, jwk }).sign(key);
}

async function dpopScenario() {
  scenario = 'dpop';
  const p = await startProvider(['--test-api', '--dpop']);
  try {
    const { issuer } = p.ready.json;
    const disco = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
    check(disco.dpop_signing_alg_values_supported?.includes('ES256'), 'discovery advertises DPoP with ES256', disco.dpop_signing_alg_values_supported);
    const keyPair = async () => {
      const { privateKey, publicKey } = await jose.generateKeyPair('ES256');
      const { kty, crv, x, y } = await jose.exportJWK(publicKey);
      return { key: privateKey, jwk: { kty, crv, x, y }, jkt: await jose.calculateJwkThumbprint({ kty, crv, x, y }) };
    };
    const mine = await keyPair();
    const theirs = await keyPair();
    const redirectUri = 'http://127.0.0.1:3/auth/callback';
    const b = new Browser();
    const login = await signIn(b, disco, { clientId: 'oidc-bff', redirectUri, user: 'alice', password: 'alice-password' });
    const post = async (form, proof) => {
      const res = await fetch(disco.token_endpoint, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: BASIC('oidc-bff', SECRET), ...(proof ? { dpop: proof } : {}) },
        body: new URLSearchParams(form),
      });
      return { status: res.status, json: await res.json(), nonce: res.headers.get('dpop-nonce') };
    };
    const code = { grant_type: 'authorization_code', code: login.code, redirect_uri: redirectUri, code_verifier: login.verifier };
    const first = await post(code, await dpopProof(mine.key, mine.jwk, 'POST', disco.token_endpoint));
    check(first.status === 400 && first.json.error === 'use_dpop_nonce' && !!first.nonce, 'a proof without the nonce: use_dpop_nonce with a DPoP-Nonce', first);
    const t = await post(code, await dpopProof(mine.key, mine.jwk, 'POST', disco.token_endpoint, { nonce: first.nonce }));
    must(t.status === 200 && t.json.token_type === 'DPoP', 'code exchange with the nonce: a DPoP token', t);
    const stored = (await api(issuer, 'GET', '/__test/access-tokens')).json.find((a) => a.token === t.json.access_token);
    check(stored?.jkt === mine.jkt, 'the token is bound to the proof key (jkt)', stored);

    const RES = `${issuer}/resource/dpop`;
    const call = async (headers, method = 'GET', url = RES) => {
      const res = await fetch(url, { method, headers });
      const text = await res.text();
      let json;
      try { json = JSON.parse(text); } catch { json = text; }
      return { status: res.status, json, nonce: res.headers.get('dpop-nonce'), challenge: res.headers.get('www-authenticate') };
    };
    const at = t.json.access_token;
    const dpopAuth = `DPoP ${at}`;
    const noNonce = await call({ authorization: dpopAuth, dpop: await dpopProof(mine.key, mine.jwk, 'GET', RES, { token: at }) });
    must(noNonce.status === 401 && noNonce.json.error === 'use_dpop_nonce' && !!noNonce.nonce, 'the resource asks for its nonce', noNonce);
    const rn = noNonce.nonce;
    const good = await dpopProof(mine.key, mine.jwk, 'GET', `${RES}?q=1`, { token: at, nonce: rn });
    const ok = await call({ authorization: dpopAuth, dpop: good }, 'GET', `${RES}?q=1`);
    check(ok.status === 200 && ok.json.sub === 'alice' && ok.json.jkt === mine.jkt, 'a valid proof reaches the resource (htu without query)', ok);
    const refusals = [
      [{}, 'no access token'],
      [{ authorization: `Bearer ${at}` }, 'a DPoP-bound token sent as Bearer'],
      [{ authorization: dpopAuth }, 'no DPoP proof'],
      [{ authorization: dpopAuth, dpop: await dpopProof(theirs.key, theirs.jwk, 'GET', RES, { token: at, nonce: rn }) }, 'the proof is signed by another key than the token is bound to'],
      [{ authorization: dpopAuth, dpop: await dpopProof(mine.key, mine.jwk, 'POST', RES, { token: at, nonce: rn }) }, 'htm mismatch'],
      [{ authorization: dpopAuth, dpop: await dpopProof(mine.key, mine.jwk, 'GET', `${issuer}/resource/other`, { token: at, nonce: rn }) }, 'htu mismatch'],
      [{ authorization: dpopAuth, dpop: await dpopProof(mine.key, mine.jwk, 'GET', RES, { token: 'another', nonce: rn }) }, 'ath mismatch'],
      [{ authorization: dpopAuth, dpop: await dpopProof(mine.key, mine.jwk, 'GET', RES, { token: at, nonce: rn, iat: now() - 600 }) }, 'iat is not recent'],
      [{ authorization: dpopAuth, dpop: good }, 'replayed proof (jti seen before)'],
    ];
    for (const [headers, why] of refusals) {
      const r = await call(headers);
      check(r.status === 401 && r.json.error_description === why && /^DPoP /.test(r.challenge ?? ''), `the resource refuses: ${why}`, r);
    }
    const signedWrongTyp = await call({ authorization: dpopAuth, dpop: await dpopProof(mine.key, mine.jwk, 'GET', RES, { token: at, nonce: rn, typ: 'JWT' }) });
    check(signedWrongTyp.status === 401 && signedWrongTyp.json.error === 'invalid_dpop_proof', 'the resource refuses a proof of another typ', signedWrongTyp);

    // Refresh: bound again to the same key; without a proof refused.
    const bare = await post({ grant_type: 'refresh_token', refresh_token: t.json.refresh_token });
    check(bare.status === 200 && bare.json.token_type === 'Bearer', 'a refresh without a proof gets a Bearer token (the client is confidential)', bare);
    const r = await post({ grant_type: 'refresh_token', refresh_token: bare.json.refresh_token }, await dpopProof(mine.key, mine.jwk, 'POST', disco.token_endpoint, { nonce: first.nonce }));
    check(r.status === 200 && r.json.token_type === 'DPoP', 'a refresh with a proof: a DPoP token', r);
    await api(issuer, 'POST', '/__test/resource/rotate-nonce', {});
    const rotated = await call({ authorization: dpopAuth, dpop: await dpopProof(mine.key, mine.jwk, 'GET', RES, { token: at, nonce: rn }) });
    check(rotated.status === 401 && rotated.json.error === 'use_dpop_nonce' && rotated.nonce && rotated.nonce !== rn, 'a rotated resource nonce is asked for again', rotated);
    const stats = (await api(issuer, 'GET', '/__test/stats')).json;
    check(stats.token_dpop_nonce_challenges === 1 && stats.resource.ok === 1 && stats.resource.nonce_challenges === 2, 'nonce challenges and resource answers counted', stats);
  } finally {
    await stopProvider(p);
  }
}

async function freePort() {
  const srv = createServer();
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

// ---------------------------------------------------------------------------

const started = Date.now();
for (const s of [opaqueScenario, jwtScenario, flagsScenario, clientAuthScenario, derivedScenario, dpopScenario]) {
  try {
    await s();
  } catch (e) {
    check(false, 'scenario crashed', e.stack ?? String(e));
  }
}
const secs = ((Date.now() - started) / 1000).toFixed(1);
if (failures.length) {
  console.log(`\nprovider selftest FAILED (${secs} s):`);
  for (const f of failures) console.log(`  - ${f}`);
}
console.log(`${passed} passed, ${failures.length} failed`);
process.exit(failures.length ? 1 : 0);
