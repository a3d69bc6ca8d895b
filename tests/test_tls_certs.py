"""SNI certificate choice (RFC 6066 section 3), ALPN `pop3` (RFC 8314 section 7.4) and
what `poplar config check` says about certificates."""

import socket
import ssl
import subprocess

import pytest

from conftest import DEFAULT_PASSWORD, IO_TIMEOUT, require_tool, tls_context
from tls_helpers import file_fingerprint, make_cert, open_session, pem_fingerprint, served_fingerprint


@pytest.fixture
def sni_server(server, tmp_path):
    """A server with a default certificate for localhost and two SNI certificates:
    one for mail.one.test and *.one.test (ECDSA), one for pop.two.test (RSA)."""
    certs = tmp_path / "certs"
    default = make_cert(certs, "default", ["localhost"], ips=["127.0.0.1"])
    one = make_cert(certs, "one", ["mail.one.test", "*.one.test"])
    two = make_cert(certs, "two", ["pop.two.test"], kind="rsa")
    srv = server(tls={
        "cert": str(default[0]), "key": str(default[1]),
        "certificates": [{"cert": str(c), "key": str(k)} for c, k in (one, two)],
    })
    return srv, {name: file_fingerprint(c) for name, (c, _) in
                 {"default": default, "one": one, "two": two}.items()}, (default, one, two)


def test_each_name_gets_its_own_certificate(sni_server):
    srv, fp, _ = sni_server
    assert srv.fingerprint == fp["default"], "serve prints the default certificate's fingerprint"
    assert len(set(fp.values())) == 3
    cases = {
        "mail.one.test": "one",
        "MAIL.One.Test": "one",       # case-insensitive
        "imap.one.test": "one",       # the wildcard covers one label
        "a.b.one.test": "default",    # ... and only one
        "one.test": "default",
        "pop.two.test": "two",
        "unknown.example": "default",
        None: "default",              # no SNI at all
    }
    for sni, want in cases.items():
        for starttls in (False, True):
            port = srv.pop3_port if starttls else srv.pop3s_port
            got = served_fingerprint(port, sni=sni, starttls=starttls)
            assert got == fp[want], f"SNI {sni!r} (starttls={starttls}) got the wrong certificate"


def test_sni_with_openssl_s_client(sni_server):
    """The same choice seen by a real client: openssl s_client -servername / -noservername."""
    require_tool("openssl")
    srv, fp, _ = sni_server

    def s_client(*args):
        p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{srv.pop3s_port}", *args],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
        return p.stdout.decode(errors="replace")

    assert pem_fingerprint(s_client("-servername", "mail.one.test")) == fp["one"]
    assert pem_fingerprint(s_client("-servername", "pop.two.test")) == fp["two"]
    assert pem_fingerprint(s_client("-servername", "nobody.example")) == fp["default"]
    assert pem_fingerprint(s_client("-noservername")) == fp["default"]
    out = subprocess.run(["openssl", "s_client", "-starttls", "pop3", "-connect",
                          f"127.0.0.1:{srv.pop3_port}", "-servername", "pop.two.test"],
                         stdin=subprocess.DEVNULL, capture_output=True, timeout=30).stdout.decode()
    assert pem_fingerprint(out) == fp["two"]


def test_sni_sessions_verify_and_sign_in(sni_server):
    """Each name's certificate verifies for that name, and the session behind it works."""
    srv, _, (default, one, two) = sni_server
    for host, (cert, _) in (("mail.one.test", one), ("x.one.test", one), ("pop.two.test", two),
                            ("localhost", default)):
        c = open_session(srv.pop3s_port, cert, host, "alice", DEFAULT_PASSWORD)
        assert c.stat() == (0, 0)
        c.quit()
    # A name's certificate does not verify for another name.
    s = socket.create_connection(("127.0.0.1", srv.pop3s_port), timeout=IO_TIMEOUT)
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_context(one[0]).wrap_socket(s, server_hostname="pop.two.test")
    s.close()


