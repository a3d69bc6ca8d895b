#!/usr/bin/env python3
"""A flood of silent connections against a running Poplar, with a real client beside it.

The flood opens COUNT connections on each port it is given, PER_ADDRESS from each
source address 127.x.y.1 (every address in a /24 of its own), and sends nothing: on
the plain POP3 port it never answers the greeting, on the TLS ports it never starts the
handshake. While they are open, a real client from another /24 signs in, retrieves a
message and quits, ROUNDS times; its sign-in-to-QUIT latency is measured before and
during the flood.

Used by tests/test_overload.py (which asserts that every round succeeds and that
memory comes back after repeated floods) and on its own as a benchmark:

    bench/flood.py --pop3 127.0.0.1:1110 --pop3s 127.0.0.1:1995 --web 127.0.0.1:8443 \\
        --cafile poplar-data/tls/cert.pem --user demo --password PW --floods 3

It prints the latencies (p50, p99, max) before and during each flood, and the
server's RSS/PSS after each flood when --pid is given.
"""

from __future__ import annotations

import argparse
import json
import poplib
import resource
import selectors
import socket
import ssl
import statistics
import time
from dataclasses import dataclass, field


def source_addresses(count: int, per_address: int, first_octet: int = 127) -> list[str]:
    """`count` connections' source addresses: per_address each from 127.x.y.1, every
    address in a /24 of its own (x.y run through 10.0, 10.1, ...)."""
    addrs = []
    n = 0
    while len(addrs) < count:
        x, y = 10 + n // 250, n % 250
        addrs.extend([f"{first_octet}.{x}.{y}.1"] * per_address)
        n += 1
    return addrs[:count]


def raise_open_files(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            raise SystemExit(f"flood: need {need} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


@dataclass
class Flood:
    """Silent connections, held open until `close`."""
    sockets: list[socket.socket] = field(default_factory=list)
    failed: int = 0

    def open(self, host: str, port: int, sources: list[str], timeout: float = 30) -> None:
        """Connects from every source (non-blocking, all at once) and waits until each
        connection is established or failed."""
        sel = selectors.DefaultSelector()
        pending = 0
        for src in sources:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.bind((src, 0))
                s.connect_ex((host, port))
            except OSError:
                s.close()
                self.failed += 1
                continue
            sel.register(s, selectors.EVENT_WRITE)
            pending += 1
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.5):
                s = key.fileobj
                sel.unregister(s)
                pending -= 1
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    self.sockets.append(s)
                else:
                    s.close()
                    self.failed += 1
        for key in list(sel.get_map().values()):
            key.fileobj.close()
            self.failed += 1
        sel.close()

    def close(self) -> None:
        for s in self.sockets:
            s.close()
        self.sockets.clear()


class _SourcedPOP3(poplib.POP3_SSL):
    """poplib over implicit TLS from a chosen source address, to a numeric address
    whose certificate names `servername`."""

    def __init__(self, addr: tuple[str, int], source: str, servername: str,
                 context: ssl.SSLContext, timeout: float):
        self._source, self._servername = source, servername
        super().__init__(addr[0], addr[1], context=context, timeout=timeout)

    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self._source, 0))
        return self.context.wrap_socket(sock, server_hostname=self._servername)


def server_side_connections(port: int) -> int:
    """Established TCP connections whose local port is `port` (on this host: the
    server's side of its connections on that listener), from /proc/net/tcp. The
    client's own count would include connections the kernel never handed to the
    server (a full accept queue drops the handshake's last ACK; the client believes
    it is connected until it sends something)."""
    n = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(name).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                n += 1
    return n


def real_round(pop3s: tuple[str, int], cafile: str, user: str, password: str, source: str,
               servername: str = "localhost", timeout: float = 30) -> float:
    """One real session from `source`: implicit TLS, USER/PASS, STAT, RETR 1, QUIT.
    Returns its duration in seconds; raises on any failure."""
    ctx = ssl.create_default_context(cafile=cafile)
    t0 = time.monotonic()
    p = _SourcedPOP3(pop3s, source, servername, ctx, timeout)
    try:
        p.user(user)
        p.pass_(password)
        count, _ = p.stat()
        if count:
            p.retr(1)
        p.quit()
    finally:
        p.close()
    return time.monotonic() - t0


