"""The key ring lives apart from the directory it protects (issue 19): an installation
from before, whose server key was in the directory, moves it out at its first start; the
directory then holds only the ring's fingerprint, and nothing in it opens a sealed
secret; two-factor sign-in and app passwords keep working."""

import base64
import hashlib
import hmac
import re
import sqlite3
import time

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from test_mfa import app_password, enroll, poplib_login

PW = "alice account password"
LEGACY_KEY = "5ca1ab1e" * 8  # 32 bytes, as the directory kept them (hex)


def adopted_ring(hex_key: str) -> str:
    """The ring a pre-ring installation's key becomes (what `KeyRing::adopt` makes)."""
    return f"poplar-keys v1\nbase {hex_key}\nkey 1 {hex_key}\nactive 1\n"


def open_totp(sealed: str, user: str, server_key: bytes) -> bytes | None:
    """Opens a sealed TOTP secret the way Poplar does (docs: AES-256-GCM under a key
    derived from the server key, bound to the user name); None if it does not open."""
    if sealed.startswith("v1:"):
        body = sealed[3:]
    elif sealed.startswith("v2:"):
        body = sealed.split(":", 2)[2]
    else:
        return None
    raw = base64.b64decode(body)
    key = hmac.new(server_key, b"poplar totp secret encryption v1", hashlib.sha256).digest()
    try:
        return AESGCM(key).decrypt(raw[:12], raw[12:], user.encode())
    except Exception:
        return None


def every_text(db) -> list[str]:
    """Every text value of every table of the database."""
    out = []
    for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
        for row in db.execute(f'SELECT * FROM "{table}"'):
            out += [v for v in row if isinstance(v, str)]
    return out


def test_the_key_moves_out_of_the_directory_and_sealed_secrets_still_open(server):
    srv = server(users={}, start=False)
    # An installation from before the ring: secrets sealed under a key the directory
    # itself kept. (Made with this version given that key, then the row set back to the
    # key, which is what the version before wrote there.)
    env = {"POPLAR_KEYS": adopted_ring(LEGACY_KEY)}
    srv.cli("user", "add", "alice", "--password-stdin", "--allow-weak", stdin=PW + "\n",
            check=True, env=env)
    srv.passwords["alice"] = PW
    totp, _ = _enroll_with(srv, env)
    app_pw = srv.cli("app-password", "create", "alice", "--label", "phone", check=True, env=env).stdout.decode().strip()
    db_path = srv.data_dir / "poplar.db"
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE server_secrets SET value = ? WHERE name = 'server_key'", (LEGACY_KEY,))
        sealed = db.execute("SELECT totp_secret FROM mfa WHERE user = 'alice'").fetchone()[0]
    # The test can fail: that key opens the sealed secret.
    assert open_totp(sealed, "alice", bytes.fromhex(LEGACY_KEY)) == totp.secret.encode()
    key_file = srv.root / "server.key"
    assert not key_file.exists()

    # The first start moves the key into the key file, beside the configuration.
    srv.start()
    text = key_file.read_text()
    assert LEGACY_KEY in text and oct(key_file.stat().st_mode & 0o777) == "0o640"
    with sqlite3.connect(db_path) as db:
        values = every_text(db)
        marker = db.execute("SELECT value FROM server_secrets WHERE name = 'server_key'").fetchone()[0]
    assert re.fullmatch(r"key-ring sha256:[0-9a-f]{64}", marker), marker
    everything = db_path.read_bytes() + b"".join(
        p.read_bytes() for p in srv.data_dir.glob("poplar.db-*"))
    assert LEGACY_KEY.encode() not in everything and bytes.fromhex(LEGACY_KEY) not in everything
    # Nothing in the database opens the sealed secret: no value, no hex run in a value.
    candidates = set(values)
    for v in values:
        candidates.update(re.findall(r"[0-9a-fA-F]{32,}", v))
    for c in candidates:
        for key in {c.encode(), bytes.fromhex(c) if re.fullmatch(r"([0-9a-fA-F]{2})+", c) else b""}:
            if key:
                assert open_totp(sealed, "alice", key) is None, "a directory value opens it"

    # The sealed secret and the keyed app password still work, over POP3.
    session = poplib_login(srv, "alice", app_pw)
    assert not isinstance(session, bytes), session
    session.quit()
    status = srv.cli("mfa", "status", "alice", check=True).stdout.decode()
    assert "enrolled" in status, status
    # The next step's code (the current one confirmed the enrolment and is spent).
    assert srv.cli("mfa", "check", "alice", totp.at(time.time() + 30)).returncode == 0
    shown = srv.cli("key", "show", "--json", check=True).stdout.decode()
    assert "recognises this ring" in shown and LEGACY_KEY not in shown, shown