@pytest.mark.parametrize("how", ["pop3s", "stls"])
def test_alpn_pop3_is_negotiated(srv, how):
    ctx = tls_context(srv.cert)
    ctx.set_alpn_protocols(["pop3"])
    s = socket.create_connection(("127.0.0.1", srv.pop3s_port if how == "pop3s" else srv.pop3_port),
                                 timeout=IO_TIMEOUT)
    if how == "stls":
        f = s.makefile("rb")
        assert f.readline().startswith(b"+OK")
        s.sendall(b"STLS\r\n")
        assert f.readline().startswith(b"+OK")
        f.detach()
    with ctx.wrap_socket(s, server_hostname="localhost") as t:
        assert t.selected_alpn_protocol() == "pop3"
        if how == "pop3s":
            assert t.recv(100).startswith(b"+OK")
        t.sendall(b"CAPA\r\n")
        assert t.recv(100).startswith(b"+OK")


def test_alpn_with_openssl_s_client(srv):
    require_tool("openssl")
    out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{srv.pop3s_port}",
                          "-alpn", "pop3", "-servername", "localhost"],
                         stdin=subprocess.DEVNULL, capture_output=True, timeout=30).stdout.decode()
    assert "ALPN protocol: pop3" in out, out


def test_no_alpn_still_served(srv):
    """Most POP3 clients send no ALPN: nothing is negotiated and the session works."""
    s = socket.create_connection(("127.0.0.1", srv.pop3s_port), timeout=IO_TIMEOUT)
    with tls_context(srv.cert).wrap_socket(s, server_hostname="localhost") as t:
        assert t.selected_alpn_protocol() is None
        assert t.recv(100).startswith(b"+OK")


def _tls12_handshake(srv, ciphers: str):
    ctx = tls_context(srv.cert)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(ciphers + ":@SECLEVEL=0")
    s = socket.create_connection(("127.0.0.1", srv.pop3s_port), timeout=IO_TIMEOUT)
    with ctx.wrap_socket(s, server_hostname="localhost") as t:
        return t.cipher()[0]


def test_tls12_refuses_cbc_static_rsa_and_3des(srv):
    """A TLS 1.2 client offering only CBC, static-RSA key exchange and 3DES is refused;
    one that also offers ECDHE with AES-GCM gets that, whatever it lists first."""
    weak = "AES256-GCM-SHA384:AES128-SHA:DES-CBC3-SHA:ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384"
    with pytest.raises(ssl.SSLError):
        _tls12_handshake(srv, weak)
    assert _tls12_handshake(srv, weak + ":ECDHE-ECDSA-AES128-GCM-SHA256") == "ECDHE-ECDSA-AES128-GCM-SHA256"


def test_config_check_warns_about_certificates(server, tmp_path):
    """`poplar config check` names the weak points of the configured certificates."""
    soon = make_cert(tmp_path, "soon", ["mail.example.org"], days=5)
    rsa = make_cert(tmp_path, "other", ["other.example.org"], kind="rsa")
    srv = server(start=False, hostname="mail.example.org", tls={
        "cert": str(soon[0]), "key": str(soon[1]),
        # An SNI entry whose key belongs to another certificate.
        "certificates": [{"cert": str(rsa[0]), "key": str(soon[1])}],
    })
    p = srv.cli("config", "check")
    err = p.stderr.decode()
    # A key that belongs to another certificate stops the server: an error, exit 1.
    assert p.returncode == 1, err
    assert "tls.cert: certificate" in err and "expires on" in err and "renew it" in err, err
    assert "error: tls.certificates[0]: the private key" in err and "does not belong" in err, err
    key_body = [l for l in soon[1].read_text().splitlines() if not l.startswith("-----")]
    assert not any(l in err for l in key_body), "config check printed key material"
    assert "[[tls.certificates]]" in p.stdout.decode(), "the effective config lists SNI certificates"
