// End-to-end in a real browser: headless Chromium (Debian's, driven by
// playwright-core) against the real gateway, the dev OpenID provider, Redis
// and the demo API, all started here on free loopback ports.
//
// Walks what a person does — open the app, log in through the provider's
// form, call the API (also over a WebSocket), reload, end the session from
// a second browser, log out — and checks what only a browser can show: the
// session cookie is invisible to page scripts, no response the page
// receives from the gateway carries a token, a page whose session was ended
// elsewhere says why (and so does its cut WebSocket), and logging out ends
// on the gateway's "You are logged out" page. A screenshot of every
// step lands in test-artifacts/browser/.
//
//   node tests/browser/e2e.mjs        (after `cargo build --bin oidc-bff --example demo-api`)

import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdirSync, writeFileSync, openSync, existsSync, rmSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const artifacts = join(root, 'test-artifacts', 'browser');
rmSync(artifacts, { recursive: true, force: true });
mkdirSync(artifacts, { recursive: true });

const children = [];
function stopAll() {
  for (const c of children) {
    try { c.kill('SIGTERM'); } catch { /* already gone */ }
  }
}
process.on('exit', stopAll);
process.on('SIGINT', () => process.exit(130));

function fail(message) {
  console.error(`\nFAIL: ${message}\n(artifacts and logs in ${artifacts})`);
  process.exit(1);
}

function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.unref();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

function start(name, cmd, args, { stdout } = {}) {
  const log = openSync(join(artifacts, `${name}.log`), 'w');
  const child = spawn(cmd, args, { cwd: root, stdio: ['ignore', stdout ?? log, log] });
  child.on('exit', (code, signal) => {
    if (code !== null && code !== 0) console.error(`${name} exited with ${code}`);
    else if (signal && signal !== 'SIGTERM') console.error(`${name} killed by ${signal}`);
  });
  children.push(child);
  return child;
}

async function waitFor(what, check, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch (e) { last = e; }
    await new Promise((r) => setTimeout(r, 100));
  }
  fail(`${what} did not come up${last ? `: ${last.message}` : ''}`);
}

// ---------------------------------------------------------------------------
// The stack
// ---------------------------------------------------------------------------

const bin = join(root, 'target', 'debug', 'oidc-bff');
const demoApi = join(root, 'target', 'debug', 'examples', 'demo-api');
for (const f of [bin, demoApi]) {
  if (!existsSync(f)) fail(`${f} is missing: run \`cargo build --bin oidc-bff --example demo-api\` first (scripts/test does)`);
}
const chromiumPath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
if (!existsSync(chromiumPath)) fail(`Chromium not found at ${chromiumPath}: sudo apt-get install chromium (or set CHROMIUM_PATH)`);

const [redisPort, idpPort, apiPort, gwPort] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
const issuer = `http://localhost:${idpPort}`;
const app = `http://localhost:${gwPort}`;
const audience = 'urn:oidc-bff:demo-api';

start('redis', 'redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']);
start('provider', 'node', [
  'tests/provider/server.mjs', '--port', String(idpPort), '--issuer', issuer, '--test-api',
  '--jwt-access-tokens', audience, '--backchannel-logout-uri', `${app}/auth/backchannel-logout`,
]);
start('demo-api', demoApi, ['--listen', `127.0.0.1:${apiPort}`, '--issuer', issuer, '--audience', audience]);

const config = join(artifacts, 'oidc-bff.toml');
writeFileSync(config, `
[server]
listen = "127.0.0.1:${gwPort}"
public_url = "${app}"
[oidc]
issuer = "${issuer}"
client_id = "oidc-bff"
client_secret = "oidc-bff-secret"
scopes = ["openid", "profile", "email", "api"]
post_logout_redirect = "/auth/logged-out"
[session]
touch_interval = "1s"
encryption_keys = [{ id = "browser-test", key = "YnJvd3Nlci10ZXN0LWtleS1ub3QtZm9yLXJlYWwtdXM=" }]
[store]
url = "redis://127.0.0.1:${redisPort}"
[[routes]]
path = "/api"
upstream = "http://127.0.0.1:${apiPort}"
[static]
dir = "examples/spa"
[log]
level = "info,oidc_bff=debug"
`);
await waitFor('the provider', async () => (await fetch(`${issuer}/.well-known/openid-configuration`)).ok);
start('oidc-bff', bin, ['serve', '--config', config]);
await waitFor('oidc-bff', async () => (await fetch(`${app}/readyz`)).ok);

// ---------------------------------------------------------------------------
// The browser
// ---------------------------------------------------------------------------

const browser = await chromium.launch({
  executablePath: chromiumPath,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--no-first-run', '--disable-quic'],
});
process.on('exit', () => { browser.close().catch(() => {}); });
const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
const page = await context.newPage();

