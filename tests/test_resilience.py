"""Hostile clients leave the server answering a normal client: slowloris, a 1 MB line,
10,000 bad commands, 5,000 idle connections (memory per connection bounded), a command
cap and a sign-in deadline."""

import resource
import socket
import time

from conftest import IO_TIMEOUT

HANG_BOUND = 10.0  # seconds a normal client may wait for its session


def normal_client_is_served(srv):
    t0 = time.monotonic()
    c = srv.session("alice")
    c.stat()
    c.quit()
    took = time.monotonic() - t0
    assert took < HANG_BOUND, f"a normal client waited {took:.1f} s"


def vm_rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_slowloris_is_cut_off(server):
    srv = server(limits={"line_timeout_secs": 2, "idle_timeout_auth_secs": 60})
    slow = [srv.plain(source=f"127.80.0.{i + 1}") for i in range(20)]
    t0 = time.monotonic()
    closed = [False] * len(slow)
    # One byte of a line that never ends, every half second: the idle timer alone would
    # never fire, the line timer does.
    while not all(closed) and time.monotonic() - t0 < 8:
        for i, c in enumerate(slow):
            if closed[i]:
                continue
            try:
                c.sock.sendall(b"N")
            except OSError:
                closed[i] = True
        normal_client_is_served(srv)
        time.sleep(0.5)
        for i, c in enumerate(slow):
            c.sock.settimeout(0.01)
            try:
                data = c.sock.recv(4096)
                if data.startswith(b"-ERR command line not completed in time") or data == b"":
                    closed[i] = True
            except (socket.timeout, OSError):
                pass
    took = time.monotonic() - t0
    assert all(closed), f"slowloris clients still connected after {took:.1f} s"
    assert took < 6, took
    for c in slow:
        c.close()


def test_one_megabyte_line(srv):
    with srv.plain() as c:
        c.send(b"USER " + b"x" * 1_000_000 + b"\r\n")
        assert c.readline().startswith("-ERR")
        c.alive()
        c.quit()
    normal_client_is_served(srv)


def test_ten_thousand_bad_commands(server):
    srv = server(limits={"max_connections_per_address": 2000})
    bad_per_connection = srv.config["limits"]["max_bad_commands"]
    sent = 0
    errors = 0
    while sent < 10_000:
        with srv.plain() as c:
            batch = b"".join(b"XYZZY %d\r\n" % (sent + i) for i in range(bad_per_connection))
            c.send(batch)
            sent += bad_per_connection
            data = c.expect_eof()
            errors += data.count(b"-ERR")
    assert errors >= 10_000, errors
    normal_client_is_served(srv)


def test_five_thousand_idle_connections(server):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 12_000
    assert hard >= need, f"RLIMIT_NOFILE hard limit {hard} is below {need}"
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    try:
        # Started after the limit was raised: the server inherits it.
        srv = server(limits={"max_connections": 6000, "max_connections_per_address": 6000,
                             "idle_timeout_auth_secs": 300})
        normal_client_is_served(srv)
        before = vm_rss_kib(srv.pid)
        conns = []
        for i in range(5000):
            s = socket.create_connection(("127.0.0.1", srv.pop3_port), timeout=IO_TIMEOUT)
            conns.append(s)
        # Every one of them greeted: the server holds 5,000 live sessions.
        for s in conns:
            assert s.recv(256).startswith(b"+OK")
        time.sleep(0.5)
        after = vm_rss_kib(srv.pid)
        per_conn = (after - before) / 5000
        print(f"RSS {before} KiB -> {after} KiB: {per_conn:.1f} KiB per idle connection")
        assert per_conn < 64, f"{per_conn:.1f} KiB per idle connection"
        normal_client_is_served(srv)
        for s in conns:
            s.close()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_command_cap(server):
    srv = server(limits={"max_commands": 50})
    c = srv.session("alice")  # two commands: USER, PASS
    c.send(b"NOOP\r\n" * 60)
    data = c.expect_eof()
    assert data.count(b"+OK") == 48, data
    assert data.endswith(b"-ERR too many commands in one session, closing connection\r\n")
    c.close()
    normal_client_is_served(srv)


def test_sign_in_deadline(server):
    srv = server(limits={"auth_timeout_secs": 2, "idle_timeout_auth_secs": 60})
    with srv.plain() as c:
        t0 = time.monotonic()
        # Commands keep the idle timer from firing; the sign-in deadline still does.
        while time.monotonic() - t0 < 1.5:
            c.capa()
            time.sleep(0.3)
        data = c.expect_eof(5)
        assert b"-ERR sign-in not completed in time" in data, data
        assert time.monotonic() - t0 < 4
    # Signed-in sessions are not subject to it.
    with srv.session("alice") as c:
        time.sleep(2.5)
        c.ok("NOOP")
        c.quit()
