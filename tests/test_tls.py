"""CAPA (RFC 2449), STLS (RFC 2595), implicit TLS (RFC 8314) and plaintext refusal."""

import socket
import ssl
import subprocess

import pytest

from conftest import DEFAULT_PASSWORD, IO_TIMEOUT, fingerprint_of, plain_ir, require_tool, tls_context

BASE_CAPS = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "UTF8"]


def capa_names(lines):
    return [l.split()[0].upper() for l in lines if l.strip()]


def capa_line(lines, name):
    for l in lines:
        parts = l.split()
        if parts and parts[0].upper() == name:
            return parts
    return None


def assert_common_caps(lines):
    names = capa_names(lines)
    for cap in BASE_CAPS:
        assert cap in names, f"{cap} missing from CAPA {lines!r}"
    impl = capa_line(lines, "IMPLEMENTATION")
    assert impl and len(impl) >= 2, f"IMPLEMENTATION missing or empty in {lines!r}"
    exp = capa_line(lines, "EXPIRE")
    assert exp and [p.upper() for p in exp[1:]] == ["NEVER"], f"EXPIRE NEVER expected in {lines!r}"
    assert "LOGIN-DELAY" not in names, lines
    assert len(names) == len(set(names)), f"duplicate capabilities in {lines!r}"


def test_greetings(srv):
    with srv.plain() as c:
        assert c.greeting.startswith("+OK")
    with srv.tls() as c:
        assert c.greeting.startswith("+OK")


def test_capa_plain_before_stls(srv):
    with srv.plain() as c:
        caps = c.capa()
        assert_common_caps(caps)
        names = capa_names(caps)
        assert "STLS" in names, caps
        assert "USER" not in names, f"USER must not be offered before TLS: {caps!r}"
        assert "SASL" not in names, f"SASL must not be offered before TLS: {caps!r}"
        c.quit()


@pytest.mark.parametrize("how", ["stls", "pop3s"])
def test_capa_after_tls(srv, how):
    c = srv.stls() if how == "stls" else srv.tls()
    with c:
        caps = c.capa()
        assert_common_caps(caps)
        names = capa_names(caps)
        assert "STLS" not in names, caps
        assert "USER" in names, caps
        sasl = capa_line(caps, "SASL")
        assert sasl and "PLAIN" in [m.upper() for m in sasl[1:]], caps
        c.quit()


def test_capa_in_transaction(srv):
    with srv.session() as c:
        names = capa_names(c.capa())
        for cap in ("TOP", "UIDL", "PIPELINING", "RESP-CODES"):
            assert cap in names
        assert "STLS" not in names
        assert "LOGIN-DELAY" not in names
        c.quit()


def test_plaintext_network_allows_login_without_tls(server):
    srv = server(auth={"plaintext_networks": ["127.0.0.0/8"]})
    with srv.plain() as c:
        caps = c.capa()
        names = capa_names(caps)
        assert "USER" in names and "STLS" in names, caps
        sasl = capa_line(caps, "SASL")
        assert sasl and "PLAIN" in [m.upper() for m in sasl[1:]], caps
        c.login("alice", DEFAULT_PASSWORD)
        assert c.stat() == (0, 0)
        c.quit()
    with srv.plain() as c:
        r = c.auth_plain("alice", DEFAULT_PASSWORD)
        assert r.startswith("+OK"), r
        c.quit()


def test_plaintext_network_not_matching(server):
    srv = server(auth={"plaintext_networks": ["10.0.0.0/8", "::1/128"]})
    with srv.plain() as c:
        names = capa_names(c.capa())
        assert "USER" not in names and "SASL" not in names
        r = c.cmd("USER alice")
        if r.startswith("+OK"):
            r = c.cmd(f"PASS {DEFAULT_PASSWORD}")
        assert r.startswith("-ERR") and "TLS" in r.upper(), r


def test_user_pass_refused_before_tls(srv):
    with srv.plain() as c:
        r = c.cmd("USER alice")
        if r.startswith("+OK"):
            r = c.cmd(f"PASS {DEFAULT_PASSWORD}")
        assert r.startswith("-ERR"), r
        assert "TLS" in r.upper(), f"refusal should mention TLS: {r!r}"
        # not signed in
        c.err("STAT")
        # and the session can still upgrade and sign in
        c.starttls()
        c.login("alice", DEFAULT_PASSWORD)
        c.quit()


