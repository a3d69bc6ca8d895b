"""The audit log: JSON lines for connections and sign-ins, written as they happen."""

import base64
import json
import os
import signal
import time

from conftest import plain_ir, read_audit

PLAINTEXT_LOOPBACK = {"plaintext_networks": ["127.0.0.0/8"], "failure_delay_ms": 0}


def audit_lines(srv, path=None):
    return read_audit(path or (srv.data_dir / "audit.log"))


def wait_for(srv, pred, timeout=5.0, path=None):
    deadline = time.monotonic() + timeout
    while True:
        lines = audit_lines(srv, path)
        found = [r for r in lines if pred(r)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_a_session_in_the_audit_log(server):
    srv = server(users={"alice": "alice pw"})
    srv.deliver(b"Subject: one\n\nbody one\n")
    srv.deliver(b"Subject: two\n\nbody two\n")
    with srv.tls() as c:
        c.ok("USER alice")
        assert c.cmd("PASS wrong pw").startswith("-ERR [AUTH]")
        # The failure is in the log while the connection is still open.
        fail = wait_for(srv, lambda r: r["event"] == "auth" and r["result"] == "failure")
        assert fail, audit_lines(srv)
        c.ok("USER alice")
        c.ok("PASS alice pw")
        c.retr(1)
        c.ok("DELE 2")
        c.quit()
    done = wait_for(srv, lambda r: r["event"] == "disconnect" and r.get("user") == "alice")
    assert done, audit_lines(srv)
    lines = audit_lines(srv)
    session = done[0]["session"]
    mine = [r for r in lines if r.get("session") == session]
    assert [r["event"] for r in mine] == ["connect", "tls", "auth", "auth", "disconnect"], mine
    connect, tls, failed, ok, end = mine
    for r in mine:
        assert r["time"].endswith("Z") and "T" in r["time"]
        assert r["src_ip"] == "127.0.0.1" and r["local_ip"] == "127.0.0.1"
        assert r["local_port"] == srv.pop3s_port and r["listener"] == "pop3s"
        assert isinstance(r["src_port"], int)
    assert tls["tls_version"].startswith("TLSv1_") and tls["tls_cipher"].startswith("TLS")
    assert tls["sni"] == "localhost"
    # Every line after the handshake carries the TLS facts, so each stands alone.
    for r in (failed, ok, end):
        assert (r["tls_version"], r["tls_cipher"], r["sni"]) == \
            (tls["tls_version"], tls["tls_cipher"], tls["sni"])
    assert "tls_version" not in connect
    assert failed["reason"] == "bad_password" and failed["mechanism"] == "USER"
    assert failed["user"] == "alice" and "user_resolved" not in failed
    assert ok["result"] == "success" and ok["user_resolved"] == "alice"
    assert end["end"] == "quit" and end["retrieved"] == 1 and end["deleted"] == 1
    assert end["bytes_sent"] > 0
    text = (srv.data_dir / "audit.log").read_text()
    assert "alice pw" not in text and "wrong pw" not in text
    assert oct(os.stat(srv.data_dir / "audit.log").st_mode & 0o777) == "0o600"


def test_bans_refusals_and_reasons_are_logged(server):
    srv = server(users={"alice": "alice pw"}, auth=PLAINTEXT_LOOPBACK,
                 defence={"ban_accounts": 3}, access={"deny": ["127.0.0.99/32"]})
    for user in ("nobody1", "nobody2", "nobody3"):
        with srv.plain(source="127.90.0.1") as c:
            c.send(f"AUTH PLAIN {plain_ir(user, 'Summer2024!')}\r\n")
            assert c.readline().startswith("-ERR [AUTH]")
            c.quit()
    with srv.plain(greet=False, source="127.90.0.1") as c:
        assert c.readline().startswith("-ERR [SYS/TEMP]")
    with srv.plain(greet=False, source="127.0.0.99") as c:
        assert c.readline().startswith("-ERR [SYS/PERM]")
    ban = wait_for(srv, lambda r: r["event"] == "ban")
    assert ban and ban[0]["source"] == "127.90.0.1" and ban[0]["accounts"] == 3
    assert ban[0]["until"].endswith("Z")
    # The audit writer is a thread of its own: wait for the last refusal to be written.
    assert wait_for(srv, lambda r: r["event"] == "refused" and r["src_ip"] == "127.0.0.99")
    refused = wait_for(srv, lambda r: r["event"] == "refused")
    assert {(r["src_ip"], r["reason"]) for r in refused} == {("127.90.0.1", "banned"),
                                                             ("127.0.0.99", "denied")}
    unknown = [r for r in audit_lines(srv) if r["event"] == "auth"]
    assert [r["reason"] for r in unknown] == ["unknown_user"] * 3
    assert {r["mechanism"] for r in unknown} == {"PLAIN"}
    text = (srv.data_dir / "audit.log").read_text()
    assert "Summer2024!" not in text
    assert base64.b64encode(b"Summer2024!").decode() not in text


def test_sighup_reopens_the_audit_log(server):
    srv = server()
    with srv.session("alice") as c:
        c.quit()
    log = srv.data_dir / "audit.log"
    assert wait_for(srv, lambda r: r["event"] == "disconnect")
    os.rename(log, srv.data_dir / "audit.log.1")
    os.kill(srv.pid, signal.SIGHUP)
    deadline = time.monotonic() + 5
    while not log.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    with srv.session("alice") as c:
        c.quit()
    assert wait_for(srv, lambda r: r["event"] == "disconnect", path=log)
    assert all(r["event"] != "connect" or r["time"] for r in audit_lines(srv, log))


def test_audit_to_stdout_and_off(server):
    srv = server(audit={"log": ""})
    with srv.session("alice") as c:
        c.quit()
    assert not (srv.data_dir / "audit.log").exists()
    srv = server(audit={"log": "-"})
    with srv.session("alice") as c:
        c.quit()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        events = [json.loads(line) for line in srv.stdout_lines if line.startswith("{")]
        if any(e["event"] == "disconnect" for e in events):
            break
        time.sleep(0.05)
    assert any(e["event"] == "auth" and e["result"] == "success" for e in events), srv.stdout_lines
