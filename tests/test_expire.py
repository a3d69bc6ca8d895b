"""Retention and CAPA EXPIRE (RFC 2449 section 6.7): EXPIRE NEVER unless a retention is
actually enforced.

The rule under test (store.expire_days = N): a message retrieved in full with RETR (TOP
does not count) in a session that ends with QUIT gets the Maildir flag S (its UIDL stays
the same) and a line "<base name> <unix seconds>" in <maildir>/poplar-retrieved. At the
first sign-in at least N days after that time, a message still flagged S is deleted
before the listing is made. The tests age a retrieval by rewriting that time, since
nobody wants to wait three days. N = 0 deletes retrieved messages at QUIT.
"""

import poplib
import time

from conftest import crlf, tls_context

DAY = 86400
RECORD = "poplar-retrieved"


def records(srv) -> dict[str, int]:
    """The retention record of alice's Maildir: base name -> retrieval time."""
    path = srv.maildir() / RECORD
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            base, at = line.split()
            out[base] = int(at)
    return out


def age(srv, base: str, seconds: int):
    """Pretend `base` was retrieved `seconds` ago."""
    rec = records(srv)
    assert base in rec, f"{base} not recorded: {rec!r}"
    rec[base] = int(time.time()) - seconds
    text = "".join(f"{b} {t}\n" for b, t in rec.items())
    (srv.maildir() / RECORD).write_text(text)


def names(srv) -> list[str]:
    """Message files as 'dir/name', to compare the Maildir before and after."""
    return [f"{p.parent.name}/{p.name}" for p in srv.message_files()]


def expire_line(capa: list[str]) -> str:
    lines = [line for line in capa if line.split()[0] == "EXPIRE"]
    assert len(lines) == 1, capa
    return lines[0]


def test_default_is_expire_never_and_nothing_is_flagged_or_deleted(server):
    srv = server()
    srv.deliver(b"Subject: one\n\nfirst\n")
    srv.deliver(b"Subject: two\n\nsecond\n")
    before = names(srv)
    with srv.tls() as c:
        assert expire_line(c.capa()) == "EXPIRE NEVER"
    with srv.session() as c:
        assert expire_line(c.capa()) == "EXPIRE NEVER"
        uidls = c.uidl()
        c.retr(1)
        c.retr(2)
        c.ok("TOP 2 0")
        c.read_body()
        c.quit()
    assert names(srv) == before, "no retention: files must not be renamed"
    assert not (srv.maildir() / RECORD).exists()
    # Even a planted record never deletes anything without a retention.
    (srv.maildir() / RECORD).write_text("".join(f"{u} 1000000000\n" for u in uidls.values()))
    for _ in range(2):
        with srv.session() as c:
            assert c.uidl() == uidls
            c.quit()
    assert names(srv) == before
    out = srv.cli("config", "check", check=True).stdout.decode()
    assert "expire_days" not in out.split("#")[0] and "EXPIRE NEVER" in out, out


def test_retr_then_quit_flags_seen_and_a_dropped_session_flags_nothing(server):
    srv = server(store={"expire_days": 3})
    a = srv.deliver(b"Subject: a\n\nretrieved\n")
    b = srv.deliver(b"Subject: b\n\ntop only\n")
    c_ = srv.deliver(b"Subject: c\n\nnever\n")
    before = names(srv)
    with srv.tls() as c:
        assert expire_line(c.capa()) == "EXPIRE 3"
    # Retrieved, but the connection drops: no UPDATE, nothing marked.
    c = srv.session()
    assert expire_line(c.capa()) == "EXPIRE 3"
    uidls = c.uidl()
    assert c.retr(1) == crlf(b"Subject: a\n\nretrieved\n")
    c.abort()
    with srv.session() as c:
        assert c.uidl() == uidls
        c.quit()
    assert names(srv) == before
    assert records(srv) == {}
    # Retrieved and QUIT: flagged S, recorded; TOP and untouched messages are not.
    start = int(time.time())
    with srv.session() as c:
        c.retr(1)
        c.ok("TOP 2 1")
        c.read_body()
        assert c.ok("QUIT") == "+OK Poplar signing off (3 messages left)"
        c.expect_eof()
    assert names(srv) == sorted([f"cur/{a}:2,S", f"new/{b}", f"new/{c_}"])
    rec = records(srv)
    assert list(rec) == [a] and start - 1 <= rec[a] <= time.time() + 1, rec
    # Younger than three days: still listed, same UIDLs, same content.
    with srv.session() as c:
        assert c.uidl() == uidls
        assert c.retr(1) == crlf(b"Subject: a\n\nretrieved\n")
        c.quit()
    # Retrieving it again does not restart the retention period.
    assert records(srv) == rec


