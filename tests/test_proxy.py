"""The PROXY protocol (v1 and v2) from trusted load balancers, and real HAProxy in
front of two nodes sharing one PostgreSQL directory (issue 9)."""

from __future__ import annotations

import ipaddress
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from conftest import IO_TIMEOUT, Conn, free_port, read_audit, require_peer, tls_context

PW = "alice secret pw"
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(src: str, sport: int, dst: str = "127.0.0.1", dport: int = 995) -> bytes:
    return f"PROXY TCP4 {src} {dst} {sport} {dport}\r\n".encode()


def v2(src: str, sport: int, dst: str = "127.0.0.1", dport: int = 995) -> bytes:
    body = (ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed
            + struct.pack("!HH", sport, dport))
    return V2_SIG + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


def audit(srv) -> list[dict]:
    # Complete lines only: the writer thread may be halfway through one.
    return read_audit(srv.data_dir / "audit.log")


def wait_audit(servers, pred, timeout=5.0, count: int = 1) -> list[dict]:
    """The audit records matching `pred`, once there are `count` of them (the audit log
    is written by a thread of its own, so the last may lag the client's answer)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [r for s in servers for r in audit(s) if pred(r)]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def connect(port: int, header: bytes = b"", source: str | None = None) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT,
                                 source_address=(source, 0) if source else None)
    if header:
        s.sendall(header)
    return s


def tls_conn(srv, sock: socket.socket) -> Conn:
    s = tls_context(srv.cert).wrap_socket(sock, server_hostname="localhost")
    c = Conn(s, cafile=srv.cert, server=srv)
    assert c.read_greeting().startswith("+OK")
    return c


def closed_without_greeting(sock: socket.socket, within: float = 5.0) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
    finally:
        sock.close()


PROXIED = {"proxy": {"trusted": ["127.0.0.1/32"], "header_timeout_secs": 1},
           "auth": {"plaintext_networks": ["192.0.2.0/24"]}}


@pytest.mark.parametrize("make", [v1, v2], ids=["v1", "v2"])
def test_a_trusted_proxy_names_the_client(server, make):
    srv = server(users={"alice": PW}, **PROXIED)
    # Implicit TLS: the header comes before the ClientHello.
    with tls_conn(srv, connect(srv.pop3s_port, make("192.0.2.10", 40001))) as c:
        c.login("alice", PW)
        c.quit()
    # Plain port: the header comes before the greeting; plaintext_networks sees the
    # client's address (192.0.2.0/24), not the proxy's (127.0.0.1).
    c = Conn(connect(srv.pop3_port, make("192.0.2.11", 40002, dport=110)), server=srv)
    assert c.read_greeting().startswith("+OK")
    c.login("alice", PW)
    c.quit()
    ok = wait_audit([srv], lambda r: r["event"] == "auth" and r.get("result") == "success",
                    count=2)
    assert [r["src_ip"] for r in ok] == ["192.0.2.10", "192.0.2.11"], ok
    assert {r["src_port"] for r in ok} == {40001, 40002}


def test_a_trusted_proxy_must_send_a_valid_header(server):
    srv = server(users={"alice": PW}, **PROXIED)
    # No header at all: nothing is answered; closed after header_timeout_secs.
    assert closed_without_greeting(connect(srv.pop3_port))
    # A ClientHello where the header should be.
    s = connect(srv.pop3s_port)
    with pytest.raises((ssl_errors())):
        tls_context(srv.cert).wrap_socket(s, server_hostname="localhost")
    s.close()
    # Garbage and truncated headers.
    assert closed_without_greeting(connect(srv.pop3_port, b"PROXY TCP4 banana\r\n"))
    assert closed_without_greeting(connect(srv.pop3_port, V2_SIG + b"\x21\x11\x00\x04abcd"))
    assert closed_without_greeting(connect(srv.pop3_port, v2("192.0.2.1", 1)[:20]))
    refused = wait_audit([srv], lambda r: r["event"] == "refused" and r.get("reason") == "proxy")
    assert len(refused) >= 4 and all(r["src_ip"] == "127.0.0.1" for r in refused), refused


def ssl_errors():
    import ssl
    return (ssl.SSLError, ConnectionResetError, BrokenPipeError, OSError)


@pytest.mark.parametrize("make", [v1, v2], ids=["v1", "v2"])
def test_a_header_from_an_untrusted_address_is_refused(server, make):
    srv = server(users={"alice": PW}, **PROXIED)
    # 127.0.0.2 is not a trusted proxy: it is a direct client, and a PROXY header from
    # it (claiming to be 192.0.2.66) is refused, never believed.
    s = connect(srv.pop3_port, source="127.0.0.2")
    c = Conn(s, server=srv)
    assert c.read_greeting().startswith("+OK")
    c.send(make("192.0.2.66", 1, dport=110) + b"USER alice\r\n")
    # v1: closed at once, unanswered; v2: its signature ends in QUIT, which closes too.
    got = c.expect_eof()
    if make is v1:
        assert got == b"", got
    # On the TLS port the header breaks the handshake.
    s = connect(srv.pop3s_port, make("192.0.2.66", 1), source="127.0.0.2")
    with pytest.raises(ssl_errors()):
        tls_context(srv.cert).wrap_socket(s, server_hostname="localhost")
    s.close()
    lines = audit(srv)
    assert not any(r.get("src_ip") == "192.0.2.66" for r in lines), lines
    if make is v1:
        assert wait_audit([srv], lambda r: r["event"] == "refused" and r.get("reason") == "proxy"
                          and r["src_ip"] == "127.0.0.2")
    # A direct client from an untrusted address is still served as itself.
    with tls_conn(srv, connect(srv.pop3s_port, source="127.0.0.3")) as c:
        c.login("alice", PW)
        c.quit()
    assert wait_audit([srv], lambda r: r["event"] == "auth" and r.get("src_ip") == "127.0.0.3")


def haproxy_binary():
    return shutil.which("haproxy")


def test_haproxy_in_front_of_two_nodes(server, pg_url, tmp_path):
    haproxy = require_peer("HAProxy", "install-haproxy.sh", haproxy_binary)
    common = dict(directory={"url": pg_url}, proxy={"trusted": ["127.0.0.1/32"]})
    a = server(users={"alice": PW, "bob": PW}, **common)
    # One certificate for the whole cluster: clients cannot tell the nodes apart.
    b = server(users={}, tls={"cert": str(a.cert), "key": str(a.data_dir / "tls" / "key.pem")},
               **common)
    front = free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(f"""
