"""Prometheus metrics and health checks on their own HTTP listener, read with the
`prometheus_client` parsers from PyPI: the classic text parser (what a scraper that
does not ask for OpenMetrics gets) and the strict OpenMetrics parser (what Prometheus
asks for). Counters are compared before and after real sessions and must move by
exactly what those sessions did.

Source addresses are distinct 127.0.0.0/8 addresses, as in test_defence.py, so the
defence's per-address counts of one step never touch another.
"""

import signal
import socket
import time

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_classic

from conftest import IO_TIMEOUT

PLAINTEXT_LOOPBACK = {"plaintext_networks": ["127.0.0.0/8"], "failure_delay_ms": 0}
ALICE_PW = "alice metrics secret"
WRONG_PW = "not alice's password"
SPRAY_PW = "Spray-Autumn-2026"


def samples(text: str) -> dict:
    """{(sample name, sorted label pairs): value} from the classic parser."""
    out = {}
    for family in parse_classic(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(snapshot: dict, name: str, **labels) -> float:
    return snapshot.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for_value(srv, name: str, expected: float, **labels) -> float:
    """Gauges follow connections the server tears down after the client saw EOF."""
    deadline = time.monotonic() + 5
    while True:
        got = value(samples(srv.scrape()), name, **labels)
        if got == expected or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def pass_exchange(srv, user: str, password: str, source: str) -> str:
    with srv.plain(source=source) as c:
        c.ok(f"USER {user}")
        reply = c.cmd(f"PASS {password}")
        c.quit()
    return reply


def test_counters_move_exactly_as_the_sessions_go(server):
    srv = server(users={"alice": ALICE_PW}, auth=PLAINTEXT_LOOPBACK,
                 defence={"ban_accounts": 3}, access={"deny": ["127.78.0.0/16"]})
    srv.deliver(b"Subject: one\n\nbody one\n")
    srv.deliver(b"Subject: two\n\nbody two\n")
    before = samples(srv.scrape())
    # The fixed series are there from the start, at zero.
    for reason in ("banned", "denied", "busy"):
        assert ("poplar_connections_refused_total", (("reason", reason),)) in before
    assert value(before, "poplar_sessions", state="authorization") == 0

    # 1. A signed-in session over implicit TLS: RETR one message, TOP (not a retrieval),
    # DELE the other, QUIT. Every octet the client reads is counted as sent.
    with srv.tls() as c:
        c.ok("USER alice")
        c.ok(f"PASS {ALICE_PW}")
        during = samples(srv.scrape())
        assert value(during, "poplar_sessions", state="transaction") == 1
        assert value(during, "poplar_sessions", state="authorization") == 0
        c.retr(1)
        c.multi("TOP 1 0")
        c.ok("DELE 2")
        c.quit()
        session_octets = c.received
    after_session = samples(srv.scrape())
    sent = (value(after_session, "poplar_sent_bytes_total")
            - value(before, "poplar_sent_bytes_total"))
    assert sent == session_octets, (sent, session_octets)

    # 2. A wrong password and 3. an unknown user, on the plain port.
    assert pass_exchange(srv, "alice", WRONG_PW, "127.70.0.1").startswith("-ERR [AUTH]")
    assert pass_exchange(srv, "nobody", WRONG_PW, "127.71.0.1").startswith("-ERR [AUTH]")

    # 4. One address sprays three unknown accounts: banned, then refused at connect.
    spray = "127.77.0.1"
    for user in ("carol", "dave", "erin"):
        assert pass_exchange(srv, user, SPRAY_PW, spray).startswith("-ERR [AUTH]")
    with srv.plain(greet=False, source=spray) as c:
        assert c.readline().startswith("-ERR [SYS/TEMP]")
        c.expect_eof()

    # 5. An address outside [access], and 6. a client that is not speaking TLS on 995.
    with srv.plain(greet=False, source="127.78.0.1") as c:
        assert c.readline().startswith("-ERR [SYS/PERM]")
        c.expect_eof()
    s = socket.create_connection(("127.0.0.1", srv.pop3s_port), timeout=IO_TIMEOUT)
    s.sendall(b"USER alice\r\n" * 100)
    try:
        while s.recv(4096):
            pass
    except OSError:
        pass
    s.close()

    assert wait_for_value(srv, "poplar_sessions", 0, state="transaction") == 0
    assert wait_for_value(srv, "poplar_sessions", 0, state="authorization") == 0
    after = samples(srv.scrape())

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    expected = {
        ("poplar_connections_total", (("listener", "pop3s"),)): 2,
        # wrong password, unknown user, three sprays, the banned and the denied client
        ("poplar_connections_total", (("listener", "pop3"),)): 7,
        ("poplar_connections_refused_total", (("reason", "banned"),)): 1,
        ("poplar_connections_refused_total", (("reason", "denied"),)): 1,
        ("poplar_connections_refused_total", (("reason", "busy"),)): 0,
        ("poplar_tls_handshakes_total", (("version", "TLSv1.3"),)): 1,
        ("poplar_tls_handshake_failures_total", (("reason", "error"),)): 1,
        ("poplar_sign_ins_total", (("mechanism", "USER"), ("result", "success"))): 1,
        ("poplar_sign_ins_total", (("mechanism", "USER"), ("result", "failure"))): 5,
        ("poplar_sign_in_failures_total", (("reason", "bad_password"),)): 1,
        ("poplar_sign_in_failures_total", (("reason", "unknown_user"),)): 4,
        ("poplar_sign_in_failures_total", (("reason", "banned"),)): 0,
        ("poplar_sign_in_failures_total", (("reason", "throttled"),)): 0,
        ("poplar_bans_total", ()): 1,
        ("poplar_account_locks_total", ()): 0,
        ("poplar_messages_retrieved_total", ()): 1,
        ("poplar_messages_deleted_total", ()): 1,
        ("poplar_maildrop_open_seconds_count", ()): 1,
        ("poplar_command_duration_seconds_count", (("command", "USER"),)): 6,
        ("poplar_command_duration_seconds_count", (("command", "PASS"),)): 6,
        ("poplar_command_duration_seconds_count", (("command", "RETR"),)): 1,
        ("poplar_command_duration_seconds_count", (("command", "TOP"),)): 1,
        ("poplar_command_duration_seconds_count", (("command", "DELE"),)): 1,
        ("poplar_command_duration_seconds_count", (("command", "QUIT"),)): 6,
        ("poplar_command_duration_seconds_count", (("command", "STAT"),)): 0,
    }
    got = {key: moved(key[0], **dict(key[1])) for key in expected}
    assert got == expected, {k: (got[k], v) for k, v in expected.items() if got[k] != v}
    # No other counter moved: every change in the exposition is one of the above, or
    # the bytes, the gauges and the latency sums and buckets they imply.
    for (name, labels), v in after.items():
        if name.endswith(("_sum", "_bucket")) or name in ("poplar_sent_bytes_total",):
            continue
        if (name, labels) not in expected and v != before.get((name, labels), 0.0):
            raise AssertionError(f"{name}{dict(labels)} moved: {before.get((name, labels))} -> {v}")

    # Whatever was scraped, no user name or password is in it.
    text = srv.scrape() + srv.scrape(openmetrics=True)
    for secret in ("alice", "nobody", "carol", "dave", "erin", ALICE_PW, WRONG_PW, SPRAY_PW,
                   "127.70.0.1", spray):
        assert secret not in text, secret


def test_openmetrics_for_prometheus_and_classic_text_for_the_rest(server):
    srv = server(users={"alice": ALICE_PW}, auth=PLAINTEXT_LOOPBACK)
    srv.deliver(b"Subject: one\n\nbody\n")
    with srv.session("alice") as c:
        c.retr(1)
        c.quit()
    status, headers, text = srv.http_get(
        "/metrics", "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;q=0.3")
    assert status == 200
    assert headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    # The strict parser checks the whole exposition: # EOF, units, _total, buckets.
    families = {f.name: f for f in parse_openmetrics(text)}
    assert families["poplar_sign_ins"].type == "counter"
    assert families["poplar_sessions"].type == "gauge"
    assert families["poplar_build"].type == "info"
    assert families["poplar_command_duration_seconds"].type == "histogram"
    assert families["poplar_command_duration_seconds"].unit == "seconds"
    assert families["poplar_maildrop_open_seconds"].unit == "seconds"
    assert all(name.startswith("poplar_") for name in families)
    status, headers, classic = srv.http_get("/metrics")
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# EOF" not in classic
    typed = {f.name: f.type for f in parse_classic(classic)}
    # Counters keep their type in the classic format too (the parser drops _total).
    assert typed["poplar_sign_ins"] == "counter", typed
    assert typed["poplar_sent_bytes"] == "counter"
    assert typed["poplar_command_duration_seconds"] == "histogram"
    assert typed["poplar_build_info"] == "gauge"


def test_health_readiness_and_a_port_of_its_own(server):
    srv = server()
    assert srv.http_get("/healthz")[0::2] == (200, "ok\n")
    assert srv.http_get("/readyz")[0::2] == (200, "ready\n")
    assert srv.http_get("/nothing")[0] == 404
    assert srv.metrics_port not in srv.pop3_ports + srv.pop3s_ports
    # The metrics port speaks HTTP, not POP3: no greeting, and POP3 gets an HTTP error.
    with socket.create_connection(("127.0.0.1", srv.metrics_port), timeout=IO_TIMEOUT) as s:
        s.sendall(b"CAPA\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400"), "metrics port answered like POP3"
    # And the POP3 ports do not serve metrics.
    with srv.plain(greet=False) as c:
        assert c.readline().startswith("+OK")
        c.send(b"GET /metrics HTTP/1.1\r\n")
        assert c.readline().startswith("-ERR")
    with socket.create_connection(("127.0.0.1", srv.pop3s_port), timeout=IO_TIMEOUT) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            reply = s.recv(100)
        except OSError:
            reply = b""
        assert not reply.startswith(b"HTTP"), reply


def test_default_is_loopback_and_empty_turns_it_off(server):
    srv = server(start=False)
    # The suite's config sets an ephemeral port; without [metrics] the default applies.
    srv.config.pop("metrics")
    from conftest import to_toml
    srv.config_path.write_text(to_toml(srv.config), encoding="utf-8")
    printed = srv.cli("config", "check", check=True).stdout.decode()
    section = printed.split("[metrics]", 1)[1]
    assert 'listen = "127.0.0.1:9110"' in section.split("\n[", 1)[0], printed
    off = server(metrics={"listen": ""})
    assert off.metrics_port is None
    assert not any(l.startswith("listening metrics") for l in off.stdout_lines), off.stdout_lines
    with off.tls() as c:
        c.quit()
    wide = server(start=False, metrics={"listen": "0.0.0.0:0"})
    p = wide.cli("config", "check", check=True)
    assert b"metrics.listen = 0.0.0.0:0 reaches beyond loopback" in p.stderr, p.stderr


def test_readyz_says_503_while_sessions_drain(server):
    """From SIGTERM on, /readyz is 503 (a load balancer takes the node out) while
    /healthz stays 200, until the sessions have drained or the grace period ends."""
    srv = server(limits={"shutdown_grace_secs": 4})
    # Larger than what loopback socket buffers hold, so the server cannot finish it.
    srv.deliver(b"Subject: big\n\n" + (b"y" * 998 + b"\n") * 32000)
    assert srv.http_get("/readyz")[0] == 200
    c = srv.session()
    # RETR without reading: the session is busy writing, not waiting for a command, so
    # shutdown has to wait for it.
    c.send("RETR 1\r\n")
    time.sleep(0.3)
    srv.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 3
    while srv.http_get("/readyz")[0] == 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.http_get("/readyz")[0::2] == (503, "not ready: not serving POP3\n")
    assert srv.http_get("/healthz")[0] == 200
    assert srv.proc.poll() is None, "exited before the grace period ended"
    c.abort()
    assert srv.stop() == 0
