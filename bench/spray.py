#!/usr/bin/env python3
"""The real user's sign-in time under a password spray (issue 18's benchmark).

Run by bench/spray.sh, which starts a release server with 50 accounts (u0..u49) and
bans and locks off, so that every sprayed guess the defence lets through costs an
argon2id hash: the hashing pool's fairness is all that stands between the spray and the
real user. The real user (u0) signs in over POP3S (AUTH-less USER/PASS inside TLS) from
127.0.0.1, a network familiar to the account (it signs in once before anything is
measured). Each of its sign-ins is timed from the TCP connect to the `+OK` after PASS.

1. idle: ROUNDS sign-ins one after another, nothing else running;
2. spray: SOURCES addresses (one /24 each in 127.0.0.0/8) each start RATE guesses a
   second (a wrong password for the next of the 50 accounts, over the plain port, a new
   connection each, not waiting for the answer) for DURATION seconds, while the real
   user signs in every PAUSE seconds. The spray runs in a process of its own at nice
   19 (an attacker's machine would not share the server's cores, nor the real user's
   client's).

Prints p50/p90/p99/max of both and the spray's answers (by first line), and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import ssl
import statistics
import sys
import time


#: (connect to greeting, PASS to its answer) of every real sign-in, in ms.
PHASES: list[tuple[float, float]] = []


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def summary(xs: list[float]) -> dict:
    return {"count": len(xs), "p50_ms": round(statistics.median(xs), 1),
            "p90_ms": round(pct(xs, 90), 1), "p99_ms": round(pct(xs, 99), 1),
            "max_ms": round(max(xs), 1)}


async def real_sign_in(port: int, ctx: ssl.SSLContext, user: str, password: str) -> float:
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                   server_hostname="localhost")
    try:
        assert (await reader.readline()).startswith(b"+OK")
        greeted = time.perf_counter()
        writer.write(f"USER {user}\r\n".encode())
        assert (await reader.readline()).startswith(b"+OK")
        writer.write(f"PASS {password}\r\n".encode())
        pass_sent = time.perf_counter()
        reply = await reader.readline()
        end = time.perf_counter()
        elapsed = (end - start) * 1000
        PHASES.append(((greeted - start) * 1000, (end - pass_sent) * 1000))
        if not reply.startswith(b"+OK"):
            raise RuntimeError(f"the real user was refused: {reply!r}")
        writer.write(b"QUIT\r\n")
        await reader.readline()
        return elapsed
    finally:
        writer.close()


async def guess(port: int, source: str, user: str, n: int, answers: collections.Counter) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port,
                                                       local_addr=(source, 0))
    except OSError as e:
        answers[f"connect failed: {e.strerror}"] += 1
        return
    try:
        first = await asyncio.wait_for(reader.readline(), 30)
        if not first.startswith(b"+OK"):
            answers[first.decode(errors="replace").strip()[:40] or "closed"] += 1
            return
        writer.write(f"USER {user}\r\nPASS spray-guess-{n}\r\n".encode())
        await reader.readline()
        reply = await asyncio.wait_for(reader.readline(), 30)
        answers[reply.decode(errors="replace").strip()[:40] or "closed"] += 1
        writer.write(b"QUIT\r\n")
    except (OSError, asyncio.TimeoutError) as e:
        answers[type(e).__name__] += 1
    finally:
        writer.close()


async def sprayer(port: int, source: str, rate: float, accounts: int, until: float,
                  answers: collections.Counter, offset: int) -> None:
    tasks = []
    n = offset
    while time.monotonic() < until:
        tasks.append(asyncio.create_task(guess(port, source, f"u{n % accounts}", n, answers)))
        n += 1
        await asyncio.sleep(1 / rate)
    await asyncio.gather(*tasks)


async def spray_only(a: argparse.Namespace) -> None:
    """The spray alone, for DURATION seconds; its answers as JSON on standard output."""
    answers: collections.Counter = collections.Counter()
    until = time.monotonic() + a.duration
    sources = [f"127.{100 + i // 250}.{i % 250}.1" for i in range(a.sources)]
    await asyncio.gather(*(sprayer(a.port, s, a.rate, a.accounts, until, answers, i)
                           for i, s in enumerate(sources)))
    print(json.dumps(dict(answers.most_common())))


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True, help="plain POP3 port (the spray)")
    ap.add_argument("--tls-port", type=int, help="POP3S port (the real user)")
    ap.add_argument("--cafile")
    ap.add_argument("--password")
    ap.add_argument("--sources", type=int, default=200)
    ap.add_argument("--rate", type=float, default=2.0)
    ap.add_argument("--accounts", type=int, default=50)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--pause", type=float, default=0.25)
    ap.add_argument("--spray-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json")
    a = ap.parse_args()
    if a.spray_only:
        await spray_only(a)
        return
    ctx = ssl.create_default_context(cafile=a.cafile)
    ctx.check_hostname = False

    await real_sign_in(a.tls_port, ctx, "u0", a.password)  # the network becomes familiar
    idle = [await real_sign_in(a.tls_port, ctx, "u0", a.password) for _ in range(a.rounds)]
    idle_phases = PHASES[-len(idle):]

    # The spray in a process of its own at the lowest priority, as if from another
    # machine: the real user's client keeps its own share of the CPU and its timings.
    spray = await asyncio.create_subprocess_exec(
        "nice", "-n", "19", sys.executable, __file__, "--spray-only", "--port", str(a.port),
        "--sources", str(a.sources), "--rate", str(a.rate), "--accounts", str(a.accounts),
        "--duration", str(a.duration), stdout=asyncio.subprocess.PIPE)
    until = time.monotonic() + a.duration
    await asyncio.sleep(2)  # the spray reaches its rate
    busy = []
    while time.monotonic() < until - 1:
        busy.append(await real_sign_in(a.tls_port, ctx, "u0", a.password))
        await asyncio.sleep(a.pause)
    spray_phases = PHASES[-len(busy):]
    out, _ = await spray.communicate()
    answers = json.loads(out.decode().strip().splitlines()[-1])

    result = {"idle": summary(idle), "spray": summary(busy),
              "idle_greeting": summary([g for g, _ in idle_phases]),
              "idle_pass": summary([p for _, p in idle_phases]),
              "spray_greeting": summary([g for g, _ in spray_phases]),
              "spray_pass": summary([p for _, p in spray_phases]),
              "spray_answers": answers,
              "sources": a.sources, "rate_per_source": a.rate, "accounts": a.accounts,
              "duration_s": a.duration}
    print(f"{'phase':<15} {'count':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for phase in ("idle", "spray", "idle_greeting", "spray_greeting", "idle_pass",
                  "spray_pass"):
        r = result[phase]
        print(f"{phase:<15} {r['count']:>6} {r['p50_ms']:>8} {r['p90_ms']:>8} {r['p99_ms']:>8} "
              f"{r['max_ms']:>8}")
    print("spray answers:", answers)
    print(f"p99 under spray - idle p99: {result['spray']['p99_ms'] - result['idle']['p99_ms']:.1f} ms"
          " (target: at most 50)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    asyncio.run(main())
