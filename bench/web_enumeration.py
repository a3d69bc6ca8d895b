#!/usr/bin/env python3
"""Answer times of refused sign-ins on the security page, by case (issue 18).

Run by bench/enumeration.sh against a server it prepared; standalone:

    bench/web_enumeration.py --port PORT --count 40 --concurrency 4 --json OUT \
        --argon2-user alice --legacy-user old --throttled-user thr

Cases, interleaved, each attempt over its own TLS connection (timed from the request's
first byte to the answer's last, the handshake excluded):

- unknown-user: a name with no account;
- argon2-user: an account on Poplar's own argon2id hash, wrong password;
- legacy-user: an account still on an imported {SSHA} hash, wrong password;
- throttled: a (user, source) past its free failures, refused without any check.

Every attempt but the throttled ones comes from an address of its own in 127.0.0.0/8,
so that the defence checks each (the throttled case keeps one address on purpose). A
page that tells nothing answers all four with the same page after the same time.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import itertools
import json
import ssl
import statistics
import time
import urllib.parse

CTX = ssl.create_default_context()
CTX.check_hostname = False
CTX.verify_mode = ssl.CERT_NONE

_next = itertools.count(1)


def fresh_source() -> str:
    n = next(_next)
    return f"127.{90 + n // 65536 % 30}.{n // 256 % 256}.{n % 256 or 1}"


def attempt(port: int, user: str, password: str, source: str) -> tuple[int, float]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=CTX, timeout=30,
                                       source_address=(source, 0))
    conn.connect()
    body = urllib.parse.urlencode({"user": user, "password": password})
    headers = {"Content-Type": "application/x-www-form-urlencoded",
               "Sec-Fetch-Site": "same-origin", "Connection": "close"}
    start = time.perf_counter()
    conn.request("POST", "/signin", body=body, headers=headers)
    resp = conn.getresponse()
    resp.read()
    elapsed = (time.perf_counter() - start) * 1000
    conn.close()
    return resp.status, elapsed


def percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, default=40)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--argon2-user", default="alice")
    ap.add_argument("--legacy-user", default="old")
    ap.add_argument("--throttled-user", default="thr")
    ap.add_argument("--audit", help="the server's audit log: private reasons per case")
    ap.add_argument("--json")
    a = ap.parse_args()

    throttled_source = "127.89.0.1"
    # Past the free failures: three wrong passwords, then the fourth is checked too.
    for i in range(4):
        attempt(a.port, a.throttled_user, f"wrong-{i}", throttled_source)

    cases = {
        "unknown-user": lambda i: (f"nobody{i}", f"wrong-{i}", fresh_source()),
        "argon2-user": lambda i: (a.argon2_user, f"wrong-{i}", fresh_source()),
        "legacy-user": lambda i: (a.legacy_user, f"wrong-{i}", fresh_source()),
        "throttled": lambda i: (a.throttled_user, f"wrong-t{i}", throttled_source),
    }
    jobs = [(name, make(i)) for i in range(a.count) for name, make in cases.items()]
    results: dict[str, list[tuple[int, float]]] = {name: [] for name in cases}
    with concurrent.futures.ThreadPoolExecutor(a.concurrency) as pool:
        futures = {pool.submit(attempt, a.port, *args): name for name, args in jobs}
        for f in concurrent.futures.as_completed(futures):
            results[futures[f]].append(f.result())

    summary = {}
    print(f"{'case':<14} {'statuses':<12} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9}")
    for name, got in results.items():
        times = [t for _, t in got]
        statuses = sorted({s for s, _ in got})
        row = {"statuses": statuses, "count": len(got),
               "p50_ms": round(statistics.median(times), 2),
               "p90_ms": round(percentile(times, 90), 2),
               "p99_ms": round(percentile(times, 99), 2)}
        summary[name] = row
        print(f"{name:<14} {str(statuses):<12} {row['p50_ms']:>9.2f} {row['p90_ms']:>9.2f} "
              f"{row['p99_ms']:>9.2f}")
    if a.audit:
        time.sleep(0.5)
        case_of = {a.argon2_user: "argon2-user", a.legacy_user: "legacy-user",
                   a.throttled_user: "throttled"}
        reasons: dict[str, dict[str, int]] = {name: {} for name in cases}
        with open(a.audit) as f:
            for line in f:
                r = json.loads(line)
                if r.get("event") != "web_auth" or r.get("result") != "failure":
                    continue
                name = case_of.get(r.get("user"), "unknown-user")
                reasons[name][r.get("reason")] = reasons[name].get(r.get("reason"), 0) + 1
        for name, counts in reasons.items():
            summary[name]["audit_reasons"] = counts
            print(f"{name:<14} private reasons: {counts}")
    p50s = [r["p50_ms"] for r in summary.values()]
    spread = max(p50s) - min(p50s)
    print(f"p50 spread: {spread:.2f} ms (target: within 5 ms)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"cases": summary, "p50_spread_ms": round(spread, 2),
                       "count": a.count, "concurrency": a.concurrency}, f, indent=2)


if __name__ == "__main__":
    main()
