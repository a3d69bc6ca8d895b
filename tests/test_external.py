"""SASL EXTERNAL with TLS client certificates (RFC 4422 appendix A), driven by curl
(--cert, --login-options AUTH=EXTERNAL) and Python's ssl; certificates made with the
openssl command line."""
import subprocess
from pathlib import Path

import pytest

from conftest import IO_TIMEOUT, Conn, require_tool, tls_context

MESSAGE = b"Subject: external\r\n\r\ncertified\r\n"


def openssl(*args, cwd):
    require_tool("openssl")
    p = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    return p.stdout.decode()


def make_ca(d: Path, name="ca"):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
            "-subj", f"/CN=Poplar test {name}", cwd=d)
    return d / f"{name}.pem"


def make_client(d: Path, name: str, cn: str, email: str, ca="ca"):
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
    (d / f"{name}.ext").write_text(
        f"subjectAltName=email:{email},DNS:{name}.example.org\nextendedKeyUsage=clientAuth\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    fp = openssl("x509", "-in", f"{name}.pem", "-noout", "-fingerprint", "-sha256", cwd=d)
    return d / f"{name}.pem", d / f"{name}.key", fp.strip().split("=", 1)[1]


@pytest.fixture
def pki(tmp_path):
    d = tmp_path / "pki"
    d.mkdir()
    ca = make_ca(d)
    alice = make_client(d, "alice", "alice", "alice@example.org")
    mallory = make_client(d, "mallory", "mallory", "mallory@example.org")
    make_ca(d, "rogue")
    rogue = make_client(d, "intruder", "alice", "alice@example.org", ca="rogue")
    return {"ca": ca, "alice": alice, "mallory": mallory, "rogue": rogue}


def curl_external(srv, cert, key, user="alice", sasl_ir=False):
    require_tool("curl")
    cmd = ["curl", "-sS", "--max-time", "20", "--cacert", str(srv.cert), "--cert", str(cert),
           "--key", str(key), "--login-options", "AUTH=EXTERNAL", "-u", f"{user}:"]
    if sasl_ir:
        cmd.append("--sasl-ir")
    cmd.append(f"pop3s://127.0.0.1:{srv.pop3s_port}/1")
    return subprocess.run(cmd, capture_output=True, timeout=40)


@pytest.mark.parametrize("sasl_ir", [False, True])
def test_curl_external_signs_in_with_a_client_certificate(server, pki, sasl_ir):
    srv = server(tls={"client_ca": str(pki["ca"])})
    srv.deliver(MESSAGE)
    cert, key, _ = pki["alice"]
    p = curl_external(srv, cert, key, sasl_ir=sasl_ir)
    assert p.returncode == 0, p.stderr
    assert p.stdout.replace(b"\r\n", b"\n") == MESSAGE.replace(b"\r\n", b"\n")
    # Asking to act as someone else is refused.
    p = curl_external(srv, cert, key, user="bob", sasl_ir=sasl_ir)
    assert p.returncode == 67, p


def test_unknown_user_revoked_and_rogue_certificates_fail(server, pki):
    _, _, alice_fp = pki["alice"]
    srv = server(tls={"client_ca": str(pki["ca"])})
    cert, key, _ = pki["mallory"]
    assert curl_external(srv, cert, key, user="mallory").returncode == 67
    # A certificate from another CA fails the TLS handshake itself.
    cert, key, _ = pki["rogue"]
    assert curl_external(srv, cert, key).returncode not in (0, 67)
    srv.stop()
    revoked = server(tls={"client_ca": str(pki["ca"]), "revoked_client_certs": [alice_fp]})
    cert, key, _ = pki["alice"]
    assert curl_external(revoked, cert, key).returncode == 67
    assert "certificate_revoked" in revoked.stderr_tail(80)


def test_san_email_rule(server, pki):
    srv = server(users={"alice@example.org": "pw of alice"},
                 tls={"client_ca": str(pki["ca"]), "client_identity": "san-email"})
    srv.deliver(MESSAGE, user="alice@example.org")
    cert, key, _ = pki["alice"]
    assert curl_external(srv, cert, key, user="alice@example.org", sasl_ir=True).returncode == 0


def test_external_offered_only_with_a_certificate(server, pki):
    srv = server(tls={"client_ca": str(pki["ca"])})
    with srv.tls() as c:
        capa = c.capa()
        assert not any("EXTERNAL" in line for line in capa), capa
        assert c.cmd("AUTH EXTERNAL =").startswith("-ERR unsupported")
    cert, key, _ = pki["alice"]
    ctx = tls_context(srv.cert)
    ctx.load_cert_chain(str(cert), str(key))
    import socket
    s = socket.create_connection(("127.0.0.1", srv.pop3s_port), timeout=IO_TIMEOUT)
    with Conn(ctx.wrap_socket(s, server_hostname="localhost"), cafile=srv.cert, server=srv) as c:
        c.read_greeting()
        sasl = [line for line in c.capa() if line.startswith("SASL ")]
        assert sasl and sasl[0].split()[1] == "EXTERNAL", sasl
        # Malformed exchanges: bad base64, an authzid that is not UTF-8, an abort.
        assert c.cmd("AUTH EXTERNAL !!!").startswith("-ERR invalid base64")
        assert c.cmd("AUTH EXTERNAL /w==").startswith("-ERR malformed SASL response")
        c.send("AUTH EXTERNAL\r\n")
        assert c.readline() == "+ "
        assert c.cmd("*").startswith("-ERR authentication cancelled")
        assert c.cmd("AUTH EXTERNAL =").startswith("+OK")
        assert c.stat() == (0, 0)
        c.quit()
