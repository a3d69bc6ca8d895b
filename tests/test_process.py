"""Process hardening: `poplar serve` binds, then drops to [process] user; the data folder
must belong to the user Poplar runs as; the systemd unit in contrib/systemd verifies.

The privilege tests need root (as in CI): they create the system user and group
`poplar-test` with `useradd --system` when it does not exist and leave it in place for
the next run (another test run may be using it at the same moment). Under CI=true they
fail instead of skipping when that cannot be done.

The servers here do not use the `server` fixture's temporary folder: pytest makes it
0700 and owned by root, and the unprivileged server must reach its data folder (and, when
it starts unprivileged, its configuration), so each test makes a 0755 folder under /tmp.
"""

from __future__ import annotations

import grp
import os
import pwd
import random
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

import conftest
from conftest import (
    DEFAULT_PASSWORD,
    REPO_ROOT,
    Server,
    crlf,
    make_message,
    require_binary,
    require_tool,
)

TEST_USER = "poplar-test"
UNIT = REPO_ROOT / "contrib" / "systemd" / "poplar.service"
CAP_NET_BIND_SERVICE = 1 << 10


def unavailable(reason: str):
    """Fail under CI (which runs as root and must run these tests), skip elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def test_user() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        unavailable("the privilege drop tests need root: they create a system user and drop to it")
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd")
    if useradd is None:
        unavailable("useradd is not installed (Debian package passwd)")
    p = subprocess.run(
        [useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", TEST_USER],
        capture_output=True, text=True, timeout=60,
    )
    try:
        # A concurrent run may have made it first; then useradd fails and the user exists.
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        unavailable(f"cannot create the system user {TEST_USER}: {p.stderr.strip()}")


@pytest.fixture
def servers():
    """Factory: a Server rooted in a fresh 0755 folder under /tmp; each gets SIGTERM at
    teardown and must exit 0."""
    made: list[Server] = []
    roots: list[Path] = []

    def make(**overrides) -> Server:
        require_binary()
        root = Path(tempfile.mkdtemp(prefix="poplar-proc-"))
        os.chmod(root, 0o755)
        roots.append(root)
        srv = Server(root, overrides)
        os.chmod(srv.config_path, 0o644)
        made.append(srv)
        return srv

    yield make
    problems = []
    for srv in made:
        if srv.proc is None:
            continue
        rc = srv.exit_code if srv.stopped else srv.stop()
        if rc != 0:
            problems.append(f"poplar serve exited with {rc}\n{srv.stderr_tail()}")
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)
    if problems:
        pytest.fail("\n".join(problems))


def free_privileged_port() -> int:
    """A loopback port below 1024 that nothing listens on (we run as root here)."""
    for port in random.sample(range(600, 1024), 100):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.fail("no free loopback port below 1024")


def prepare_data_dir(srv: Server, user: pwd.struct_passwd) -> None:
    """What an administrator (or systemd's StateDirectory=) does: the data folder, owned by
    the user the server runs as."""
    srv.data_dir.mkdir(mode=0o750)
    os.chown(srv.data_dir, user.pw_uid, user.pw_gid)


def status_fields(path: Path) -> dict[str, list[str]]:
    fields = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    return fields


def thread_statuses(pid: int) -> list[dict[str, list[str]]]:
    """/proc status of every thread: IDs are per thread in the kernel, so check them all."""
    tasks = sorted((Path("/proc") / str(pid) / "task").iterdir())
    assert tasks, f"no threads listed for {pid}"
    return [status_fields(t / "status") for t in tasks]


def deliver_as(srv: Server, user: pwd.struct_passwd, data: bytes) -> str:
    """Deliver like Postfix virtual delivery: the message file belongs to the mail user."""
    base = srv.deliver(data)
    path = srv.find_message_file(base)
    os.chown(path, user.pw_uid, user.pw_gid)
    return base


def assert_all_owned_by(root: Path, user: pwd.struct_passwd) -> int:
    count = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            st = path.lstat()
            assert (st.st_uid, st.st_gid) == (user.pw_uid, user.pw_gid), (
                f"{path} belongs to {st.st_uid}:{st.st_gid}, not {TEST_USER} "
                f"({user.pw_uid}:{user.pw_gid})"
            )
            count += 1
    return count


def test_serve_binds_a_privileged_port_then_runs_as_the_configured_user(servers, test_user):
    uid, gid = test_user.pw_uid, test_user.pw_gid
    assert grp.getgrnam(TEST_USER).gr_gid == gid
    port = free_privileged_port()
    srv = servers(
        listen={"pop3": [f"127.0.0.1:{port}"], "pop3s": ["127.0.0.1:0"]},
        process={"user": TEST_USER, "group": TEST_USER},
    )
    prepare_data_dir(srv, test_user)
    # Run as root, `poplar user add` switches to the user too: the directory and the
    # Maildir it makes belong to poplar-test. The key ring, beside the configuration
    # where that user cannot write, is made by root first: root's, the group may read.
    srv.add_user("alice", DEFAULT_PASSWORD)
    ring = (srv.root / "server.key").stat()
    assert (ring.st_uid, ring.st_gid, ring.st_mode & 0o777) == (0, gid, 0o640)
    assert (srv.root / "server.key").read_text().startswith("# Poplar")
    srv.start()
    assert srv.pop3_port == port, srv.stdout_lines

    statuses = thread_statuses(srv.pid)
    for st in statuses:
        # real, effective, saved and file-system IDs
        assert st["Uid"] == [str(uid)] * 4, st["Uid"]
        assert st["Gid"] == [str(gid)] * 4, st["Gid"]
        assert st["Groups"] == [str(gid)], st["Groups"]
        # Leaving root for a non-root user clears every capability.
        assert int(st["CapPrm"][0], 16) == 0 and int(st["CapEff"][0], 16) == 0, st
        assert int(st["CapAmb"][0], 16) == 0, st
    assert len(statuses) > 1, "expected the runtime's worker threads"

    message = make_message("dropped", "Served by an unprivileged process.\n")
    base = deliver_as(srv, test_user, message)
    with srv.plain() as c:  # the privileged port answers
        assert "STLS" in c.capa()
        c.starttls()
        c.login("alice", DEFAULT_PASSWORD)
        assert c.stat()[0] == 1
        assert c.retr(1) == crlf(message)
        c.ok("DELE 1")
        c.quit()
    assert srv.find_message_file(base) is None, "the deletion needs write access as the user"
    with srv.tls() as c:
        c.login("alice", DEFAULT_PASSWORD)
        assert c.stat()[0] == 0
        c.quit()

    # Everything the server and the CLI made in the data folder belongs to the user:
    # poplar.db (which also holds the server key), tls/cert.pem and key.pem, the Maildir
    # and its caches.
    for made in ("poplar.db", "tls/cert.pem", "tls/key.pem", "mail/alice/cur"):
        assert (srv.data_dir / made).exists(), made
    assert assert_all_owned_by(srv.data_dir, test_user) >= 8
    assert srv.stop() == 0


def test_started_as_the_user_with_cap_net_bind_service(servers, test_user, monkeypatch):
    """The other route (systemd User= with AmbientCapabilities=CAP_NET_BIND_SERVICE): the
    process never is root; [process] user naming that same user changes nothing."""
    setpriv = require_tool("setpriv")
    port = free_privileged_port()
    srv = servers(
        listen={"pop3": [f"127.0.0.1:{port}"], "pop3s": ["127.0.0.1:0"]},
        process={"user": TEST_USER},
    )
    prepare_data_dir(srv, test_user)
    srv.add_user("alice", DEFAULT_PASSWORD)
    wrapper = srv.root / "poplar-as-user"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"exec {setpriv} --reuid={TEST_USER} --regid={TEST_USER} --clear-groups "
        "--inh-caps=+net_bind_service --ambient-caps=+net_bind_service "
        f"-- {conftest.POPLAR_BIN} \"$@\"\n"
    )
    wrapper.chmod(0o755)
    monkeypatch.setattr(conftest, "POPLAR_BIN", wrapper)
    srv.start()
    assert srv.pop3_port == port
    for st in thread_statuses(srv.pid):
        assert st["Uid"] == [str(test_user.pw_uid)] * 4, st["Uid"]
        assert int(st["CapEff"][0], 16) == CAP_NET_BIND_SERVICE, st["CapEff"]
    base = deliver_as(srv, test_user, make_message("capability"))
    with srv.tls() as c:
        c.login("alice", DEFAULT_PASSWORD)
        assert c.stat()[0] == 1
        c.quit()
    assert srv.find_message_file(base) is not None
    assert_all_owned_by(srv.data_dir, test_user)


def test_a_data_folder_of_another_user_stops_the_start(servers, test_user):
    srv = servers(process={"user": TEST_USER})
    srv.data_dir.mkdir(mode=0o755)  # owned by root, as a forgotten chown leaves it
    p = srv.cli("serve")
    err = p.stderr.decode(errors="replace")
    assert p.returncode != 0, p.stdout
    assert f"data folder {srv.data_dir} is owned by root" in err, err
    assert f"chown -R {TEST_USER}:{TEST_USER} {srv.data_dir}" in err, err
    assert b"ready" not in p.stdout
    assert list(srv.data_dir.iterdir()) == [], "nothing may be created before the check"

    # The folder is the user's, but a file in it was left by root (say a CLI run as root
    # by an older version): refused as well, naming the file.
    os.chown(srv.data_dir, test_user.pw_uid, test_user.pw_gid)
    (srv.data_dir / "poplar.db").write_bytes(b"")
    p = srv.cli("serve")
    err = p.stderr.decode(errors="replace")
    assert p.returncode != 0
    assert f"{srv.data_dir / 'poplar.db'} in the data folder is owned by root" in err, err


def test_unknown_user_and_group_alone_are_refused(servers):
    srv = servers(process={"user": "poplar-no-such-user"})
    p = srv.cli("serve")
    assert p.returncode != 0
    assert b'no user "poplar-no-such-user"' in p.stderr, p.stderr
    # config check may run on another machine than the server: a warning, not an error.
    p = srv.cli("config", "check", check=True)
    assert b'warning: process.user: there is no user "poplar-no-such-user"' in p.stderr, p.stderr
    srv = servers(process={"group": "mail"})
    p = srv.cli("config", "check")
    assert p.returncode != 0
    assert b"process.group is set but process.user is not" in p.stderr, p.stderr


def test_root_without_a_process_user_is_warned_about(servers):
    srv = servers()
    p = srv.cli("config", "check", check=True)
    warned = b"running as root with no process.user" in p.stderr
    assert warned == (os.geteuid() == 0), p.stderr
    assert b'[process]\nuser = ""\ngroup = ""' in p.stdout, p.stdout
    srv = servers(process={"user": TEST_USER})
    p = srv.cli("config", "check", check=True)
    assert b"process.user" not in p.stderr, p.stderr


# --------------------------------------------------------------------------- systemd

HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
    "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
    "StateDirectory": "poplar",
    "Type": "notify",
    "NotifyAccess": "main",
    "Restart": "on-failure",
    "ExecReload": "/bin/kill -HUP $MAINPID",
}


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_systemd_unit_has_the_sandboxing_directives():
    settings = unit_settings(UNIT.read_text())
    for key, value in HARDENING.items():
        assert value in settings.get(key, []), f"{key}={value} missing from {UNIT}"
    assert "@system-service" in settings["SystemCallFilter"]
    assert settings["ReadWritePaths"], "the mail folder must be writable"
    exec_start = settings["ExecStart"][0].split()
    assert exec_start[0] == "/usr/local/bin/poplar" and exec_start[-1] == "serve", exec_start


DROP_IN = UNIT.parent / "root-then-drop.conf"


def installed_copy(folder: Path, drop_in: bool) -> tuple[Path, dict]:
    """The unit as systemd-analyze can check it. `verify` refuses a unit whose ExecStart
    binary does not exist, and the unit names the install path /usr/local/bin/poplar, so
    the copy names the binary under test instead; nothing else changes. The drop-in goes
    where systemd looks for it, poplar.service.d/ beside the unit, on SYSTEMD_UNIT_PATH."""
    binary = require_binary()
    text = UNIT.read_text()
    assert text.count("ExecStart=/usr/local/bin/poplar ") == 1
    folder.mkdir()
    unit = folder / "poplar.service"
    unit.write_text(text.replace("ExecStart=/usr/local/bin/poplar ", f"ExecStart={binary} "))
    if drop_in:
        (folder / "poplar.service.d").mkdir()
        shutil.copy(DROP_IN, folder / "poplar.service.d" / DROP_IN.name)
    # The trailing colon keeps systemd's own unit folders (for the targets named).
    return unit, {**os.environ, "SYSTEMD_UNIT_PATH": f"{folder}:"}


def analyze(*args: str, env: dict) -> subprocess.CompletedProcess:
    tool = require_tool("systemd-analyze")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("drop_in", [False, True], ids=["user-with-capability", "root-then-drop"])
def test_systemd_analyze_verify_passes(tmp_path, drop_in):
    unit, env = installed_copy(tmp_path / "units", drop_in)
    p = analyze("verify", str(unit), env=env)
    assert p.returncode == 0, p.stderr
    # verify reports unknown keys and bad values as warnings and still exits 0.
    complaints = [l for l in p.stderr.splitlines() if "poplar.service" in l or DROP_IN.name in l]
    assert not complaints, "\n".join(complaints)

    # The offline security review sees the intended identity and scores the sandbox; the
    # thresholds (0-100) hold today's exposure (14 and 21) with a little room.
    threshold = "30" if drop_in else "20"
    p = analyze("security", "--offline=yes", f"--threshold={threshold}", str(unit), env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    if drop_in:
        assert "Service runs as root user" in p.stdout, p.stdout
        assert "Service may change UID/GID identities" in p.stdout, p.stdout
    else:
        assert "Service runs as root user" not in p.stdout, p.stdout
        assert "Service cannot change UID/GID identities" in p.stdout, p.stdout


def test_the_units_command_line_is_accepted(tmp_path):
    binary = require_binary()
    args = unit_settings(UNIT.read_text())["ExecStart"][0].split()[1:]
    assert args == ["--config", "/etc/poplar/poplar.toml", "serve"], args
    p = subprocess.run([str(binary), "--config", str(tmp_path / "none.toml"), "serve", "--help"],
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
