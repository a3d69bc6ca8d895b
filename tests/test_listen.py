"""Listening sockets as an administrator lists them (issue 20)."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def greeting(family: int, host: str, port: int) -> bytes:
    with socket.socket(family) as s:
        s.settimeout(10)
        s.connect((host, port))
        return s.makefile("rb").readline()


def test_the_dual_stack_example_listens_on_both_families(server):
    """poplar.example.toml's production line, `["0.0.0.0:110", "[::]:110"]`, on a free
    port: both sockets bind (IPV6_V6ONLY is set on the IPv6 one) and each greets its
    own family."""
    port = free_port()
    srv = server(listen={"pop3": [f"0.0.0.0:{port}", f"[::]:{port}"],
                         "pop3s": ["127.0.0.1:0"]})
    lines = [l for l in srv.stdout_lines if l.startswith("listening pop3 ")]
    assert lines == [f"listening pop3 0.0.0.0:{port}", f"listening pop3 [::]:{port}"], lines
    assert greeting(socket.AF_INET, "127.0.0.1", port).startswith(b"+OK")
    assert greeting(socket.AF_INET6, "::1", port).startswith(b"+OK")
