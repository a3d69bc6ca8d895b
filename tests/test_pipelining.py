"""RFC 2449 PIPELINING: a whole session sent in one write."""

import re

from conftest import DEFAULT_PASSWORD, crlf, plain_ir

MSG = b"From: a@example.org\nSubject: piped\n\n.dotted\nbody line\n"


def _check_session_responses(c, expected_uid=None):
    assert c.readline().startswith("+OK")          # USER / AUTH
    r = c.readline()
    assert r.startswith("+OK"), r                   # PASS
    r = c.readline()
    assert re.fullmatch(r"\+OK 1 %d(?: .*)?" % len(crlf(MSG)), r), r   # STAT
    assert c.readline().startswith("+OK")          # LIST
    assert c.read_multiline_raw() == [b"1 %d" % len(crlf(MSG))]
    assert c.readline().startswith("+OK")          # UIDL
    uidl = c.read_multiline_raw()
    assert len(uidl) == 1 and uidl[0].startswith(b"1 "), uidl
    assert c.readline().startswith("+OK")          # RETR 1
    assert c.read_body() == crlf(MSG)
    assert c.readline().startswith("+OK")          # TOP 1 0
    assert c.read_body() == b"From: a@example.org\r\nSubject: piped\r\n\r\n"
    assert c.readline().startswith("+OK")          # NOOP
    assert c.readline().startswith("+OK")          # QUIT
    assert c.expect_eof() == b""


def test_pipelined_session_pop3s(server):
    srv = server()
    srv.deliver(MSG)
    with srv.tls() as c:
        c.send(
            "USER alice\r\n"
            f"PASS {DEFAULT_PASSWORD}\r\n"
            "STAT\r\nLIST\r\nUIDL\r\nRETR 1\r\nTOP 1 0\r\nNOOP\r\nQUIT\r\n"
        )
        _check_session_responses(c)


def test_pipelined_session_after_stls(server):
    srv = server()
    srv.deliver(MSG)
    with srv.stls() as c:
        c.send(
            "USER alice\r\n"
            f"PASS {DEFAULT_PASSWORD}\r\n"
            "STAT\r\nLIST\r\nUIDL\r\nRETR 1\r\nTOP 1 0\r\nNOOP\r\nQUIT\r\n"
        )
        _check_session_responses(c)


def test_pipelined_with_errors_and_auth_plain(server):
    srv = server()
    srv.deliver(MSG)
    with srv.tls() as c:
        c.send(
            "STAT\r\n"                                   # wrong state
            f"AUTH PLAIN {plain_ir('alice', DEFAULT_PASSWORD)}\r\n"
            "RETR 9\r\nDELE 1\r\nRETR 1\r\nRSET\r\nRETR 1\r\nFOO\r\nQUIT\r\n"
        )
        assert c.readline().startswith("-ERR")
        r = c.readline()
        assert r.startswith("+OK"), r
        assert c.readline().startswith("-ERR")         # RETR 9
        assert c.readline().startswith("+OK")          # DELE 1
        assert c.readline().startswith("-ERR")         # RETR 1 (deleted)
        assert c.readline().startswith("+OK")          # RSET
        assert c.readline().startswith("+OK")          # RETR 1
        assert c.read_body() == crlf(MSG)
        assert c.readline().startswith("-ERR")         # FOO
        assert c.readline().startswith("+OK")          # QUIT
        assert c.expect_eof() == b""
    with srv.session() as c:
        assert c.stat()[0] == 1
        c.quit()


def test_pipelined_many_retr(server):
    srv = server()
    for i in range(20):
        srv.deliver(b"Subject: %d\n\n" % i + b".x\n" * 50)
    with srv.session() as c:
        c.send("".join(f"RETR {i}\r\n" for i in range(1, 21)) + "QUIT\r\n")
        for i in range(20):
            assert c.readline().startswith("+OK")
            assert c.read_body() == crlf(b"Subject: %d\n\n" % i + b".x\n" * 50)
        assert c.readline().startswith("+OK")
        c.expect_eof()


def test_pipelined_commands_byte_by_byte(server):
    """Commands split across many small writes are reassembled."""
    srv = server()
    srv.deliver(MSG)
    with srv.tls() as c:
        data = f"USER alice\r\nPASS {DEFAULT_PASSWORD}\r\nSTAT\r\n".encode()
        for i in range(len(data)):
            c.send(data[i:i + 1])
        assert c.readline().startswith("+OK")
        assert c.readline().startswith("+OK")
        assert c.readline().startswith("+OK 1 ")
        c.quit()


def test_pipelined_retrs_in_any_order_with_read_ahead(server):
    """A pipelining client gets small messages read ahead; whatever order it asks in,
    with TOP, DELE, a large message and a message renamed meanwhile among them, every
    answer is the message asked for."""
    srv = server()
    bodies = []
    for i in range(1, 41):
        size = 200 * 1024 if i == 17 else 3000 + i
        body = b"Subject: %d\n\n" % i + (b".line %d\n" % i) * (size // 10)
        bodies.append(body)
        srv.deliver(body)
    order = [1, 2, 3, 10, 11, 4, 5, 5, 16, 17, 18, 19, 40, 39, 20, 21, 22]
    with srv.session() as c:
        # Another program flags message 4 (a rename) after the listing was made.
        path = srv.find_message_file(c.uidl()[4])
        path.rename(srv.maildir() / "cur" / (path.name.split(":")[0] + ":2,S"))
        cmds = [f"RETR {n}" for n in order[:6]]
        cmds += ["TOP 6 0", "DELE 7", "RETR 7", "RETR 8"]
        cmds += [f"RETR {n}" for n in order[6:]]
        c.send("".join(x + "\r\n" for x in cmds) + "QUIT\r\n")
        for n in order[:6]:
            assert c.readline().startswith("+OK"), n
            assert c.read_body() == crlf(bodies[n - 1]), n
        assert c.readline().startswith("+OK")           # TOP 6 0
        assert c.read_body() == b"Subject: 6\r\n\r\n"
        assert c.readline().startswith("+OK")           # DELE 7
        assert c.readline().startswith("-ERR")          # RETR 7 (deleted)
        assert c.readline().startswith("+OK")           # RETR 8
        assert c.read_body() == crlf(bodies[7])
        for n in order[6:]:
            assert c.readline().startswith("+OK"), n
            assert c.read_body() == crlf(bodies[n - 1]), n
        assert c.readline().startswith("+OK")           # QUIT
        c.expect_eof()
    assert len(srv.message_files()) == 39
