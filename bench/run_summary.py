#!/usr/bin/env python3
"""Summarises bench/run's measurements: one TSV row per case per round in,
a Markdown table of medians (with the min-max range over the rounds) out.

Input columns (tab-separated, a header line first):

    round case requests seconds rps p50_ms p99_ms non2xx socket_errors
    gateway_ticks proxy_nginx_ticks apache_ticks upstream_ticks redis_ticks
    wrk_ticks proxy_user_ticks

`*_ticks` are utime+stime clock ticks (/proc/<pid>/stat; nginx summed over
its master and workers, Apache over its master and children) spent by that
process during the case's measured run; `apache_ticks` may be missing (a
TSV from before the mod-auth-openidc case), read as 0. `proxy_user_ticks`
is the utime part of the case's proxy (its user space; the rest of its
CPU is the kernel's); missing in older TSVs, where the split is not
printed. CPU per request = ticks * 1e6 / clk_tck / requests, in microseconds.

    run_summary.py --clk-tck 100 results.tsv     # prints the Markdown
    run_summary.py --self-test                   # checks itself
"""

import argparse
import csv
import statistics
import sys

CASES = [
    "direct",
    "nginx-default",
    "nginx-keepalive",
    "bff-authenticated",
    "bff-no-auth-route",
    "bff-b-authenticated",
    "bff-b-no-auth-route",
    "mod-auth-openidc",
    "floor-raw",
    "floor-hyper-conn",
    "floor-hyper-legacy",
    "floor-hyper-auto",
]
PROCESSES = ["gateway", "proxy_nginx", "apache", "upstream", "redis", "wrk"]
# Which process is "the proxy" of each case.
PROXY_OF = {
    "direct": None,
    "nginx-default": "proxy_nginx",
    "nginx-keepalive": "proxy_nginx",
    "bff-authenticated": "gateway",
    "bff-no-auth-route": "gateway",
    # A/B runs: a second gateway binary (bench/run's BFF_B).
    "bff-b-authenticated": "gateway",
    "bff-b-no-auth-route": "gateway",
    # The peer: Apache with mod_auth_openidc.
    "mod-auth-openidc": "apache",
    # examples/floor_proxy in each mode; its CPU is in the gateway column.
    "floor-raw": "gateway",
    "floor-hyper-conn": "gateway",
    "floor-hyper-legacy": "gateway",
    "floor-hyper-auto": "gateway",
}
BASELINE = "nginx-keepalive"


def read_rows(lines, clk_tck):
    """Parses the TSV into dicts with numbers and per-request CPU (us)."""
    rows = []
    for r in csv.DictReader(lines, delimiter="\t"):
        requests = int(r["requests"])
        row = {
            "round": int(r["round"]),
            "case": r["case"],
            "requests": requests,
            "rps": float(r["rps"]),
            "p50": float(r["p50_ms"]),
            "p99": float(r["p99_ms"]),
            "non2xx": int(r["non2xx"]),
            "socket_errors": int(r["socket_errors"]),
        }
        for p in PROCESSES:
            ticks = int(r.get(p + "_ticks") or 0)
            row[p] = ticks * 1e6 / clk_tck / requests if requests else float("nan")
        proxy = PROXY_OF.get(row["case"])
        row["proxy"] = row[proxy] if proxy else 0.0
        user = r.get("proxy_user_ticks")
        row["proxy_user"] = (
            int(user) * 1e6 / clk_tck / requests if user not in (None, "") and requests else None
        )
        rows.append(row)
    return rows


