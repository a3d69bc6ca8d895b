"""getmail6 6.18.11 (Debian 12's getmail6, on Python 3.11's poplib) against the default
configuration.

How it runs here: `getmail --getmaildir GETMAILDIR --rcfile getmailrc`, one run per call,
with its own HOME (a temporary folder holding the getmaildir with the rc file and
getmail's `oldmail-*` state, the destination Maildir and a copy of the server's
certificate). The retriever is `SimplePOP3SSLRetriever` (implicit TLS, the pop3s port,
server `localhost`) with `ca_certs` = the server's self-signed certificate: getmail then
requires a chain to it (CERT_REQUIRED) and checks the name `localhost` against the
certificate itself (without `ca_certs` it would check nothing). The destination is
`type = Maildir`. getmail's Maildir delivery refuses to run as root ("refuse to deliver
mail as root"), so when the tests run as root, getmail runs as the user `nobody`, and its
HOME is then a folder directly under /tmp that nobody owns (pytest's folders are 0700
root), removed afterwards.

No STLS: getmail6 has no STLS (nor STARTTLS) for POP3 at all: `SimplePOP3Retriever`
(plain poplib.POP3) sends USER/PASS in clear, and nothing else in getmailcore upgrades the
connection. So against the plain port it can only fail, and it does, cleanly: the server
answers its USER with `-ERR TLS required: send STLS first, or use the implicit-TLS port`,
getmail stops there (the password is never sent), fetches nothing and exits non-zero;
that refusal is tested instead of an STLS fetch.

What getmail does to a message (poplib, then getmail's Message.flatten, checked byte for
byte by these tests): poplib splits the RETR response into lines, dropping each CRLF and
the dot-stuffing; getmail joins the lines with LF, so the message is `lf(source)` (8-bit
bytes pass untouched; it ends with LF); it parses that with Python's email package and
writes it back (BytesGenerator, compat32 policy, LF line ends), which reproduces every
message of the test maildrop exactly but could refold or rewrite malformed headers in
other mail. It deletes the message's own Return-Path header(s) and puts three headers in
front: `Return-Path: <SENDER>` (SENDER taken from the message's Return-Path, else Sender:,
else "unknown"), `Delivered-To: unknown` (option `delivered_to`, default true) and
`Received: from localhost (127.0.0.1:PORT) by HOST with POP3-SSL\\n  getmail6
msgid:UIDL; DATE` (option `received`, default true). The defaults are kept: the three
are stripped with `prepended=`, and the source's Return-Path is removed from the expected
form (every message of the maildrop has one, `<sender@example.org>`, which getmail's must
equal).

Keep and delete: `delete` (default false) and `read_all` (default true: every run fetches
everything again, with a warning). With `read_all = false` getmail fetches only UIDLs its
oldmail file does not hold; with `delete = true` it deletes what it fetched, and also
what it had fetched before.

Sign-in. For POP3 getmail6 offers USER/PASS (always, its own and only default) and APOP
(`use_apop = true`). Its other mechanisms are IMAP only (XOAUTH2 via `use_xoauth2`,
Kerberos/GSSAPI via `use_kerberos`); no SASL for POP3. Shared with the default
configuration: USER/PASS, tested. Offered by getmail, not by the default: APOP, tested to
fail cleanly (poplib finds no <timestamp> in the greeting and raises before sending
anything; nothing fetched, no sign-in).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from clientmail import (MESSAGES, assert_fetched_all, deliver_all, lf, maildir_messages,
                        make_maildir, require_client, sign_ins, wait_for_disconnect,
                        wait_for_sign_ins)
from conftest import DEFAULT_PASSWORD, EXTRA_SECRETS, read_audit

#: A wrong password, long enough for test_zz_no_secrets to look for it in every log.
WRONG_PASSWORD = "not alice's getmail pw"
EXTRA_SECRETS.add(WRONG_PASSWORD)

GETMAIL_TIMEOUT = 60

#: getmail's headers in front of every message, in this order (lower case).
PREPENDED = ("return-path", "delivered-to", "received")


def without_return_path(source: bytes) -> bytes:
    """`lf(source)` without its Return-Path header (getmail deletes it and writes its
    own in front, which assert_fetched_all strips with the other prepended headers)."""
    data = lf(source)
    head, sep, body = data.partition(b"\n\n")
    lines = head.split(b"\n")
    kept = [l for l in lines if not l.lower().startswith(b"return-path:")]
    assert len(kept) == len(lines) - 1, "every test message has one Return-Path"
    return b"\n".join(kept) + sep + body


class Getmail:
    """One getmail set-up: HOME with the getmaildir, the Maildir and the CA file."""

    def __init__(self, srv, home: Path, run_as: pwd.struct_passwd | None):
        require_client("getmail")
        self.srv = srv
        self.home = home
        self.run_as = run_as
        self.getmaildir = home / ".getmail"
        self.getmaildir.mkdir()
        self.maildir = make_maildir(home / "Maildir")
        self.cafile = home / "ca.pem"
        shutil.copyfile(srv.cert, self.cafile)
        self.rc = self.getmaildir / "getmailrc"

    def run(self, transport: str = "pop3s", *, password: str = DEFAULT_PASSWORD,
            retriever: str = "", options: str = "") -> subprocess.CompletedProcess:
        if transport == "pop3s":
            head = (f"type = SimplePOP3SSLRetriever\nport = {self.srv.pop3s_port}\n"
                    f"ca_certs = {self.cafile}\n")
        else:
            assert transport == "plain"
            head = f"type = SimplePOP3Retriever\nport = {self.srv.pop3_port}\n"
        self.rc.write_text(
            "[retriever]\n" + head
            + "server = localhost\nusername = alice\n"
            f"password = {password}\n{retriever}\n"
            "[destination]\ntype = Maildir\n"
            f"path = {self.maildir}/\n\n"
            f"[options]\nverbose = 2\n{options}\n")
        self.rc.chmod(0o600)
        kwargs = {}
        if self.run_as is not None:
            for p in [self.home, *self.home.rglob("*")]:
                os.chown(p, self.run_as.pw_uid, self.run_as.pw_gid)
            kwargs = dict(user=self.run_as.pw_uid, group=self.run_as.pw_gid, extra_groups=[])
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home),
               "LC_ALL": "C.UTF-8"}
        p = subprocess.run(
            ["getmail", "--getmaildir", str(self.getmaildir), "--rcfile", "getmailrc"],
            stdin=subprocess.DEVNULL, capture_output=True, env=env, cwd=self.home,
            timeout=GETMAIL_TIMEOUT, **kwargs)
        p.log = (p.stdout + p.stderr).decode(errors="replace")
        return p

    def fetched(self) -> list[bytes]:
        return maildir_messages(self.maildir)


def tail(p: subprocess.CompletedProcess, n: int = 4000) -> str:
    return f"exit {p.returncode}\n{p.log[-n:]}"


def summary(p: subprocess.CompletedProcess) -> tuple[int, int]:
    """(retrieved, skipped) from getmail's `N messages (B bytes) retrieved, M skipped`."""
    m = re.search(r"(\d+) messages? \(\d+ bytes\) retrieved, (\d+) skipped", p.log)
    assert m, tail(p)
    return int(m.group(1)), int(m.group(2))


