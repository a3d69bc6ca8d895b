"""`poplar sessions`: live sessions through the control socket, and ending one."""

import json
import os
import stat
import time


def listed(srv):
    out = srv.cli("sessions", check=True).stdout.decode().splitlines()
    assert out[0].split()[:5] == ["session", "user", "from", "port", "state"], out
    return [line.split() for line in out[1:]]


def test_list_and_end_a_session(server):
    srv = server()
    srv.deliver(b"Subject: keep me\n\nbody\n")
    sock = srv.data_dir / "control.sock"
    assert stat.S_ISSOCK(os.stat(sock).st_mode)
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    waiting = srv.plain()
    alice = srv.session("alice")
    alice.ok("DELE 1")
    rows = listed(srv)
    by_state = {r[4]: r for r in rows}
    assert set(by_state) == {"authorization", "transaction"}, rows
    assert by_state["transaction"][1] == "alice"
    assert by_state["transaction"][3] == "pop3s"
    assert by_state["authorization"][1] == "-" and by_state["authorization"][3] == "pop3"
    assert by_state["transaction"][2].startswith("127.0.0.1:")
    session = by_state["transaction"][0]

    srv.cli("sessions", "end", session, check=True)
    data = alice.expect_eof(5)
    assert b"-ERR [SYS/TEMP] session ended by the administrator" in data, data
    # Not in UPDATE: the DELE was not carried out, and the maildrop is free again.
    assert len(srv.message_files()) == 1
    deadline = time.monotonic() + 5
    while len(listed(srv)) != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [r[4] for r in listed(srv)] == ["authorization"]
    with srv.session("alice") as c:
        assert c.stat()[0] == 1
        c.quit()
    lines = [json.loads(l) for l in (srv.data_dir / "audit.log").read_text().splitlines()]
    ended = [r for r in lines if r["event"] == "disconnect" and r["session"] == session]
    assert ended and ended[0]["end"] == "ended_by_admin" and ended[0]["deleted"] == 0
    assert srv.cli("sessions", "end", "no-such-session").returncode != 0
    waiting.quit()


def test_sessions_without_a_server(server):
    srv = server(start=False)
    r = srv.cli("sessions")
    assert r.returncode != 0 and b"is `poplar serve` running" in r.stderr
