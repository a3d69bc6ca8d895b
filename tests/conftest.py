"""Whole-server test harness for Poplar.

Every test gets its own temporary directory, its own configuration file and its own
`poplar serve` process on ephemeral loopback ports, so the suite is parallel-safe.

The `server` fixture is a factory:

    def test_x(server):
        srv = server(users={"alice": "pw"}, auth={"plaintext_networks": ["127.0.0.0/8"]})
        with srv.tls() as c:          # raw line-based session over implicit TLS
            c.login("alice", "pw")
            ...

Messages are delivered the way Postfix/Dovecot do it: written into tmp/ and renamed
into new/ (or cur/ with an info suffix).
"""

from __future__ import annotations

import base64
import json
import hashlib
import os
import queue
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
POPLAR_BIN = Path(os.environ.get("POPLAR_BIN", REPO_ROOT / "target" / "debug" / "poplar"))

#: Timeout for any single socket operation (seconds).
IO_TIMEOUT = 15
#: Timeout for CLI subprocesses (seconds).
CLI_TIMEOUT = 60
#: Time allowed for `poplar serve` to print `ready`.
START_TIMEOUT = 30
#: Time allowed for `poplar serve` to exit after SIGTERM.
STOP_TIMEOUT = 15

DEFAULT_PASSWORD = "alice secret pw"


def require_tool(name: str) -> str:
    """Return the path of an external tool or fail (never skip) when it is missing."""
    path = shutil.which(name)
    if not path:
        pytest.fail(f"required tool {name!r} is not installed; install it (e.g. apt-get install {name})")
    return path


PEER_INSTALL_TIMEOUT = 600


def require_peer(what: str, script: str, find):
    """A real peer a test needs: whatever `find()` returns, after running
    tests/peers/<script> if it finds nothing at first. Still missing: the test fails under
    CI=true (CI must have every peer) and is skipped elsewhere, saying why."""
    found = find()
    if found:
        return found
    installer = REPO_ROOT / "tests" / "peers" / script
    try:
        p = subprocess.run([str(installer)], capture_output=True, timeout=PEER_INSTALL_TIMEOUT)
        detail = (p.stdout + p.stderr).decode(errors="replace")[-2000:]
    except (OSError, subprocess.TimeoutExpired) as e:
        detail = str(e)
    found = find()
    if not found:
        message = f"{what} is missing and {installer} could not provide it:\n{detail}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def read_audit(path: Path) -> list[dict]:
    """The audit log's records (JSON lines). The server's writer thread may be halfway
    through a line when a test reads: only complete lines (ending in a newline) count."""
    if not path.exists():
        return []
    text = path.read_text()
    complete = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_binary() -> Path:
    if not POPLAR_BIN.exists():
        pytest.fail(
            f"poplar binary not found at {POPLAR_BIN}; build it with `cargo build -p poplar` "
            "or set POPLAR_BIN"
        )
    return POPLAR_BIN


# --------------------------------------------------------------------------- TOML


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):  # an inline table, e.g. tls.certificates entries
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot encode {v!r} as TOML")


def to_toml(cfg: dict) -> str:
    """Serialise a two-level dict (top-level keys + tables) as TOML."""
    out = []
    for k, v in cfg.items():
        if not isinstance(v, dict):
            out.append(f"{k} = {_toml_value(v)}")
    for k, v in cfg.items():
        if isinstance(v, dict):
            if not v:
                continue
            out.append(f"\n[{k}]")
            tables = {kk: vv for kk, vv in v.items() if _is_table_array(vv)}
            for kk, vv in v.items():
                if kk not in tables:
                    out.append(f"{kk} = {_toml_value(vv)}")
            # Arrays of tables, e.g. [[oauth.issuers]], after the table's plain keys.
            for kk, rows in tables.items():
                for row in rows:
                    out.append(f"\n[[{k}.{kk}]]")
                    out.extend(f"{rk} = {_toml_value(rv)}" for rk, rv in row.items())
    return "\n".join(out) + "\n"