def check_fetched(fetched: list[bytes], port: int) -> None:
    """getmail's three headers head every message; then the message is the source."""
    for data in fetched:
        lines = data.split(b"\n", 3)
        assert lines[0] == b"Return-Path: <sender@example.org>", data[:300]
        assert lines[1] == b"Delivered-To: unknown", data[:300]
        received = b"Received: from localhost (127.0.0.1:%d) by " % port
        assert lines[2].startswith(received), data[:300]
        assert lines[2].endswith(b" with POP3-SSL"), data[:300]
        assert lines[3].startswith(b"  getmail6 msgid:"), data[:300]
    assert_fetched_all(fetched, prepended=PREPENDED, transform=without_return_path)


def assert_auth_under_tls(srv) -> None:
    records = [r for r in read_audit(srv.data_dir / "audit.log") if r.get("event") == "auth"]
    assert records
    for r in records:
        assert r.get("listener") == "pop3s" and r.get("tls_version", "").startswith("TLSv1_"), r


@pytest.fixture
def getmail(server, tmp_path):
    srv = server()
    deliver_all(srv)
    if os.geteuid() != 0:
        yield Getmail(srv, tmp_path / "getmail-home", None)
        return
    # As root: getmail runs as nobody, in a home nobody can reach.
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.fail("the tests run as root and there is no user 'nobody' to run getmail as")
    home = Path(tempfile.mkdtemp(prefix="poplar-getmail-", dir="/tmp"))
    try:
        yield Getmail(srv, home, nobody)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_getmail_keep_then_delete(getmail):
    """Defaults (delete = false, read_all = true): everything fetched, nothing deleted.
    read_all = false: nothing new. delete = true with read_all = false: the messages
    fetched before are deleted without being fetched again."""
    srv = getmail.srv
    before = srv.message_files()
    assert len(before) == len(MESSAGES)

    p = getmail.run()
    assert p.returncode == 0, tail(p)
    assert summary(p) == (len(MESSAGES), 0), tail(p)
    assert "read_all and not delete" in p.log, tail(p)
    check_fetched(getmail.fetched(), srv.pop3s_port)
    assert srv.message_files() == before
    assert wait_for_sign_ins(srv, 1) == [("USER", "success", "pop3s")]
    assert_auth_under_tls(srv)
    oldmail = list(getmail.getmaildir.glob("oldmail-*"))
    assert len(oldmail) == 1, list(getmail.getmaildir.iterdir())

    p = getmail.run(options="read_all = false")
    assert p.returncode == 0, tail(p)
    assert summary(p) == (0, len(MESSAGES)), tail(p)
    assert len(getmail.fetched()) == len(MESSAGES)
    assert srv.message_files() == before

    p = getmail.run(options="read_all = false\ndelete = true")
    assert p.returncode == 0, tail(p)
    assert summary(p) == (0, len(MESSAGES)), tail(p)
    assert len(getmail.fetched()) == len(MESSAGES)
    assert srv.message_files() == []
    assert wait_for_sign_ins(srv, 3) == [("USER", "success", "pop3s")] * 3