@pytest.mark.parametrize("form", ["initial", "continuation"])
def test_auth_plain_refused_before_tls(srv, form):
    with srv.plain() as c:
        if form == "initial":
            r = c.auth_plain("alice", DEFAULT_PASSWORD)
        else:
            r = c.cmd("AUTH PLAIN")
            if r.startswith("+"):
                r = c.cmd(plain_ir("alice", DEFAULT_PASSWORD))
        assert r.startswith("-ERR"), r
        assert "TLS" in r.upper(), f"refusal should mention TLS: {r!r}"
        c.err("STAT")
        c.quit()


def test_stls_command_injection(srv):
    """RFC 2595 / CVE-2011-0411 class: bytes pipelined after STLS must be discarded."""
    s = socket.create_connection(("127.0.0.1", srv.pop3_port), timeout=IO_TIMEOUT)
    buf = b""
    while not buf.endswith(b"\r\n"):
        chunk = s.recv(1)
        assert chunk, "EOF before greeting"
        buf += chunk
    assert buf.startswith(b"+OK"), buf
    s.sendall(b"STLS\r\nCAPA\r\n")
    buf = b""
    while not buf.endswith(b"\r\n"):
        chunk = s.recv(1)
        assert chunk, "EOF after STLS"
        buf += chunk
    assert buf.startswith(b"+OK"), buf
    tls = tls_context(srv.cert).wrap_socket(s, server_hostname="localhost")
    tls.settimeout(0.7)
    leaked = b""
    try:
        leaked = tls.recv(65536)
    except (socket.timeout, TimeoutError):
        pass
    assert leaked == b"", f"server answered a command injected before the TLS handshake: {leaked!r}"
    tls.settimeout(IO_TIMEOUT)
    tls.sendall(b"NOOP\r\n")
    got = b""
    while not got.endswith(b"\r\n"):
        chunk = tls.recv(65536)
        assert chunk, f"EOF after NOOP, got {got!r}"
        got += chunk
    # NOOP is a TRANSACTION command, so -ERR is the right answer here; exactly one line.
    assert (got.startswith(b"+OK") or got.startswith(b"-ERR")) and got.count(b"\r\n") == 1, got
    tls.settimeout(0.7)
    extra = b""
    try:
        extra = tls.recv(65536)
    except (socket.timeout, TimeoutError):
        pass
    assert extra == b"", f"more than one response after NOOP: {got!r} then {extra!r}"
    tls.close()


def test_stls_twice(srv):
    with srv.stls() as c:
        r = c.err("STLS")
        c.alive()
        c.login("alice", DEFAULT_PASSWORD)
        c.quit()


def test_stls_on_pop3s(srv):
    with srv.tls() as c:
        c.err("STLS")
        c.login("alice", DEFAULT_PASSWORD)
        c.quit()


def test_stls_in_transaction_state(server):
    srv = server(auth={"plaintext_networks": ["127.0.0.0/8"]})
    with srv.plain() as c:
        c.login("alice", DEFAULT_PASSWORD)
        c.err("STLS")
        c.ok("NOOP")
        c.quit()


def test_tls_verification_by_ip_san(srv):
    with srv.tls(hostname="127.0.0.1") as c:
        c.quit()


def test_tls_wrong_hostname_fails_verification(srv):
    s = socket.create_connection(("127.0.0.1", srv.pop3s_port), timeout=IO_TIMEOUT)
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_context(srv.cert).wrap_socket(s, server_hostname="not-this-host.example")
    s.close()


def test_tls_versions(srv):
    """TLS 1.2 and 1.3 accepted; TLS 1.1 refused."""
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = tls_context(srv.cert)
        ctx.minimum_version = version
        ctx.maximum_version = version
        s = socket.create_connection(("127.0.0.1", srv.pop3s_port), timeout=IO_TIMEOUT)
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            assert t.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
            t.sendall(b"QUIT\r\n")