def _is_table_array(v) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def default_config(data_dir: Path) -> dict:
    return {
        "data_dir": str(data_dir),
        "hostname": "localhost",
        "listen": {"pop3": ["127.0.0.1:0"], "pop3s": ["127.0.0.1:0"]},
        # An ephemeral port, found from the `listening metrics` line (the default is 9110).
        "metrics": {"listen": "127.0.0.1:0"},
        # The security page, on an ephemeral port found from the `listening web` line.
        "web": {"listen": "127.0.0.1:0"},
        "auth": {
            "plaintext_networks": [],
            "lowercase_usernames": True,
            "default_domain": "",
            "failure_delay_ms": 0,
            "argon2_memory_kib": 1024,
            "argon2_iterations": 1,
        },
        "limits": {
            "idle_timeout_auth_secs": 60,
            "idle_timeout_transaction_secs": 600,
            "max_command_line": 255,
            "max_auth_line": 16384,
            "max_bad_commands": 10,
            "max_connections": 1000,
        },
    }


def merge_config(base: dict, overrides: dict) -> dict:
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for k, v in overrides.items():
        if isinstance(v, dict):
            cfg.setdefault(k, {})
            cfg[k].update(v)
        else:
            cfg[k] = v
    return cfg


# --------------------------------------------------------------------------- messages


def crlf(data: bytes) -> bytes:
    """Normalise line ends to CRLF (bare LF -> CRLF) and end with CRLF, as POP3 delivers."""
    data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


def make_message(subject: str = "test", body: bytes | str = b"Hello.\n", extra_headers: str = "",
                 nl: bytes = b"\n") -> bytes:
    if isinstance(body, str):
        body = body.encode()
    hdr = (
        f"Return-Path: <sender@example.org>\n"
        f"From: Sender <sender@example.org>\n"
        f"To: alice@example.org\n"
        f"Subject: {subject}\n"
        f"Message-ID: <{subject.replace(' ', '.')}.{time.time_ns()}@example.org>\n"
        f"Date: Tue, 14 Nov 2023 22:13:20 +0000\n"
        f"{extra_headers}"
        f"\n"
    ).encode()
    return (hdr + body).replace(b"\n", nl) if nl != b"\n" else hdr + body


# --------------------------------------------------------------------------- raw sessions


class ProtocolError(AssertionError):
    pass


