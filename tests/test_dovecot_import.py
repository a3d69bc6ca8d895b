"""Migration from Dovecot keeps UIDLs: a Maildir served by Debian's Dovecot (started by
this test on loopback) gives its UIDLs to a client; after `poplar import uidls`,
Poplar gives the same UIDLs for the same messages, so clients download nothing again."""
import hashlib
import json
import os
import poplib
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import IO_TIMEOUT, free_port, tls_context

MAIL_UID = 21100  # Dovecot refuses to serve mail as root; no passwd entry needed.



def require_dovecot():
    if shutil.which("dovecot") is None:
        subprocess.run([str(Path(__file__).parent / "peers/install-dovecot.sh")], check=True,
                       timeout=600)
    assert shutil.which("dovecot"), "Dovecot could not be installed"


class Dovecot:
    def __init__(self, root: Path, maildir: Path, uidl_format: str):
        self.root, self.port = root, free_port()
        for d in ("run", "state", "log"):
            (root / d).mkdir(parents=True)
        (root / "users").write_text(f"alice:{{PLAIN}}dovecot-pw:{MAIL_UID}:{MAIL_UID}::{root}::\n")
        self.conf = root / "dovecot.conf"
        self.conf.write_text(f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/log/dovecot.log
protocols = pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
first_valid_uid = 1000
default_internal_user = dovecot
default_login_user = dovenull
auth_mechanisms = plain
passdb {{
  driver = passwd-file
  args = {root}/users
}}
userdb {{
  driver = passwd-file
  args = {root}/users
}}
mail_location = maildir:{maildir}
pop3_uidl_format = {uidl_format}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
""")
        os.chmod(root, 0o755)
        self.proc = subprocess.Popen(["dovecot", "-F", "-c", str(self.conf)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert self.proc.poll() is None, self.proc.stdout.read().decode()
                time.sleep(0.1)
        raise AssertionError("Dovecot did not start: " + self.log())

    def log(self) -> str:
        p = self.root / "log/dovecot.log"
        return p.read_text() if p.exists() else ""

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def listing(client) -> dict[str, str]:
    """content digest -> UIDL, for every message of a poplib session."""
    out = {}
    for line in client.uidl()[1]:
        n, uidl = line.decode().split()
        body = b"\r\n".join(client.retr(int(n))[1])
        out[hashlib.sha256(body).hexdigest()] = uidl
    return out


@pytest.fixture
def world_readable_dir():
    """pytest's tmp_path sits under a 0700 folder that Dovecot's unprivileged
    processes cannot enter; this one they can."""
    import tempfile
    d = Path(tempfile.mkdtemp(prefix="poplar-dovecot-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("uidl_format", ["%08Xu%08Xv", "%f", "%u-%v"])
def test_uidls_survive_the_move_from_dovecot(server, world_readable_dir, uidl_format):
    require_dovecot()
    tmp_path = world_readable_dir
    maildir = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    for i in range(6):
        where = "cur" if i % 2 else "new"
        body = f"From: a@example.org\nSubject: message {i}\n\nbody {i}\n.dotted {i}\n".encode()
        # Size fields as Dovecot and Courier write them: %f keeps them, Poplar's own UIDL
        # (the unique part) drops them, so every format differs until the import.
        name = f"17000000{i:02d}.M{i}P7.oldhost,S={len(body)}" + (":2,S" if where == "cur" else "")
        (maildir / where / name).write_bytes(body)
    subprocess.run(["chown", "-R", f"{MAIL_UID}:{MAIL_UID}", str(maildir)], check=True)

    dovecot = Dovecot(tmp_path / "dovecot", maildir, uidl_format)
    try:
        c = poplib.POP3("127.0.0.1", dovecot.port, timeout=IO_TIMEOUT)
        c.user("alice")
        c.pass_("dovecot-pw")
        before = listing(c)
        c.quit()
    finally:
        dovecot.stop()
    assert len(before) == 6, dovecot.log()
    assert (maildir / "dovecot-uidlist").exists()

    srv = server(users={})
    srv.cli("user", "add", "alice", "--maildir", str(maildir), "--password-stdin", "--allow-weak",
            stdin="poplar pw\n", check=True)

    def poplar_listing():
        p = poplib.POP3_SSL("127.0.0.1", srv.pop3s_port, context=tls_context(srv.cert),
                            timeout=IO_TIMEOUT)
        p.user("alice")
        p.pass_("poplar pw")
        out = listing(p)
        p.quit()
        return out

    # Without the import the UIDLs differ: the import is what makes them equal.
    without = poplar_listing()
    assert without.keys() == before.keys()
    assert all(without[k] != before[k] for k in before), (without, before)
    r = srv.cli("import", "uidls", "alice", "--dovecot", "--format", uidl_format)
    assert r.returncode == 0, r.stderr
    assert "imported 6 UIDLs" in r.stderr.decode()
    assert poplar_listing() == before


def test_uidl_list_import_and_bad_input(server, tmp_path):
    srv = server()
    a = srv.deliver(b"Subject: a\n\na\n")
    b = srv.deliver(b"Subject: b\n\nb\n")
    lst = tmp_path / "uidls"
    lst.write_text(f"# old server\n{a}:2,S OLD-A\n{b} OLD-B\n")
    r = srv.cli("import", "uidls", "alice", "--list", str(lst))
    assert r.returncode == 0, r.stderr
    with srv.session() as c:
        assert c.uidl() == {1: "OLD-A", 2: "OLD-B"}
        c.quit()
    lst.write_text(f"{a} has spaces in it\n")
    assert srv.cli("import", "uidls", "alice", "--list", str(lst)).returncode != 0
    lst.write_text(f"{a} {'x' * 71}\n")  # longer than RFC 1939 allows
    assert srv.cli("import", "uidls", "alice", "--list", str(lst)).returncode != 0
    assert srv.cli("import", "uidls", "alice").returncode != 0
    assert srv.cli("import", "uidls", "nobody", "--list", str(lst)).returncode != 0


def test_uidls_for_every_user_at_once(server, tmp_path):
    """`import uidls --all --dovecot`: every user's Maildir in turn, those without a
    dovecot-uidlist listed and skipped, a bad uidlist failing the command (exit 1) without
    stopping the others, asked first unless --yes, a progress line on a terminal only."""
    import os
    import pty
    from conftest import POPLAR_BIN
    from test_import import drain
    srv = server(users={"ann": "ann pw", "bob": "bob pw", "cat": "cat pw"})
    names = {u: srv.deliver(f"Subject: to {u}\n\nhello\n".encode(), user=u) for u in ("ann", "bob", "cat")}

    def maildir(user):
        return Path(json.loads(srv.cli("user", "show", user, "--json", check=True).stdout)["maildir"])

    # Dovecot's uidlist (version 3) for ann, uid 7 under uidvalidity 0x6b025ff5.
    (maildir("ann") / "dovecot-uidlist").write_text(
        f"3 V1795317749 N8 Gabc\n7 :{names['ann']}\n")
    (maildir("cat") / "dovecot-uidlist").write_text("not a uidlist\n")
    args = ["import", "uidls", "--all", "--dovecot", "--format", "%08Xu%08Xv"]
    r = srv.cli(*args)
    assert r.returncode == 2 and b"pass --yes" in r.stderr, r.stderr
    r = srv.cli(*args, "--yes")
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert "bob: skipped: no " in err and "cat: not imported:" in err, err
    assert "imported 1 UIDLs for 1 users; 1 without a uidlist; 1 failed" in err, err
    assert "\x1b" not in err and "%" not in err.replace("%08Xu%08Xv", ""), err
    with srv.session("ann") as c:
        assert c.uidl() == {1: "000000076b025ff5"}
        c.quit()
    with srv.session("bob") as c:
        assert c.uidl() == {1: names["bob"]}
        c.quit()

    # On a terminal: the progress line, then the same report.
    master, slave = pty.openpty()
    p = subprocess.run([str(POPLAR_BIN), "--config", str(srv.config_path), *args, "--yes"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, timeout=60)
    os.close(slave)
    out = drain(master)
    assert p.returncode == 1
    assert b"\r\x1b[2K" in out and b"importing UIDLs: " in out, out
    assert b"bob: skipped" in out, out