// Every response body the page receives from the gateway, for the leak check.
const bodies = [];
page.on('response', async (r) => {
  if (!r.url().startsWith(app)) return;
  if (r.status() >= 300 && r.status() < 400) return;
  try { bodies.push({ url: r.url(), body: await r.text() }); } catch { /* body gone (navigation) */ }
});
page.on('pageerror', (e) => console.error('page error:', e.message));
// WebSocket messages the page receives count as bodies too.
page.on('websocket', (ws) => {
  ws.on('framereceived', (f) => bodies.push({ url: ws.url(), body: String(f.payload) }));
});

let step = 0;
async function shot(name, on = page) {
  step += 1;
  const file = join(artifacts, `${String(step).padStart(2, '0')}-${name}.png`);
  await on.screenshot({ path: file, fullPage: true });
  console.log(`  ✓ ${name}`);
}

async function expectVisible(selector, what, timeout = 10000) {
  try {
    await page.locator(selector).first().waitFor({ state: 'visible', timeout });
  } catch {
    await shot(`failed-${what.replace(/\W+/g, '-')}`);
    fail(`${what}: ${selector} not visible on ${page.url()}`);
  }
}

console.log(`browser e2e: app ${app}, provider ${issuer}`);

// 1. The app, logged out.
await page.goto(app);
await expectVisible('#login', 'the login button');
await shot('app-logged-out');
// Both the app and the gateway's own pages link an icon that exists (no
// /favicon.ico 404 on every page).
for (const icon of ['/favicon.svg', '/auth/favicon.svg']) {
  const r = await page.evaluate(async (p) => { const x = await fetch(p); return [x.status, x.headers.get('content-type')]; }, icon);
  if (r[0] !== 200 || !String(r[1]).startsWith('image/svg+xml')) fail(`${icon} answered ${r}`);
}
if (!(await page.getAttribute('link[rel=icon]', 'href'))) fail('the app links no icon');

// 2. Log in through the provider's form.
async function logIn(on, screenshot) {
  await on.click('#login');
  await on.waitForURL(`${issuer}/**`);
  await on.locator('#login').first().waitFor({ state: 'visible', timeout: 10000 })
    .catch(() => fail(`the provider login form did not show on ${on.url()}`));
  await on.fill('#login', 'alice');
  await on.fill('#password', 'alice-password');
  if (screenshot) await shot(screenshot, on);
  await on.click('#submit');
  await on.waitForURL(`${app}/**`);
}
await logIn(page, 'provider-login-form');
await expectVisible('#authenticated', 'the logged-in view');
const name = await page.textContent('#name');
if (name !== 'Alice Example') fail(`expected the name "Alice Example", page shows ${JSON.stringify(name)}`);
await shot('logged-in');

// 3. The session cookie is HttpOnly: page scripts cannot see it.
const visible = await page.evaluate(() => document.cookie);
if (visible.includes('oidc-bff')) fail(`document.cookie exposes the session cookie: ${visible}`);
const cookies = await context.cookies(app);
const session = cookies.find((c) => c.name === '__Host-oidc-bff');
if (!session) fail(`no session cookie in the browser: ${JSON.stringify(cookies.map((c) => c.name))}`);
if (!session.httpOnly || !session.secure || session.sameSite !== 'Strict' || session.path !== '/') {
  fail(`session cookie attributes are not strict: ${JSON.stringify({ ...session, value: '…' })}`);
}

// 4. Call the API through the gateway.
await page.click('#call-api');
await expectVisible('#api-result.ok', 'a successful API answer');
const answer = await page.textContent('#api-result');
if (!answer.includes('HTTP 200') || !answer.includes('Hello, alice')) fail(`unexpected API answer: ${answer}`);
if (answer.includes('__Host-oidc-bff')) fail('the gateway cookie reached the API');
await shot('api-called');

await page.click('#post-api');
await page.waitForFunction(() => document.querySelector('#api-result').textContent.includes('"method": "POST"'));
await shot('api-post-with-csrf-header');

// 4b. A WebSocket through the gateway: the demo API greets the token's owner.
await page.click('#ws-open');
await page.waitForFunction(() => document.querySelector('#ws-log').textContent.includes('Hello, alice'), null, { timeout: 10000 })
  .catch(async () => { await shot('failed-websocket'); fail(`no WebSocket greeting: ${await page.textContent('#ws-log')}`); });
await page.click('#ws-send');
await page.waitForFunction(() => document.querySelector('#ws-log').textContent.includes('alice said: ping'), null, { timeout: 10000 })
  .catch(async () => { await shot('failed-websocket-echo'); fail(`no WebSocket answer: ${await page.textContent('#ws-log')}`); });
