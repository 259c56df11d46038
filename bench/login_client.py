#!/usr/bin/env python3
"""Logs N users in through the gateway and the dev provider's form, one
after another, the way a browser does: one kept-alive connection per
origin (the gateway's, the provider's) and a cookie jar per user.

bench/login-cost runs it with CLIENT=keepalive; its default client (curl)
opens a new connection per request, which charges the gateway an accept,
a handshake-free HTTP/1 start and a close for each of a login's two
gateway requests.

    login_client.py <gateway-origin> <count> <user-prefix> [fresh]
    PAUSE_MS=25 login_client.py …   # wait that long before each request

With `fresh` (CLIENT=fresh) it opens a new connection for every request
and closes it after the answer, as curl does, but without curl's process
start per request: a login then takes a few milliseconds instead of
tens, so the gateway's CPU per login shows what the connections cost
rather than what a slow client's pauses cost it (caches gone cold, idle
timers, more wake-ups from deeper sleep). PAUSE_MS puts such pauses back
(curl's are 20-30 ms per request on a loaded 2-core machine), to measure
what they cost apart from the connections.
"""

import http.client
import os
import re
import sys
import time
from urllib.parse import urlsplit, urljoin


PAUSE = float(os.environ.get("PAUSE_MS", "0")) / 1000


class Origins:
    """One kept-alive connection per scheme://host:port."""

    def __init__(self, fresh=False):
        self.conns = {}
        self.fresh = fresh

    def request(self, method, url, headers, body=None):
        if PAUSE:
            time.sleep(PAUSE)
        u = urlsplit(url)
        key = (u.scheme, u.hostname, u.port)
        for attempt in (1, 2):
            conn = self.conns.get(key)
            if conn is None:
                # Connect to the address, name the host as the URL does.
                host = "127.0.0.1" if u.hostname == "localhost" else u.hostname
                conn = http.client.HTTPConnection(host, u.port, timeout=30)
                self.conns[key] = conn
            path = u.path + ("?" + u.query if u.query else "")
            try:
                conn.request(method, path or "/", body=body, headers={"Host": u.netloc, **headers})
                resp = conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed an idle connection: open a new one once.
                conn.close()
                del self.conns[key]
                if attempt == 2:
                    raise
                continue
            if self.fresh or resp.getheader("connection", "").lower() == "close":
                conn.close()
                del self.conns[key]
            return resp, data
        raise RuntimeError("unreachable")


class Jar:
    """Cookies by origin host, enough for these two servers."""

    def __init__(self):
        self.by_host = {}

    def header(self, url):
        cookies = self.by_host.get(urlsplit(url).hostname, {})
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())} if cookies else {}

    def store(self, url, resp):
        cookies = self.by_host.setdefault(urlsplit(url).hostname, {})
        for line in resp.headers.get_all("Set-Cookie") or []:
            pair, _, attrs = line.partition(";")
            name, _, value = pair.strip().partition("=")
            gone = re.search(r"max-age=0\b", attrs, re.I) or "1970" in attrs
            if gone or value == "":
                cookies.pop(name, None)
            else:
                cookies[name] = value


def login(origins, gateway, user):
    jar = Jar()

    def go(method, url, body=None, headers=None):
        h = {**jar.header(url), **(headers or {})}
        resp, data = origins.request(method, url, h, body)
        jar.store(url, resp)
        return resp, data

    url = gateway + "/auth/login?return_to=/"
    resp, _ = go("GET", url)
    for _ in range(10):  # follow redirects until the provider's form
        if resp.status not in (302, 303):
            break
        url = urljoin(url, resp.getheader("Location"))
        resp, data = go("GET", url)
    action = re.search(rb'action="([^"]*)"', data)
    if not action:
        raise SystemExit(f"no login form for {user} at {url} ({resp.status})")
    url = urljoin(url, action.group(1).decode())
    body = f"login={user}&password={user}-password"
    resp, _ = go("POST", url, body, {"Content-Type": "application/x-www-form-urlencoded"})
    for _ in range(10):  # back through the provider to the gateway's callback
        if resp.status not in (302, 303):
            break
        url = urljoin(url, resp.getheader("Location"))
        resp, _ = go("GET", url)
        if urlsplit(url).path.endswith("/auth/callback"):
            break
    if "__Host-oidc-bff" not in jar.by_host.get(urlsplit(gateway).hostname, {}):
        raise SystemExit(f"login of {user} failed at {url} ({resp.status})")


def main():
    gateway, count, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    origins = Origins(fresh=sys.argv[4:] == ["fresh"])
    for n in range(1, count + 1):
        login(origins, gateway, f"{prefix}{n}")


if __name__ == "__main__":
    main()
