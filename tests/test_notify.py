"""systemd readiness (sd_notify) as `Type=notify` expects it (issue 20): a small
listener on a datagram socket plays the service manager."""

from __future__ import annotations

import os
import signal
import socket


def notifications(sock: socket.socket, count: int) -> list[str]:
    got = []
    sock.settimeout(20)
    while len(got) < count:
        got.append(sock.recv(4096).decode())
    return got


def test_ready_reloading_and_stopping_reach_the_service_manager(server, tmp_path):
    path = tmp_path / "notify"
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    manager.bind(str(path))
    srv = server(users={"alice": "alice password 1"})
    srv.stop()
    srv.start(env={"NOTIFY_SOCKET": str(path)})
    # Sent only once the server serves: a sign-in works at once.
    assert notifications(manager, 1) == ["READY=1"]
    with srv.tls() as c:
        c.login("alice", "alice password 1")
        c.quit()
    os.kill(srv.proc.pid, signal.SIGHUP)
    reloading, ready = notifications(manager, 2)
    lines = reloading.split("\n")
    assert lines[0] == "RELOADING=1" and lines[1].startswith("MONOTONIC_USEC="), reloading
    assert int(lines[1].split("=")[1]) > 0
    assert ready == "READY=1"
    assert srv.stop() == 0
    assert notifications(manager, 1) == ["STOPPING=1"]


def test_an_abstract_notify_socket_works_too(server):
    name = f"poplar-test-notify-{os.getpid()}"
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    manager.bind("\0" + name)
    srv = server(users={})
    srv.stop()
    srv.start(env={"NOTIFY_SOCKET": "@" + name})
    assert notifications(manager, 1) == ["READY=1"]
