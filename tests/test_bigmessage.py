"""A 100 MB message is streamed, not buffered: the server's peak RSS barely moves."""

import hashlib
import os
import re
import socket
import time

from conftest import DEFAULT_PASSWORD, tls_context

TARGET_SIZE = 100 * 1024 * 1024
LINE_LEN = 1000  # octets per line on the wire, CRLF included
BIG_TIMEOUT = 300


def proc_status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            m = re.match(r"(Vm\w+):\s+(\d+) kB", line)
            if m:
                out[m.group(1)] = int(m.group(2))
    return out


def write_big_message(path) -> tuple[int, str]:
    """Write a ~100 MB message with LF line ends (as Postfix does).

    Returns (octets as POP3 counts them, sha256 of the CRLF form)."""
    h = hashlib.sha256()
    total = 0
    header = b"From: big@example.org\nTo: alice@example.org\nSubject: a hundred megabytes\n\n"
    with open(path, "wb") as f:
        f.write(header)
        crlf_header = header.replace(b"\n", b"\r\n")
        h.update(crlf_header)
        total += len(crlf_header)
        i = 0
        chunk_lf, chunk_crlf = [], []
        while total < TARGET_SIZE:
            pad = True
            if i % 997 == 5:
                text, pad = b".", False  # a line that is just a dot
            elif i % 991 == 7:
                text, pad = b"..", False
            elif i % 97 == 0:
                text = b".dot-led line %d " % i
            elif i % 89 == 0:
                text = b"..two dots line %d " % i
            else:
                text = b"line %d " % i
            if pad:
                text = text + b"abcdefghij" * ((LINE_LEN - 2 - len(text)) // 10)
                text = text + b"z" * (LINE_LEN - 2 - len(text))
            chunk_lf.append(text + b"\n")
            chunk_crlf.append(text + b"\r\n")
            total += len(text) + 2
            i += 1
            if len(chunk_lf) >= 1000:
                f.write(b"".join(chunk_lf))
                h.update(b"".join(chunk_crlf))
                chunk_lf, chunk_crlf = [], []
        f.write(b"".join(chunk_lf))
        h.update(b"".join(chunk_crlf))
    return total, h.hexdigest()


def test_retr_100mb_streams(server):
    srv = server()
    md = srv.maildir()
    base = "1700001000.M1P1.big"
    tmp = md / "tmp" / base
    octets, digest = write_big_message(tmp)
    os.rename(tmp, md / "new" / base)

    before = proc_status(srv.pid)

    s = socket.create_connection(("127.0.0.1", srv.pop3s_port), timeout=BIG_TIMEOUT)
    s = tls_context(srv.cert).wrap_socket(s, server_hostname="localhost")
    s.settimeout(BIG_TIMEOUT)
    buf = b""

    def line():
        nonlocal buf
        while b"\r\n" not in buf:
            chunk = s.recv(65536)
            assert chunk, "EOF"
            buf += chunk
        l, buf = buf.split(b"\r\n", 1)
        return l

    assert line().startswith(b"+OK")
    s.sendall(f"USER alice\r\nPASS {DEFAULT_PASSWORD}\r\nLIST 1\r\nRETR 1\r\n".encode())
    assert line().startswith(b"+OK")
    assert line().startswith(b"+OK")
    r = line()
    assert r.split()[:3] == [b"+OK", b"1", str(octets).encode()], (r, octets)
    r = line()
    assert r.startswith(b"+OK"), r

    h = hashlib.sha256()
    received = 0
    done = False
    peak_seen = 0
    paused = False
    t0 = time.monotonic()
    while not done:
        while True:
            i = buf.find(b"\r\n")
            if i < 0:
                break
            l = buf[:i]
            buf = buf[i + 2:]
            if l == b".":
                done = True
                break
            if l.startswith(b"."):
                l = l[1:]
            h.update(l)
            h.update(b"\r\n")
            received += len(l) + 2
        if done:
            break
        assert len(buf) < 1_000_000, "no line end in 1 MB"
        if not paused and received > 10 * 1024 * 1024:
            # a slow client: the server must wait (backpressure), not buffer the rest
            paused = True
            time.sleep(2)
            peak_seen = max(peak_seen, proc_status(srv.pid).get("VmRSS", 0))
        chunk = s.recv(262144)
        assert chunk, f"EOF after {received} octets"
        buf += chunk
        if received and received % (8 * 1024 * 1024) < 262144:
            peak_seen = max(peak_seen, proc_status(srv.pid).get("VmRSS", 0))
    elapsed = time.monotonic() - t0
    assert buf == b"", f"data after the terminator: {buf[:100]!r}"
    # TOP on the huge message needs only its beginning
    s.sendall(b"TOP 1 3\r\n")
    assert line().startswith(b"+OK")
    top = []
    while True:
        l = line()
        if l == b".":
            break
        top.append(l)
    assert top[:4] == [b"From: big@example.org", b"To: alice@example.org", b"Subject: a hundred megabytes", b""], top[:4]
    assert len(top) == 7, len(top)
    s.sendall(b"QUIT\r\n")
    assert line().startswith(b"+OK")
    s.close()

    after = proc_status(srv.pid)
    for sub in ("new", "cur"):  # do not leave 100 MB behind in pytest's kept temp dirs
        for f in (md / sub).glob(base + "*"):
            f.unlink()
    assert received == octets, (received, octets)
    assert h.hexdigest() == digest, "content differs from the delivered message"
    grew_kb = after["VmHWM"] - before["VmHWM"]
    print(f"100 MB RETR in {elapsed:.1f}s; VmHWM {before['VmHWM']} -> {after['VmHWM']} kB "
          f"(+{grew_kb} kB), VmRSS peak during transfer {peak_seen} kB")
    assert grew_kb < 16 * 1024, (
        f"server peak RSS grew by {grew_kb} kB while serving a 100 MB message "
        f"(before {before}, after {after})"
    )
