"""Real clients: curl (pop3 + STLS, pop3s), Python poplib, openssl s_client."""

import poplib
import subprocess

import pytest

from conftest import DEFAULT_PASSWORD, crlf, require_tool, tls_context

M1 = b"From: a@example.org\nTo: alice@example.org\nSubject: first\n\nHello from one.\n.leading dot\n..two\n.\nend\n"
M2 = b"From: b@example.org\nSubject: second\n\nsecond body\n"

CURL_TIMEOUT = 30


@pytest.fixture
def mail(server):
    srv = server()
    srv.bases = [srv.deliver(M1), srv.deliver(M2)]
    return srv


def curl(srv, scheme, path="/", *extra, user="alice", password=DEFAULT_PASSWORD, ssl_reqd=True):
    require_tool("curl")
    port = srv.pop3_port if scheme == "pop3" else srv.pop3s_port
    cmd = ["curl", "-sS", "--max-time", str(CURL_TIMEOUT), "--cacert", str(srv.cert),
           "-u", f"{user}:{password}"]
    if ssl_reqd:
        cmd.append("--ssl-reqd")
    cmd += list(extra)
    cmd.append(f"{scheme}://127.0.0.1:{port}{path}")
    p = subprocess.run(cmd, capture_output=True, timeout=CURL_TIMEOUT + 10)
    return p


def ok(p):
    assert p.returncode == 0, f"curl exit {p.returncode}: {p.stderr.decode(errors='replace')}"
    return p.stdout


@pytest.mark.parametrize("scheme", ["pop3", "pop3s"])
def test_curl_list_retr_uidl_top(mail, scheme):
    out = ok(curl(mail, scheme))
    assert out == b"1 %d\r\n2 %d\r\n" % (len(crlf(M1)), len(crlf(M2))), out
    out = ok(curl(mail, scheme, "/1"))
    assert out == crlf(M1), out
    out = ok(curl(mail, scheme, "/2"))
    assert out == crlf(M2), out
    out = ok(curl(mail, scheme, "/", "-X", "UIDL"))
    lines = out.split(b"\r\n")
    assert lines[-1] == b"" and len(lines) == 3, out
    assert lines[0].startswith(b"1 ") and lines[1].startswith(b"2 "), out
    assert lines[0] != lines[1]
    out = ok(curl(mail, scheme, "/", "-X", "TOP 1 0"))
    assert out == b"From: a@example.org\r\nTo: alice@example.org\r\nSubject: first\r\n\r\n", out


@pytest.mark.parametrize("scheme", ["pop3", "pop3s"])
def test_curl_dele(mail, scheme):
    ok(curl(mail, scheme, "/1", "-X", "DELE", "-I"))
    out = ok(curl(mail, scheme))
    assert out == b"1 %d\r\n" % len(crlf(M2)), out
    assert mail.find_message_file(mail.bases[0]) is None
    ok(curl(mail, scheme, "/", "-X", "DELE 1", "-I"))
    # curl prints the CRLF that precedes the terminator of an empty listing
    assert ok(curl(mail, scheme)) in (b"", b"\r\n")
    assert mail.message_files() == []


@pytest.mark.parametrize("scheme", ["pop3", "pop3s"])
def test_curl_sasl_initial_response(mail, scheme):
    p = curl(mail, scheme, "/1", "--sasl-ir", "-v")
    assert ok(p) == crlf(M1)
    assert "AUTH PLAIN " in p.stderr.decode(errors="replace")


@pytest.mark.parametrize("scheme", ["pop3", "pop3s"])
def test_curl_wrong_password(mail, scheme):
    p = curl(mail, scheme, password="wrong")
    assert p.returncode == 67, (p.returncode, p.stderr)  # CURLE_LOGIN_DENIED


def test_curl_refuses_without_tls_and_server_refuses_plaintext(mail):
    """Without --ssl-reqd curl may try to sign in in clear; the server must not accept it."""
    p = curl(mail, "pop3", ssl_reqd=False)
    assert p.returncode != 0, p.stdout
    assert p.stdout == b""


def test_curl_plaintext_network(server):
    srv = server(auth={"plaintext_networks": ["127.0.0.0/8"]})
    srv.deliver(M2)
    out = ok(curl(srv, "pop3", "/1", ssl_reqd=False))
    assert out == crlf(M2)


def test_curl_verbose_transcript_uses_sasl_or_user(mail):
    p = curl(mail, "pop3", "/1", "-v")
    ok(p)
    log = p.stderr.decode(errors="replace")
    assert "STLS" in log
    assert ("AUTH PLAIN" in log) or ("USER alice" in log), log


# ---------------------------------------------------------------- poplib


