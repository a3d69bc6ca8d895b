"""The Debian package (issue 20): built by `scripts/package`, the README's command,
installed with dpkg into a throwaway Debian root, checked file by file, its unit verified
by that root's systemd-analyze, its server run as the unit runs it and fetched from with
curl, then purged, after which the root holds what it held before, besides the
`poplar` system user, which stays.

The root is made by mmdebstrap (tests/peers/install-mmdebstrap.sh) for the host's Debian
suite, with what the package needs (adduser) and what the test runs in it (systemd's
systemd-analyze, curl). It is downloaded once and kept as a tarball in
~/.cache/poplar-test/ (remade after 30 days); each run unpacks a fresh copy into a
temporary folder. Commands run in it with `chroot`, each in a mount namespace of its own
with /proc mounted there, so no mount outlives the command and the folder can always be
deleted. The server runs in a network namespace of its own as well, so the packaged
configuration is used as it is, ports 110 and 995 included, beside any other test.

Needs root (chroot, namespaces, dpkg). Without root, mmdebstrap or the Debian archive the
test is skipped, except under CI=true, where it fails.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT, require_peer, require_tool

PACKAGE_TIMEOUT = 3600  # a release build from a clean clone on two cores
ROOT_TIMEOUT = 900
COMMAND_TIMEOUT = 120
START_TIMEOUT = 60
CACHE_MAX_AGE = 30 * 24 * 3600

#: What the throwaway root gets besides the minimal base: the package's dependencies
#: (adduser, procps; libc6 is in every root; dpkg -i installs none) and the tools the
#: test runs inside it.
ROOT_PACKAGES = ["adduser", "procps", "systemd", "curl"]

#: A clean environment for commands in the root.
ROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
    "HOME": "/root",
}

UNIT_PATH = "usr/lib/systemd/system/poplar.service"
#: Every file the package installs (dpkg -L also lists the folders).
PACKAGED_FILES = [
    "usr/bin/poplar",
    "etc/poplar/poplar.toml",
    UNIT_PATH,
    "usr/share/man/man1/poplar.1.gz",
    "usr/share/bash-completion/completions/poplar",
    "usr/share/zsh/vendor-completions/_poplar",
    "usr/share/fish/vendor_completions.d/poplar.fish",
    "usr/share/doc/poplar/copyright",
    "usr/share/doc/poplar/README.md",
    "usr/share/doc/poplar/deploy.md",
    "usr/share/doc/poplar/examples/poplar.example.toml",
    "usr/share/doc/poplar/examples/root-then-drop.conf",
]
ENABLED_LINK = "etc/systemd/system/multi-user.target.wants/poplar.service"

#: What may differ between the root before the install and after the purge: dpkg's and
#: debconf's own records and logs, and the backups of the account files that adding
#: the (documented as kept) user made.
CHANGES_ALLOWED = (
    re.compile(r"var/lib/dpkg(/.*)?"),
    re.compile(r"var/log(/.*)?"),
    re.compile(r"var/cache/debconf(/.*)?"),
    re.compile(r"etc/(passwd|group|shadow|gshadow|subuid|subgid)-"),
)


def unavailable(message: str):
    """Fail under CI=true (CI must run this test), skip elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def tail(data, limit: int = 4000) -> str:
    text = data.decode(errors="replace") if isinstance(data, bytes) else (data or "")
    return text[-limit:]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def deb() -> Path:
    """The package, made by the README's command."""
    started = time.monotonic()
    p = subprocess.run(
        [str(REPO_ROOT / "scripts" / "package")],
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=PACKAGE_TIMEOUT,
    )
    assert p.returncode == 0, f"scripts/package failed:\n{tail(p.stdout)}\n{tail(p.stderr)}"
    lines = p.stdout.decode().strip().splitlines()
    assert lines and lines[-1].endswith(".deb"), f"no .deb named last:\n{tail(p.stdout)}"
    path = Path(lines[-1])
    assert path.is_file(), path
    print(f"scripts/package: {time.monotonic() - started:.0f} s, {path}")
    return path