class Conn:
    """A line-based POP3 client over a raw socket (plain or TLS).

    Responses are returned as `str` (UTF-8, undecodable bytes replaced) for single-line
    responses; multi-line bodies are returned as raw bytes.
    """

    def __init__(self, sock: socket.socket, cafile: Path | None = None, server=None):
        self.sock = sock
        self.sock.settimeout(IO_TIMEOUT)
        self.buf = b""
        self.cafile = cafile
        self.server = server
        self.transcript: list[str] = []
        self.greeting: str | None = None
        #: Octets received from the server (after TLS), for byte-exact metrics checks.
        self.received = 0

    # -- low level
    def send(self, data: bytes | str):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.transcript.append("C: " + repr(data)[2:-1][:300])
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.received += len(chunk)
        self.buf += chunk
        return True

    def readline_bytes(self) -> bytes:
        """One line including its CRLF. Raises ProtocolError on EOF."""
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line, self.buf = self.buf[: i + 1], self.buf[i + 1 :]
                self.transcript.append("S: " + repr(line)[2:-1][:300])
                return line
            if not self._fill():
                raise ProtocolError(f"EOF from server; pending={self.buf!r}\n" + self.dump())

    def readline(self) -> str:
        line = self.readline_bytes()
        if not line.endswith(b"\r\n"):
            raise ProtocolError(f"line not terminated by CRLF: {line!r}")
        return line[:-2].decode("utf-8", "replace")

    def read_greeting(self) -> str:
        self.greeting = self.readline()
        return self.greeting

    def cmd(self, line: str | bytes) -> str:
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.send(line + b"\r\n")
        return self.readline()

    def ok(self, line: str | bytes) -> str:
        r = self.cmd(line)
        if not r.startswith("+OK"):
            raise ProtocolError(f"expected +OK to {line!r}, got {r!r}\n" + self.dump())
        return r

    def err(self, line: str | bytes) -> str:
        r = self.cmd(line)
        if not r.startswith("-ERR"):
            raise ProtocolError(f"expected -ERR to {line!r}, got {r!r}\n" + self.dump())
        return r

    def read_multiline_raw(self) -> list[bytes]:
        """Lines (without CRLF, still byte-stuffed) up to the terminating '.'."""
        lines = []
        while True:
            line = self.readline_bytes()
            if not line.endswith(b"\r\n"):
                raise ProtocolError(f"multi-line response line not CRLF terminated: {line!r}")
            line = line[:-2]
            if line == b".":
                return lines
            lines.append(line)

    def read_body(self) -> bytes:
        """Un-stuffed multi-line body with CRLF line ends (terminator excluded)."""
        out = []
        for line in self.read_multiline_raw():
            if line.startswith(b"."):
                line = line[1:]
            out.append(line + b"\r\n")
        return b"".join(out)

    def multi(self, line: str | bytes) -> tuple[str, bytes]:
        r = self.ok(line)
        return r, self.read_body()

    def multi_lines(self, line: str | bytes) -> tuple[str, list[str]]:
        r, body = self.multi(line)
        return r, [l.decode("utf-8", "replace") for l in body.split(b"\r\n")[:-1]]

    # -- higher level
    def capa(self) -> list[str]:
        _, lines = self.multi_lines("CAPA")
        return lines

    def alive(self) -> list[str]:
        """Check the session still answers, in any state (CAPA works everywhere)."""
        return self.capa()

    def login(self, user: str, password: str) -> str:
        self.ok(f"USER {user}")
        return self.ok(f"PASS {password}")

    def auth_plain(self, user: str, password: str, authzid: str = "") -> str:
        return self.cmd("AUTH PLAIN " + plain_ir(user, password, authzid))

    def stat(self) -> tuple[int, int]:
        r = self.ok("STAT")
        m = re.fullmatch(r"\+OK (\d+) (\d+)(?: .*)?", r)
        assert m, f"bad STAT response {r!r}"
        return int(m.group(1)), int(m.group(2))

    def list(self) -> dict[int, int]:
        _, lines = self.multi_lines("LIST")
        out = {}
        for l in lines:
            m = re.fullmatch(r"(\d+) (\d+)(?: .*)?", l)
            assert m, f"bad LIST line {l!r}"
            out[int(m.group(1))] = int(m.group(2))
        return out

    def uidl(self) -> dict[int, str]:
        _, lines = self.multi_lines("UIDL")
        out = {}
        for l in lines:
            m = re.fullmatch(r"(\d+) ([\x21-\x7e]{1,70})", l)
            assert m, f"bad UIDL line {l!r}"
            out[int(m.group(1))] = m.group(2)
        return out

    def retr(self, n: int) -> bytes:
        return self.multi(f"RETR {n}")[1]

    def starttls(self, hostname: str = "localhost"):
        r = self.ok("STLS")
        assert self.buf == b"", f"server sent bytes after STLS +OK before the handshake: {self.buf!r}"
        ctx = tls_context(self.cafile)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=hostname)
        self.sock.settimeout(IO_TIMEOUT)
        self.transcript.append("-- TLS established")
        return r

    def expect_silence(self, timeout: float = 0.5) -> None:
        """Assert that nothing arrives within `timeout` seconds."""
        assert self.buf == b"", f"unexpected buffered data {self.buf!r}"
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            data = None
        except ssl.SSLError as e:  # some Python versions report timeouts this way
            if "timed out" in str(e):
                data = None
            else:
                raise
        finally:
            self.sock.settimeout(IO_TIMEOUT)
        assert data is None, f"server sent unexpected data: {data!r}\n" + self.dump()

    def expect_eof(self, timeout: float = IO_TIMEOUT) -> bytes:
        """Read until EOF; return whatever arrived. Fails if the connection stays open."""
        self.sock.settimeout(timeout)
        got = self.buf
        self.buf = b""
        try:
            while True:
                try:
                    chunk = self.sock.recv(65536)
                except (ConnectionResetError, BrokenPipeError):
                    break
                except ssl.SSLEOFError:
                    break
                except ssl.SSLZeroReturnError:
                    break
                if not chunk:
                    break
                self.received += len(chunk)
                got += chunk
        except (socket.timeout, TimeoutError):
            raise ProtocolError(f"connection still open after {timeout}s; got {got!r}\n" + self.dump())
        finally:
            try:
                self.sock.settimeout(IO_TIMEOUT)
            except OSError:
                pass
        return got

    def quit(self) -> str:
        r = self.ok("QUIT")
        self.expect_eof()
        return r

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self):
        """Drop the connection without QUIT (RST-free close)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.close()

    def dump(self) -> str:
        return "transcript:\n  " + "\n  ".join(self.transcript[-60:])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def tls_context(cafile: Path | str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def plain_ir(user: str, password: str, authzid: str = "") -> str:
    raw = authzid.encode() + b"\0" + user.encode() + b"\0" + password.encode()
    return base64.b64encode(raw).decode()


# --------------------------------------------------------------------------- the server


# Every server the session started and every extra secret a test registered: the last
# test module (test_zz_no_secrets.py) greps all their logs for these secrets.
ALL_SERVERS: list = []
EXTRA_SECRETS: set[str] = set()


class Server:
    def __init__(self, root: Path, overrides: dict):
        ALL_SERVERS.append(self)
        self.root = root
        self.data_dir = root / "data"
        self.config_path = root / "poplar.toml"
        self.config = merge_config(default_config(self.data_dir), overrides)
        url = self.config.get("directory", {}).get("url", "")
        if url.startswith("postgres") and "keys" not in overrides:
            # Nodes sharing a PostgreSQL directory share its key ring, as docs/cluster.md
            # has every node of a cluster do.
            digest = hashlib.sha256(url.encode()).hexdigest()[:16]
            self.config["keys"] = {"file": str(root.parent / f"keys-{digest}.key")}
        self.config_path.write_text(to_toml(self.config), encoding="utf-8")
        self.proc: subprocess.Popen | None = None
        self.stdout_lines: list[str] = []
        self._stdout_q: queue.Queue = queue.Queue()
        self.pop3_ports: list[int] = []
        self.pop3s_ports: list[int] = []
        self.metrics_port: int | None = None
        self.web_port: int | None = None
        self._scrapes = 0
        self.fingerprint: str | None = None
        self.stderr_path = root / "poplar.stderr.log"
        self._seq = 0
        self.passwords: dict[str, str] = {}
        self.exit_code: int | None = None
        self.stopped = False

    # -- CLI
    def cli(self, *args: str, stdin: bytes | str | None = None, check: bool = False,
            env: dict | None = None, use_config_flag: bool = True) -> subprocess.CompletedProcess:
        require_binary()
        if isinstance(stdin, str):
            stdin = stdin.encode("utf-8")
        cmd = [str(POPLAR_BIN)]
        if use_config_flag:
            cmd += ["--config", str(self.config_path)]
        cmd += list(args)
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        p = subprocess.run(cmd, input=stdin if stdin is not None else b"", capture_output=True,
                           timeout=CLI_TIMEOUT, env=full_env)
        if check and p.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} failed with {p.returncode}\nstdout: {p.stdout!r}\nstderr: {p.stderr!r}"
            )
        return p

    def add_user(self, name: str, password: str, maildir: Path | str | None = None):
        # The suite's passwords are short and simple on purpose; the password policy has
        # its own tests (test_password_policy.py), so every other test overrides it.
        args = ["user", "add", name, "--password-stdin", "--allow-weak"]
        if maildir is not None:
            args += ["--maildir", str(maildir)]
        self.cli(*args, stdin=password + "\n", check=True)
        self.passwords[name] = password

    # -- process
    def start(self, *extra_args: str, env: dict | None = None):
        require_binary()
        self.stopped = False
        self.pop3_ports, self.pop3s_ports, self.stdout_lines = [], [], []
        self.metrics_port = None
        self.web_port = None
        self._stdout_q = queue.Queue()
        self._stderr_file = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(
            [str(POPLAR_BIN), "--config", str(self.config_path), "serve", *extra_args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr_file,
            env={**os.environ, "RUST_BACKTRACE": "1", **(env or {})},
        )
        t = threading.Thread(target=self._pump_stdout, args=(self.proc, self._stdout_q), daemon=True)
        t.start()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._kill()
                raise AssertionError(
                    f"poplar serve did not print 'ready' within {START_TIMEOUT}s; stdout so far: "
                    f"{self.stdout_lines!r}\nstderr:\n{self.stderr_tail()}"
                )
            try:
                line = self._stdout_q.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                rc = self.proc.wait(timeout=5)
                raise AssertionError(
                    f"poplar serve exited ({rc}) before 'ready'; stdout: {self.stdout_lines!r}\n"
                    f"stderr:\n{self.stderr_tail()}"
                )
            if line == "ready":
                break
            m = re.fullmatch(r"listening (pop3|pop3s) 127\.0\.0\.1:(\d+)", line)
            if m:
                (self.pop3_ports if m.group(1) == "pop3" else self.pop3s_ports).append(int(m.group(2)))
                continue
            m = re.fullmatch(r"listening metrics 127\.0\.0\.1:(\d+)", line)
            if m:
                self.metrics_port = int(m.group(1))
                continue
            m = re.fullmatch(r"listening web https://127\.0\.0\.1:(\d+)/", line)
            if m:
                self.web_port = int(m.group(1))
                continue
            m = re.fullmatch(r"certificate sha256 ([0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){31})", line)
            if m:
                self.fingerprint = m.group(1)
                continue
        return self

    def _pump_stdout(self, proc, q):
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.stdout_lines.append(line)
            q.put(line)
        q.put(None)

    def _kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None:
            return 0
        self.stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._kill()
                self.exit_code = -9
                return -9
        self.exit_code = self.proc.returncode
        return self.exit_code

    def stderr_tail(self, n: int = 40) -> str:
        try:
            lines = self.stderr_path.read_text(errors="replace").splitlines()
        except OSError:
            return "<no stderr>"
        return "\n".join(lines[-n:])

    @property
    def pid(self) -> int:
        assert self.proc
        return self.proc.pid

    @property
    def pop3_port(self) -> int:
        assert self.pop3_ports, f"no 'listening pop3' line in {self.stdout_lines!r}"
        return self.pop3_ports[0]

    @property
    def pop3s_port(self) -> int:
        assert self.pop3s_ports, f"no 'listening pop3s' line in {self.stdout_lines!r}"
        return self.pop3s_ports[0]

    def http_get(self, path: str, accept: str | None = None) -> tuple[int, dict, str]:
        """GET on the metrics listener: status, headers (lower-case names), body."""
        assert self.metrics_port, f"no 'listening metrics' line in {self.stdout_lines!r}"
        req = urllib.request.Request(f"http://127.0.0.1:{self.metrics_port}{path}")
        if accept:
            req.add_header("Accept", accept)
        try:
            with urllib.request.urlopen(req, timeout=IO_TIMEOUT) as r:
                status, headers, body = r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            status, headers, body = e.code, e.headers, e.read()
        return status, {k.lower(): v for k, v in headers.items()}, body.decode()

    def scrape(self, openmetrics: bool = False) -> str:
        """The text of /metrics (classic Prometheus format, or OpenMetrics), also saved
        beside the server's logs (`*.prom`) for the suite-wide secret check."""
        accept = "application/openmetrics-text; version=1.0.0" if openmetrics else None
        status, _, body = self.http_get("/metrics", accept)
        assert status == 200, (status, body)
        self._scrapes += 1
        (self.root / f"scrape-{self._scrapes}.prom").write_text(body, encoding="utf-8")
        return body

    @property
    def cert(self) -> Path:
        return self.data_dir / "tls" / "cert.pem"

    # -- connections
    def plain(self, greet: bool = True, source: str | None = None) -> Conn:
        """`source`: connect from this loopback address (anything in 127.0.0.0/8)."""
        s = socket.create_connection(("127.0.0.1", self.pop3_port), timeout=IO_TIMEOUT,
                                     source_address=(source, 0) if source else None)
        c = Conn(s, cafile=self.cert, server=self)
        if greet:
            g = c.read_greeting()
            assert g.startswith("+OK"), f"bad greeting {g!r}"
        return c

    def tls(self, greet: bool = True, hostname: str = "localhost", source: str | None = None) -> Conn:
        s = socket.create_connection(("127.0.0.1", self.pop3s_port), timeout=IO_TIMEOUT,
                                     source_address=(source, 0) if source else None)
        s = tls_context(self.cert).wrap_socket(s, server_hostname=hostname)
        c = Conn(s, cafile=self.cert, server=self)
        c.transcript.append("-- TLS established (pop3s)")
        if greet:
            g = c.read_greeting()
            assert g.startswith("+OK"), f"bad greeting {g!r}"
        return c

    def stls(self) -> Conn:
        """Plain port, STLS, handshake; greeting consumed."""
        c = self.plain()
        c.starttls()
        return c

    def session(self, user: str = "alice", password: str | None = None) -> Conn:
        """A signed-in TLS session (pop3s).

        Retries for a few seconds on [IN-USE]: a previous test's connection may have been
        dropped a moment ago and the server may not have noticed yet.
        """
        pw = password if password is not None else self.passwords[user]
        deadline = time.monotonic() + 5
        while True:
            c = self.tls()
            c.ok(f"USER {user}")
            r = c.cmd(f"PASS {pw}")
            if r.startswith("+OK"):
                return c
            c.close()
            if not r.startswith("-ERR [IN-USE]") or time.monotonic() > deadline:
                raise ProtocolError(f"sign-in as {user!r} failed: {r!r}\n" + c.dump())
            time.sleep(0.1)

    # -- maildir
    def maildir(self, user: str = "alice") -> Path:
        return self.data_dir / "mail" / user

    def deliver(self, data: bytes, user: str = "alice", name: str | None = None,
                where: str = "new", info: str | None = None, maildir: Path | None = None) -> str:
        """Deliver like an MDA: write into tmp/, fsync, rename into new/ or cur/.

        Returns the base name (the part before any ':2,' info). Names and mtimes increase
        with each delivery so that any sensible ordering puts them in delivery order.
        """
        md = Path(maildir) if maildir else self.maildir(user)
        self._seq += 1
        ts = 1700000000 + self._seq
        base = name or f"{ts}.M{self._seq}P{os.getpid()}.test"
        tmp = md / "tmp" / base
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.utime(tmp, (ts, ts))
        final = base if info is None else base + info
        os.rename(tmp, md / where / final)
        return base

    def find_message_file(self, base: str, user: str = "alice") -> Path | None:
        md = self.maildir(user)
        for sub in ("new", "cur"):
            for p in (md / sub).iterdir():
                if p.name == base or p.name.split(":", 1)[0] == base:
                    return p
        return None

    def message_files(self, user: str = "alice") -> list[Path]:
        md = self.maildir(user)
        return sorted(p for sub in ("new", "cur") for p in (md / sub).iterdir() if not p.name.startswith("."))


