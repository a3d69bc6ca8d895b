"""Sign-in: USER/PASS (RFC 1939), AUTH PLAIN (RFC 5034 + RFC 4616), response codes
(RFC 2449 / RFC 3206), [IN-USE], no account enumeration."""

import base64
import poplib
import time

import pytest

from conftest import DEFAULT_PASSWORD, plain_ir, tls_context


def test_user_pass_success(srv):
    with srv.tls() as c:
        r = c.ok("USER alice")
        r = c.ok(f"PASS {DEFAULT_PASSWORD}")
        assert c.stat() == (0, 0)
        c.quit()


def test_auth_plain_initial_response(srv):
    with srv.tls() as c:
        r = c.auth_plain("alice", DEFAULT_PASSWORD)
        assert r.startswith("+OK"), r
        assert c.stat() == (0, 0)
        c.quit()


def test_auth_plain_authzid_equal_to_authcid(srv):
    with srv.tls() as c:
        r = c.auth_plain("alice", DEFAULT_PASSWORD, authzid="alice")
        assert r.startswith("+OK"), r
        c.quit()


def test_auth_plain_other_authzid_refused(server):
    srv = server(users={"alice": DEFAULT_PASSWORD, "bob": "bob pw"})
    with srv.tls() as c:
        r = c.auth_plain("alice", DEFAULT_PASSWORD, authzid="bob")
        assert r.startswith("-ERR"), r
        c.err("STAT")


def test_auth_plain_empty_challenge(srv):
    with srv.stls() as c:
        r = c.cmd("AUTH PLAIN")
        assert r.rstrip() == "+", f"expected an empty '+ ' challenge, got {r!r}"
        r = c.cmd(plain_ir("alice", DEFAULT_PASSWORD))
        assert r.startswith("+OK"), r
        assert c.stat() == (0, 0)
        c.quit()


def test_auth_plain_empty_initial_response_equals(srv):
    """RFC 5034: '=' is an empty initial response; PLAIN then fails (or challenges)."""
    with srv.tls() as c:
        r = c.cmd("AUTH PLAIN =")
        if r.startswith("+"):
            r = c.cmd("*")
        assert r.startswith("-ERR"), r
        c.login("alice", DEFAULT_PASSWORD)
        c.quit()


def test_auth_plain_abort(srv):
    with srv.tls() as c:
        r = c.cmd("AUTH PLAIN")
        assert r.startswith("+"), r
        r = c.cmd("*")
        assert r.startswith("-ERR"), r
        c.err("STAT")
        # the session goes on and sign-in still works
        r = c.auth_plain("alice", DEFAULT_PASSWORD)
        assert r.startswith("+OK"), r
        c.quit()


@pytest.mark.parametrize("payload", ["not base64!!", "YWxpY2U=", base64.b64encode(b"\0alice").decode(),
                                     base64.b64encode(b"a\0b\0c\0d").decode()])
def test_auth_plain_malformed(srv, payload):
    with srv.tls() as c:
        r = c.cmd("AUTH PLAIN " + payload)
        assert r.startswith("-ERR"), r
        c.alive()
        c.login("alice", DEFAULT_PASSWORD)
        c.quit()


def test_auth_unknown_mechanism(srv):
    with srv.tls() as c:
        r = c.cmd("AUTH X-UNKNOWN-MECH")
        assert r.startswith("-ERR"), r
        c.alive()
        c.quit()


def _fail_line_userpass(srv, user, password):
    with srv.tls() as c:
        r1 = c.ok(f"USER {user}")
        r2 = c.cmd(f"PASS {password}")
        return r1.replace(user, "<u>"), r2


def _fail_line_plain(srv, user, password):
    with srv.tls() as c:
        return c.auth_plain(user, password)


def test_wrong_password_and_unknown_user_identical(srv):
    u1, wrong_pw = _fail_line_userpass(srv, "alice", "wrong password")
    u2, unknown = _fail_line_userpass(srv, "nosuchuser", "wrong password")
    assert wrong_pw.startswith("-ERR [AUTH]"), wrong_pw
    assert wrong_pw == unknown, (wrong_pw, unknown)
    assert u1 == u2, f"USER reply differs for existing and unknown accounts: {u1!r} vs {u2!r}"
    p1 = _fail_line_plain(srv, "alice", "wrong password")
    p2 = _fail_line_plain(srv, "nosuchuser", "wrong password")
    assert p1.startswith("-ERR [AUTH]"), p1
    assert p1 == p2, (p1, p2)


def test_failed_sign_in_then_retry_same_session(srv):
    with srv.tls() as c:
        c.ok("USER alice")
        r = c.cmd("PASS nope")
        assert r.startswith("-ERR [AUTH]"), r
        # RFC 1939 allows closing after a failed PASS; Poplar keeps the session.
        c.login("alice", DEFAULT_PASSWORD)
        c.quit()


def test_password_with_spaces_poplib(srv):
    assert " " in DEFAULT_PASSWORD
    p = poplib.POP3_SSL("localhost", srv.pop3s_port, context=tls_context(srv.cert), timeout=15)
    try:
        p.user("alice")
        assert p.pass_(DEFAULT_PASSWORD).startswith(b"+OK")
        p.quit()
    finally:
        p.close()