def _enroll_with(srv, env):
    """`test_mfa.enroll`, with the ring given in the environment."""
    orig = srv.cli

    def cli(*args, **kw):
        kw.setdefault("env", env)
        return orig(*args, **kw)

    srv.cli = cli
    try:
        return enroll(srv)
    finally:
        srv.cli = orig


def test_a_node_without_the_ring_or_with_another_refuses_to_start(server):
    srv = server(users={"alice": PW}, start=False)
    key_file = srv.root / "server.key"
    # Made by the first command that needed it (adding alice).
    ring = key_file.read_text()
    r = srv.cli("key", "init")
    assert r.returncode == 5 and b"there already" in r.stderr, r.stderr
    assert srv.cli("key", "init", "--if-missing").returncode == 0
    key_file.unlink()

    def serve(env=None):
        import os
        import subprocess
        from conftest import POPLAR_BIN
        return subprocess.run([str(POPLAR_BIN), "--config", str(srv.config_path), "serve"],
                              capture_output=True, timeout=60, env={**os.environ, **(env or {})})

    r = serve()
    err = r.stderr.decode()
    assert r.returncode == 1 and "not here" in err and str(key_file) in err, err
    assert not key_file.exists(), "no new ring beside the one the directory names"
    assert srv.cli("mfa", "enroll", "alice").returncode == 1, "the CLI refuses too"
    # Another ring: refused, naming both fingerprints, nothing sealed under it.
    other = server(users={}, start=False)
    out = other.cli("key", "init", check=True).stdout.decode()
    assert f"key ring {other.root / 'server.key'}" in out, out
    key_file.write_text((other.root / "server.key").read_text())
    r = serve()
    assert r.returncode == 1 and "is not the one" in r.stderr.decode(), r.stderr
    assert srv.cli("key", "show").returncode == 1
    # The right one, from the environment (containers) instead of the file.
    key_file.unlink()
    shown = srv.cli("key", "show", env={"POPLAR_KEYS": ring}, check=True).stdout.decode()
    assert "POPLAR_KEYS" in shown and "recognises this ring" in shown, shown
    srv.start(env={"POPLAR_KEYS": ring})
    with srv.session("alice") as c:
        c.quit()
    # A malformed ring is an error, never quoted.
    r = srv.cli("mfa", "status", "alice", env={"POPLAR_KEYS": "poplar-keys v1\nbase zz\n"})
    assert r.returncode == 1 and b"POPLAR_KEYS" in r.stderr and b"line 2" in r.stderr, r.stderr


