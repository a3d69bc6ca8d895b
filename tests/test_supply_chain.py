"""The supply-chain check (scripts/supply-chain: cargo-deny with deny.toml and the RustSec
snapshot in ../shared/advisory-db) fails on a Cargo.lock holding a crate with a known
advisory, naming the advisory, and passes on this workspace's own lock.

The probe projects are tiny crates made here whose lock pins one affected version; only
`cargo generate-lockfile` and `cargo fetch` reach crates.io, nothing is built. cargo-deny
is installed by the script when missing (`cargo install`, a few minutes). Under CI=true
a cargo-deny that cannot be installed, a missing advisory database or an unreachable
crates.io is a failure, never a skip."""

import os
import subprocess
from pathlib import Path

import pytest

from conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "supply-chain"
INSTALL_TIMEOUT = 1800  # cargo install --locked cargo-deny: about 5 minutes on 2 cores
CHECK_TIMEOUT = 600


def _unavailable(message: str):
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _run(args, timeout, cwd=REPO_ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, CARGO_TERM_COLOR="never")
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def supply_chain():
    """scripts/supply-chain, with cargo-deny installed and the advisory database present."""
    db = Path(os.environ.get("POPLAR_ADVISORY_DB", REPO_ROOT.parent / "shared" / "advisory-db"))
    if not (db / "crates").is_dir():
        _unavailable(f"no RustSec advisory database at {db} (a folder with crates/)")
    try:
        p = _run([str(SCRIPT), "--install-only"], INSTALL_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        _unavailable(f"installing cargo-deny took over {INSTALL_TIMEOUT} s: {e}")
    if p.returncode != 0:
        _unavailable(f"cargo-deny could not be installed (exit {p.returncode}):\n"
                     f"{(p.stdout + p.stderr)[-3000:]}")
    assert p.stdout.startswith("cargo-deny 0.20."), p.stdout
    return SCRIPT


def probe_project(root: Path, name: str, dependency: str) -> Path:
    """A one-crate workspace whose Cargo.lock holds exactly `dependency` (and what it
    needs). Licensed and unpublished like Poplar's crates, so only advisories can fail."""
    (root / "src").mkdir(parents=True)
    (root / "src" / "lib.rs").write_text("")
    (root / "Cargo.toml").write_text(
        f'[package]\nname = "{name}"\nversion = "0.0.0"\nedition = "2021"\n'
        f'license = "Apache-2.0"\npublish = false\n\n[dependencies]\n{dependency}\n')
    try:
        p = _run(["cargo", "generate-lockfile", "--manifest-path", str(root / "Cargo.toml")],
                 CHECK_TIMEOUT, cwd=root)
    except subprocess.TimeoutExpired as e:
        _unavailable(f"cargo generate-lockfile timed out: {e}")
    if p.returncode != 0:
        _unavailable(f"cargo generate-lockfile failed (is crates.io reachable?):\n{p.stderr[-2000:]}")
    return root / "Cargo.toml"


@pytest.mark.parametrize("dependency, advisory, kind", [
    # A heap buffer overflow in SmallVec::insert_many (fixed in 1.6.1); no dependencies.
    ('smallvec = "=1.6.0"', "RUSTSEC-2021-0003", "error[vulnerability]"),
    # rustls-pemfile is unmaintained (its code moved into rustls-pki-types).
    ('rustls-pemfile = "=2.2.0"', "RUSTSEC-2025-0134", "error[unmaintained]"),
])
def test_lock_with_known_advisory_fails(supply_chain, tmp_path, dependency, advisory, kind):
    manifest = probe_project(tmp_path / "probe", "advisory-probe", dependency)
    lock_before = (tmp_path / "probe" / "Cargo.lock").read_text()

    p = _run([str(supply_chain), str(manifest)], CHECK_TIMEOUT)
    out = p.stdout + p.stderr

    assert p.returncode != 0, out
    assert advisory in out, out
    assert kind in out, out
    assert "advisories FAILED" in out, out
    # Only the advisory fails: the probe's licence, bans and source are all accepted.
    assert "bans ok, licenses ok, sources ok" in out, out
    # The lock is checked as it is, not updated to a fixed version.
    assert (tmp_path / "probe" / "Cargo.lock").read_text() == lock_before


def test_workspace_lock_passes(supply_chain):
    p = _run([str(supply_chain)], CHECK_TIMEOUT)
    out = p.stdout + p.stderr

    assert p.returncode == 0, out
    assert "advisories ok, bans ok, licenses ok, sources ok" in out, out
    # The local snapshot is named, and nothing was fetched over the network.
    assert "advisory database: RustSec advisory database snapshot" in out, out
    assert "Fetching advisory database" not in out, out


def test_bad_manifest_is_an_error(supply_chain, tmp_path):
    p = _run([str(supply_chain), str(tmp_path / "nowhere" / "Cargo.toml")], CHECK_TIMEOUT)
    assert p.returncode != 0
    assert "no manifest at" in p.stderr
