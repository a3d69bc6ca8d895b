"""The `poplar` command line: config check, user management, serve start-up and shutdown."""

import os
import re
import signal
import subprocess
from pathlib import Path
import threading

#: The documented exit codes (README "Exit codes").
OK, FAILURE, USAGE, NOT_FOUND, REFUSED, EXISTS = 0, 1, 2, 3, 4, 5

from conftest import DEFAULT_PASSWORD, POPLAR_BIN, fingerprint_of


def test_config_check_valid(server):
    srv = server(users={}, start=False)
    p = srv.cli("config", "check")
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    assert p.stdout.strip(), "config check should print the effective config"
    assert b"127.0.0.1:0" in p.stdout, p.stdout


def test_config_check_via_env(server):
    srv = server(users={}, start=False)
    p = srv.cli("config", "check", use_config_flag=False, env={"POPLAR_CONFIG": str(srv.config_path)})
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    assert str(srv.data_dir).encode() in p.stdout, p.stdout


def test_config_check_unknown_key_fails(server):
    srv = server(users={}, start=False)
    srv.config_path.write_text(srv.config_path.read_text() + "\n[auth2]\nfoo = 1\n")
    p = srv.cli("config", "check")
    assert p.returncode != 0, p.stdout
    srv2 = server(users={}, start=False, limits={"max_cmd_line": 5})
    p = srv2.cli("config", "check")
    assert p.returncode != 0, p.stdout


def test_config_check_bad_syntax_and_values(server):
    srv = server(users={}, start=False)
    srv.config_path.write_text('data_dir = "/tmp/x"\n[listen\n')
    assert srv.cli("config", "check").returncode != 0
    srv2 = server(users={}, start=False, listen={"pop3": ["not-an-address"]})
    assert srv2.cli("config", "check").returncode != 0
    srv3 = server(users={}, start=False, auth={"plaintext_networks": ["300.0.0.0/8"]})
    assert srv3.cli("config", "check").returncode != 0


def test_user_add_creates_maildir_and_lists(server):
    srv = server(users={}, start=False)
    srv.add_user("alice", "pw one")
    srv.add_user("Bob", "pw two")
    for name in ("alice", "bob"):
        md = srv.data_dir / "mail" / name
        for sub in ("new", "cur", "tmp"):
            assert (md / sub).is_dir(), f"{md / sub} missing"
    p = srv.cli("user", "list", check=True)
    names = p.stdout.decode().split()
    assert sorted(names) == ["alice", "bob"], p.stdout


def test_user_add_custom_maildir(server):
    srv = server(users={}, start=False)
    md = srv.root / "elsewhere" / "carol-mail"
    srv.add_user("carol", "pw", maildir=md)
    for sub in ("new", "cur", "tmp"):
        assert (md / sub).is_dir()
    srv.start()
    srv.deliver(b"Subject: hi\n\nbody\n", maildir=md)
    with srv.tls() as c:
        c.login("carol", "pw")
        assert c.stat()[0] == 1
        assert c.retr(1) == b"Subject: hi\r\n\r\nbody\r\n"
        c.quit()


def test_user_add_duplicate_fails(server):
    srv = server(users={"alice": "pw"}, start=False)
    p = srv.cli("user", "add", "alice", "--password-stdin", stdin="other\n")
    assert p.returncode == EXISTS, p.stderr
    # also under the canonical (lowercased) form
    p = srv.cli("user", "add", "ALICE", "--password-stdin", stdin="other\n")
    assert p.returncode == EXISTS, p.stderr


def test_user_del_and_unknown(server):
    srv = server(users={"alice": "pw", "dave": "pw2"}, start=False)
    srv.cli("user", "del", "dave", check=True)
    assert srv.cli("user", "list", check=True).stdout.decode().split() == ["alice"]
    assert srv.cli("user", "del", "nobody").returncode == NOT_FOUND
    assert srv.cli("user", "passwd", "nobody", "--password-stdin", stdin="x\n").returncode == NOT_FOUND