def test_password_correct_horse(server):
    srv = server(users={"alice": "correct horse battery staple"})
    p = poplib.POP3_SSL("localhost", srv.pop3s_port, context=tls_context(srv.cert), timeout=15)
    try:
        p.user("alice")
        assert p.pass_("correct horse battery staple").startswith(b"+OK")
        assert p.stat() == (0, 0)
        p.quit()
    finally:
        p.close()
    # a prefix of the password is not enough
    with srv.tls() as c:
        c.ok("USER alice")
        r = c.cmd("PASS correct horse")
        assert r.startswith("-ERR [AUTH]"), r


def test_username_case_insensitive(srv):
    with srv.tls() as c:
        c.login("ALICE", DEFAULT_PASSWORD)
        c.quit()
    with srv.tls() as c:
        r = c.auth_plain("Alice", DEFAULT_PASSWORD)
        assert r.startswith("+OK"), r
        c.quit()


def test_password_is_case_sensitive(srv):
    with srv.tls() as c:
        c.ok("USER alice")
        r = c.cmd(f"PASS {DEFAULT_PASSWORD.upper()}")
        assert r.startswith("-ERR [AUTH]"), r


def test_pass_without_user(srv):
    with srv.tls() as c:
        c.err(f"PASS {DEFAULT_PASSWORD}")
        c.err("STAT")
        c.login("alice", DEFAULT_PASSWORD)
        c.quit()


@pytest.mark.parametrize("cmd", ["STAT", "LIST", "LIST 1", "UIDL", "RETR 1", "TOP 1 0", "DELE 1", "RSET", "NOOP"])
def test_transaction_commands_before_login(srv, cmd):
    with srv.tls() as c:
        c.err(cmd)
        c.login("alice", DEFAULT_PASSWORD)
        c.quit()


@pytest.mark.parametrize("cmd", ["USER alice", f"PASS {DEFAULT_PASSWORD}", "AUTH PLAIN " + plain_ir("alice", DEFAULT_PASSWORD),
                                 "STLS", "UTF8"])
def test_authorization_commands_after_login(srv, cmd):
    with srv.session() as c:
        c.err(cmd)
        assert c.stat() == (0, 0)
        c.quit()


def test_in_use(srv):
    first = srv.session()
    with srv.tls() as second:
        second.ok("USER alice")
        r = second.cmd(f"PASS {DEFAULT_PASSWORD}")
        assert r.startswith("-ERR [IN-USE]"), r
    with srv.tls() as third:
        r = third.auth_plain("alice", DEFAULT_PASSWORD)
        assert r.startswith("-ERR [IN-USE]"), r
    first.quit()
    first.close()
    with srv.session() as again:
        again.quit()


def test_in_use_released_on_dropped_connection(srv):
    first = srv.session()
    first.abort()
    deadline = time.monotonic() + 5
    while True:
        with srv.tls() as c:
            c.ok("USER alice")
            r = c.cmd(f"PASS {DEFAULT_PASSWORD}")
            if r.startswith("+OK"):
                c.quit()
                break
            assert r.startswith("-ERR [IN-USE]"), r
        assert time.monotonic() < deadline, "lock not released 5s after the client dropped the connection"
        time.sleep(0.1)


def test_in_use_wrong_password_gets_auth_not_in_use(srv):
    """A wrong password must not learn that the mailbox is in use."""
    first = srv.session()
    with srv.tls() as c:
        c.ok("USER alice")
        r = c.cmd("PASS wrong")
        assert r.startswith("-ERR [AUTH]"), r
    first.quit()


def test_failure_delay(server):
    srv = server(auth={"failure_delay_ms": 600})
    with srv.tls() as c:
        c.ok("USER alice")
        t0 = time.monotonic()
        r = c.cmd("PASS wrong")
        elapsed = time.monotonic() - t0
        assert r.startswith("-ERR [AUTH]"), r
        assert elapsed >= 0.55, f"failed sign-in answered after {elapsed:.3f}s, expected >= 0.6s"


def test_utf8_user_and_password(server):
    srv = server(users={"jörg": "pässwörd ünïcode"})
    with srv.tls() as c:
        r = c.ok("UTF8")
        c.login("jörg", "pässwörd ünïcode")
        assert c.stat() == (0, 0)
        c.quit()
    with srv.tls() as c:
        c.ok("UTF8")
        r = c.auth_plain("jörg", "pässwörd ünïcode")
        assert r.startswith("+OK"), r
        c.quit()
    # AUTH PLAIN is UTF-8 by definition (RFC 4616) so it works without UTF8 too
    with srv.tls() as c:
        r = c.auth_plain("jörg", "pässwörd ünïcode")
        assert r.startswith("+OK"), r
        c.quit()
    with srv.tls() as c:
        c.ok("UTF8")
        c.ok("USER jörg")
        r = c.cmd("PASS pässwörd unicode")
        assert r.startswith("-ERR [AUTH]"), r


def test_utf8_poplib(server):
    srv = server(users={"jörg": "pässwörd ünïcode"})
    srv.deliver("Subject: grüße\n\nHallo Jörg, schöne Grüße.\n".encode(), user="jörg")
    p = poplib.POP3_SSL("localhost", srv.pop3s_port, context=tls_context(srv.cert), timeout=15)
    try:
        assert p.utf8().startswith(b"+OK")
        p.user("jörg")
        p.pass_("pässwörd ünïcode")
        resp, lines, octets = p.retr(1)
        assert lines == [b"Subject: gr\xc3\xbc\xc3\x9fe", b"", "Hallo Jörg, schöne Grüße.".encode()]
        p.quit()
    finally:
        p.close()
