"""Certificates renewed while the server runs: reloaded on SIGHUP or when the files
change, swapped for new handshakes only, and never replaced by a broken pair."""

import signal
import time

from conftest import DEFAULT_PASSWORD, crlf, make_message
from tls_helpers import file_fingerprint, make_cert, open_session, replace_files, served_fingerprint, wait_for

RELOAD_TIMEOUT = 15


def _start(server, tmp_path, check_secs: int):
    """Default certificate for localhost and an SNI one for mail.one.test, in live/."""
    live = tmp_path / "live"
    default = make_cert(live, "default", ["localhost"], ips=["127.0.0.1"])
    sni = make_cert(live, "sni", ["mail.one.test"])
    srv = server(users={"alice": DEFAULT_PASSWORD, "bob": "bob secret pw"}, tls={
        "cert": str(default[0]), "key": str(default[1]), "reload_check_secs": check_secs,
        "certificates": [{"cert": str(sni[0]), "key": str(sni[1])}],
    })
    return srv, default, sni


def _stderr_has(srv, text: str) -> bool:
    return text in srv.stderr_path.read_text(errors="replace")


def test_sighup_renews_certificates_while_a_session_continues(server, tmp_path):
    srv, default, sni = _start(server, tmp_path, check_secs=0)
    body = make_message("before reload", "kept across the reload\n")
    srv.deliver(body)
    old = {"default": file_fingerprint(default[0]), "sni": file_fingerprint(sni[0])}
    assert served_fingerprint(srv.pop3s_port, sni="localhost") == old["default"]
    assert served_fingerprint(srv.pop3s_port, sni="mail.one.test") == old["sni"]

    # A session opened before the renewal, verified against the old certificate.
    session = open_session(srv.pop3s_port, default[0], "localhost", "alice", DEFAULT_PASSWORD)
    assert session.stat()[0] == 1

    renewed = tmp_path / "renewed"
    new_default = make_cert(renewed, "default", ["localhost"], ips=["127.0.0.1"])
    new_sni = make_cert(renewed, "sni", ["mail.one.test"])
    replace_files([(new_default[0], default[0]), (new_default[1], default[1]),
                   (new_sni[0], sni[0]), (new_sni[1], sni[1])])
    new = {"default": file_fingerprint(new_default[0]), "sni": file_fingerprint(new_sni[0])}
    # With the file check off, nothing changes until the signal.
    time.sleep(1.5)
    assert served_fingerprint(srv.pop3s_port, sni="localhost") == old["default"]

    srv.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: served_fingerprint(srv.pop3s_port, sni="localhost") == new["default"],
             RELOAD_TIMEOUT, "the renewed default certificate after SIGHUP")
    assert served_fingerprint(srv.pop3s_port, sni="mail.one.test") == new["sni"]
    assert served_fingerprint(srv.pop3_port, sni=None, starttls=True) == new["default"]
    assert _stderr_has(srv, "certificates reloaded")

    # New handshakes verify against the new certificate and sign in.
    fresh = open_session(srv.pop3s_port, new_default[0], "localhost", "bob", "bob secret pw")
    fresh.quit()
    # The old session is still there and still serves mail.
    assert session.retr(1) == crlf(body)
    session.quit()
    assert srv.proc.poll() is None


def test_changed_files_are_reloaded_without_a_signal(server, tmp_path):
    srv, default, sni = _start(server, tmp_path, check_secs=1)
    session = open_session(srv.pop3s_port, default[0], "localhost", "alice", DEFAULT_PASSWORD)
    new_sni = make_cert(tmp_path / "renewed", "sni", ["mail.one.test"])
    replace_files([(new_sni[0], sni[0]), (new_sni[1], sni[1])])
    wait_for(lambda: served_fingerprint(srv.pop3s_port, sni="mail.one.test") == file_fingerprint(new_sni[0]),
             RELOAD_TIMEOUT, "the renewed SNI certificate after its files changed")
    assert served_fingerprint(srv.pop3s_port, sni="localhost") == file_fingerprint(default[0])
    assert _stderr_has(srv, "certificate files changed")
    assert session.stat() == (0, 0)
    session.quit()