def host_suite() -> str:
    fields = {}
    for line in Path("/etc/os-release").read_text().splitlines():
        key, _, value = line.partition("=")
        fields[key] = value.strip('"')
    if fields.get("ID") != "debian" or not fields.get("VERSION_CODENAME"):
        unavailable(f"the host is not Debian with a release code name: {fields}")
    return fields["VERSION_CODENAME"]


def mmdebstrap_args(suite: str) -> list[str]:
    archive = "http://deb.debian.org/debian"
    return [
        "--variant=minbase",
        "--include=" + ",".join(ROOT_PACKAGES),
        suite,
        "-",  # the output, named below
        f"deb {archive} {suite} main",
        f"deb {archive} {suite}-updates main",
        f"deb {archive}-security {suite}-security main",
    ]


@pytest.fixture(scope="module")
def base_tarball() -> Path:
    """The cached root tarball; made (about 200 MB) when missing, stale or made with
    other arguments (their hash is in the name)."""
    if os.geteuid() != 0:
        unavailable("the package test needs root (chroot, namespaces, dpkg)")
    mmdebstrap = require_peer(
        "mmdebstrap", "install-mmdebstrap.sh", lambda: shutil.which("mmdebstrap")
    )
    suite = host_suite()
    args = mmdebstrap_args(suite)
    digest = hashlib.sha256("\0".join(args).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "poplar-test"
    tarball = cache / f"debian-{suite}-{digest}.tar"
    if tarball.exists() and time.time() - tarball.stat().st_mtime < CACHE_MAX_AGE:
        return tarball
    cache.mkdir(parents=True, exist_ok=True)
    for old in cache.glob(f"debian-{suite}-*.tar"):
        old.unlink()
    partial = cache / f".{tarball.name}.{os.getpid()}.partial"
    args[args.index("-")] = str(partial)
    started = time.monotonic()
    try:
        p = subprocess.run(
            [mmdebstrap, "--quiet", "--format=tar", *args],
            capture_output=True,
            timeout=ROOT_TIMEOUT,
        )
    except subprocess.TimeoutExpired as e:
        partial.unlink(missing_ok=True)
        unavailable(f"mmdebstrap did not finish within {ROOT_TIMEOUT} s: {e}")
    if p.returncode != 0:
        partial.unlink(missing_ok=True)
        unavailable(f"mmdebstrap could not make a {suite} root:\n{tail(p.stderr)}")
    os.replace(partial, tarball)
    print(f"mmdebstrap: {time.monotonic() - started:.0f} s, {tarball}")
    return tarball


def mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return found


class Root:
    """A fresh Debian root unpacked from the cached tarball."""

    def __init__(self, tarball: Path):
        self.path = Path(tempfile.mkdtemp(prefix="poplar-deb-root."))
        os.chmod(self.path, 0o755)
        p = subprocess.run(
            ["tar", "--extract", "--numeric-owner", "--same-permissions",
             "--file", str(tarball), "--directory", str(self.path)],
            capture_output=True,
            timeout=ROOT_TIMEOUT,
        )
        assert p.returncode == 0, f"unpacking {tarball}: {tail(p.stderr)}"
        self.processes: list[subprocess.Popen] = []

    def command(self, *argv: str, net_of: int | None = None) -> list[str]:
        """argv run in the root: chroot in a private mount namespace with /proc, so the
        mount goes with the namespace; in the network namespace of process net_of if
        given."""
        script = 'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"'
        wrapped = ["unshare", "--mount", "--propagation", "private", "--",
                   "sh", "-c", script, str(self.path), *argv]
        if net_of is not None:
            wrapped = ["nsenter", f"--net=/proc/{net_of}/ns/net", "--", *wrapped]
        return wrapped

    def run(self, *argv: str, input: bytes | None = None, net_of: int | None = None,
            check: bool = True, timeout: int = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
        p = subprocess.run(
            self.command(*argv, net_of=net_of),
            input=input,
            capture_output=True,
            env=ROOT_ENV,
            timeout=timeout,
        )
        if check:
            assert p.returncode == 0, (
                f"{' '.join(argv)} exited {p.returncode}:\n{tail(p.stdout)}\n{tail(p.stderr)}"
            )
        return p

    def file(self, path: str) -> Path:
        return self.path / path.lstrip("/")

    def listing(self) -> dict[str, tuple]:
        """Every path in the root with its type, owner, group and mode (symlinks not
        followed), except /proc, /sys, /run and /tmp, which a boot empties (the test's
        tools leave locks there: adduser's, systemd-analyze's)."""
        entries = {}
        for folder, dirs, files in os.walk(self.path):
            rel_folder = os.path.relpath(folder, self.path)
            if rel_folder == ".":
                dirs[:] = [d for d in dirs if d not in ("proc", "sys", "run", "tmp")]
            for name in dirs + files:
                full = os.path.join(folder, name)
                st = os.lstat(full)
                rel = os.path.normpath(os.path.join(rel_folder, name))
                entries[rel] = (stat.S_IFMT(st.st_mode), st.st_uid, st.st_gid,
                                stat.S_IMODE(st.st_mode))
        return entries

    def account(self, kind: str, name: str) -> list[str] | None:
        for line in self.file(f"etc/{kind}").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == name:
                return fields
        return None

    def close(self):
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        # Every mount was made in a namespace of its own and is gone with it; never
        # delete through a mount that is still there.
        left = mounts_under(self.path)
        assert not left, f"mounts left under {self.path}, not deleting it: {left}"
        shutil.rmtree(self.path)


@pytest.fixture
def root(base_tarball):
    r = Root(base_tarball)
    try:
        yield r
    finally:
        r.close()


# --------------------------------------------------------------------------- helpers


def start_server(root: Root, notify: socket.socket):
    """`poplar serve` as the unit runs it: ExecStart's command line as User=poplar,
    Group=poplar with CAP_NET_BIND_SERVICE as its only (ambient) capability,
    UMask=0027, LimitNOFILE=140000 where the host allows it (raising the hard limit
    needs CAP_SYS_RESOURCE; without it the server serves fewer connections and says
    so), NOTIFY_SOCKET set, here in a network namespace of its own (with loopback up)
    so the packaged ports are free. The sandboxing itself needs systemd as PID 1."""
    require_tool("ip")
    script = ('ip link set lo up && mount -t proc proc "$0/proc" && umask 0027 '
              '&& { ulimit -n 140000 2>/dev/null || true; } && exec chroot "$0" "$@"')
    argv = [
        "unshare", "--net", "--mount", "--propagation", "private", "--",
        "sh", "-c", script, str(root.path),
        "setpriv", "--reuid=poplar", "--regid=poplar", "--init-groups",
        "--inh-caps=-all,+net_bind_service", "--ambient-caps=-all,+net_bind_service",
        "--bounding-set=-all,+net_bind_service", "--no-new-privs",
        "/usr/bin/poplar", "--config", "/etc/poplar/poplar.toml", "serve",
    ]
    stderr = open(root.path / "tmp" / "poplar-serve.stderr", "wb")
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env={**ROOT_ENV, "NOTIFY_SOCKET": "/run/poplar-test.notify"},
    )
    stderr.close()  # the child has its own copy
    root.processes.append(proc)
    lines: list[str] = []
    ready = threading.Event()

    def pump():
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            lines.append(line)
            if line == "ready":
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    ready.wait(START_TIMEOUT)
    errors = lambda: tail((root.path / "tmp" / "poplar-serve.stderr").read_bytes())
    assert "ready" in lines, (
        f"poplar serve did not get ready (exit {proc.poll()}); stdout {lines!r}\n{errors()}"
    )
    notify.settimeout(20)
    assert notify.recv(4096) == b"READY=1", "no READY=1 for Type=notify"
    return proc, lines, errors


def maildrop_message(root: Root, maildir: str, message: bytes):
    """Delivered the way an MDA does it (tmp/, then a rename into new/), owned by poplar."""
    user = root.account("passwd", "poplar")
    uid, gid = int(user[2]), int(user[3])
    folder = root.file(maildir)
    name = f"{int(time.time())}.M1P1.package-test"
    tmp = folder / "tmp" / name
    tmp.write_bytes(message)
    os.chown(tmp, uid, gid)
    os.chmod(tmp, 0o640)
    os.rename(tmp, folder / "new" / name)


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}{key.strip()}", []).append(value.strip())
    return settings