def _server_factory(tmp_path_factory):
    servers: list[Server] = []

    def make(users: dict | None = None, start: bool = True, **overrides) -> Server:
        require_binary()
        root = Path(tempfile.mkdtemp(prefix="poplar-", dir=tmp_path_factory.getbasetemp()))
        srv = Server(root, overrides)
        servers.append(srv)
        if users is None:
            users = {"alice": DEFAULT_PASSWORD}
        for name, pw in users.items():
            srv.add_user(name, pw)
        if start:
            srv.start()
        return srv

    def finish():
        problems = []
        for srv in servers:
            if srv.proc is None:
                continue
            alive = srv.stopped or srv.proc.poll() is None
            rc = srv.exit_code if srv.stopped else srv.stop()
            tail = srv.stderr_tail()
            print(f"--- poplar stderr ({srv.root}) ---\n{tail}")
            if not alive:
                problems.append(f"poplar serve had already exited ({rc}) before teardown\n{tail}")
            elif rc != 0:
                problems.append(f"poplar serve exited with {rc} after SIGTERM (expected 0)\n{tail}")
        if problems:
            pytest.fail("\n".join(problems))

    return make, finish


@pytest.fixture
def server(tmp_path_factory):
    """Factory: server(users={...}, start=True, **config_overrides) -> Server.

    Config overrides are merged per table, e.g. auth={"plaintext_networks": [...]}.
    On teardown every server gets SIGTERM and must exit with status 0.
    """
    make, finish = _server_factory(tmp_path_factory)
    yield make
    finish()