def test_a_bad_new_key_keeps_the_old_certificate(server, tmp_path):
    srv, default, _ = _start(server, tmp_path, check_secs=0)
    old = file_fingerprint(default[0])
    session = open_session(srv.pop3s_port, default[0], "localhost", "alice", DEFAULT_PASSWORD)
    renewed = make_cert(tmp_path / "renewed", "default", ["localhost"], ips=["127.0.0.1"])
    stranger = make_cert(tmp_path / "stranger", "stranger", ["localhost"])
    failures = 0

    def reload_and_expect_failure():
        nonlocal failures
        failures += 1
        srv.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: srv.stderr_path.read_text(errors="replace").count("certificate reload failed") >= failures,
                 RELOAD_TIMEOUT, "the reload failure in the log")
        assert served_fingerprint(srv.pop3s_port, sni="localhost") == old

    # The new certificate with a key that belongs to another one.
    replace_files([(renewed[0], default[0]), (stranger[1], default[1])])
    reload_and_expect_failure()
    # A key file that is not a key at all.
    default[1].write_text("-----BEGIN PRIVATE KEY-----\nnot a key!\n-----END PRIVATE KEY-----\n")
    reload_and_expect_failure()
    # A missing key file.
    default[1].unlink()
    reload_and_expect_failure()

    log = srv.stderr_path.read_text(errors="replace")
    for key in (stranger[1], renewed[1]):
        for line in key.read_text().splitlines():
            if not line.startswith("-----"):
                assert line not in log, "key material in the log"
    # The session opened before all this is fine, and so are new ones on the old pair.
    assert session.stat() == (0, 0)
    session.quit()

    # The right key arrives: the renewal goes through.
    replace_files([(renewed[1], default[1])])
    srv.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: served_fingerprint(srv.pop3s_port, sni="localhost") == file_fingerprint(renewed[0]),
             RELOAD_TIMEOUT, "the renewed certificate once its key is in place")


def make_signed_cert(directory, stem: str, name: str):
    """A leaf for `name` signed by a CA made for it: (leaf only, leaf + CA, key)."""
    import subprocess
    ca_cert, ca_key = make_cert(directory, f"{stem}-ca", [f"ca.{name}"])
    key, csr = directory / f"{stem}.key.pem", directory / f"{stem}.csr"
    leaf = directory / f"{stem}.cert.pem"
    ext = directory / f"{stem}.ext"
    ext.write_text(f"subjectAltName=DNS:{name}\n")
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out", str(csr),
                    "-subj", f"/CN={name}"], capture_output=True, check=True, timeout=60)
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey",
                    str(ca_key), "-CAcreateserial", "-days", "30", "-out", str(leaf),
                    "-extfile", str(ext)], capture_output=True, check=True, timeout=60)
    full = directory / f"{stem}.fullchain.pem"
    full.write_text(leaf.read_text() + ca_cert.read_text())
    return leaf, full, key


def test_a_reload_warns_about_a_certificate_without_its_chain(server, tmp_path):
    """After a reload the server says what `config check` would of the certificates it
    now serves: here a leaf signed by a CA, given without the CA (issue 20)."""
    srv, default, sni = _start(server, tmp_path, check_secs=0)
    leaf, full, key = make_signed_cert(tmp_path / "new", "sni", "mail.one.test")
    replace_files([(leaf, sni[0]), (key, sni[1])])
    srv.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: _stderr_has(srv, "without its intermediate certificates"), RELOAD_TIMEOUT,
             "the warning after the reload")
    assert _stderr_has(srv, "after the reload: tls.certificates[0]")
    check = srv.cli("config", "check")
    assert b"without its intermediate certificates" in check.stderr, check.stderr
    # The full chain: no such warning.
    replace_files([(full, sni[0])])
    assert b"intermediate" not in srv.cli("config", "check").stderr
