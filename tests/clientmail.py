"""What the real-client tests (tests/test_client_*.py) share: the test maildrop, how a
fetched message is compared with its source, the server's own record of each sign-in,
and a pseudo-terminal for the clients that insist on one (mutt, neomutt).

Every client test delivers the same maildrop: a message with leading dots, one stored
with mixed line ends (CRLF lines and a bare LF), one with 8-bit bytes (UTF-8 and
Latin-1, in a header and the body), one with an empty body and one of 1 MB. A client
writes what it fetched with its own line ends; `lf()` is the form every client here
uses (LF only, ending with LF), and each test module states what its client adds or
changes beyond that.
"""

from __future__ import annotations

import email.parser
import os
import pty
import select
import shutil
import signal
import time
from pathlib import Path
from typing import Callable

from conftest import read_audit, require_peer


def _big() -> bytes:
    # 1 MB: lines of varied length, with dot lines scattered through, so the server
    # stuffs them wherever they fall in its chunks and the client unstuffs them.
    lines = []
    i = 0
    size = 0
    while size < 1_000_000:
        if i % 97 == 0:
            line = b".dot line %d" % i
        elif i % 89 == 0:
            line = b"."
        else:
            line = (b"line %06d " % i) + b"abcdefghij" * (i % 9)
        lines.append(line)
        size += len(line) + 1
        i += 1
    return b"\n".join(lines) + b"\n"


def _header(name: str, extra: bytes = b"") -> bytes:
    return (
        b"Return-Path: <sender@example.org>\n"
        b"From: Sender <sender@example.org>\n"
        b"To: alice@example.org\n"
        b"Subject: " + name.encode() + b"\n"
        b"Message-ID: <" + name.encode() + b".clienttest@example.org>\n"
        b"Date: Tue, 14 Nov 2023 22:13:20 +0000\n" + extra + b"\n"
    )


#: The test maildrop, by name; each message's Message-ID is `<name.clienttest@example.org>`.
MESSAGES: dict[str, bytes] = {
    "dots": _header("dots") + b"Hello.\n.leading dot\n..two dots\n.\n. space after\nend\n",
    "barelf": (_header("barelf").replace(b"\n", b"\r\n")
               + b"CRLF line\r\nbare LF line\nCRLF again\r\n\nlast\r\n"),
    "eightbit": _header("eightbit", b"X-Note: gr\xc3\xbc\xc3\x9fe\nContent-Type: text/plain; charset=utf-8\n"
                        b"Content-Transfer-Encoding: 8bit\n")
    + "Grüße, naïve café — ☃\n".encode() + b"Latin-1: \xe9t\xe9\n\xff\xfe\x80\n",
    "empty": _header("empty"),
    "big": _header("big") + _big(),
}


def deliver_all(srv, user: str = "alice") -> dict[str, str]:
    """Delivers MESSAGES into the user's Maildir, in order; name -> base file name."""
    return {name: srv.deliver(data, user=user) for name, data in MESSAGES.items()}


def lf(data: bytes) -> bytes:
    """A message as a client that stores LF line ends writes it: every CRLF (and every
    bare LF, which POP3 sends as CRLF) becomes LF, and it ends with LF."""
    data = data.replace(b"\r\n", b"\n")
    if data and not data.endswith(b"\n"):
        data += b"\n"
    return data


def message_name(data: bytes) -> str | None:
    """The test maildrop's name for a fetched message (from its Message-ID), or None."""
    headers = email.parser.BytesHeaderParser().parsebytes(data)
    mid = headers.get("Message-ID", "")
    if mid.startswith("<") and mid.endswith(".clienttest@example.org>"):
        return mid[1:-len(".clienttest@example.org>")]
    return None


def strip_leading_headers(data: bytes, names: tuple[str, ...]) -> bytes:
    """Removes header lines (with their continuation lines) that a client prepends,
    while they come first: `names` are lower-case header names."""
    out = data
    while True:
        line_end = out.find(b"\n")
        if line_end < 0:
            return out
        name = out[:line_end].split(b":", 1)[0].decode("latin-1").lower()
        if name not in names:
            return out
        end = line_end + 1
        while out[end:end + 1] in (b" ", b"\t"):
            end = out.find(b"\n", end) + 1
        out = out[end:]