# --------------------------------------------------------------------------- tests


def test_packaged_unit_is_the_contrib_unit_but_for_the_package_layout():
    """contrib/debian/poplar.service may differ from contrib/systemd/poplar.service only
    in the binary's path and the user, so a change to the sandboxing reaches both."""
    contrib = unit_settings((REPO_ROOT / "contrib/systemd/poplar.service").read_text())
    packaged = unit_settings((REPO_ROOT / "contrib/debian/poplar.service").read_text())
    expected = dict(contrib)
    expected["[Service]ExecStart"] = [
        v.replace("/usr/local/bin/poplar ", "/usr/bin/poplar ") for v in contrib["[Service]ExecStart"]
    ]
    expected["[Service]User"] = ["poplar"]
    expected["[Service]Group"] = ["poplar"]
    assert packaged == expected


def test_package_control_fields(deb):
    fields = subprocess.run(
        ["dpkg-deb", "--field", str(deb)], capture_output=True, text=True, check=True
    ).stdout
    control = dict(re.findall(r"^([A-Za-z-]+): (.*)$", fields, re.M))
    assert control["Package"] == "poplar"
    assert control["Section"] == "mail"
    assert control["Priority"] == "optional"
    depends = [d.strip().split()[0] for d in control["Depends"].split(",")]
    # adduser for the postinst, procps for the unit's /bin/kill, libc6 found by cargo-deb.
    assert {"adduser", "procps", "libc6"} <= set(depends), control["Depends"]
    control_tar = subprocess.run(
        ["dpkg-deb", "--ctrl-tarfile", str(deb)], capture_output=True, check=True
    ).stdout
    listing = subprocess.run(
        ["tar", "-t"], input=control_tar, capture_output=True, check=True
    ).stdout.decode()
    for script in ("./postinst", "./prerm", "./postrm", "./conffiles"):
        assert script in listing.split(), listing
    # cargo-deb put its systemd steps at the token of each maintainer script, once.
    for script in ("./postinst", "./prerm", "./postrm"):
        text = subprocess.run(["tar", "-xO", script], input=control_tar, capture_output=True,
                              check=True).stdout.decode()
        assert "#DEBHELPER#" not in text and "deb-systemd-" in text, text
        assert text.count("# Automatically added by cargo-deb") <= 2, text
        subprocess.run(["sh", "-n"], input=text.encode(), check=True)


