"""Both listeners scanned by a real TLS scanner (Debian's sslscan): TLS 1.2 and 1.3 only,
forward-secret AEAD suites only, with an RSA and with an ECDSA certificate.

sslscan is installed by scripts/test (tests/peers/install-sslscan.sh); this test tries
that script itself when sslscan is missing. Under CI=true a scanner that cannot be
installed or run is a failure, never a skip."""

import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

from conftest import REPO_ROOT, require_peer
from tls_helpers import make_cert

SCAN_TIMEOUT = 600
TLS13_SUITES = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
WEAK = ("CBC", "RC4", "DES", "NULL", "EXP", "ANON", "ADH", "MD5")


@pytest.fixture(scope="module")
def scanned_server(module_server, tmp_path_factory):
    """Default certificate RSA 2048, an SNI certificate ECDSA P-256 for ecdsa.test."""
    certs = tmp_path_factory.mktemp("scan-certs")
    rsa = make_cert(certs, "rsa", ["localhost"], kind="rsa", ips=["127.0.0.1"])
    ec = make_cert(certs, "ec", ["ecdsa.test"])
    return module_server(tls={"cert": str(rsa[0]), "key": str(rsa[1]),
                              "certificates": [{"cert": str(ec[0]), "key": str(ec[1])}]})


def scan(tmp_path, port: int, starttls: bool, sni: str | None):
    """Runs scripts/tls-scan (sslscan underneath); returns (exit code, output, XML root)."""
    require_sslscan()
    xml_path = tmp_path / "scan.xml"
    cmd = [str(REPO_ROOT / "scripts" / "tls-scan"), "--xml", str(xml_path)]
    if starttls:
        cmd.append("--starttls")
    if sni:
        cmd += ["--sni", sni]
    cmd.append(f"127.0.0.1:{port}")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=SCAN_TIMEOUT)
    output = p.stdout + p.stderr
    if p.returncode == 2 or not xml_path.exists():
        pytest.fail(f"sslscan did not run ({p.returncode}):\n{output}")
    return p.returncode, output, ET.parse(xml_path).getroot().find("ssltest")


@pytest.mark.parametrize("listener,sni,key_exchange", [
    ("pop3s", None, "ECDHE-RSA-"),
    ("pop3s", "ecdsa.test", "ECDHE-ECDSA-"),
    ("pop3", None, "ECDHE-RSA-"),
])
def test_scanner_finds_only_modern_tls(scanned_server, tmp_path, listener, sni, key_exchange):
    srv = scanned_server
    starttls = listener == "pop3"
    port = srv.pop3_port if starttls else srv.pop3s_port
    rc, output, result = scan(tmp_path, port, starttls, sni)
    assert result is not None, output

    protocols = {f"{p.get('type')}{p.get('version')}": p.get("enabled") == "1"
                 for p in result.findall("protocol")}
    for old in ("ssl2", "ssl3", "tls1.0", "tls1.1"):
        assert protocols.get(old) is False, f"{old} accepted or not tested: {protocols}\n{output}"
    assert protocols.get("tls1.2") and protocols.get("tls1.3"), f"{protocols}\n{output}"

    accepted = [(c.get("sslversion"), c.get("cipher"), c.get("strength")) for c in result.findall("cipher")]
    versions = {v for v, _, _ in accepted}
    assert versions == {"TLSv1.2", "TLSv1.3"}, f"{accepted}\n{output}"
    for version, name, strength in accepted:
        upper = name.upper()
        assert not any(w in upper for w in WEAK), f"weak suite {name} accepted\n{output}"
        assert strength not in ("null", "anonymous", "weak", "medium"), f"{name} rated {strength}"
        if version == "TLSv1.3":
            assert name in TLS13_SUITES, name
        else:
            # Forward secrecy (ECDHE, with the certificate's key type) and AEAD.
            assert upper.startswith(key_exchange), f"{name}: not ECDHE with the served key\n{output}"
            assert "GCM" in upper or "CHACHA20-POLY1305" in upper, f"{name}: not AEAD\n{output}"
    for h in result.findall("heartbleed"):
        assert h.get("vulnerable") == "0", output
    assert rc == 0, f"scripts/tls-scan judged the scan a failure:\n{output}"


def require_sslscan() -> str:
    return require_peer("sslscan", "install-sslscan.sh", lambda: shutil.which("sslscan"))