def assert_fetched_all(fetched: list[bytes], prepended: tuple[str, ...] = (),
                       transform=lf) -> None:
    """Every message of the maildrop was fetched exactly once and, once the client's
    own prepended headers (`prepended`) are removed, equals `transform(source)`."""
    seen: dict[str, bytes] = {}
    for data in fetched:
        data = strip_leading_headers(data, prepended)
        name = message_name(data)
        assert name in MESSAGES, f"fetched a message that is not in the maildrop: {data[:300]!r}"
        assert name not in seen, f"{name} fetched twice"
        seen[name] = data
    assert sorted(seen) == sorted(MESSAGES), f"fetched {sorted(seen)}, expected {sorted(MESSAGES)}"
    for name, data in seen.items():
        want = transform(MESSAGES[name])
        if data != want:
            at = next((i for i, (a, b) in enumerate(zip(data, want)) if a != b), min(len(data), len(want)))
            raise AssertionError(
                f"{name}: fetched {len(data)} bytes, expected {len(want)}; first difference at "
                f"{at}: got {data[max(0, at - 40):at + 40]!r}, expected {want[max(0, at - 40):at + 40]!r}")


def maildir_messages(folder: Path) -> list[bytes]:
    """The messages of a client's local Maildir (new/ and cur/)."""
    return [p.read_bytes() for sub in ("new", "cur") if (folder / sub).is_dir()
            for p in sorted((folder / sub).iterdir())]


def make_maildir(folder: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return folder


def sign_ins(srv) -> list[tuple[str, str, str]]:
    """The server's audit log of sign-ins: (mechanism, result, listener) per attempt."""
    return [(r.get("mechanism", ""), r.get("result", ""), r.get("listener", ""))
            for r in read_audit(srv.data_dir / "audit.log") if r.get("event") == "auth"]


def wait_for_sign_ins(srv, count: int, timeout: float = 10) -> list[tuple[str, str, str]]:
    """The audit log is written by a thread of the server: waits until it holds at least
    `count` sign-in records."""
    deadline = time.monotonic() + timeout
    while True:
        got = sign_ins(srv)
        if len(got) >= count or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def require_client(command: str) -> str:
    """A client command from Debian, installed by tests/peers/install-mail-clients.sh;
    fails under CI=true when it cannot be installed, skips elsewhere."""
    return require_peer(command, "install-mail-clients.sh", lambda: shutil.which(command))


def run_in_pty(argv: list[str], env: dict, timeout: float = 60,
               ready: Callable[[bytes], bool] | None = None,
               keys: bytes = b"") -> tuple[int | None, bytes]:
    """Runs a terminal program (mutt, neomutt) on a pseudo-terminal until it exits;
    returns its exit status (None if it had to be killed after `timeout`) and everything
    it drew on the terminal. With `ready`, types `keys` on the terminal as soon as
    `ready(everything drawn so far)` holds (asked at least every 0.1 s)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: nothing but exec
        try:
            os.execvpe(argv[0], argv, env)
        finally:
            os._exit(127)
    out = b""
    typed = ready is None
    deadline = time.monotonic() + timeout
    status = None
    try:
        while time.monotonic() < deadline:
            readable, _, _ = select.select([fd], [], [], 0.1)
            if readable:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: the child closed the terminal (it exited)
                    chunk = b""
                if not chunk:
                    break
                out += chunk
            if not typed and ready(out):
                os.write(fd, keys)
                typed = True
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = os.waitstatus_to_exitcode(st)
                pid = 0
                break
        if pid:
            end = time.monotonic() + min(5.0, max(0.0, deadline - time.monotonic()))
            while time.monotonic() < end:
                done, st = os.waitpid(pid, os.WNOHANG)
                if done:
                    status = os.waitstatus_to_exitcode(st)
                    pid = 0
                    break
                time.sleep(0.05)
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    return status, out


def wait_for_disconnect(srv, timeout: float = 10) -> None:
    """Once a session's end is in the audit log, so is every sign-in it attempted."""
    deadline = time.monotonic() + timeout
    while not any(r.get("event") == "disconnect" for r in read_audit(srv.data_dir / "audit.log")):
        assert time.monotonic() < deadline, "no disconnect in the audit log"
        time.sleep(0.05)