def test_user_passwd_and_del_while_running(srv):
    srv.cli("user", "passwd", "alice", "--password-stdin", "--allow-weak", stdin="new password\n",
            check=True)
    with srv.tls() as c:
        c.ok("USER alice")
        r = c.err(f"PASS {DEFAULT_PASSWORD}")
        assert r.startswith("-ERR [AUTH]"), r
    with srv.tls() as c:
        c.login("alice", "new password")
        c.quit()
    srv.add_user("erin", "erin pw")
    with srv.tls() as c:
        c.login("erin", "erin pw")
        c.quit()
    srv.cli("user", "del", "erin", check=True)
    with srv.tls() as c:
        c.ok("USER erin")
        r = c.err("PASS erin pw")
        assert r.startswith("-ERR [AUTH]"), r


def test_serve_prints_listening_lines_and_fingerprint(srv):
    assert len(srv.pop3_ports) == 1 and len(srv.pop3s_ports) == 1, srv.stdout_lines
    assert srv.pop3_port != 0 and srv.pop3s_port != 0
    assert srv.stdout_lines[-1] == "ready", srv.stdout_lines
    assert srv.fingerprint, f"no 'certificate sha256' line: {srv.stdout_lines!r}"
    assert (srv.data_dir / "tls" / "key.pem").exists()
    assert srv.fingerprint.upper() == fingerprint_of(srv.cert), (srv.fingerprint, fingerprint_of(srv.cert))


def test_certificate_reused_across_restarts(server):
    srv = server()
    fp1 = srv.fingerprint
    with srv.tls() as c:
        c.quit()
    assert srv.stop() == 0
    srv.start()
    assert srv.fingerprint == fp1, "self-signed certificate must be made on first start only"
    with srv.tls() as c:  # the same certificate file still verifies the served one
        c.quit()