def test_rotation_under_load_then_retirement_once_nothing_needs_the_old_key(server):
    """`poplar key rotate` while clients sign in with app passwords: none fails; every
    sealed TOTP secret is re-sealed under the new key; `key retire` of the old key is
    refused (and lists what needs it) until the app passwords made before have been
    used and the recovery codes renewed, then allowed; sign-ins go on after it."""
    import poplib
    import subprocess
    import threading

    from conftest import IO_TIMEOUT, tls_context
    srv = server(users={"alice": PW, "bob": "bob pw", "carol": "carol pw"},
                 tls={"reload_check_secs": 1})
    totp, _ = enroll(srv, "alice")
    apps = {u: app_password(srv, u, "--label", "phone") for u in ("alice", "bob", "carol")}
    key_file = srv.root / "server.key"
    db_path = srv.data_dir / "poplar.db"

    failures, signed_in = [], []
    stop = threading.Event()

    def load(user):
        while not stop.is_set():
            try:
                p = poplib.POP3_SSL("127.0.0.1", srv.pop3s_port, timeout=IO_TIMEOUT,
                                    context=tls_context(srv.cert))
                p.user(user)
                p.pass_(apps[user])
                p.quit()
                signed_in.append(user)
            except Exception as e:  # noqa: BLE001 - every failure is the finding
                failures.append(f"{user}: {e!r}")

    threads = [threading.Thread(target=load, args=(u,)) for u in ("alice", "bob")]
    for t in threads:
        t.start()
    try:
        while len(signed_in) < 10:
            assert not failures, failures
            time.sleep(0.05)
        out = srv.cli("key", "rotate", check=True).stdout.decode()
        assert "key 2 added and active" in out and "re-sealed 1 secrets under key 2" in out, out
        # The server reads the changed file by itself (tls.reload_check_secs).
        deadline = time.monotonic() + 10
        while "key ring reloaded" not in srv.stderr_path.read_text(errors="replace"):
            assert time.monotonic() < deadline, srv.stderr_tail()
            time.sleep(0.05)
        before = len(signed_in)
        while len(signed_in) < before + 20:
            assert not failures, failures
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures, failures

    with sqlite3.connect(db_path) as db:
        sealed = [v for (v,) in db.execute("SELECT totp_secret FROM mfa")]
        hashes = dict(db.execute("SELECT user, hash FROM app_passwords"))
    assert sealed and all(v.startswith("v2:2:") for v in sealed), sealed
    # Used since the rotation: re-keyed; carol's, unused, is still under key 1.
    assert hashes["alice"].startswith("k2:") and hashes["bob"].startswith("k2:"), hashes
    assert not hashes["carol"].startswith("k"), hashes
    assert srv.cli("mfa", "check", "alice", totp.at(time.time() + 30)).returncode == 0
    text = key_file.read_text()
    assert "\nkey 1 " in text and "\nkey 2 " in text and "\nactive 2" in text

    # Key 1 still opens carol's app password and alice's recovery codes: refused, listed.
    r = srv.cli("key", "retire", "1")
    out = r.stdout.decode()
    assert r.returncode == 4, (r.returncode, out, r.stderr)
    assert "app password carol:" in out and "recovery codes of alice: 10" in out, out
    assert "\nkey 1 " in key_file.read_text()
    r = srv.cli("key", "retire", "2")
    assert r.returncode == 4 and b"active key" in r.stderr, r.stderr
    # Used, renewed: nothing needs key 1 any more.
    p = poplib_login(srv, "carol", apps["carol"])
    assert not isinstance(p, bytes), p
    p.quit()
    srv.cli("mfa", "recovery-codes", "alice", check=True)
    out = srv.cli("key", "retire", "1", check=True).stdout.decode()
    assert "key 1 retired" in out, out
    text = key_file.read_text()
    assert "\nkey 1 " not in text and "\nkey 2 " in text
    # The running server read the file again; every credential still works.
    time.sleep(2)
    for user in ("alice", "bob", "carol"):
        p = poplib_login(srv, user, apps[user])
        assert not isinstance(p, bytes), (user, p)
        p.quit()
    key_2 = bytes.fromhex(re.search(r"^key 2 ([0-9a-f]+)$", text, re.M).group(1))
    assert open_totp(sealed[0], "alice", key_2) == totp.secret.encode(), "opens under key 2"
    shown = srv.cli("key", "show", "--json", check=True).stdout.decode()
    assert '"keys":[2]' in shown.replace(" ", ""), shown


def test_a_key_file_every_user_can_read_is_warned_of(server):
    srv = server(users={"alice": PW}, start=False)
    key_file = srv.root / "server.key"
    assert not [l for l in srv.cli("config", "check").stderr.decode().splitlines() if "keys.file" in l]
    key_file.chmod(0o644)
    for args in (("config", "check"), ("audit",)):
        out = srv.cli(*args)
        text = (out.stdout + out.stderr).decode()
        assert "can be read by every user" in text and "0640" in text, (args, text)
    key_file.chmod(0o640)
