"""Two-factor sign-in and app passwords, with an independent TOTP implementation (pyotp),
Python's poplib and curl."""

import base64
import poplib
import re
import subprocess
import time

import pyotp
import scramp
from conftest import IO_TIMEOUT, require_tool

FAILURE = b"-ERR [AUTH] invalid user name or password\r\n"
PW = "alice account password"


def enroll(srv, user="alice"):
    """Enrols with the CLI; returns (pyotp.TOTP, recovery codes)."""
    out = srv.cli("mfa", "enroll", user, stdin="", check=True).stdout.decode()
    uri = re.search(r"^uri (otpauth://\S+)$", out, re.M).group(1)
    totp = pyotp.parse_uri(uri)
    assert totp.digits == 6 and totp.interval == 30
    assert "\u2580" in out or "\u2584" in out or "\u2588" in out, "a QR code in the terminal"
    # Nothing is enrolled until a current code confirms it.
    assert "waiting for confirmation" in srv.cli("mfa", "status", user, check=True).stdout.decode()
    r = srv.cli("mfa", "confirm", user, "000000")
    if totp.now() != "000000":
        assert r.returncode != 0
    out = srv.cli("mfa", "confirm", user, totp.now(), check=True).stdout.decode()
    codes = re.findall(r"^  ([a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4})$", out, re.M)
    assert len(codes) == 10 and len(set(codes)) == 10, out
    return totp, codes


def app_password(srv, user="alice", *args):
    r = srv.cli("app-password", "create", user, *args, check=True)
    password = r.stdout.decode().strip()
    assert re.fullmatch(r"[a-z0-9]{4}(-[a-z0-9]{4}){3}", password), password
    return password


def poplib_login(srv, user, password):
    p = poplib.POP3_SSL("127.0.0.1", srv.pop3s_port, timeout=IO_TIMEOUT,
                        context=__import__("conftest").tls_context(srv.cert))
    p.user(user)
    try:
        p.pass_(password)
    except poplib.error_proto as e:
        p.close()
        return e.args[0]
    return p


def raw_pass(srv, user, password):
    with srv.tls() as c:
        c.ok(f"USER {user}")
        c.send(f"PASS {password}\r\n")
        reply = c.readline_bytes()
        c.quit()
    return reply


def test_enrolment_codes_and_recovery_codes(server):
    srv = server(users={"alice": PW}, mfa={"default": "optional"})
    totp, codes = enroll(srv)
    status = srv.cli("mfa", "status", "alice", check=True).stdout.decode()
    assert "authenticator enrolled" in status and "recovery codes left 10" in status
    assert "account password alone opens POP3: no" in status
    # The code the confirmation used is spent; the next step's code works once.
    nxt = totp.at(time.time() + 30)
    assert srv.cli("mfa", "check", "alice", nxt).returncode == 0
    assert srv.cli("mfa", "check", "alice", nxt).returncode != 0, "a reused code"
    assert srv.cli("mfa", "check", "alice", totp.at(time.time() - 60)).returncode != 0, \
        "two steps off"
    assert srv.cli("mfa", "check", "alice", codes[3]).returncode == 0
    assert srv.cli("mfa", "check", "alice", codes[3]).returncode != 0, "a recovery code used twice"
    assert srv.cli("mfa", "check", "alice", codes[4].upper().replace("-", " ")).returncode == 0
    assert "recovery codes left 8" in srv.cli("mfa", "status", "alice", check=True).stdout.decode()


