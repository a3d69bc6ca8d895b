"""Helpers for the TLS tests: certificates made with openssl, and which certificate a
handshake got (by SHA-256 fingerprint, the same form `poplar serve` prints)."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import ssl
import subprocess
import time
from pathlib import Path

from conftest import IO_TIMEOUT, Conn, require_tool, tls_context


def make_cert(directory: Path, stem: str, names: list[str], kind: str = "ec", days: int = 30,
              ips: list[str] = ()) -> tuple[Path, Path]:
    """A self-signed certificate for DNS `names` (and `ips`), in `directory/stem.{cert,key}.pem`."""
    require_tool("openssl")
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{stem}.cert.pem", directory / f"{stem}.key.pem"
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"] if kind == "ec" \
        else ["-newkey", "rsa:2048"]
    san = ",".join([f"DNS:{n}" for n in names] + [f"IP:{i}" for i in ips])
    subprocess.run(["openssl", "req", "-x509", *newkey, "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", str(days), "-subj", f"/CN={names[0]}", "-addext", f"subjectAltName={san}"],
                   capture_output=True, timeout=60, check=True)
    return cert, key


def pem_fingerprint(pem_text: str) -> str:
    """SHA-256 of the first certificate in PEM text, as colon-separated upper-case hex."""
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", pem_text, re.S)
    assert m, f"no certificate in {pem_text[:400]!r}"
    der = ssl.PEM_cert_to_DER_cert(m.group(0) + "\n")
    return colon_hex(hashlib.sha256(der).digest())


def file_fingerprint(cert: Path) -> str:
    return pem_fingerprint(cert.read_text())


def colon_hex(digest: bytes) -> str:
    return ":".join(f"{b:02X}" for b in digest)


def _read_line(sock) -> bytes:
    buf = b""
    while not buf.endswith(b"\r\n"):
        chunk = sock.recv(1)
        assert chunk, f"EOF, got {buf!r}"
        buf += chunk
    return buf


def served_fingerprint(port: int, sni: str | None = None, starttls: bool = False,
                       alpn: list[str] | None = None) -> str:
    """The fingerprint of the certificate a handshake gets (not verified: we only look).

    `sni=None` sends no server_name extension at all."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    s = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
    if starttls:
        assert _read_line(s).startswith(b"+OK")
        s.sendall(b"STLS\r\n")
        assert _read_line(s).startswith(b"+OK")
    with ctx.wrap_socket(s, server_hostname=sni) as t:
        return colon_hex(hashlib.sha256(t.getpeercert(binary_form=True)).digest())


def open_session(port: int, cafile: Path, hostname: str, user: str, password: str) -> Conn:
    """A verified implicit-TLS session to `hostname` (by SNI), signed in."""
    s = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
    s = tls_context(cafile).wrap_socket(s, server_hostname=hostname)
    c = Conn(s, cafile=cafile)
    assert c.read_greeting().startswith("+OK")
    c.login(user, password)
    return c


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    """Poll `predicate` until it returns a true value; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def replace_files(pairs: list[tuple[Path, Path]]):
    """Copy each (source, target) over its target by an atomic rename, as renewal tools do."""
    for source, target in pairs:
        tmp = target.with_name(target.name + ".new")
        tmp.write_bytes(source.read_bytes())
        os.replace(tmp, target)