def test_package_installs_serves_and_purges_cleanly(deb, root):
    before = root.listing()
    assert root.account("passwd", "poplar") is None

    # -- install
    shutil.copy(deb, root.file("tmp/poplar.deb"))
    installed = root.run("dpkg", "--install", "/tmp/poplar.deb")
    root.file("tmp/poplar.deb").unlink()
    assert b"warning" not in installed.stderr.lower(), tail(installed.stderr)

    listed = set(root.run("dpkg", "--listfiles", "poplar").stdout.decode().split("\n"))
    for path in PACKAGED_FILES:
        assert "/" + path in listed, f"/{path} not in dpkg -L poplar"
        assert root.file(path).is_file(), path
    binary = root.file("usr/bin/poplar")
    assert stat.S_IMODE(binary.stat().st_mode) == 0o755
    conffiles = root.run("dpkg-query", "--show", "--showformat=${Conffiles}", "poplar").stdout.decode()
    assert re.search(r"^ /etc/poplar/poplar\.toml [0-9a-f]{32}$", conffiles, re.M), conffiles
    assert root.file("etc/poplar/poplar.toml").read_bytes() == (
        REPO_ROOT / "contrib/debian/poplar.toml"
    ).read_bytes()
    manpage = gzip.decompress(root.file("usr/share/man/man1/poplar.1.gz").read_bytes()).decode()
    assert re.search(r"^\.TH poplar 1", manpage, re.M), manpage[:300]
    assert "user" in manpage and "serve" in manpage
    assert "_poplar()" in root.file("usr/share/bash-completion/completions/poplar").read_text()
    assert root.file("usr/share/zsh/vendor-completions/_poplar").read_text().startswith("#compdef poplar")
    assert "complete -c poplar" in root.file("usr/share/fish/vendor_completions.d/poplar.fish").read_text()
    # Enabled for multi-user.target by deb-systemd-helper (started only where systemd
    # runs, which it does not in this root).
    # (/lib/systemd/system/... on bookworm: the same file, /lib being /usr/lib).
    link = os.readlink(root.file(ENABLED_LINK))
    assert link.endswith("/systemd/system/poplar.service"), link
    assert os.path.samefile(root.file(link), root.file(UNIT_PATH)), link

    # The system user and its data folder.
    user = root.account("passwd", "poplar")
    assert user is not None, "postinst made no user poplar"
    uid, gid = int(user[2]), int(user[3])
    assert 100 <= uid < 1000, f"poplar is not a system user: {user}"
    assert user[5] == "/var/lib/poplar" and user[6] == "/usr/sbin/nologin", user
    assert root.account("group", "poplar")[2] == str(gid)
    assert root.account("shadow", "poplar")[1] in ("*", "!", "!*"), "poplar has a password"
    data = root.file("var/lib/poplar").lstat()
    assert (data.st_uid, data.st_gid, stat.S_IMODE(data.st_mode)) == (uid, gid, 0o750)
    # The key ring, apart from the data folder: root's, readable by the group poplar.
    ring = root.file("etc/poplar/server.key").lstat()
    assert (ring.st_uid, ring.st_gid, stat.S_IMODE(ring.st_mode)) == (0, gid, 0o640)
    assert root.file("etc/poplar/server.key").read_text().count("\nkey 1 ") == 1
    shown = root.run("poplar", "--config", "/etc/poplar/poplar.toml", "key", "show").stdout.decode()
    assert "recognises this ring" in shown, shown

    # -- the unit, checked by the root's own systemd
    # Every program it runs comes from an Essential package or one the package depends
    # on (a minimal Debian has no /bin/kill without procps).
    depends = root.run("dpkg-query", "--show", "--showformat=${Depends}", "poplar").stdout.decode()
    depends = {d.strip().split()[0] for d in depends.split(",")}
    unit = unit_settings(root.file(UNIT_PATH).read_text())
    for key in ("[Service]ExecStart", "[Service]ExecReload"):
        program = unit[key][0].split()[0]
        if program == "/usr/bin/poplar":
            continue
        owner = root.run("dpkg-query", "--search", program).stdout.decode().split(":")[0]
        essential = root.run("dpkg-query", "--show", "--showformat=${Essential}", owner).stdout
        assert owner in depends or essential == b"yes", f"{key}: {program} is from {owner}"
    p = root.run("systemd-analyze", "verify", "/" + UNIT_PATH, check=False)
    complaints = [l for l in (p.stdout + p.stderr).decode().splitlines() if "poplar" in l]
    assert p.returncode == 0 and not complaints, tail(p.stdout + p.stderr)
    p = root.run("systemd-analyze", "security", "--offline=yes", "--threshold=20", "/" + UNIT_PATH,
                 check=False)
    assert p.returncode == 0, tail(p.stdout + p.stderr)
    assert "Service runs as root user" not in p.stdout.decode()

    # The packaged configuration holds, read as the service's user.
    root.run("/usr/bin/poplar", "config", "check", "--as-user", "poplar")

    # -- serve, as the unit would
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_path = root.file("run/poplar-test.notify")
    notify.bind(str(notify_path))
    os.chmod(notify_path, 0o666)
    try:
        server, stdout, errors = start_server(root, notify)
        for line in ("listening pop3 0.0.0.0:110", "listening pop3 [::]:110",
                     "listening pop3s 0.0.0.0:995", "listening pop3s [::]:995"):
            assert line in stdout, f"{line!r} not in {stdout!r}"

        # An account, added by root with the packaged configuration (the system default,
        # no --config): Poplar switches to poplar, so what it makes is poplar's.
        password = "pkg-" + secrets.token_hex(16)
        root.run("/usr/bin/poplar", "user", "add", "tester@example.org", "--password-stdin",
                 input=password.encode() + b"\n")
        shown = root.run("/usr/bin/poplar", "user", "show", "tester@example.org", "--json").stdout
        maildir = json.loads(shown)["maildir"]
        assert maildir.startswith("/var/lib/poplar/"), maildir
        message = (b"From: sender@example.org\r\nTo: tester@example.org\r\n"
                   b"Subject: from the package test\r\n\r\n"
                   + secrets.token_hex(32).encode() + b"\r\n.leading dot\r\nend\r\n")
        maildrop_message(root, maildir, message)

        # Fetched with curl over both packaged listeners, IPv4 and IPv6, checking the
        # self-signed certificate the server made in its data folder on first start.
        cert = "/var/lib/poplar/tls/cert.pem"
        # (The certificate names localhost and 127.0.0.1: ::1 is reached as localhost.)
        for url, extra in (("pop3s://127.0.0.1:995/1", []),
                           ("pop3s://localhost:995/1", ["--connect-to", "localhost:995:[::1]:995"]),
                           ("pop3://127.0.0.1:110/1", ["--ssl-reqd"])):
            p = root.run("curl", "--silent", "--show-error", "--max-time", "30",
                         "--cacert", cert, "--user", f"tester@example.org:{password}",
                         *extra, url, net_of=server.pid, check=False)
            assert p.returncode == 0, f"{url}: curl exit {p.returncode}: {tail(p.stderr)}\n{errors()}"
            assert p.stdout == message, (url, p.stdout)

        # Everything the server and the CLI made in the data folder is poplar's.
        for folder, dirs, files in os.walk(root.file("var/lib/poplar")):
            for name in dirs + files:
                st = os.lstat(os.path.join(folder, name))
                assert (st.st_uid, st.st_gid) == (uid, gid), os.path.join(folder, name)

        # -- stop (SIGTERM, as systemctl stop does)
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0, errors()
        assert notify.recv(4096) == b"STOPPING=1"

        # The sign-ins are audited, and the password is in no log.
        audit = root.file("var/lib/poplar/audit.log").read_text()
        assert '"tester@example.org"' in audit, audit[-2000:]
        for log in (audit, (root.path / "tmp" / "poplar-serve.stderr").read_text(errors="replace")):
            assert password not in log
    finally:
        notify.close()
        notify_path.unlink(missing_ok=True)
    (root.path / "tmp" / "poplar-serve.stderr").unlink(missing_ok=True)

    # -- purge
    root.run("dpkg", "--purge", "poplar")
    assert root.run("dpkg-query", "--show", "poplar", check=False).returncode != 0
    for path in PACKAGED_FILES + [ENABLED_LINK, "etc/poplar", "var/lib/poplar"]:
        assert not os.path.lexists(root.file(path)), f"/{path} is left after the purge"
    after = root.listing()
    added = sorted(p for p in after.keys() - before.keys()
                   if not any(r.fullmatch(p) for r in CHANGES_ALLOWED))
    removed = sorted(p for p in before.keys() - after.keys()
                     if not any(r.fullmatch(p) for r in CHANGES_ALLOWED))
    changed = sorted(p for p in before.keys() & after.keys()
                     if before[p] != after[p] and not any(r.fullmatch(p) for r in CHANGES_ALLOWED))
    assert (added, removed, changed) == ([], [], []), "the purge left the root changed"
    # The system user stays (documented in docs/deploy.md).
    assert root.account("passwd", "poplar") is not None