global
    maxconn 200
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend pop3s
    bind 127.0.0.1:{front}
    default_backend poplar
backend poplar
    balance roundrobin
    option httpchk
    http-check send meth GET uri /readyz
    server a 127.0.0.1:{a.pop3s_port} send-proxy-v2 check port {a.metrics_port} inter 300ms
    server b 127.0.0.1:{b.pop3s_port} send-proxy-v2 check port {b.metrics_port} inter 300ms
""")
    subprocess.run([haproxy, "-c", "-f", str(cfg)], check=True, capture_output=True, timeout=30)
    # The documented example (docs/cluster.md) is valid for this HAProxy too.
    example = Path(__file__).resolve().parent.parent / "contrib" / "cluster" / "haproxy.cfg"
    subprocess.run([haproxy, "-c", "-f", str(example)], check=True, capture_output=True, timeout=30)
    proc = subprocess.Popen([haproxy, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "haproxy.log", "wb"))
    try:
        # Both servers up (two health checks passed) before the clients come.
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", front), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        time.sleep(1.5)
        sources = [f"127.0.0.{i}" for i in range(2, 8)]
        for source in sources:
            with tls_conn(a, connect(front, source=source)) as c:
                c.login("alice", PW)
                c.quit()
        ok = wait_audit([a, b], lambda r: r["event"] == "auth" and r.get("result") == "success")
        assert sorted(r["src_ip"] for r in ok) == sources, ok
        assert {r["src_ip"] for r in audit(a) if r["event"] == "auth"} and \
            {r["src_ip"] for r in audit(b) if r["event"] == "auth"}, "round robin over both"
        assert not any(r.get("src_ip") == "127.0.0.1" and r["event"] == "auth"
                       for r in audit(a) + audit(b))
        # The real address is what the defence counts: a wrong password from one client
        # shows up in the shared lockout state under its own address.
        with tls_conn(a, connect(front, source="127.0.0.9")) as c:
            c.ok("USER bob")
            assert c.cmd("PASS wrong").startswith("-ERR")
        listed = a.cli("lockout", "list", check=True).stdout.decode()
        assert "127.0.0.9" in listed, listed
        # A PROXY header straight to a node from an untrusted address is refused.
        s = connect(a.pop3s_port, v2("192.0.2.99", 5), source="127.0.0.2")
        with pytest.raises(ssl_errors()):
            tls_context(a.cert).wrap_socket(s, server_hostname="localhost")
        s.close()
        assert not any(r.get("src_ip") == "192.0.2.99" for r in audit(a))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