def web_round(web: tuple[str, int], cafile: str, source: str, servername: str = "localhost",
              timeout: float = 30) -> float:
    """One load of the security page's sign-in form from `source`; its duration."""
    ctx = ssl.create_default_context(cafile=cafile)
    t0 = time.monotonic()
    raw = socket.create_connection(web, timeout, source_address=(source, 0))
    with ctx.wrap_socket(raw, server_hostname=servername) as s:
        s.sendall(f"GET /signin HTTP/1.1\r\nHost: {servername}\r\nConnection: close\r\n\r\n".encode())
        body = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
    if not body.startswith(b"HTTP/1.1 200") or b"<form" not in body:
        raise AssertionError(f"security page: {body[:300]!r}")
    return time.monotonic() - t0


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    k = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def summary(samples: list[float]) -> dict:
    return {
        "n": len(samples),
        "p50_ms": round(statistics.median(samples) * 1000, 1),
        "p99_ms": round(percentile(samples, 99) * 1000, 1),
        "max_ms": round(max(samples) * 1000, 1),
    }


def memory_kib(pid: int) -> dict:
    """The server's RSS and PSS (KiB)."""
    out = {}
    for line in open(f"/proc/{pid}/smaps_rollup"):
        if line.startswith(("Rss:", "Pss:")):
            out[line.split(":")[0].lower()] = int(line.split()[1])
    return out


def parse_addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pop3", type=parse_addr)
    ap.add_argument("--pop3s", type=parse_addr, required=True)
    ap.add_argument("--web", type=parse_addr)
    ap.add_argument("--cafile", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--count", type=int, default=2000, help="silent connections per port")
    ap.add_argument("--per-address", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3,
                    help="real sessions before the measured ones (first sign-ins warm caches)")
    ap.add_argument("--floods", type=int, default=1)
    ap.add_argument("--source", default="127.250.0.1", help="the real client's address")
    ap.add_argument("--pid", type=int, help="the server's pid, for its memory")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    ports = [p for p in (a.pop3, a.pop3s, a.web) if p]
    raise_open_files(a.count * len(ports) + 1024)
    sources = source_addresses(a.count, a.per_address)
    for _ in range(a.warmup):
        real_round(a.pop3s, a.cafile, a.user, a.password, a.source)
    before = [real_round(a.pop3s, a.cafile, a.user, a.password, a.source) for _ in range(a.rounds)]
    report = {"before": summary(before), "floods": []}
    for i in range(a.floods):
        floods = []
        for host, port in ports:
            f = Flood()
            f.open(host, port, sources)
            floods.append(f)
        held = [server_side_connections(port) for _, port in ports]
        during = [real_round(a.pop3s, a.cafile, a.user, a.password, a.source) for _ in range(a.rounds)]
        web = [web_round(a.web, a.cafile, a.source) for _ in range(3)] if a.web else []
        entry = {"opened": [len(f.sockets) for f in floods], "failed": [f.failed for f in floods],
                 "held_by_server": held, "during": summary(during)}
        if web:
            entry["web"] = summary(web)
        for f in floods:
            f.close()
        time.sleep(2)
        if a.pid:
            entry["memory_after_kib"] = memory_kib(a.pid)
        report["floods"].append(entry)
    if a.json:
        print(json.dumps(report))
        return
    b = report["before"]
    print(f"before: p50 {b['p50_ms']} ms, p99 {b['p99_ms']} ms, max {b['max_ms']} ms ({b['n']} rounds)")
    for i, e in enumerate(report["floods"], 1):
        d = e["during"]
        print(f"flood {i}: opened {e['opened']} (failed {e['failed']}), still held by the server "
              f"{e['held_by_server']}; during: p50 {d['p50_ms']} ms, p99 {d['p99_ms']} ms, "
              f"max {d['max_ms']} ms; p99 ratio {d['p99_ms'] / b['p99_ms']:.2f}"
              + (f"; web p50 {e['web']['p50_ms']} ms" if "web" in e else "")
              + (f"; memory after {e['memory_after_kib']}" if "memory_after_kib" in e else ""))


if __name__ == "__main__":
    main()