def _poplib_session(p):
    caps = p.capa()
    for cap in ("TOP", "UIDL", "PIPELINING", "RESP-CODES", "USER", "SASL"):
        assert cap in caps, caps
    assert "PLAIN" in caps["SASL"], caps
    assert "STLS" not in caps
    p.user("alice")
    assert p.pass_(DEFAULT_PASSWORD).startswith(b"+OK")
    count, size = p.stat()
    assert count == 2 and size == len(crlf(M1)) + len(crlf(M2))
    resp, listing, _ = p.list()
    assert listing == [b"1 %d" % len(crlf(M1)), b"2 %d" % len(crlf(M2))]
    resp, uidls, _ = p.uidl()
    assert len(uidls) == 2
    assert p.uidl(1).split()[1:2] == [b"1"]
    resp, lines, octets = p.retr(1)
    assert b"".join(l + b"\r\n" for l in lines) == crlf(M1)
    assert octets == len(crlf(M1))
    resp, lines, octets = p.top(1, 1)
    assert lines == [b"From: a@example.org", b"To: alice@example.org", b"Subject: first", b"", b"Hello from one."]
    assert p.noop().startswith(b"+OK")
    assert p.dele(2).startswith(b"+OK")
    with pytest.raises(poplib.error_proto):
        p.retr(2)
    assert p.rset().startswith(b"+OK")
    assert p.dele(1).startswith(b"+OK")
    assert p.quit().startswith(b"+OK")


def test_poplib_stls(mail):
    p = poplib.POP3("localhost", mail.pop3_port, timeout=15)
    try:
        assert p.getwelcome().startswith(b"+OK")
        caps = p.capa()
        assert "STLS" in caps and "USER" not in caps
        p.stls(tls_context(mail.cert))
        _poplib_session(p)
    finally:
        p.close()
    assert mail.find_message_file(mail.bases[0]) is None
    assert mail.find_message_file(mail.bases[1]) is not None


def test_poplib_ssl(mail):
    p = poplib.POP3_SSL("127.0.0.1", mail.pop3s_port, context=tls_context(mail.cert), timeout=15)
    try:
        assert p.getwelcome().startswith(b"+OK")
        _poplib_session(p)
    finally:
        p.close()
    p = poplib.POP3_SSL("localhost", mail.pop3s_port, context=tls_context(mail.cert), timeout=15)
    try:
        p.user("alice")
        p.pass_(DEFAULT_PASSWORD)
        assert p.stat()[0] == 1
        assert p.retr(1)[1] == [b"From: b@example.org", b"Subject: second", b"", b"second body"]
        p.quit()
    finally:
        p.close()


def test_poplib_wrong_password(mail):
    p = poplib.POP3_SSL("localhost", mail.pop3s_port, context=tls_context(mail.cert), timeout=15)
    try:
        p.user("alice")
        with pytest.raises(poplib.error_proto) as e:
            p.pass_("wrong")
        assert str(e.value).startswith("b'-ERR [AUTH]"), e.value
    finally:
        p.close()


# ---------------------------------------------------------------- openssl s_client


def s_client(srv, args, stdin: bytes):
    require_tool("openssl")
    cmd = ["openssl", "s_client", "-CAfile", str(srv.cert), "-verify_return_error",
           "-verify_hostname", "localhost", "-servername", "localhost", "-crlf", "-ign_eof"] + args
    p = subprocess.run(cmd, input=stdin, capture_output=True, timeout=30)
    return p


def test_openssl_starttls(mail):
    p = s_client(mail, ["-starttls", "pop3", "-connect", f"127.0.0.1:{mail.pop3_port}"], b"CAPA\nQUIT\n")
    out = p.stdout.decode(errors="replace")
    # (s_client's exit status reflects how the server closed TLS; see test_tls close_notify)
    assert "Verify return code: 0 (ok)" in out, out
    lines = [l.strip() for l in out.splitlines()]
    assert "USER" in lines, out
    assert any(l.startswith("SASL") and "PLAIN" in l.split() for l in lines), out
    assert "STLS" not in lines, out
    assert "TOP" in lines and "UIDL" in lines and "PIPELINING" in lines, out


def test_openssl_pop3s(mail):
    p = s_client(mail, ["-connect", f"127.0.0.1:{mail.pop3s_port}"],
                 f"CAPA\nUSER alice\nPASS {DEFAULT_PASSWORD}\nSTAT\nQUIT\n".encode())
    out = p.stdout.decode(errors="replace")
    # (s_client's exit status reflects how the server closed TLS; see test_tls close_notify)
    assert "Verify return code: 0 (ok)" in out, out
    lines = [l.strip() for l in out.splitlines()]
    plus = [l for l in lines if l.startswith("+OK")]
    # greeting, CAPA, USER, PASS, STAT, QUIT
    assert len(plus) == 6, out
    assert plus[4].startswith("+OK 2 %d" % (len(crlf(M1)) + len(crlf(M2)))), plus
    assert "STLS" not in lines and "USER" in lines, out


def test_openssl_tls12(mail):
    p = s_client(mail, ["-tls1_2", "-connect", f"127.0.0.1:{mail.pop3s_port}"], b"QUIT\n")
    out = p.stdout.decode(errors="replace")
    assert "Verify return code: 0 (ok)" in out and "TLSv1.2" in out, out
    assert "+OK" in out, out
