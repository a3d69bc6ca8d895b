"""Line, command, time and connection limits."""

import base64
import socket
import ssl
import time


from conftest import DEFAULT_PASSWORD, IO_TIMEOUT, plain_ir, read_audit, tls_context


def test_too_long_command_line(srv):
    with srv.tls() as c:
        r = c.cmd("USER " + "x" * 2000)
        assert r.startswith("-ERR"), r
        c.alive()
        c.login("alice", DEFAULT_PASSWORD)
        r = c.cmd("NOOP " + "x" * 2000)
        assert r.startswith("-ERR"), r
        c.ok("NOOP")
        r = c.cmd("LIST " + "1" * 5000)
        assert r.startswith("-ERR"), r
        c.ok("NOOP")
        assert c.stat() == (0, 0)
        c.quit()


def test_very_long_line_without_newline_then_newline(srv):
    with srv.tls() as c:
        c.send(b"USER " + b"a" * 200_000)
        time.sleep(0.2)
        c.send(b"\r\nCAPA\r\n")
        r = c.readline()
        assert r.startswith("-ERR"), r
        r = c.readline()
        assert r.startswith("+OK"), f"session did not go on after a too-long line: {r!r}"
        c.read_body()
        c.quit()


def test_too_long_line_does_not_leak_into_next_command(srv):
    """The tail of an over-long line must be discarded, not parsed as a command."""
    with srv.session() as c:
        c.send(b"NOOP " + b"x" * 3000 + b" QUIT\r\nNOOP\r\n")
        assert c.readline().startswith("-ERR")
        assert c.readline().startswith("+OK")
        c.expect_silence(0.5)
        c.quit()


def test_line_of_exactly_max_command_line_accepted(server):
    srv = server(limits={"max_command_line": 1024})
    with srv.tls() as c:
        c.ok("USER alice")
        # 1024 bytes including CRLF: parsed as a (wrong) password, not refused as too long
        line = "PASS " + "p" * (1024 - len("PASS ") - 2)
        assert len(line) + 2 == 1024
        r = c.cmd(line)
        assert r.startswith("-ERR [AUTH]"), f"a line of exactly max_command_line bytes was refused: {r!r}"
        c.quit()


def test_max_bad_commands_closes(server):
    srv = server(limits={"max_bad_commands": 10})
    with srv.tls() as c:
        closing = None
        for i in range(1, 13):
            try:
                r = c.cmd(f"BOGUS{i}")
            except AssertionError:  # EOF
                closing = ("eof", i)
                break
            assert r.startswith("-ERR"), r
            if "too many bad commands" in r.lower():
                closing = (r, i)
                break
        assert closing is not None and closing[0] != "eof", \
            f"expected '-ERR too many bad commands' after 10 bad commands, got {closing!r}\n{c.dump()}"
        assert closing[1] in (10, 11), f"closed after {closing[1]} bad commands"
        c.expect_eof(5)


def test_auth_plain_10k_initial_response(srv):
    with srv.tls() as c:
        ir = plain_ir("alice", "p" * 7500)
        assert 9_900 < len(ir) < 16_000
        r = c.cmd("AUTH PLAIN " + ir)
        assert r.startswith("-ERR [AUTH]"), f"10 KB AUTH PLAIN should fail as bad credentials: {r[:200]!r}"
        r = c.auth_plain("alice", DEFAULT_PASSWORD)
        assert r.startswith("+OK"), r
        c.quit()


def test_auth_plain_10k_continuation(srv):
    with srv.tls() as c:
        r = c.cmd("AUTH PLAIN")
        assert r.startswith("+"), r
        r = c.cmd(plain_ir("alice", "p" * 7500))
        assert r.startswith("-ERR [AUTH]"), r[:200]
        c.quit()


def test_auth_line_over_max_auth_line(srv):
    with srv.tls() as c:
        r = c.cmd("AUTH PLAIN " + base64.b64encode(b"\0alice\0" + b"p" * 20_000).decode())
        assert r.startswith("-ERR"), r[:200]
        c.alive()
        c.quit()


def test_idle_timeout_authorization(server):
    srv = server(limits={"idle_timeout_auth_secs": 1})
    with srv.tls() as c:
        t0 = time.monotonic()
        rest = c.expect_eof(10)
        elapsed = time.monotonic() - t0
        assert elapsed >= 0.8, f"closed after {elapsed:.2f}s"
        assert rest == b"" or rest.startswith(b"-ERR"), rest


