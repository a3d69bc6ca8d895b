"""Security notices in the user's own maildrop, and the sign-in history."""

import poplib
import socket

from conftest import IO_TIMEOUT

PLAINTEXT_LOOPBACK = {"plaintext_networks": ["127.0.0.0/8"], "failure_delay_ms": 0}


class SourcePOP3(poplib.POP3):
    """poplib's client, connecting from a chosen loopback address."""

    def __init__(self, host, port, source):
        self.source = source
        super().__init__(host, port, timeout=IO_TIMEOUT)

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self.source, 0))


def fetch_subjects(srv, source, user="alice", password="alice pw"):
    """Signs in with poplib from `source`; the Subject of every message, then QUIT."""
    p = SourcePOP3("127.0.0.1", srv.pop3_port, source)
    p.user(user)
    p.pass_(password)
    subjects = []
    count, _ = p.stat()
    for i in range(1, count + 1):
        _, lines, _ = p.retr(i)
        for line in lines:
            if line.lower().startswith(b"subject:"):
                subjects.append(line.decode().split(":", 1)[1].strip())
        p.dele(i)
    p.quit()
    return subjects


def notice_bodies(srv, user="alice"):
    return [p.read_bytes() for p in srv.message_files(user)]


def test_new_network_notice_retrieved_with_poplib(server):
    srv = server(users={"alice": "alice pw"}, auth=PLAINTEXT_LOOPBACK)
    # The first sign-in ever: nothing to compare with, no notice.
    assert fetch_subjects(srv, "127.0.0.1") == []
    assert fetch_subjects(srv, "127.0.0.9") == [], "same /24: a familiar network"
    # A new network: the notice is already in this session's maildrop.
    subjects = fetch_subjects(srv, "127.55.0.3")
    assert subjects == ["Security notice: sign-in from a new network"], subjects
    # The second sign-in from there produces none.
    assert fetch_subjects(srv, "127.55.0.3") == []


def test_notice_text_rate_limit_switch_and_copy(server):
    srv = server(users={"alice": "alice pw", "postmaster": "postmaster pw"},
                 auth=PLAINTEXT_LOOPBACK, notices={"copy_to": "postmaster"})
    fetch_subjects(srv, "127.0.0.1")
    with srv.plain(source="127.56.0.1") as c:
        c.login("alice", "alice pw")
        c.quit()
    [body] = notice_bodies(srv)
    text = body.decode()
    assert "127.56.0.1" in text and "USER" in text and "not you" in text
    assert "alice pw" not in text
    assert "Auto-Submitted: auto-generated" in text and "Date: " in text
    [copy] = notice_bodies(srv, "postmaster")
    assert b"Subject: [copy: alice] Security notice" in copy
    # Rate-limited: another new network within the hour sends nothing more.
    with srv.plain(source="127.57.0.1") as c:
        c.login("alice", "alice pw")
        c.quit()
    assert len(notice_bodies(srv)) == 1
    # Switched off per user.
    srv.cli("user", "notices", "alice", "off", check=True)
    srv2 = server(users={"bob": "bob pw"}, auth=PLAINTEXT_LOOPBACK)
    srv2.cli("user", "notices", "bob", "off", check=True)
    fetch_subjects(srv2, "127.0.0.1", "bob", "bob pw")
    assert fetch_subjects(srv2, "127.58.0.1", "bob", "bob pw") == []


def test_notices_off_globally(server):
    srv = server(users={"alice": "alice pw"}, auth=PLAINTEXT_LOOPBACK, notices={"enabled": False})
    fetch_subjects(srv, "127.0.0.1")
    assert fetch_subjects(srv, "127.59.0.1") == []


def test_lock_notice(server):
    srv = server(users={"alice": "alice pw"}, auth=PLAINTEXT_LOOPBACK,
                 defence={"lockout_threshold": 3})
    fetch_subjects(srv, "127.0.0.1")
    for i in range(3):
        with srv.plain(source=f"127.60.{i}.1") as c:
            c.ok("USER alice")
            assert c.cmd(f"PASS guess{i}").startswith("-ERR [AUTH]")
            c.quit()
    # From the familiar network the user still signs in, and reads why. The notice is
    # delivered in the background once the lock is recorded, so it may take a moment.
    import time
    deadline = time.monotonic() + 5
    subjects: list[str] = []
    while not subjects and time.monotonic() < deadline:
        subjects = fetch_subjects(srv, "127.0.0.1")
        time.sleep(0.05)
    assert subjects == ["Security notice: your account was locked for unknown networks"], subjects


def test_history(server):
    srv = server(users={"alice": "alice pw"}, auth=PLAINTEXT_LOOPBACK)
    fetch_subjects(srv, "127.0.0.1")
    with srv.plain(source="127.61.0.1") as c:
        c.ok("USER alice")
        assert c.cmd("PASS wrong").startswith("-ERR [AUTH]")
        c.quit()
    with srv.plain(source="127.61.0.2") as c:
        c.ok("USER ghost")
        assert c.cmd("PASS wrong").startswith("-ERR [AUTH]")
        c.quit()
    import time
    deadline = time.monotonic() + 5
    while True:
        out = srv.cli("user", "history", "alice", check=True).stdout.decode()
        if out.count("\n") >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    lines = out.splitlines()
    assert len(lines) == 2, out
    assert "127.61.0.1" in lines[0] and lines[0].rstrip().endswith("failure")
    assert "127.0.0.1" in lines[1] and lines[1].rstrip().endswith("success")
    assert "wrong" not in out
    assert srv.cli("user", "history", "ghost").returncode != 0