def test_retrieved_message_expires_at_the_next_sign_in_once_old_enough(server):
    srv = server(store={"expire_days": 3})
    a = srv.deliver(b"Subject: a\n\nexpires\n")
    b = srv.deliver(b"Subject: b\n\ntop only\n")
    c_ = srv.deliver(b"Subject: c\n\nnever retrieved\n")
    # Read and flagged by another program (IMAP), never retrieved over POP3.
    d = srv.deliver(b"Subject: d\n\nseen elsewhere\n", where="cur", info=":2,S")
    with srv.session() as c:
        uidls = c.uidl()
        assert list(uidls.values()) == [a, b, c_, d]
        c.retr(1)
        c.ok("TOP 2 0")
        c.read_body()
        c.quit()
    # Let the directories settle so the next sign-in writes the listing cache, which
    # the expiry must not be fooled by.
    time.sleep(2.2)
    with srv.session() as c:
        assert c.uidl() == uidls
        c.quit()
    assert (srv.maildir() / "poplar-listing").exists()
    age(srv, a, 3 * DAY - 120)
    with srv.session() as c:
        assert c.stat()[0] == 4, "younger than three days: kept"
        c.quit()
    age(srv, a, 3 * DAY + 1)
    with srv.session() as c:
        assert c.uidl() == {1: b, 2: c_, 3: d}
        c.quit()
    assert srv.find_message_file(a) is None
    assert records(srv) == {}
    # Nothing else expires, however long it stays: b (TOP only), c (never retrieved),
    # d (flagged S by another program). Only a POP3 retrieval starts the clock.
    with srv.session() as c:
        assert c.uidl() == {1: b, 2: c_, 3: d}
        assert c.retr(1) == crlf(b"Subject: b\n\ntop only\n")
        c.quit()
    assert list(records(srv)) == [b]
    age(srv, b, 100 * DAY)
    with srv.session() as c:
        assert c.uidl() == {1: c_, 2: d}
        c.quit()
    assert names(srv) == sorted([f"cur/{d}:2,S", f"new/{c_}"])


def test_marked_unread_again_never_expires(server):
    srv = server(store={"expire_days": 1})
    a = srv.deliver(b"Subject: a\n\nbody\n")
    with srv.session() as c:
        c.retr(1)
        c.quit()
    md = srv.maildir()
    (md / "cur" / f"{a}:2,S").rename(md / "cur" / f"{a}:2,")
    age(srv, a, 10 * DAY)
    with srv.session() as c:
        assert c.uidl() == {1: a}
        c.quit()
    assert srv.find_message_file(a) is not None
    assert records(srv) == {}


def test_poplib_retrieval_is_flagged_with_uidl_unchanged(server):
    srv = server(store={"expire_days": 30})
    a = srv.deliver(b"Subject: a\n\nbody\n", where="cur", info=":2,F")
    p = poplib.POP3_SSL("localhost", srv.pop3s_port, context=tls_context(srv.cert), timeout=15)
    try:
        assert "EXPIRE" in p.capa() and p.capa()["EXPIRE"] == ["30"]
        p.user("alice")
        p.pass_(srv.passwords["alice"])
        assert p.uidl(1).split()[-1] == a.encode()
        assert p.retr(1)[1][-1] == b"body"
        p.quit()
    finally:
        p.close()
    assert names(srv) == [f"cur/{a}:2,FS"]
    with srv.session() as c:
        assert c.uidl() == {1: a}
        c.quit()
    out = srv.cli("config", "check", check=True).stdout.decode()
    assert "expire_days = 30" in out and "EXPIRE 30" in out, out


def test_expire_zero_deletes_retrieved_messages_at_quit(server):
    srv = server(store={"expire_days": 0})
    a = srv.deliver(b"Subject: a\n\nretrieved\n")
    b = srv.deliver(b"Subject: b\n\ntop only\n")
    c_ = srv.deliver(b"Subject: c\n\nnever\n")
    with srv.tls() as c:
        assert expire_line(c.capa()) == "EXPIRE 0"
    # A dropped session deletes nothing, retrieved or not.
    c = srv.session()
    c.retr(1)
    c.abort()
    with srv.session() as c:
        assert c.stat()[0] == 3
        c.retr(1)
        c.ok("TOP 2 0")
        c.read_body()
        assert c.ok("QUIT") == "+OK Poplar signing off (2 messages left)"
        c.expect_eof()
    assert srv.find_message_file(a) is None
    assert names(srv) == sorted([f"new/{b}", f"new/{c_}"])
    with srv.session() as c:
        assert c.uidl() == {1: b, 2: c_}
        c.quit()


def test_read_only_app_password_expires_and_marks_nothing(server):
    """A read-only app password leaves the maildrop as it was (README): no retention
    either. Its sign-in does not expire retrieved messages whose time is up, and what it
    retrieves is neither flagged nor recorded, with EXPIRE 0 not deleted at QUIT. The
    account password then expires them, so the test can tell."""
    for expire_days in (3, 0):
        srv = server(store={"expire_days": expire_days})
        a = srv.deliver(b"Subject: a\n\nretrieved long ago\n")
        b = srv.deliver(b"Subject: b\n\nretrieved long ago too\n")
        if expire_days:
            with srv.session() as c:
                c.retr(1)
                c.retr(2)
                c.quit()
            age(srv, a, 10 * DAY)
            age(srv, b, 10 * DAY)
        fresh = srv.deliver(b"Subject: c\n\nnew\n")
        r = srv.cli("app-password", "create", "alice", "--label", "backup", "--read-only", check=True)
        scanner = r.stdout.decode().strip()
        before, rec = names(srv), records(srv)
        for _ in range(2):
            with srv.session("alice", password=scanner) as c:
                assert c.uidl() == {1: a, 2: b, 3: fresh}, f"EXPIRE {expire_days}"
                for n in (1, 2, 3):
                    c.retr(n)
                assert c.ok("QUIT") == "+OK Poplar signing off (3 messages left)"
                c.expect_eof()
            assert names(srv) == before, "a read-only session renamed or deleted files"
            assert records(srv) == rec, "a read-only session changed the retention record"
        # The account password does expire them (EXPIRE 0: once it retrieves them).
        with srv.session() as c:
            if expire_days:
                assert c.uidl() == {1: fresh}
            else:
                assert c.uidl() == {1: a, 2: b, 3: fresh}
                c.retr(1)
                c.retr(2)
            c.quit()
        with srv.session() as c:
            assert c.uidl() == {1: fresh}
            c.quit()