def test_idle_timeout_is_reset_by_activity(server):
    srv = server(limits={"idle_timeout_auth_secs": 2})
    with srv.tls() as c:
        for _ in range(4):
            time.sleep(1)
            c.alive()
        c.quit()


def _first_line(s: socket.socket, timeout: float = 1.5) -> bytes:
    s.settimeout(timeout)
    got = b""
    try:
        while not got.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    except (socket.timeout, TimeoutError, ConnectionResetError):
        pass
    return got


def test_max_connections_refuses_when_every_session_is_signed_in(server):
    srv = server(users={"alice": DEFAULT_PASSWORD, "bob": "bob pw"}, limits={"max_connections": 2})
    a = srv.session("alice")
    b = srv.session("bob")
    s = socket.create_connection(("127.0.0.1", srv.pop3_port), timeout=IO_TIMEOUT)
    got = _first_line(s)
    assert not got.startswith(b"+OK"), f"third connection greeted although max_connections = 2: {got!r}"
    # RFC 3206: a temporary condition, so the plain port says so before closing
    assert got.startswith(b"-ERR [SYS/TEMP]"), got
    s.close()
    # the implicit-TLS port never greets the connection over the limit either
    t = socket.create_connection(("127.0.0.1", srv.pop3s_port), timeout=IO_TIMEOUT)
    try:
        t = tls_context(srv.cert).wrap_socket(t, server_hostname="localhost")
        t.settimeout(1.5)
        greeting = t.recv(100)
    except (OSError, ssl.SSLError):
        greeting = b""
    assert not greeting.startswith(b"+OK"), greeting
    t.close()
    # Signed-in sessions are never closed to make room.
    a.ok("NOOP")
    b.ok("NOOP")
    a.quit()
    a.close()
    # a slot is free again
    deadline = time.monotonic() + 5
    while True:
        try:
            c = srv.plain()
            c.quit()
            break
        except (AssertionError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    b.quit()
    b.close()
    records = [r for r in read_audit(srv.data_dir / "audit.log") if r["event"] == "refused"]
    assert {(r["listener"], r["reason"]) for r in records} == {("pop3", "busy"), ("pop3s", "busy")}, records


def test_at_max_connections_the_connection_silent_longest_makes_room(server):
    # (A long busy timeout: at 2 of 2 the server is busy throughout, and the sweep
    # must not be what closes anyone here.)
    srv = server(limits={"max_connections": 2, "idle_timeout_auth_busy_secs": 60})
    oldest = srv.plain()
    time.sleep(0.05)
    newer = srv.tls()
    time.sleep(0.05)
    # The newcomer is greeted; the connection silent longest (not signed in) is told
    # the server is busy and closed.
    with srv.plain() as third:
        data = oldest.expect_eof(5)
        assert data == b"-ERR [SYS/TEMP] server busy, closing connection; try again later\r\n", data
        newer.alive()
        third.alive()
        # Speaking moves a connection to the back of the line: now `third` spoke last
        # and `newer` is shed for the next one.
        time.sleep(0.05)
        third.alive()
        with srv.tls() as fourth:
            newer.expect_eof(5)
            fourth.login("alice", DEFAULT_PASSWORD)
            third.alive()
            fourth.quit()
        third.quit()
    ends = [r["end"] for r in read_audit(srv.data_dir / "audit.log") if r["event"] == "disconnect"]
    assert ends.count("busy") == 2, ends
    lines = srv.scrape().splitlines()
    assert 'poplar_connections_shed_total{listener="pop3"} 1' in lines, lines
    assert 'poplar_connections_shed_total{listener="pop3s"} 1' in lines, lines
    assert "poplar_connection_limit 2" in lines, lines


def test_auth_continuation_over_max_auth_line(srv):
    with srv.tls() as c:
        r = c.cmd("AUTH PLAIN")
        assert r.startswith("+"), r
        r = c.cmd(base64.b64encode(b"\0alice\0" + b"p" * 20_000).decode())
        assert r.startswith("-ERR"), r[:200]
        c.alive()
        r = c.auth_plain("alice", DEFAULT_PASSWORD)
        assert r.startswith("+OK"), r
        c.quit()


def test_network_caps_apply_only_while_busy(server):
    """One /24 may hold more than its share while there is room (an office behind a
    NAT pool); from 90 % of the limit on it gets no more, other networks still do."""
    srv = server(limits={"max_connections": 20, "max_connections_per_network": 3,
                         "max_connections_per_address": 5, "idle_timeout_auth_busy_secs": 60})
    office = [srv.plain(source=f"127.60.0.{i + 1}") for i in range(6)]
    others = [srv.plain(source=f"127.61.{i}.1") for i in range(12)]
    # 18 of 20: busy. The office's /24 holds 6 > 3.
    s = socket.create_connection(("127.0.0.1", srv.pop3_port), timeout=IO_TIMEOUT,
                                 source_address=("127.60.0.7", 0))
    got = _first_line(s)
    s.close()
    assert got.startswith(b"-ERR [SYS/TEMP]"), got
    with srv.plain(source="127.62.0.1") as c:
        c.alive()
    for c in office + others:
        c.alive()
        c.close()


def test_while_busy_silent_connections_are_closed_sooner(server):
    srv = server(limits={"max_connections": 10, "idle_timeout_auth_busy_secs": 1,
                         "idle_timeout_auth_secs": 60})
    signed_in = srv.session("alice")
    quiet = [srv.plain(source=f"127.63.{i}.1") for i in range(8)]
    # 9 of 10: busy, and every connection silent before sign-in for a second goes.
    for c in quiet:
        assert b"-ERR [SYS/TEMP] server busy" in c.expect_eof(6)
    signed_in.ok("NOOP")
    # Not busy any more: silence gets its usual time again.
    calm = [srv.plain(source=f"127.64.{i}.1") for i in range(3)]
    time.sleep(2.5)
    for c in calm:
        c.alive()
        c.quit()
    signed_in.quit()


def test_bytes_without_a_command_are_silence(server):
    """A client that trickles bytes but never completes a command stays silent since
    it was admitted: it is shed before one that spoke later (and its bytes are never
    read as a command)."""
    srv = server(limits={"max_connections": 3, "idle_timeout_auth_busy_secs": 60})
    spoke = srv.plain(source="127.65.0.1")
    trickler = srv.plain(source="127.65.1.1")
    time.sleep(0.05)
    spoke.alive()  # a whole command, after the trickler was admitted
    time.sleep(0.05)
    trickler.send(b"CA")  # half a command, later still
    time.sleep(0.05)
    third = srv.plain(source="127.65.2.1")
    with srv.plain(source="127.65.3.1") as fourth:
        assert b"-ERR [SYS/TEMP] server busy" in trickler.expect_eof(5)
        spoke.alive()
        third.alive()
        fourth.alive()


def test_a_stalled_stls_handshake_can_be_shed(server):
    srv = server(limits={"max_connections": 2, "idle_timeout_auth_busy_secs": 60})
    stalled = srv.plain(source="127.66.0.1")
    stalled.ok("STLS")  # and never starts the handshake
    time.sleep(0.05)
    other = srv.plain(source="127.66.1.1")
    time.sleep(0.05)
    other.alive()
    with srv.plain(source="127.66.2.1") as newcomer:
        assert stalled.expect_eof(5) == b""  # closed; in TLS, nothing can be said in clear
        newcomer.alive()
        other.alive()


def test_a_banned_address_evicts_no_one(server):
    srv = server(auth={"plaintext_networks": ["127.0.0.0/8"], "failure_delay_ms": 0},
                 defence={"ban_accounts": 3},
                 limits={"max_connections": 3, "idle_timeout_auth_busy_secs": 60})
    banned = "127.67.0.1"
    for user in ("carol", "dave", "erin"):
        with srv.plain(source=banned) as c:
            c.ok(f"USER {user}")
            c.err("PASS Summer2024!")
    held = [srv.plain(source=f"127.68.{i}.1") for i in range(3)]
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", srv.pop3_port), timeout=IO_TIMEOUT,
                                     source_address=(banned, 0))
        got = _first_line(s)
        s.close()
        assert got.startswith(b"-ERR [SYS/TEMP] too many failed sign-ins"), got
    for c in held:
        c.alive()
    # A welcome newcomer still makes room.
    with srv.plain(source="127.69.0.1") as c:
        c.alive()
        assert b"-ERR [SYS/TEMP] server busy" in held[0].expect_eof(5)
