// The demo SPA: everything goes through the gateway on this origin. Every
// call carries the anti-CSRF header the gateway requires on state-changing
// requests (harmless on the others).
'use strict';

const CSRF = { 'X-CSRF': '1' };
const $ = (id) => document.getElementById(id);

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

async function loadUser() {
  const { status, data } = await api('GET', '/auth/user');
  if (status === 401) return show('anonymous');
  if (status !== 200) {
    show('anonymous');
    return showError(`Could not load your session: ${data?.message ?? status}`);
  }
  showError('');
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
  if (status === 401) await loadUser();
}

let socket = null;

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
    $('ws-state').textContent = `closed (${e.code})`;
    $('ws-send').disabled = true;
    socket = null;
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
  loadUser().catch((e) => {
    show('anonymous');
    showError(`The gateway did not answer: ${e.message}`);
  });
}

document.addEventListener('DOMContentLoaded', init);
