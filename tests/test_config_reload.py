"""SIGHUP re-reads the whole configuration file: what can change live applies to the next
connection while open sessions go on; start-only settings keep their running value and
are logged as needing a restart; a file that does not parse keeps the old configuration."""

import signal
import time

from conftest import crlf, make_message, to_toml
from test_defence import pass_exchange

PLAINTEXT_LOOPBACK = {"plaintext_networks": ["127.0.0.0/8"]}
RELOAD_TIMEOUT = 15


def _stderr(srv) -> str:
    return srv.stderr_path.read_text(errors="replace")


def _reload(srv, changes: dict | None = None, text: str | None = None, expect: str = "configuration reloaded"):
    """Rewrites the configuration file (tables of `changes` replace the running ones'
    keys they name, or `text` whole), sends SIGHUP, and waits for `expect` in the log
    (once more than before)."""
    if text is None:
        for table, values in (changes or {}).items():
            if isinstance(values, dict):
                srv.config.setdefault(table, {}).update(values)
            else:
                srv.config[table] = values
        text = to_toml(srv.config)
    before = _stderr(srv).count(expect)
    srv.config_path.write_text(text, encoding="utf-8")
    srv.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + RELOAD_TIMEOUT
    while _stderr(srv).count(expect) <= before:
        assert time.monotonic() < deadline, f"no {expect!r} after SIGHUP:\n{srv.stderr_tail()}"
        time.sleep(0.05)


def test_sighup_applies_access_and_defence_to_new_connections_while_a_session_goes_on(server):
    srv = server(users={"alice": "alice pw", "bob": "bob pw"}, auth=PLAINTEXT_LOOPBACK,
                 defence={"throttle_after": 3, "throttle_base_secs": 600, "throttle_max_secs": 900})
    body = make_message("kept", "a session opened before the reload\n")
    srv.deliver(body, user="alice")

    # Under the first policy one wrong password does not stand in the way.
    assert pass_exchange(srv, "bob", "wrong", "127.61.0.1")[1].startswith(b"-ERR [AUTH]")
    assert pass_exchange(srv, "bob", "bob pw", "127.61.0.1")[1].startswith(b"+OK")

    # A session from the address about to be denied, signed in before the reload.
    held = srv.plain(source="127.62.0.9")
    assert held.ok("USER alice") and held.ok("PASS alice pw")
    assert held.stat() == (1, len(crlf(body)))

    _reload(srv, {"access": {"deny": ["127.62.0.0/24"]},
                  "defence": {"throttle_after": 0}})
    log = _stderr(srv)
    assert "access.deny" in log and "defence.throttle_after" in log, log[-2000:]

    # The next connection from there is refused before the greeting...
    with srv.plain(greet=False, source="127.62.0.10") as c:
        assert c.readline() == "-ERR [SYS/PERM] connections from your address are not accepted"
        c.expect_eof()
    # ...while the session already open goes on, and ends normally.
    assert held.retr(1) == crlf(body)
    held.quit()
    # Under the new policy the first failure throttles: the right password that came
    # through before is refused from that address now, not from another.
    assert pass_exchange(srv, "bob", "wrong", "127.63.0.1")[1].startswith(b"-ERR [AUTH]")
    assert pass_exchange(srv, "bob", "bob pw", "127.63.0.1")[1].startswith(b"-ERR [AUTH]")
    assert pass_exchange(srv, "bob", "bob pw", "127.63.0.2")[1].startswith(b"+OK")
    assert srv.proc.poll() is None


def test_start_only_settings_keep_their_value_and_say_a_restart_is_needed(server):
    srv = server(limits={"max_commands": 1000})
    port = srv.pop3_port
    with srv.plain() as c:
        c.quit()
    assert "connection opened" not in _stderr(srv), "debug lines before log.level says so"
    # The listeners and the sign-in hashing are set at start; the command limit and the
    # log level are not.
    _reload(srv, {"listen": {"pop3": ["127.0.0.1:1"]}, "auth": {"argon2_iterations": 2},
                  "limits": {"max_commands": 4}, "log": {"level": "debug"}})
    log = _stderr(srv)
    for setting in ("listen.pop3", "auth.argon2_iterations"):
        assert f"setting={setting}" in log and "until a restart" in log, log[-2000:]
    assert "limits.max_commands" in log and "log.level" in log
    # Still listening where it was, and the new command limit holds for new sessions.
    with srv.plain() as c:
        assert srv.pop3_port == port
        for _ in range(4):
            assert c.capa()
        c.send("CAPA\r\n")
        assert c.readline().startswith("-ERR")
        c.expect_eof()
    assert "connection opened" in _stderr(srv), "debug lines after the reload"


def test_a_broken_file_on_sighup_keeps_the_server_and_its_configuration(server):
    srv = server(users={"alice": "alice pw", "bob": "bob pw"}, auth=PLAINTEXT_LOOPBACK,
                 access={"deny": ["127.64.0.0/24"]})
    held = srv.session("alice")
    _reload(srv, text="[access\ndeny = \n", expect="configuration not reloaded")
    assert "still running the previous one" in _stderr(srv)
    assert srv.proc.poll() is None
    # The previous configuration holds: still denied there, still served elsewhere.
    with srv.plain(greet=False, source="127.64.0.1") as c:
        assert c.readline().startswith("-ERR [SYS/PERM]")
    with srv.plain(source="127.64.1.1") as c:
        assert c.ok("USER bob") and c.ok("PASS bob pw")
        c.quit()
    assert held.ok("NOOP")  # still served
    held.quit()

    # A file that parses but is invalid (no listener left, a log level that is not one)
    # is refused the same way.
    for broken in ({"listen": {"pop3": [], "pop3s": []}}, {"log": {"level": "server=loud"}}):
        _reload(srv, text=to_toml({**srv.config, **broken}), expect="configuration not reloaded")
    with srv.plain(source="127.64.1.2") as c:
        c.quit()
    # The certificates were read again all the same (what SIGHUP always did).
    assert _stderr(srv).count("certificates reloaded") >= 2


def test_sighup_serves_the_certificates_the_new_file_names(server, tmp_path):
    from tls_helpers import file_fingerprint, make_cert, served_fingerprint
    srv = server()
    sni = make_cert(tmp_path / "live", "sni", ["mail.two.test"])
    assert served_fingerprint(srv.pop3s_port, sni="mail.two.test") != file_fingerprint(sni[0])
    _reload(srv, {"tls": {"certificates": [{"cert": str(sni[0]), "key": str(sni[1])}]}})
    assert served_fingerprint(srv.pop3s_port, sni="mail.two.test") == file_fingerprint(sni[0])
    # A client CA that cannot be read refuses the whole file: the SNI pair stays.
    _reload(srv, {"tls": {"client_ca": str(tmp_path / "missing-ca.pem")}, "limits": {"max_commands": 5}},
            expect="configuration not reloaded")
    assert "tls.client_ca" in _stderr(srv)
    assert served_fingerprint(srv.pop3s_port, sni="mail.two.test") == file_fingerprint(sni[0])
    # A pair that cannot be loaded keeps the previous certificates serving.
    broken = tmp_path / "broken.pem"
    broken.write_text("not a certificate\n")
    del srv.config["tls"]["client_ca"]
    _reload(srv, {"tls": {"certificates": [{"cert": str(broken), "key": str(sni[1])}]}},
            expect="certificate reload failed")
    assert served_fingerprint(srv.pop3s_port, sni="mail.two.test") == file_fingerprint(sni[0])