def test_garbage_instead_of_tls_handshake(srv):
    """A non-TLS client on the pop3s port must not hurt the server."""
    s = socket.create_connection(("127.0.0.1", srv.pop3s_port), timeout=IO_TIMEOUT)
    s.sendall(b"USER alice\r\nPASS x\r\n")
    s.settimeout(IO_TIMEOUT)
    try:
        while s.recv(4096):
            pass
    except (ConnectionResetError, socket.timeout, TimeoutError):
        pass
    s.close()
    with srv.tls() as c:
        c.login("alice", DEFAULT_PASSWORD)
        c.quit()


def _read_line(sock):
    buf = b""
    while not buf.endswith(b"\r\n"):
        chunk = sock.recv(1)
        assert chunk, f"EOF, got {buf!r}"
        buf += chunk
    return buf


@pytest.mark.parametrize("how", ["pop3s", "stls"])
def test_quit_sends_tls_close_notify(srv, how):
    """RFC 8446 6.1: the server ends TLS with close_notify, not a bare TCP close.

    (openssl s_client reports 'unexpected eof while reading' and exits 1 otherwise.)"""
    ctx = tls_context(srv.cert)
    port = srv.pop3s_port if how == "pop3s" else srv.pop3_port
    s = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
    if how == "stls":
        assert _read_line(s).startswith(b"+OK")
        s.sendall(b"STLS\r\n")
        assert _read_line(s).startswith(b"+OK")
    t = ctx.wrap_socket(s, server_hostname="localhost", suppress_ragged_eofs=False)
    if how == "pop3s":
        assert _read_line(t).startswith(b"+OK")
    t.sendall(b"QUIT\r\n")
    assert _read_line(t).startswith(b"+OK")
    try:
        data = t.recv(4096)
    except ssl.SSLEOFError as e:
        raise AssertionError(f"connection closed without TLS close_notify after QUIT: {e}")
    assert data == b"", data
    t.close()


def test_self_signed_certificate_properties(server):
    require_tool("openssl")
    srv = server(hostname="mail.test.example")
    text = subprocess.run(["openssl", "x509", "-in", str(srv.cert), "-noout", "-text"],
                          capture_output=True, timeout=30, check=True).stdout.decode()
    assert "id-ecPublicKey" in text and ("P-256" in text or "prime256v1" in text), text
    for san in ("DNS:localhost", "IP Address:127.0.0.1", "DNS:mail.test.example"):
        assert san in text, f"{san} missing from the certificate:\n{text}"
    with srv.tls(hostname="mail.test.example") as c:
        c.quit()
    key_mode = (srv.data_dir / "tls" / "key.pem").stat().st_mode & 0o777
    assert key_mode & 0o077 == 0, f"private key is readable by others: {oct(key_mode)}"


def test_configured_certificate(server, tmp_path):
    require_tool("openssl")
    cert, key = tmp_path / "own-cert.pem", tmp_path / "own-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "2", "-subj", "/CN=pop.example.net",
                    "-addext", "subjectAltName=DNS:pop.example.net"],
                   capture_output=True, timeout=60, check=True)
    srv = server(tls={"cert": str(cert), "key": str(key)})
    assert srv.fingerprint and srv.fingerprint.upper() == fingerprint_of(cert)
    s = socket.create_connection(("127.0.0.1", srv.pop3s_port), timeout=IO_TIMEOUT)
    with tls_context(cert).wrap_socket(s, server_hostname="pop.example.net") as t:
        assert t.recv(100).startswith(b"+OK")


def test_stls_discards_earlier_user(server):
    """RFC 2595 section 4: after STLS the server forgets what the client said before,
    including a USER given in clear."""
    srv = server(auth={"plaintext_networks": ["127.0.0.0/8"]})
    with srv.plain() as c:
        c.ok("USER alice")
        c.starttls()
        r = c.cmd(f"PASS {DEFAULT_PASSWORD}")
        assert r.startswith("-ERR"), f"PASS after STLS used the USER sent before TLS: {r!r}"
        c.err("STAT")
        c.login("alice", DEFAULT_PASSWORD)
        c.quit()
