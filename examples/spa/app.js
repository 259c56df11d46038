// The demo SPA: everything goes through the gateway on this origin. Every
// call carries the anti-CSRF header the gateway requires on state-changing
// requests (harmless on the others).
'use strict';

const CSRF = { 'X-CSRF': '1' };
const $ = (id) => document.getElementById(id);
let socket = null;
// How the gateway closed the last WebSocket when its session ended, if it did.
let socketCut = null;

async function api(method, path, body) {
  const headers = { ...CSRF, Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'same-origin',
  });
  let data = null;
  try { data = await res.json(); } catch { /* not JSON */ }
  return { status: res.status, data };
}

function show(section) {
  for (const id of ['loading', 'anonymous', 'authenticated']) $(id).hidden = id !== section;
}

function showError(message) {
  const el = $('error');
  el.textContent = message;
  el.hidden = !message;
}

const when = (secs) => (secs ? new Date(secs * 1000).toLocaleString() : '-');

// Why a session ended: the `reason` of the gateway's 401 `session_expired`
// (and of the WebSocket close code 4401). A cookie the gateway never issued
// reads as "expired" too.
const ENDED = {
  expired: 'Your session expired.',
  logged_out: 'You logged out.',
  revoked_by_user: 'Your session was ended from another of your sessions (another browser or device).',
  revoked_by_operator: 'An administrator ended your session.',
  ended_at_provider: 'You were logged out at the identity provider.',
  refresh_refused: 'The identity provider no longer accepts your session.',
  session_limit: 'Your session was closed because you logged in on too many devices.',
};
const endedText = (reason) => ENDED[reason] ?? 'Your session ended.';

// The gateway clears the cookie with its first 401, so the reason is shown
// from that answer: later calls only say "not logged in".
function sessionEnded(data) {
  const notice = $('ended');
  if (data?.error === 'session_expired') {
    notice.textContent = `${endedText(data.reason)} Log in again to continue.`
      + (socketCut ? `\nThe live WebSocket was closed by the gateway: ${socketCut}.` : '');
    notice.dataset.reason = data.reason ?? 'expired';
    notice.hidden = false;
  }
  if (socket) socket.close(1000, 'logged out');
  show('anonymous');
}

async function loadUser() {
  const { status, data } = await api('GET', '/auth/user');
  if (status === 401) return sessionEnded(data);
  if (status !== 200) {
    show('anonymous');
    return showError(`Could not load your session: ${data?.message ?? status}`);
  }
  showError('');
  $('ended').hidden = true;
  socketCut = null;
  $('name').textContent = data.claims.name ?? data.claims.preferred_username ?? data.sub;
  $('expires').textContent = when(data.session.expires_at);
  $('claims').textContent = JSON.stringify(data.claims, null, 2);
  $('logout-sid').value = data.logout_token;
  show('authenticated');
  await loadSessions();
}

async function loadSessions() {
  const { status, data } = await api('GET', '/auth/sessions');
  const body = $('sessions').querySelector('tbody');
  body.replaceChildren();
  if (status !== 200) return;
  for (const s of data.sessions) {
    const tr = document.createElement('tr');
    const cells = [when(s.created_at), when(s.last_active_at), s.last_ip ?? '-', (s.user_agent ?? '-').slice(0, 48)];
    for (const text of cells) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.append(td);
    }
    const td = document.createElement('td');
    if (s.current) {
      td.textContent = 'this browser';
      td.className = 'muted';
    } else {
      const b = document.createElement('button');
      b.textContent = 'Revoke';
      b.className = 'small';
      b.addEventListener('click', async () => {
        const r = await api('POST', `/auth/sessions/${s.id}/revoke`);
        if (r.status !== 200) showError(`Revoke failed: ${r.data?.message ?? r.status}`);
        await loadSessions();
      });
      td.append(b);
    }
    tr.append(td);
    body.append(tr);
  }
}

async function callApi(method, path, body) {
  const out = $('api-result');
  const { status, data } = await api(method, path, body);
  out.hidden = false;
  out.className = status === 200 ? 'result ok' : 'result failed';
  out.textContent = `HTTP ${status}\n${JSON.stringify(data, null, 2)}`;
  if (status === 401) sessionEnded(data);
}

// What a close event means, in words: 4401 is the gateway cutting the
// socket because the session ended (reason `session ended: <reason>`);
// 1006 is a connection lost without a close frame.
function describeClose(e) {
  if (e.code === 4401) {
    const reason = e.reason.replace(/^session ended: /, '');
    return { text: `closed: session ended — ${endedText(reason)}`, reason };
  }
  if (e.code === 1000) return { text: 'closed (1000: normal closure)' };
  if (e.code === 1006) return { text: 'closed (1006: connection lost — the server or network went away)' };
  return { text: `closed (${e.code}${e.reason ? `: ${e.reason}` : ''})` };
}

function openSocket() {
  if (socket) socket.close();
  const log = $('ws-log');
  const note = (line) => {
    log.hidden = false;
    log.textContent += `${line}\n`;
  };
  const scheme = window.location.protocol === 'https:' ? 'wss' : 'ws';
  socket = new WebSocket(`${scheme}://${window.location.host}/api/live`);
  $('ws-state').textContent = 'connecting…';
  socket.addEventListener('open', () => {
    $('ws-state').textContent = 'open';
    $('ws-send').disabled = false;
  });
  socket.addEventListener('message', (e) => note(`← ${e.data}`));
  socket.addEventListener('close', (e) => {
    const { text, reason } = describeClose(e);
    $('ws-state').textContent = text;
    if (reason) {
      $('ws-state').dataset.reason = reason;
      socketCut = `code ${e.code}, "${e.reason}"`;
    }
    note(`✕ ${text}`);
    $('ws-send').disabled = true;
    socket = null;
    // The session is over: ask the gateway why, once, while the cookie
    // still names it.
    if (e.code === 4401) loadUser().catch(() => {});
  });
}

function init() {
  $('visible-cookies').textContent = document.cookie || '(none: the session cookie is HttpOnly)';
  $('login').addEventListener('click', () => {
    const back = window.location.pathname + window.location.search;
    window.location.assign(`/auth/login?return_to=${encodeURIComponent(back)}`);
  });
  $('logout').addEventListener('click', async () => {
    const { status, data } = await api('POST', '/auth/logout');
    if (status === 200 && data?.redirect_url) window.location.assign(data.redirect_url);
    else showError(`Logout failed: ${data?.message ?? status}`);
  });
  $('call-api').addEventListener('click', () => callApi('GET', '/api/hello'));
  $('ws-open').addEventListener('click', openSocket);
  $('ws-send').addEventListener('click', () => {
    const text = $('ws-input').value;
    if (!socket || !text) return;
    socket.send(text);
    $('ws-log').textContent += `→ ${text}\n`;
  });
  $('post-api').addEventListener('click', () => callApi('POST', '/api/echo', { hello: 'from the SPA' }));
  // Coming back to the tab: the session may have ended meanwhile.
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && !$('authenticated').hidden) loadUser().catch(() => {});
  });
  loadUser().catch((e) => {
    show('anonymous');
    showError(`The gateway did not answer: ${e.message}`);
  });
}

document.addEventListener('DOMContentLoaded', init);