@pytest.fixture(scope="module")
def module_server(tmp_path_factory):
    """Like `server`, shared by all tests of a module (for read-only checks)."""
    make, finish = _server_factory(tmp_path_factory)
    yield make
    finish()


@pytest.fixture
def srv(server):
    """A started server with user alice (password DEFAULT_PASSWORD)."""
    return server()


def fingerprint_of(cert_pem: Path) -> str:
    der = ssl.PEM_cert_to_DER_cert(cert_pem.read_text().split("-----END CERTIFICATE-----")[0]
                                   + "-----END CERTIFICATE-----\n")
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


# --------------------------------------------------------------------------- PostgreSQL

PG_CLUSTER = REPO_ROOT / "tests" / "peers" / "pg-cluster.sh"


def _pg_installed():
    return any(Path("/usr/lib/postgresql").glob("*/bin/initdb")) and shutil.which("psql")


@pytest.fixture(scope="session")
def pg_server():
    """The URL of a PostgreSQL server the tests may create databases on: the one
    scripts/test started (POPLAR_TEST_PG_URL), or a private cluster started here
    (tests/peers/pg-cluster.sh: initdb as the postgres user into a temporary folder,
    its own port on 127.0.0.1) and stopped at the end of the session. Under CI=true a
    PostgreSQL that cannot be installed or started fails the tests; elsewhere they skip."""
    url = os.environ.get("POPLAR_TEST_PG_URL")
    if url:
        yield url
        return
    require_peer("PostgreSQL", "install-postgres.sh", _pg_installed)
    # Directly under /tmp: the postgres user must reach it (pytest's folders are 0700).
    folder = tempfile.mkdtemp(prefix="poplar-pg-", dir="/tmp")
    p = subprocess.run([str(PG_CLUSTER), "start", folder], capture_output=True, timeout=120)
    if p.returncode != 0:
        message = f"cannot start a private PostgreSQL cluster: {p.stderr.decode(errors='replace')}"
        shutil.rmtree(folder, ignore_errors=True)
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield p.stdout.decode().strip()
    finally:
        subprocess.run([str(PG_CLUSTER), "stop", folder], capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


_PG_DATABASES = iter(range(1_000_000))


def new_pg_database(server_url: str) -> str:
    """A new, empty database on `server_url`; its URL."""
    name = f"poplar_py_{os.getpid()}_{next(_PG_DATABASES)}"
    subprocess.run(["psql", server_url, "-v", "ON_ERROR_STOP=1", "-qc",
                    f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' "
                    "LC_COLLATE 'C' LC_CTYPE 'C'"],
                   check=True, capture_output=True, timeout=60)
    base, _, _ = server_url.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture
def pg_url(pg_server):
    """A new, empty PostgreSQL database for one test."""
    return new_pg_database(pg_server)
