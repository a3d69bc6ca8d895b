"""Runs last (pytest takes files in name order): greps every log and metrics output that
the whole test session produced — each server's standard error, standard output, audit
log and saved metrics scrapes — for every password the tests set, in plain text and in
base64 at each of the three alignments a secret can take inside a base64 blob (as in a
SASL PLAIN response)."""

import base64
from pathlib import Path

from conftest import ALL_SERVERS, EXTRA_SECRETS


def base64_cores(secret: bytes) -> list[str]:
    """The part of base64(prefix + secret + suffix) that depends only on the secret,
    for prefixes of 0, 1 and 2 bytes."""
    cores = []
    for k in range(3):
        encoded = base64.b64encode(b"\0" * k + secret).decode()
        start = 0 if k == 0 else (4 * k + 2) // 3 + 1
        core = encoded[start:len(encoded) - 4]
        if len(core) >= 8:
            cores.append(core)
    return cores


def log_texts(srv) -> list[tuple[str, str]]:
    out = [("stdout", "\n".join(srv.stdout_lines))]
    root = Path(srv.root)
    for path in root.rglob("*"):
        if path.is_file() and (path.suffix in (".log", ".prom", ".metrics")
                               or ".log." in path.name or path.name.startswith("audit.log")):
            out.append((str(path), path.read_text(errors="replace")))
    return out


def test_no_secret_in_any_log_or_metrics_output():
    assert ALL_SERVERS, "run with the rest of the suite"
    secrets = {pw for srv in ALL_SERVERS for pw in srv.passwords.values()} | EXTRA_SECRETS
    names = {name for srv in ALL_SERVERS for name in srv.passwords}
    # Short or name-like strings would match by accident; every suite password is longer.
    secrets = {s for s in secrets if len(s) >= 8 and s not in names}
    needles = {}
    for s in secrets:
        needles[s] = s
        for core in base64_cores(s.encode()):
            needles[core] = f"base64 of {s!r}"
    found = []
    scanned = 0
    for srv in ALL_SERVERS:
        for where, text in log_texts(srv):
            scanned += 1
            for needle, what in needles.items():
                if needle in text:
                    found.append(f"{what} in {where}")
    assert scanned > len(ALL_SERVERS), "no log files found to scan"
    assert not found, "\n".join(sorted(set(found))[:50])
    print(f"{len(secrets)} secrets checked in {scanned} outputs of {len(ALL_SERVERS)} servers")
