"""RFC 1939 TRANSACTION commands, their error cases and sizes."""

import re

import pytest

from conftest import DEFAULT_PASSWORD, crlf

M1 = b"From: a@example.org\nTo: alice@example.org\nSubject: one\n\nline 1\nline 2\nline 3\nline 4\nline 5\n"
M2 = (b"From: b@example.org\nSubject: two\nX-Folded: first part\n continued part\n\n"
      b".starts with dot\n..two dots\n.\nend\n")
M3 = b"Subject: three\n\nshort\n"
MSGS = [M1, M2, M3]


@pytest.fixture(scope="module")
def shared(module_server):
    """Read-only server with three messages; sessions must not commit deletions."""
    srv = module_server(limits={"max_bad_commands": 1000})
    for m in MSGS:
        srv.deliver(m)
    return srv


@pytest.fixture
def fresh(server):
    srv = server(limits={"max_bad_commands": 1000})
    for m in MSGS:
        srv.deliver(m)
    return srv


def check_intact(c):
    assert c.stat() == (3, sum(len(crlf(m)) for m in MSGS))


def test_stat_list_retr_sizes(shared):
    with shared.session() as c:
        n, total = c.stat()
        assert n == 3
        sizes = c.list()
        assert sorted(sizes) == [1, 2, 3]
        assert sum(sizes.values()) == total
        for i, m in enumerate(MSGS, 1):
            body = c.retr(i)
            assert body == crlf(m), (i, body)
            assert sizes[i] == len(body), f"LIST size {sizes[i]} != RETR octets {len(body)} for {i}"
            r = c.ok(f"LIST {i}")
            assert r.split()[:3] == ["+OK", str(i), str(len(body))], r
        c.ok("RSET")
        c.quit()


def test_retr_response_line(shared):
    with shared.session() as c:
        r = c.ok("RETR 1")
        body = c.read_body()
        m = re.match(r"\+OK (\d+)", r)
        if m:  # "+OK <octets> octets" is customary; if a number is given it must be right
            assert int(m.group(1)) == len(body), r
        c.quit()


def test_case_insensitive_commands(shared):
    with shared.tls() as c:
        c.ok("user alice")
        c.ok(f"pAsS {DEFAULT_PASSWORD}")
        r = c.ok("stat")
        assert r.startswith("+OK 3 "), r
        c.ok("List")
        c.read_body()
        c.ok("uIdL 1")
        c.ok("ReTr 1")
        assert c.read_body() == crlf(M1)
        c.ok("top 1 0")
        c.read_body()
        c.ok("noop")
        c.ok("capa")
        c.read_body()
        c.ok("dele 1")
        c.ok("rset")
        check_intact(c)
        r = c.ok("quit")
        c.expect_eof()


def test_uidl(shared):
    with shared.session() as c:
        u = c.uidl()
        assert sorted(u) == [1, 2, 3]
        assert len(set(u.values())) == 3
        for n, uid in u.items():
            r = c.ok(f"UIDL {n}")
            assert r.split() == ["+OK", str(n), uid], r
        c.quit()


@pytest.mark.parametrize("msg,k,expected_body_lines", [
    (1, 0, []),
    (1, 2, [b"line 1", b"line 2"]),
    (1, 5, [b"line 1", b"line 2", b"line 3", b"line 4", b"line 5"]),
    (1, 100, [b"line 1", b"line 2", b"line 3", b"line 4", b"line 5"]),
    (2, 2, [b".starts with dot", b"..two dots"]),
    (2, 3, [b".starts with dot", b"..two dots", b"."]),
    (3, 1, [b"short"]),
])
def test_top(shared, msg, k, expected_body_lines):
    src = crlf(MSGS[msg - 1])
    headers = src.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    expected = headers + b"\r\n" + b"".join(l + b"\r\n" for l in expected_body_lines)
    with shared.session() as c:
        _, body = c.multi(f"TOP {msg} {k}")
        assert body == expected
        c.quit()


def test_top_raw_stuffing(shared):
    with shared.session() as c:
        c.ok("TOP 2 3")
        raw = c.read_multiline_raw()
        assert raw[-3:] == [b"..starts with dot", b"...two dots", b".."], raw
        c.quit()