await shot('websocket');

// 5. Reload: still logged in (the session lives server-side).
await page.reload();
await expectVisible('#authenticated', 'the logged-in view after reload');
await page.locator('#sessions tbody tr').first().waitFor();
await shot('reloaded-still-logged-in');

// 6. No token in anything the gateway sent the page.
const idp = async (path) => (await fetch(`${issuer}${path}`)).json();
const refreshTokens = (await idp('/__test/refresh-tokens')).filter((t) => t.sub === 'alice').map((t) => t.id);
if (refreshTokens.length === 0) fail('the provider issued no refresh token (test setup)');
const jwt = /eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\./;
for (const { url, body } of bodies) {
  if (jwt.test(body)) fail(`a JWT (access or ID token) reached the page in ${url}`);
  for (const rt of refreshTokens) if (body.includes(rt)) fail(`the refresh token reached the page in ${url}`);
}
console.log(`  ✓ no token in ${bodies.length} gateway responses`);

// 6b. alice logs in from a second browser with a WebSocket open; from the
// first, she ends that session ("Your sessions" → Revoke). The second
// browser's socket is closed with code 4401 and the reason, and its page
// says the session was ended from another session.
const context2 = await browser.newContext({ viewport: { width: 1100, height: 900 } });
const page2 = await context2.newPage();
page2.on('pageerror', (e) => console.error('page error (second browser):', e.message));
await page2.goto(app);
await logIn(page2);
await page2.locator('#authenticated').waitFor({ state: 'visible', timeout: 10000 })
  .catch(() => fail('the second browser did not log in'));
await page2.click('#ws-open');
await page2.waitForFunction(() => document.querySelector('#ws-log').textContent.includes('Hello, alice'), null, { timeout: 10000 })
  .catch(async () => fail(`no WebSocket greeting in the second browser: ${await page2.textContent('#ws-log')}`));
await page.reload();
await expectVisible('#sessions tbody button', 'the Revoke button for the second browser');
const revokeButtons = page.locator('#sessions tbody button', { hasText: 'Revoke' });
if ((await revokeButtons.count()) !== 1) fail(`expected one other session to revoke, found ${await revokeButtons.count()}`);
await shot('two-sessions');
await revokeButtons.first().click();
await page2.waitForFunction(() => document.querySelector('#ws-state').dataset.reason === 'revoked_by_user', null, { timeout: 20000 })
  .catch(async () => { await shot('failed-websocket-close', page2); fail(`the second browser's socket did not say why it closed: ${await page2.textContent('#ws-state')}`); });
const wsState = await page2.textContent('#ws-state');
if (!wsState.includes('another of your sessions')) fail(`the WebSocket state does not explain the close: ${wsState}`);
console.log(`  ✓ cut WebSocket says: ${wsState}`);
await page2.locator('#ended').waitFor({ state: 'visible', timeout: 10000 })
  .catch(async () => { await shot('failed-ended-notice', page2); fail('the second browser does not say its session ended'); });
const ended = await page2.textContent('#ended');
if (!ended.includes('ended from another of your sessions')) fail(`the ended-session notice does not give the reason: ${ended}`);
if (await page2.getAttribute('#ended', 'data-reason') !== 'revoked_by_user') fail('the notice is not for revoked_by_user');
if (!ended.includes('code 4401, "session ended: revoked_by_user"')) fail(`the notice does not say how the WebSocket was closed: ${ended}`);
await expectVisible('#authenticated', 'the first browser, still logged in');
await shot('session-ended-elsewhere', page2);
await context2.close();

// 7. Log out (through the provider's end-session endpoint and back to the
// gateway's confirmation page).
await page.click('#logout');
await page.waitForURL(`${app}/auth/logged-out`, { timeout: 15000 });
await expectVisible('text=You are logged out', 'the logged-out confirmation');
await shot('logged-out');
if ((await context.cookies(app)).some((c) => c.name === '__Host-oidc-bff')) fail('the session cookie survived logout');
await page.click('text=Back to the start page');
await expectVisible('#login', 'the logged-out view of the app');

// 8. The API now refuses: the session is gone.
const status = await page.evaluate(async () => (await fetch('/api/hello', { headers: { 'X-CSRF': '1' } })).status);
if (status !== 401) fail(`after logout the API answered ${status}, expected 401`);
console.log('  ✓ API call after logout: 401');

// 9. An error page, rendered for a navigation (an expired login).
await page.goto(`${app}/auth/callback?code=x&state=unknown`);
await expectVisible('text=Log in again', 'the rendered error page');
await shot('error-page');

await browser.close();
stopAll();
console.log(`browser e2e passed; screenshots in ${artifacts}`);
process.exit(0);