def spread(values, fmt):
    """`median (min-max)`, or the one value when there is one round."""
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def summarise(rows):
    """The Markdown tables (as a list of lines)."""
    by_case = {}
    for r in rows:
        by_case.setdefault(r["case"], []).append(r)
    cases = [c for c in CASES if c in by_case] + sorted(set(by_case) - set(CASES))
    med = {c: {k: statistics.median(r[k] for r in by_case[c]) for k in ("rps", "p99", "proxy")} for c in cases}
    base = med.get(BASELINE)
    out = [
        "| case | req/s | p50 ms | p99 ms | proxy CPU µs/req | req/s vs nginx keep-alive | proxy CPU vs nginx keep-alive | non-2xx | socket errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cases:
        rs = by_case[c]
        ratio_rps = f"{med[c]['rps'] / base['rps']:.2f}" if base else "–"
        ratio_cpu = (
            f"{med[c]['proxy'] / base['proxy']:.2f}"
            if base and PROXY_OF.get(c) and base["proxy"]
            else "–"
        )
        out.append(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                c,
                spread([r["rps"] for r in rs], "{:,.0f}"),
                spread([r["p50"] for r in rs], "{:.2f}"),
                spread([r["p99"] for r in rs], "{:.2f}"),
                spread([r["proxy"] for r in rs], "{:.1f}") if PROXY_OF.get(c) else "–",
                ratio_rps,
                ratio_cpu,
                sum(r["non2xx"] for r in rs),
                sum(r["socket_errors"] for r in rs),
            )
        )
    out += [
        "",
        "CPU µs per request of each process (median of the rounds, min–max):",
        "",
        "| case | gateway | proxy nginx | apache | upstream nginx | redis | wrk |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cases:
        rs = by_case[c]
        out.append(
            "| {} | {} |".format(
                c, " | ".join(spread([r[p] for r in rs], "{:.1f}") for p in PROCESSES)
            )
        )
    split = [c for c in cases if PROXY_OF.get(c) and all(r["proxy_user"] is not None for r in by_case[c])]
    if split:
        out += [
            "",
            "The proxy's CPU µs per request, user space and kernel (median of the rounds, min–max):",
            "",
            "| case | user space | kernel | user space vs nginx keep-alive |",
            "|---|---:|---:|---:|",
        ]
        base_user = (
            statistics.median(r["proxy_user"] for r in by_case[BASELINE]) if BASELINE in split else None
        )
        for c in split:
            rs = by_case[c]
            user = [r["proxy_user"] for r in rs]
            ratio = f"{statistics.median(user) / base_user:.2f}" if base_user else "–"
            out.append(
                "| {} | {} | {} | {} |".format(
                    c,
                    spread(user, "{:.1f}"),
                    spread([r["proxy"] - r["proxy_user"] for r in rs], "{:.1f}"),
                    ratio,
                )
            )
    return out


def self_test():
    header = "round\tcase\trequests\tseconds\trps\tp50_ms\tp99_ms\tnon2xx\tsocket_errors\t" + "\t".join(
        p + "_ticks" for p in PROCESSES
    )
    lines = [
        header,
        "1\tnginx-keepalive\t100000\t10\t10000\t1.0\t4.0\t0\t0\t0\t300\t0\t100\t0\t400",
        "2\tnginx-keepalive\t200000\t10\t20000\t1.0\t5.0\t0\t0\t0\t620\t0\t200\t0\t800",
        "3\tnginx-keepalive\t150000\t10\t15000\t1.0\t6.0\t0\t0\t0\t450\t0\t150\t0\t600",
        "1\tbff-authenticated\t100000\t10\t10000\t2.0\t8.0\t3\t0\t600\t0\t0\t100\t90\t400",
        "1\tmod-auth-openidc\t20000\t10\t2000\t20.0\t80.0\t0\t0\t0\t0\t1400\t20\t30\t80",
    ]
    rows = read_rows(lines, 100)
    assert abs(rows[0]["proxy"] - 30.0) < 1e-9, rows[0]
    assert abs(rows[3]["gateway"] - 60.0) < 1e-9, rows[3]
    table = summarise(rows)
    keep = next(l for l in table if l.startswith("| nginx-keepalive |"))
    assert "15,000 (10,000–20,000)" in keep, keep
    assert "30.0 (30.0–31.0)" in keep, keep
    bff = next(l for l in table if l.startswith("| bff-authenticated |"))
    # 10,000 / 15,000 req/s; 60 / 30 µs; 3 non-2xx.
    assert "| 0.67 | 2.00 | 3 | 0 |" in bff, bff
    # Apache's CPU is the peer's proxy CPU: 1,400 ticks / 20,000 requests.
    assert abs(rows[4]["proxy"] - 700.0) < 1e-9, rows[4]
    peer = next(l for l in table if l.startswith("| mod-auth-openidc |"))
    assert "| 700.0 | 0.13 | 23.33 |" in peer, peer
    # A TSV from before the apache column still reads.
    old = [header.replace("\tapache_ticks", ""), "1\tdirect\t100\t1\t100\t1.0\t1.0\t0\t0\t0\t0\t10\t0\t10"]
    assert read_rows(old, 100)[0]["apache"] == 0
    # Without proxy_user_ticks (older TSVs) no split table is printed.
    assert not any(l.startswith("| case | user space") for l in table), table
    # With it: user space and kernel, and user space against nginx's.
    split_lines = [
        header + "\tproxy_user_ticks",
        "1\tnginx-keepalive\t100000\t10\t10000\t1.0\t4.0\t0\t0\t0\t300\t0\t100\t0\t400\t50",
        "1\tbff-authenticated\t100000\t10\t10000\t2.0\t8.0\t0\t0\t600\t0\t0\t100\t90\t400\t200",
    ]
    split = summarise(read_rows(split_lines, 100))
    assert "| nginx-keepalive | 5.0 | 25.0 | 1.00 |" in split, split
    # 200 user ticks of 600: 20 µs in user space, 40 in the kernel; 4× nginx's 5.
    assert "| bff-authenticated | 20.0 | 40.0 | 4.00 |" in split, split
    print("run_summary self-test: ok")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tsv", nargs="?")
    ap.add_argument("--clk-tck", type=int, default=100)
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args()
    if args.self_test:
        self_test()
        return
    if not args.tsv:
        ap.error("the TSV file is required")
    with open(args.tsv, newline="") as f:
        print("\n".join(summarise(read_rows(f, args.clk_tck))))


if __name__ == "__main__":
    sys.exit(main())