def test_dele_rset(fresh):
    with fresh.session() as c:
        sizes = c.list()
        c.ok("DELE 2")
        n, total = c.stat()
        assert n == 2 and total == sizes[1] + sizes[3], (n, total)
        assert c.list() == {1: sizes[1], 3: sizes[3]}
        assert sorted(c.uidl()) == [1, 3]
        for cmd in ("RETR 2", "LIST 2", "TOP 2 0", "DELE 2", "UIDL 2"):
            r = c.err(cmd)
        c.ok("NOOP")
        r = c.ok("RSET")
        assert c.stat() == (3, sum(sizes.values()))
        assert c.retr(2) == crlf(M2)
        c.quit()
    with fresh.session() as c:
        check_intact(c)
        c.quit()


def test_dele_quit_removes(fresh):
    with fresh.session() as c:
        c.ok("DELE 1")
        c.ok("DELE 3")
        c.quit()
    with fresh.session() as c:
        assert c.stat() == (1, len(crlf(M2)))
        assert c.retr(1) == crlf(M2)
        c.quit()
    assert len(fresh.message_files()) == 1


def test_noop(shared):
    with shared.session() as c:
        c.ok("NOOP")
        c.quit()


ERROR_CASES = [
    "RETR 0", "RETR -1", "RETR abc", "RETR 99999999999999999999", "RETR 4", "RETR 1000",
    "RETR", "RETR 1 2",
    "LIST 0", "LIST -1", "LIST abc", "LIST 4", "LIST 99999999999999999999", "LIST 1 2",
    "UIDL 0", "UIDL -1", "UIDL x", "UIDL 4", "UIDL 1 2",
    "DELE 0", "DELE -1", "DELE abc", "DELE 4", "DELE 99999999999999999999", "DELE", "DELE 1 2",
    "TOP", "TOP 1", "TOP 1 -1", "TOP 1 x", "TOP 0 0", "TOP -1 0", "TOP 4 0", "TOP abc 0",
    "TOP 1 0 0", "TOP 99999999999999999999 0",
    "STAT 1", "NOOP x", "RSET 1",
    "FOO", "XYZZY 1 2 3", "", "RETR1", "DELE1",
    "APOP alice 0123456789abcdef0123456789abcdef",
]


@pytest.mark.parametrize("cmd", ERROR_CASES)
def test_error_cases_keep_session(shared, cmd):
    with shared.session() as c:
        r = c.err(cmd)
        c.ok("NOOP")
        check_intact(c)
        assert c.retr(1) == crlf(M1)
        c.ok("RSET")
        c.quit()


@pytest.mark.parametrize("cmd", ["RETR +1", "RETR 0x1", "RETR 1.0", "RETR \u0661", "DELE \u0661", "RETR 1e0"])
def test_message_number_syntax_is_strict(shared, cmd):
    """RFC 1939: msg is a string of ASCII digits; anything else is an error."""
    with shared.session() as c:
        r = c.cmd(cmd)
        if r.startswith("+OK") and cmd.startswith("RETR"):
            c.read_body()
        assert r.startswith("-ERR"), f"{cmd!r} accepted: {r!r}"
        c.ok("RSET")
        check_intact(c)
        c.quit()


def test_all_errors_in_one_session(shared):
    """Many errors in a row (below max_bad_commands) do not end the session."""
    with shared.session() as c:
        for cmd in ERROR_CASES:
            c.err(cmd)
        check_intact(c)
        c.ok("RSET")
        c.quit()


def test_empty_maildrop(server):
    srv = server()
    with srv.session() as c:
        assert c.stat() == (0, 0)
        assert c.list() == {}
        assert c.uidl() == {}
        c.err("RETR 1")
        c.err("LIST 1")
        c.err("TOP 1 0")
        c.err("DELE 1")
        c.quit()


def test_quit_in_authorization(shared):
    with shared.plain() as c:
        r = c.ok("QUIT")
        assert c.expect_eof() == b""
    with shared.tls() as c:
        c.ok("USER alice")
        c.ok("QUIT")
        assert c.expect_eof() == b""


def test_quit_in_transaction(shared):
    with shared.session() as c:
        c.ok("QUIT")
        assert c.expect_eof() == b""
