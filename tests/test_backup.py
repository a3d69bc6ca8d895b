"""`poplar backup` while the server runs, `backup verify`, and `poplar restore` into a
wiped data folder (SQLite) or a new database (PostgreSQL), with the key ring kept apart
(issue 19): the restored server takes the same app password and a TOTP code, serves the
same UIDLs, and keeps the sign-in history and the lockout state."""

import json
import shutil
import threading
import time

import pytest

from conftest import new_pg_database
from test_defence import pass_exchange
from test_mfa import app_password, enroll, poplib_login, raw_pass

PW = "alice account password"
PLAINTEXT_LOOPBACK = {"plaintext_networks": ["127.0.0.0/8"]}


def _history(srv):
    return json.loads(srv.cli("user", "history", "alice", "--json", check=True).stdout)


def _lockouts(srv):
    """The lockout list, without the rows of no failures (PostgreSQL lists a row of 0
    for an address that signed in since)."""
    listing = json.loads(srv.cli("lockout", "list", "--json", check=True).stdout)
    listing["failures"] = [f for f in listing["failures"] if f["failures"]]
    return listing


def _without_carol(listing):
    """carol signed in during the backup: a sign-in in flight at the snapshot counts
    as the failure it is until settled (as after a crash), so hers may be one."""
    return {**listing, "failures": [f for f in listing["failures"] if f["user"] != "carol"]}


def _uidls(srv, app):
    with srv.session("alice", app) as c:
        uidls = c.uidl()
        c.quit()
    return uidls


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_backup_while_serving_then_restore_into_an_empty_directory(server, tmp_path, backend, request):
    overrides = {"auth": PLAINTEXT_LOOPBACK,
                 "defence": {"throttle_base_secs": 600, "throttle_max_secs": 900},
                 "mfa": {"default": "optional", "password_with_code": True}}
    if backend == "postgres":
        pg = request.getfixturevalue("pg_server")
        ring = tmp_path / "ring" / "server.key"
        overrides["directory"] = {"url": new_pg_database(pg)}
        overrides["keys"] = {"file": str(ring)}
    srv = server(users={"alice": PW, "bob": "bob pw", "carol": "carol pw"}, **overrides)
    # Password + TOTP, an app password, imported UIDLs, a throttled address.
    totp, _ = enroll(srv, "alice")
    used_step = int(time.time() // 30) + 1
    assert raw_pass(srv, "alice", PW + totp.at(time.time() + 30)).startswith(b"+OK")
    app = app_password(srv, "alice", "--label", "phone")
    names = [srv.deliver(f"Subject: {i}\n\nmessage {i}\n".encode(), user="alice") for i in range(3)]
    listing = srv.root / "uidls.txt"
    listing.write_text("".join(f"{n} OLD-{i}\n" for i, n in enumerate(names)))
    srv.cli("import", "uidls", "alice", "--list", str(listing), check=True)
    for i in range(4):
        assert pass_exchange(srv, "bob", f"guess {i}", "127.81.0.1")[1].startswith(b"-ERR [AUTH]")
    uidls = _uidls(srv, app)
    assert uidls == {1: "OLD-0", 2: "OLD-1", 3: "OLD-2"}
    lockouts = _lockouts(srv)
    throttled = [(f["user"], f["address"]) for f in lockouts["failures"]]
    assert throttled == [("bob", "127.81.0.1")], lockouts
    history = _history(srv)
    assert len(history) >= 2, history

    # A symbolic link planted in the Maildir, pointing at the key ring: never followed.
    ring_file = srv.root / "server.key" if backend == "sqlite" else ring
    planted = srv.data_dir / "mail" / "alice" / "cur" / "1700000999.M1P1.planted:2,S"
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.symlink_to(ring_file)
    # The backup, while carol signs in and out.
    stop, failures, done = threading.Event(), [], []

    def load():
        while not stop.is_set():
            p = poplib_login(srv, "carol", "carol pw")
            if isinstance(p, bytes):
                failures.append(p)
            else:
                p.quit()
                done.append(1)

    t = threading.Thread(target=load)
    t.start()
    try:
        while not done:
            time.sleep(0.02)
        dest = tmp_path / "backup"
        # The Maildirs are in the data folder here, so the mail goes into the backup too.
        out = srv.cli("backup", "--with-mail", str(dest), check=True).stdout.decode()
    finally:
        stop.set()
        t.join()
    assert not failures, failures
    assert "backed up 3 users" in out and "the key ring is not in it" in out, out
    manifest = json.loads((dest / "manifest.json").read_text())
    paths = {f["path"] for f in manifest["files"]}
    assert "directory.db" in paths and "maildirs/alice/poplar-uidl" in paths, paths
    assert {f"maildirs/alice/new/{n}" for n in names} <= paths or \
        len([p for p in paths if p.startswith("maildirs/alice/cur/")]) == 3, paths
    assert not any("server.key" in p for p in paths), "never the key ring by default"
    assert not any("planted" in p for p in paths), paths
    key_hex = ring_file.read_text().split("\nkey 1 ")[1][:64]
    for f in dest.rglob("*"):
        if f.is_file() and not f.is_symlink():
            assert key_hex.encode() not in f.read_bytes(), f"the key ring leaked into {f}"
    assert ring_file.read_text().split("\nkey 1 ")[1][:64] not in (dest / "directory.db").read_bytes().hex()
    assert b"verified" in srv.cli("backup", "verify", str(dest), check=True).stdout
    # A changed file is caught.
    uidl = dest / "maildirs" / "alice" / "poplar-uidl"
    original = uidl.read_bytes()
    uidl.write_bytes(original.replace(b"OLD-1", b"OLD-9"))
    r = srv.cli("backup", "verify", str(dest))
    assert r.returncode == 1 and b"maildirs/alice/poplar-uidl: changed" in r.stderr, r.stderr
    uidl.write_bytes(original)
    # A backup never goes into a folder that has something in it.
    assert srv.cli("backup", str(dest)).returncode == 5

    # Lost: the data folder (and for PostgreSQL, the database); the key ring stays.
    srv.stop()
    shutil.rmtree(srv.data_dir)
    if backend == "postgres":
        srv.config["directory"]["url"] = new_pg_database(pg)
        srv.config_path.write_text(__import__("conftest").to_toml(srv.config))
    assert ring_file.exists()
    out = srv.cli("restore", str(dest), check=True).stdout.decode()
    assert "restored 3 users" in out, out
    # Once restored, a second restore into the same directory is refused.
    assert srv.cli("restore", str(dest)).returncode != 0
    srv.start()
    assert _history(srv) == history, "the sign-in history"
    assert _without_carol(_lockouts(srv)) == lockouts, "the lockout state"
    assert pass_exchange(srv, "bob", "bob pw", "127.81.0.1")[1].startswith(b"-ERR [AUTH]"), \
        "still throttled there"
    assert _uidls(srv, app) == uidls, "the imported UIDLs"
    # The app password, and a TOTP code newer than the last one used.
    p = poplib_login(srv, "alice", app)
    assert not isinstance(p, bytes), p
    p.quit()
    while int(time.time() // 30) < used_step:
        time.sleep(0.5)
    assert raw_pass(srv, "alice", PW + totp.at(time.time() + 30)).startswith(b"+OK")