def test_getmail_delete(getmail):
    srv = getmail.srv
    p = getmail.run(options="delete = true")
    assert p.returncode == 0, tail(p)
    assert summary(p) == (len(MESSAGES), 0), tail(p)
    assert p.log.count(", deleted\n") == len(MESSAGES), tail(p)
    check_fetched(getmail.fetched(), srv.pop3s_port)
    assert srv.message_files() == []
    assert wait_for_sign_ins(srv, 1) == [("USER", "success", "pop3s")]
    assert_auth_under_tls(srv)


def test_getmail_wrong_password(getmail):
    srv = getmail.srv
    before = srv.message_files()
    p = getmail.run(password=WRONG_PASSWORD, options="delete = true")
    assert p.returncode != 0, tail(p)
    assert "POP error (b'-ERR [AUTH] " in p.log, tail(p)
    assert WRONG_PASSWORD not in p.log
    assert getmail.fetched() == []
    assert srv.message_files() == before
    assert wait_for_sign_ins(srv, 1) == [("USER", "failure", "pop3s")]
    assert_auth_under_tls(srv)


def test_getmail_apop_is_not_offered(getmail):
    """use_apop = true: the greeting has no <timestamp>, poplib gives up at once."""
    srv = getmail.srv
    before = srv.message_files()
    p = getmail.run(retriever="use_apop = true", options="delete = true")
    assert p.returncode != 0, tail(p)
    assert "APOP not supported by server" in p.log, tail(p)
    assert getmail.fetched() == []
    assert srv.message_files() == before
    wait_for_disconnect(srv)
    assert sign_ins(srv) == []


def test_getmail_has_no_stls_and_the_server_refuses_its_plaintext_user(getmail):
    """SimplePOP3Retriever on the plain port would sign in in clear: the server refuses
    USER before TLS, so getmail never gets to send the password."""
    srv = getmail.srv
    before = srv.message_files()
    p = getmail.run("plain", options="delete = true")
    assert p.returncode != 0, tail(p)
    assert "-ERR TLS required" in p.log, tail(p)
    assert getmail.fetched() == []
    assert srv.message_files() == before
    wait_for_disconnect(srv)
    assert sign_ins(srv) == []