def test_pop3_needs_an_app_password(server):
    srv = server(users={"alice": PW, "bob": "bob account password"})
    srv.cli("mfa", "policy", "alice", "required", check=True)
    # The right account password gets exactly the bytes of a wrong one.
    assert raw_pass(srv, "alice", PW) == FAILURE
    assert raw_pass(srv, "alice", "wrong") == FAILURE
    assert raw_pass(srv, "bob", "wrong") == FAILURE
    assert isinstance(poplib_login(srv, "alice", PW), bytes)

    phone = app_password(srv, "alice", "--label", "phone")
    p = poplib_login(srv, "alice", phone)
    assert not isinstance(p, bytes), p
    p.stat()
    p.quit()
    # curl with AUTH PLAIN over pop3s.
    curl = require_tool("curl")
    r = subprocess.run([curl, "-sS", "--cacert", str(srv.cert), "--login-options", "AUTH=PLAIN",
                        "-u", f"alice:{phone}", f"pop3s://localhost:{srv.pop3s_port}/"],
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    # Typed with capitals and spaces, as from a phone's keyboard.
    p = poplib_login(srv, "alice", phone.upper().replace("-", " "))
    assert not isinstance(p, bytes), p
    p.quit()
    # It is alice's: not bob's.
    assert raw_pass(srv, "bob", phone) == FAILURE

    listed = srv.cli("app-password", "list", "alice", check=True).stdout.decode()
    row = next(line for line in listed.splitlines() if " phone " in line)
    assert row.rstrip().endswith("from 127.0.0.1"), row
    assert " full " in row and " never " in row and " any " in row, row
    ident = row.split()[0]
    srv.cli("app-password", "revoke", "alice", ident, check=True)
    assert raw_pass(srv, "alice", phone) == FAILURE, "revoked at once"
    r = subprocess.run([curl, "-sS", "--cacert", str(srv.cert), "--login-options", "AUTH=PLAIN",
                        "-u", f"alice:{phone}", f"pop3s://localhost:{srv.pop3s_port}/"],
                       capture_output=True, timeout=30)
    assert r.returncode != 0

    expired = app_password(srv, "alice", "--label", "old", "--expires-days", "0")
    assert raw_pass(srv, "alice", expired) == FAILURE
    fenced = app_password(srv, "alice", "--label", "office", "--networks", "127.0.0.0/24")
    with srv.tls(source="127.0.0.5") as c:
        c.ok("USER alice")
        assert c.cmd(f"PASS {fenced}").startswith("+OK")
        c.quit()
    with srv.tls(source="127.3.0.5") as c:
        c.ok("USER alice")
        c.send(f"PASS {fenced}\r\n")
        assert c.readline_bytes() == FAILURE
        c.quit()
    # A password that merely looks like an app password is checked as a password.
    assert raw_pass(srv, "alice", "abcd-efgh-jkmn-pqrs") == FAILURE
    # With two factors off again, the account password works.
    srv.cli("mfa", "policy", "alice", "off", check=True)
    assert raw_pass(srv, "alice", PW).startswith(b"+OK")


def test_read_only_app_password(server):
    srv = server(users={"alice": PW}, mfa={"default": "required"})
    srv.deliver(b"Subject: stays\n\nbody\n")
    scanner = app_password(srv, "alice", "--label", "helpdesk", "--read-only")
    with srv.session("alice", password=scanner) as c:
        c.retr(1)
        r = c.cmd("DELE 1")
        assert r == "-ERR read-only access: messages cannot be deleted in this session"
        c.quit()
    assert len(srv.message_files()) == 1


def test_password_followed_by_the_code(server):
    srv = server(users={"alice": PW}, mfa={"default": "optional", "password_with_code": True})
    totp, _ = enroll(srv)
    nxt = totp.at(time.time() + 30)
    assert raw_pass(srv, "alice", PW + nxt).startswith(b"+OK")
    assert raw_pass(srv, "alice", PW + nxt) == FAILURE, "each code once"
    assert raw_pass(srv, "alice", PW) == FAILURE
    assert raw_pass(srv, "alice", "wrong" + totp.now()) == FAILURE


def test_scram_and_user_pass_refused_with_two_factors(server):
    srv = server(users={"alice": PW}, mfa={"default": "required"})
    client = scramp.ScramClient(["SCRAM-SHA-256"], "alice", PW)
    with srv.tls() as c:
        r = c.cmd("AUTH SCRAM-SHA-256 " + base64.b64encode(client.get_client_first().encode()).decode())
        assert r.startswith("+ ")
        client.set_server_first(base64.b64decode(r[2:]).decode())
        r = c.cmd(base64.b64encode(client.get_client_final().encode()).decode())
        if r.startswith("+ "):
            r = c.cmd("")
        assert r == FAILURE.decode().rstrip("\r\n"), r
        c.quit()
