"""The server's own log on standard error, as an administrator reads it (issue 20): no
colour codes in a file or a pipe, and under systemd a syslog priority on every line so
that `journalctl -p err` can filter."""

from __future__ import annotations

import os
import re
import time

ANSI = re.compile(rb"\x1b\[")


def failed_sign_in(srv) -> None:
    with srv.tls() as c:
        c.ok("USER alice")
        assert c.cmd("PASS wrong password").startswith("-ERR")


def stderr_lines(srv, wanted: bytes) -> list[bytes]:
    for _ in range(100):
        data = srv.stderr_path.read_bytes()
        if wanted in data:
            return [l for l in data.splitlines() if l.strip()]
        time.sleep(0.05)
    raise AssertionError(f"{wanted!r} never logged: {srv.stderr_tail()}")


def test_no_colour_codes_when_standard_error_is_not_a_terminal(server):
    srv = server(users={"alice": "alice password 1"})
    failed_sign_in(srv)
    lines = stderr_lines(srv, b"sign-in failed")
    assert not any(ANSI.search(l) for l in lines), lines[:5]


def restart_with_stderr(srv, journal_stream: str) -> None:
    srv.stop()
    srv.stderr_path.write_bytes(b"")
    srv.start(env={"JOURNAL_STREAM": journal_stream})


def test_under_journald_every_line_carries_its_priority(server):
    srv = server(users={"alice": "alice password 1"})
    st = os.stat(srv.stderr_path)
    restart_with_stderr(srv, f"{st.st_dev}:{st.st_ino}")
    failed_sign_in(srv)
    lines = stderr_lines(srv, b"sign-in failed")
    assert all(re.match(rb"<[0-7]>", l) for l in lines), lines[:5]
    failed = [l for l in lines if b"sign-in failed" in l]
    # Info, without a timestamp of its own (the journal stamps each line).
    assert failed and all(l.startswith(b"<6> INFO ") for l in failed), failed
    assert not any(ANSI.search(l) for l in lines)


def test_a_journal_stream_that_is_not_standard_error_changes_nothing(server):
    """A child of a systemd service inherits JOURNAL_STREAM with its standard error
    redirected elsewhere: then the variable names another stream, and lines stay as
    they are."""
    srv = server(users={"alice": "alice password 1"})
    restart_with_stderr(srv, "1:2")
    failed_sign_in(srv)
    lines = stderr_lines(srv, b"sign-in failed")
    assert not any(re.match(rb"<[0-7]>", l) for l in lines), lines[:5]