def test_sigterm_right_after_ready(server):
    """Once `ready` is printed, SIGTERM must mean a graceful shutdown (exit 0), not death
    by the default signal disposition."""
    srv = server(start=False)
    codes = []
    for _ in range(10):
        p = subprocess.Popen([str(POPLAR_BIN), "--config", str(srv.config_path), "serve"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        killer = threading.Timer(30, p.kill)  # never hang on a server that does not start
        killer.start()
        try:
            for line in p.stdout:
                if line.strip() == b"ready":
                    break
            p.send_signal(signal.SIGTERM)
            codes.append(p.wait(timeout=15))
        finally:
            killer.cancel()
            if p.poll() is None:
                p.kill()
                p.wait()
    assert codes == [0] * 10, f"exit codes after SIGTERM sent right after 'ready': {codes} (-15 = killed by SIGTERM)"


def test_sigterm_with_open_session_loses_nothing(server):
    srv = server()
    srv.deliver(b"Subject: keep me\n\nbody\n")
    c = srv.session()
    c.ok("DELE 1")
    rc = srv.stop()
    assert rc != -9, "server did not exit within 15s of SIGTERM while a session was open"
    assert rc == 0, srv.stderr_tail()
    # the client sees the connection end (possibly after an -ERR line)
    rest = c.expect_eof()
    assert rest == b"" or rest.startswith(b"-ERR"), rest
    c.close()
    assert len(srv.message_files()) == 1, "DELE without QUIT must not remove the message"


def test_serve_port_in_use_fails(server):
    """Binding an occupied port is an error with non-zero exit, not a hang."""
    srv = server()
    port = srv.pop3s_port
    other = server(users={}, start=False, listen={"pop3": ["127.0.0.1:0"], "pop3s": [f"127.0.0.1:{port}"]})
    p = subprocess.run([str(POPLAR_BIN), "--config", str(other.config_path), "serve"],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    assert p.returncode != 0, p.stdout
    assert b"ready" not in p.stdout


def test_serve_demo(server):
    srv = server(users={}, start=False)
    srv.start("--demo")
    lines = [l for l in srv.stdout_lines if "demo" in l.lower() and "password" in l.lower()]
    assert len(lines) == 1, srv.stdout_lines
    m = re.search(r"password:?\s+(\S+)", lines[0])
    assert m, lines[0]
    password = m.group(1)
    assert len(password) >= 12, "the demo password should be random and long"
    with srv.tls() as c:
        c.login("demo", password)
        n, total = c.stat()
        assert n >= 1
        sizes = c.list()
        for i in sizes:
            assert len(c.retr(i)) == sizes[i]
        c.quit()


def test_serve_fails_on_missing_certificate(server):
    srv = server(users={}, start=False, tls={"cert": "/nonexistent/cert.pem", "key": "/nonexistent/key.pem"})
    p = subprocess.run([str(POPLAR_BIN), "--config", str(srv.config_path), "serve"],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    assert p.returncode != 0
    assert b"ready" not in p.stdout


def make_pair(folder, name: str = "mail"):
    """A self-signed certificate and key from openssl, mode 0600 (root only)."""
    import subprocess
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                    "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    os.chmod(key, 0o600)
    os.chmod(cert, 0o644)
    return cert, key


def test_config_check_fails_on_a_key_it_cannot_read(server, tmp_path):
    """What would stop a listener is an error (exit 1), not a warning (issue 20)."""
    cert, key = make_pair(tmp_path)
    srv = server(users={}, start=False, tls={"cert": str(cert), "key": str(key)})
    p = srv.cli("config", "check")
    assert p.returncode == 0, p.stderr
    missing = tmp_path / "gone.key"
    srv2 = server(users={}, start=False, tls={"cert": str(cert), "key": str(missing)})
    p = srv2.cli("config", "check")
    assert p.returncode == 1, p.stderr
    assert b"error: tls.cert" in p.stderr and str(missing).encode() in p.stderr, p.stderr
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key\n")
    srv3 = server(users={}, start=False, tls={"cert": str(cert), "key": str(garbage)})
    assert srv3.cli("config", "check").returncode == 1


def test_config_check_as_the_service_user(server, tmp_path):
    """A key only root can read passes a check run as root, and fails one run
    `--as-user` the user the service runs as."""
    if os.geteuid() != 0:
        import pytest
        (pytest.fail if os.environ.get("CI") else pytest.skip)("needs root to change user")
    import shutil
    import tempfile
    from pathlib import Path
    # Under /tmp (pytest's own folders are root's only): only the key's mode matters.
    folder = Path(tempfile.mkdtemp(prefix="poplar-tls-"))
    os.chmod(folder, 0o755)
    cert, key = make_pair(folder)
    srv = server(users={}, start=False, tls={"cert": str(cert), "key": str(key)})
    # The configuration beside them, only root's at first.
    config = folder / "poplar.toml"
    config.write_text(srv.config_path.read_text())
    os.chmod(config, 0o600)
    srv.config_path = config
    try:
        check_as_service_user(srv, key)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def check_as_service_user(srv, key) -> None:
    assert srv.cli("config", "check").returncode == 0
    # The file itself is read as the service's user too.
    p = srv.cli("config", "check", "--as-user", "nobody")
    assert p.returncode == 1 and b"Permission denied" in p.stderr, p.stderr
    assert str(srv.config_path).encode() in p.stderr, p.stderr
    os.chmod(srv.config_path, 0o644)
    p = srv.cli("config", "check", "--as-user", "nobody")
    assert p.returncode == 1, p.stderr
    assert b"error: tls.cert" in p.stderr and b"Permission denied" in p.stderr, p.stderr
    os.chmod(key, 0o644)
    p = srv.cli("config", "check", "--as-user", "nobody")
    assert p.returncode == 0, p.stderr


def test_exit_codes_tell_failures_apart(server):
    """Scripts can tell a refusal by policy from a missing user from a wrong command
    line from a failure (issue 20)."""
    srv = server(users={"alice": "alice password 1"}, start=False)
    assert srv.cli("user", "list").returncode == OK
    assert srv.cli("user", "frobnicate").returncode == USAGE
    assert srv.cli("lockout", "clear").returncode == USAGE
    assert srv.cli("user", "disable", "ghost").returncode == NOT_FOUND
    assert srv.cli("sessions", "end", "no-such-session").returncode in (NOT_FOUND, FAILURE)
    # A weak password, without --allow-weak: refused by the password policy.
    p = srv.cli("user", "add", "bob", "--password-stdin", stdin="short\n")
    assert p.returncode == REFUSED, p.stderr
    p = srv.cli("passwords", "check", "alice", "--password-stdin", stdin="password\n")
    assert p.returncode == REFUSED, p.stderr
    assert srv.cli("user", "add", "alice", "--password-stdin",
                   stdin="another long passphrase here\n").returncode == EXISTS
    # A directory that cannot be opened: a failure.
    broken = server(users={}, start=False, directory={"url": "sqlite:///nonexistent/dir/x.db"})
    assert broken.cli("user", "list").returncode == FAILURE


def test_user_show_and_json_listings(server):
    """`user show` (text and JSON) and `--json` on `user list` and `user history`
    (issue 20): each parses and says what the account is."""
    import json as jsonlib
    from test_mfa import app_password
    srv = server(users={"alice": "alice password 1", "bob": "bob password 22"})
    app_password(srv, "alice", "--label", "phone", "--read-only")
    with srv.tls() as c:
        c.login("alice", "alice password 1")
        c.quit()
    srv.cli("user", "disable", "bob", check=True)

    listed = jsonlib.loads(srv.cli("user", "list", "--json", check=True).stdout)
    assert [(u["name"], u["enabled"]) for u in listed] == [("alice", True), ("bob", False)]
    assert all(u["maildir"].endswith(u["name"]) for u in listed), listed

    shown = jsonlib.loads(srv.cli("user", "show", "alice", "--json", check=True).stdout)
    assert shown["name"] == "alice" and shown["enabled"] is True
    assert shown["two_factor"]["enrolled"] is False
    assert [(a["label"], a["read_only"]) for a in shown["app_passwords"]] == [("phone", True)]
    assert shown["password"]["imported"] is False and shown["password"]["set_at"]
    assert shown["last_sign_in"]["result"] == "success", shown
    assert shown["last_sign_in"]["address"] == "127.0.0.1"

    text = srv.cli("user", "show", "bob", check=True).stdout.decode()
    assert re.search(r"^enabled\s+no$", text, re.M), text
    assert re.search(r"^app passwords\s+none$", text, re.M), text
    assert re.search(r"^last sign-in\s+never$", text, re.M), text
    assert srv.cli("user", "show", "ghost").returncode == NOT_FOUND

    history = jsonlib.loads(srv.cli("user", "history", "alice", "--json", check=True).stdout)
    assert history and set(history[0]) == {"at", "address", "mechanism", "result"}
    assert history[0]["result"] == "success"


def test_the_installed_configuration_is_the_default_but_not_for_a_demo(server, tmp_path):
    """Without --config, commands use /etc/poplar/poplar.toml when it exists and say so
    in one line; `serve --demo` keeps to the embedded default (issue 20). The test
    writes the real file (as root), and only when none is there."""
    import pytest
    system = Path("/etc/poplar/poplar.toml")
    if system.exists() or os.geteuid() != 0:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            "needs root and no /etc/poplar/poplar.toml of the machine's own")
    srv = server(users={"carol": "carol password 1"}, start=False)
    env = {k: v for k, v in os.environ.items() if k != "POPLAR_CONFIG"}
    made_dir = not system.parent.exists()
    system.parent.mkdir(exist_ok=True)
    system.write_text(srv.config_path.read_text())
    try:
        p = subprocess.run([str(POPLAR_BIN), "user", "list"], capture_output=True, env=env,
                           cwd=tmp_path, timeout=60)
        assert p.returncode == 0, p.stderr
        assert p.stderr.decode().splitlines()[0] == f"poplar: configuration {system}", p.stderr
        assert p.stdout.decode().split() == ["carol"]
        assert not (tmp_path / "poplar-data").exists()
        # A demo never takes over the installation: the embedded default, in the
        # working folder (its fixed ports; stopped as soon as it is ready).
        demo = subprocess.Popen([str(POPLAR_BIN), "serve", "--demo"], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            lines = []
            for raw in demo.stdout:
                lines.append(raw.decode().strip())
                if lines[-1] == "ready":
                    break
            assert "listening pop3 127.0.0.1:1110" in lines, lines
        finally:
            demo.terminate()
            _, err = demo.communicate(timeout=30)
        assert err.decode().splitlines()[0].startswith(
            "poplar: configuration: the embedded default"), err
        assert (tmp_path / "poplar-data").is_dir()
    finally:
        system.unlink()
        if made_dir:
            system.parent.rmdir()


def test_every_listing_has_json(server):
    """`--json` on app-password list, mfa status, lockout list and sessions: each
    parses and holds what the text shows (issue 20)."""
    import json as jsonlib
    from test_mfa import app_password
    srv = server(users={"alice": "alice password 1"},
                 auth={"plaintext_networks": ["127.0.0.0/8"]})
    app_password(srv, "alice", "--label", "tablet")
    apps = jsonlib.loads(srv.cli("app-password", "list", "alice", "--json", check=True).stdout)
    assert [(a["label"], a["read_only"], a["last_used"]) for a in apps] == [("tablet", False, None)]
    status = jsonlib.loads(srv.cli("mfa", "status", "alice", "--json", check=True).stdout)
    assert status["enrolled"] is False and status["app_passwords"] == 1, status
    # One failure from one address: counted, not yet throttled.
    with srv.plain(source="127.62.0.1") as c:
        c.ok("USER alice")
        assert c.cmd("PASS wrong").startswith("-ERR")
        c.quit()
    state = jsonlib.loads(srv.cli("lockout", "list", "--json", check=True).stdout)
    assert state["bans"] == [] and state["locked_accounts"] == []
    assert [(f["user"], f["address"], f["failures"], f["throttled_until"])
            for f in state["failures"]] == [("alice", "127.62.0.1", 1, None)], state
    with srv.tls() as c:
        c.login("alice", "alice password 1")
        live = jsonlib.loads(srv.cli("sessions", "list", "--json", check=True).stdout)
        assert [s["user"] for s in live] == ["alice"], live
        c.quit()


def read_until_closed(conn, timeout: float = 10) -> str:
    """What the server says before it closes `conn` (which sends nothing more)."""
    conn.sock.settimeout(timeout)
    data = b""
    while True:
        chunk = conn.sock.recv(4096)
        if not chunk:
            return data.decode(errors="replace")
        data += chunk


def test_disable_and_del_end_the_users_live_sessions(server):
    """`user disable` and `user del` end the user's session at once on this node, not at
    its next sign-in (issue 20); other users' sessions go on."""
    srv = server(users={"alice": "alice password 1", "bob": "bob password 22",
                        "carol": "carol password 3"})
    alice, bob, carol = (srv.session(u) for u in ("alice", "bob", "carol"))
    p = srv.cli("user", "disable", "alice", check=True)
    assert b"ended 1 live session(s) of alice on this node" in p.stderr, p.stderr
    assert read_until_closed(alice).startswith("-ERR [SYS/TEMP]")
    p = srv.cli("user", "del", "carol", check=True)
    assert b"ended 1 live session(s) of carol" in p.stderr, p.stderr
    assert read_until_closed(carol).startswith("-ERR [SYS/TEMP]")
    assert bob.stat()[0] == 0  # untouched
    bob.quit()


def test_completions_and_the_man_page_come_from_the_command_line(tmp_path):
    """`poplar completions SHELL` and `poplar manpage` print what the package installs,
    generated from the commands themselves, touching no configuration or data (issue
    20)."""
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(POPLAR_BIN), *args], capture_output=True, cwd=tmp_path,
                              timeout=60, check=True)
    bash = run("completions", "bash").stdout.decode()
    assert "_poplar()" in bash and "app-password" in bash and "--maildir-subdir" in bash
    check = subprocess.run(["bash", "-n"], input=bash.encode(), capture_output=True)
    assert check.returncode == 0, check.stderr
    for shell in ("zsh", "fish"):
        assert "lockout" in run("completions", shell).stdout.decode()
    page = run("manpage").stdout.decode()
    assert page.splitlines()[2].startswith(".TH poplar 1"), page[:300]
    assert "serve" in page and "user" in page
    assert list(tmp_path.iterdir()) == [], "nothing is made in the working folder"
