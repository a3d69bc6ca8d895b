"""Beyond one machine: the PostgreSQL directory, `poplar directory copy`, the shared
server key (issue 9). PostgreSQL is a private cluster on loopback (conftest's
`pg_server`)."""

from __future__ import annotations

import base64
import re

from scramp import ScramClient

from conftest import Conn

PW = "alice secret pw"
BOB_PW = "bob other pw"


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def unb64(s: str) -> str:
    return base64.b64decode(s[2:].strip()).decode()


def scram(c: Conn, user: str, password: str) -> str:
    client = ScramClient(["SCRAM-SHA-256"], user, password)
    c.send(f"AUTH SCRAM-SHA-256 {b64(client.get_client_first())}\r\n")
    line = c.readline()
    if not line.startswith("+ "):
        return line
    client.set_server_first(unb64(line))
    c.send(b64(client.get_client_final()) + "\r\n")
    line = c.readline()
    if not line.startswith("+ "):
        return line
    client.set_server_final(unb64(line))  # raises if the server signature is wrong
    c.send("\r\n")
    return c.readline()


def sign_in_every_way(srv, app_pw: str):
    """alice with USER/PASS and SCRAM-SHA-256, bob with an app password."""
    with srv.tls() as c:
        c.login("alice", PW)
        assert c.stat()[0] == 1
        c.quit()
    with srv.tls() as c:
        r = scram(c, "alice", PW)
        assert r.startswith("+OK"), r
        c.quit()
    with srv.tls() as c:
        c.login("bob", app_pw)
        c.quit()
    with srv.tls() as c:
        assert c.cmd("USER alice").startswith("+OK")
        assert c.cmd("PASS wrong password").startswith("-ERR")


def test_poplar_runs_on_postgres_and_config_check_names_it(server, pg_url):
    srv = server(users={}, start=False, directory={"url": pg_url})
    out = srv.cli("config", "check", check=True)
    assert f"# directory: {pg_url}" in out.stdout.decode()
    srv.add_user("alice", PW)
    srv.start()
    with srv.tls() as c:
        c.login("alice", PW)
        c.quit()
    assert not (srv.data_dir / "poplar.db").exists(), "nothing in SQLite"
    assert "alice" in srv.cli("user", "list", check=True).stdout.decode()


def test_config_check_refuses_a_bad_directory_url(server):
    srv = server(users={}, start=False, directory={"url": "mysql://u:topsecret@db/x"})
    r = srv.cli("config", "check")
    assert r.returncode != 0
    err = r.stderr.decode()
    assert "directory.url" in err and "topsecret" not in err, err
    srv = server(users={}, start=False, directory={"url": "postgres://u:topsecret@db/x"})
    r = srv.cli("config", "check", check=True)
    assert "topsecret" not in r.stdout.decode() + r.stderr.decode()
    assert "PGPASSWORD" in r.stderr.decode()


def test_directory_copy_round_trip(server, pg_url, tmp_path):
    # A SQLite directory seeded through the CLI, with every kind of credential.
    a = server(users={"alice": PW, "bob": BOB_PW}, start=False)
    r = a.cli("app-password", "create", "bob", "--label", "phone", check=True)
    app_pw = r.stdout.decode().strip()
    assert re.fullmatch(r"[a-z0-9]{4}(-[a-z0-9]{4}){3}", app_pw), app_pw
    a.cli("user", "networks", "alice", "127.0.0.0/8", check=True)
    a.start()
    a.deliver(b"Subject: one\r\n\r\nbody\r\n", user="alice")
    sign_in_every_way(a, app_pw)
    a.stop()
    sqlite_url = f"sqlite://{a.data_dir / 'poplar.db'}"

    # Copied to PostgreSQL; a node with a data folder of its own (no key file) serves it.
    out = a.cli("directory", "copy", "--from", sqlite_url, "--to", pg_url, check=True)
    text = out.stdout.decode()
    assert "users: 2" in text and "app_passwords: 1" in text and "server_secrets: 1" in text, text
    b = server(users={}, start=False, directory={"url": pg_url})
    b.start()
    sign_in_every_way(b, app_pw)
    assert "127.0.0.0/8" in b.cli("user", "networks", "alice", check=True).stdout.decode()
    b.stop()

    # And back into a new SQLite file.
    back = tmp_path / "back.db"
    a.cli("directory", "copy", "--from", pg_url, "--to", f"sqlite://{back}", check=True)
    c = server(users={}, start=False, directory={"url": f"sqlite://{back}"})
    c.start()
    sign_in_every_way(c, app_pw)
    c.stop()

    # A copy into a directory that has rows is refused.
    r = a.cli("directory", "copy", "--from", sqlite_url, "--to", pg_url)
    assert r.returncode != 0 and "not empty" in r.stderr.decode(), r.stderr
