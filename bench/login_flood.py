#!/usr/bin/env python3
"""Fires anonymous `GET /auth/login` requests at a gateway on loopback over
keep-alive connections (stdlib asyncio only) and prints a JSON summary:
how many were sent, the status counts, requests per second, and the
largest Set-Cookie seen. Used by bench/login-flood.

    login_flood.py --port 19304 --requests 20000 --connections 32 --return-to-len 1500
"""

import argparse
import asyncio
import collections
import json
import time
import urllib.parse


async def worker(port, path, count, statuses, largest_cookie):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Accept: text/html\r\nSec-Fetch-Mode: navigate\r\n\r\n"
    ).encode()
    try:
        for _ in range(count):
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            statuses[lines[0].split(" ")[1]] += 1
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.lower() == "content-length":
                    length = int(value.strip())
                elif name.lower() == "set-cookie":
                    largest_cookie[0] = max(largest_cookie[0], len(value.strip()))
            if length:
                await reader.readexactly(length)
    finally:
        writer.close()


async def flood(args):
    target = "/app?q=" + "x" * max(0, args.return_to_len - 7)
    path = "/auth/login?return_to=" + urllib.parse.quote(target, safe="")
    statuses = collections.Counter()
    largest_cookie = [0]
    per = [args.requests // args.connections] * args.connections
    per[0] += args.requests - sum(per)
    started = time.monotonic()
    await asyncio.gather(
        *(worker(args.port, path, n, statuses, largest_cookie) for n in per)
    )
    elapsed = time.monotonic() - started
    return {
        "requests": sum(statuses.values()),
        "statuses": dict(statuses),
        "seconds": round(elapsed, 2),
        "per_second": round(sum(statuses.values()) / elapsed),
        "largest_set_cookie_bytes": largest_cookie[0],
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--return-to-len", type=int, default=1500)
    print(json.dumps(asyncio.run(flood(p.parse_args()))))


if __name__ == "__main__":
    main()
