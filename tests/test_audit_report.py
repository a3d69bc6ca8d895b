"""`poplar audit` on a directory seeded with planted weaknesses: each is listed by the
JSON report, and the text report names it with what to do.

Planted: an imported legacy {SHA512-CRYPT} hash never used, an imported account that
signed in (its hash upgraded, its password still the imported one), an imported account
whose password was then changed (not a finding), an account that never signed in, one
whose last sign-in is 200 days old, per-user IP rules, an account locked and an address
banned through the real server, plaintext mechanisms allowed beyond loopback, APOP on
with a user's secret, and an SNI certificate about to expire."""

import json
import sqlite3
import time
from pathlib import Path

import pytest

from conftest import plain_ir
from tls_helpers import make_cert

FIXTURES = Path(__file__).resolve().parent.parent / "crates/auth/tests/fixtures/legacy-hashes.txt"


def sha512_crypt_fixture() -> tuple[str, str]:
    """(password, hash) of a SHA512-CRYPT hash made by `openssl passwd -6`."""
    for line in FIXTURES.read_text(encoding="utf-8").splitlines():
        if line.startswith("openssl passwd -6\t"):
            _, password, stored = line.split("\t")
            return password, stored
    raise AssertionError("no openssl passwd -6 fixture")


def attempt(srv, user: str, password: str, source: str) -> str:
    with srv.plain(source=source) as c:
        reply = c.cmd("AUTH PLAIN " + plain_ir(user, password))
        c.quit()
    return reply


@pytest.fixture(scope="module")
def seeded(module_server, tmp_path_factory):
    certs = tmp_path_factory.mktemp("certs")
    cert, key = make_cert(certs, "soon", ["other.example"], days=5)
    srv = module_server(
        users={"alice": "alice pw", "never": "never pw", "netuser": "netuser pw",
               "locked": "locked pw", "stale": "stale pw"},
        auth={"plaintext_networks": ["127.0.0.0/8", "10.0.0.0/8"], "failure_delay_ms": 0},
        apop={"enabled": True},
        defence={"lockout_threshold": 3, "ban_accounts": 3},
        tls={"certificates": [{"cert": str(cert), "key": str(key)}]},
    )
    password, legacy_hash = sha512_crypt_fixture()
    passwd = tmp_path_factory.mktemp("import") / "users.passwd"
    passwd.write_text(
        f"legacy:{{SHA512-CRYPT}}{legacy_hash}:1000:1000::/home/legacy::\n"
        f"upgraded:{legacy_hash}:1000:1000::/home/upgraded::\n"
        f"changed:{{PLAIN}}old imported pw:1000:1000::/home/changed::\n",
        encoding="utf-8")
    srv.cli("user", "import", "--yes", str(passwd), check=True)
    srv.cli("user", "passwd", "changed", "--password-stdin", "--allow-weak",
            stdin="a new password\n", check=True)
    srv.cli("user", "networks", "netuser", "192.0.2.0/24", "2001:db8::/48", check=True)
    # Two factors required for `never`; app passwords for alice, one without expiry.
    srv.cli("mfa", "policy", "never", "required", check=True)
    srv.cli("app-password", "create", "alice", "--label", "forever", check=True)
    srv.cli("app-password", "create", "alice", "--label", "shortlived", "--expires-days", "30",
            check=True)
    srv.cli("user", "apop-secret", "alice", "--password-stdin", stdin="alice apop secret\n",
            check=True)

    # Sign-ins: alice and stale recently, upgraded with its imported password.
    for user, pw in (("alice", "alice pw"), ("stale", "stale pw"), ("upgraded", password),
                     ("changed", "a new password")):
        assert attempt(srv, user, pw, "127.0.0.1").startswith("+OK"), user
    # Locked: three failures from networks `locked` never signed in from.
    for i in range(3):
        assert attempt(srv, "locked", f"guess {i}", f"127.20.{i}.1").startswith("-ERR [AUTH]")
    # Banned: a spray over three names from one address.
    for user in ("spray1", "spray2", "spray3"):
        attempt(srv, user, "Summer2024!", "127.90.0.1")
    # stale's last sign-in was 200 days ago (the directory keeps it per network and in
    # the history). The history is written in the background: wait for it first.
    db = sqlite3.connect(srv.data_dir / "poplar.db", timeout=10)
    deadline = time.time() + 5
    while not db.execute("SELECT 1 FROM sign_in_history WHERE user = 'stale'").fetchone():
        assert time.time() < deadline, "no history for stale"
        time.sleep(0.05)
    with db:
        old = int((time.time() - 200 * 86400) * 1000)
        db.execute("UPDATE familiar_networks SET last_success = ?, first_success = ? "
                   "WHERE user = 'stale'", (old, old))
        db.execute("UPDATE sign_in_history SET at = ? WHERE user = 'stale'", (old,))
    db.close()
    return srv


@pytest.fixture(scope="module")
def report(seeded) -> dict:
    r = seeded.cli("audit", "--json", check=True)
    return json.loads(r.stdout)


def finding(report: dict, id: str) -> dict:
    found = [f for f in report["findings"] if f["id"] == id]
    assert len(found) == 1, [f["id"] for f in report["findings"]]
    f = found[0]
    assert f["title"] and f["summary"] and f["advice"], f
    return f


def users(f: dict) -> set[str]:
    return {i["user"] for i in f["items"] if "user" in i}


ALL_USERS = {"alice", "never", "netuser", "locked", "stale", "legacy", "upgraded", "changed"}


def test_every_check_is_in_the_report(report):
    ids = [f["id"] for f in report["findings"]]
    assert ids == ["two_factor_missing", "legacy_hashes", "imported_passwords_unchanged",
                   "app_passwords", "never_signed_in", "inactive_accounts",
                   "recent_sign_in_failures", "ip_rules",
                   "locked_accounts", "banned_addresses", "throttled_sign_ins",
                   "plaintext_without_tls", "apop_enabled", "tls_setup", "config_warnings"]
    assert report["users"] == len(ALL_USERS)
    for f in report["findings"]:
        assert f["status"] in ("finding", "ok"), f
        assert f["severity"] in ("high", "medium", "low", "info"), f
    counted = sum(report["summary"].values())
    assert counted == sum(f["status"] == "finding" for f in report["findings"])


def test_account_findings(report):
    f = finding(report, "two_factor_missing")
    assert f["status"] == "finding" and users(f) == ALL_USERS - {"never"}
    assert "account password alone" in f["summary"]

    f = finding(report, "legacy_hashes")
    assert f["status"] == "finding" and users(f) == {"legacy"}
    assert f["items"][0]["scheme"] == "SHA512-CRYPT" and f["items"][0]["weak"] is False

    f = finding(report, "imported_passwords_unchanged")
    # Upgraded at sign-in is still the imported password; a changed one is not.
    assert f["status"] == "finding" and users(f) == {"legacy", "upgraded"}

    f = finding(report, "app_passwords")
    assert f["status"] == "finding" and users(f) == {"alice"}
    [item] = f["items"]
    assert "(forever): no expiry" in item["note"], item

    f = finding(report, "never_signed_in")
    assert users(f) == {"never", "netuser", "locked", "legacy"}
    f = finding(report, "inactive_accounts")
    assert users(f) == {"stale"}
    assert f["items"][0]["last_sign_in"].endswith("Z")
    f = finding(report, "recent_sign_in_failures")
    assert "locked" in users(f), f
    locked = next(i for i in f["items"] if i["user"] == "locked")
    assert locked["note"].startswith("3 failed sign-ins in 7 days") and "127.20." in locked["note"]

    f = finding(report, "ip_rules")
    assert [(i["user"], i["networks"]) for i in f["items"]] == \
        [("netuser", ["192.0.2.0/24", "2001:db8::/48"])]


def test_locks_and_bans(report):
    f = finding(report, "locked_accounts")
    assert f["status"] == "finding" and users(f) == {"locked"}
    assert f["items"][0]["failures"] == 3 and f["items"][0]["until"].endswith("Z")
    f = finding(report, "banned_addresses")
    assert [(i["address"], i["accounts"]) for i in f["items"]] == [("127.90.0.1", 3)]


def test_configuration_findings(report):
    f = finding(report, "plaintext_without_tls")
    assert f["status"] == "finding" and f["severity"] == "high"
    assert [i["networks"] for i in f["items"]] == [["127.0.0.0/8"], ["10.0.0.0/8"]]
    assert "USER/PASS" in f["summary"] and "APOP" in f["summary"]
    assert "local network unencrypted" in f["items"][1]["note"]

    f = finding(report, "apop_enabled")
    assert f["status"] == "finding" and users(f) == {"alice"}

    f = finding(report, "tls_setup")
    assert f["status"] == "finding"
    assert any("tls.certificates[0]" in i.get("note", "") and "expires on" in i["note"]
               for i in f["items"]), f["items"]
    assert any(i.get("setting") == "listen.pop3s" for i in f["items"])

    f = finding(report, "config_warnings")
    notes = " ".join(i["note"] for i in f["items"])
    assert "failure_delay_ms = 0" in notes and "argon2_memory_kib" in notes
    # Reported once, under their own findings.
    assert "plaintext_networks" not in notes and "apop" not in notes and "expires" not in notes


def test_text_report_names_each_weakness_with_advice(seeded):
    text = seeded.cli("audit", check=True).stdout.decode()
    assert text.startswith("Poplar audit report, ")
    sections = {}
    for block in text.split("\n\n"):
        head = block.splitlines()[0] if block.strip() else ""
        if head.startswith("["):
            sections[head[head.rindex("(") + 1:-1]] = block
    assert "[HIGH] Passwords accepted without TLS" in sections["plaintext_without_tls"]
    expectations = {
        "two_factor_missing": ["alice", "poplar mfa enroll", "poplar app-password create"],
        "app_passwords": ["forever", "poplar app-password revoke"],
        "legacy_hashes": ["legacy  hash SHA512-CRYPT", "poplar user passwd"],
        "imported_passwords_unchanged": ["upgraded", "legacy", "choose new"],
        "never_signed_in": ["never", "poplar user disable"],
        "inactive_accounts": ["stale", "last sign-in"],
        "ip_rules": ["netuser  192.0.2.0/24, 2001:db8::/48"],
        "locked_accounts": ["locked  until", "poplar lockout clear --user"],
        "banned_addresses": ["127.90.0.1", "poplar lockout clear --address"],
        "plaintext_without_tls": ["10.0.0.0/8", "STLS"],
        "apop_enabled": ["alice", "apop.enabled = false"],
        "tls_setup": ["expires on", "scripts/tls-scan"],
    }
    for id, needles in expectations.items():
        block = sections[id]
        assert "What to do:" in block, block
        flat = " ".join(block.split())
        for needle in needles:
            assert " ".join(needle.split()) in flat, (id, needle, block)
    assert "- changed " not in sections["imported_passwords_unchanged"]
    # No hash, secret or password reaches the report.
    _, legacy_hash = sha512_crypt_fixture()
    for secret in (legacy_hash, legacy_hash.split("$")[-1], "alice pw", "alice apop secret",
                   "old imported pw", "$argon2id$"):
        assert secret not in text
    assert "$argon2id$" not in seeded.cli("audit", "--json", check=True).stdout.decode()


def test_a_clean_directory_reports_ok(server):
    srv = server(users={}, start=False)
    report = json.loads(srv.cli("audit", "--json", check=True).stdout)
    status = {f["id"]: f["status"] for f in report["findings"]}
    for id in ("two_factor_missing", "legacy_hashes", "imported_passwords_unchanged",
               "never_signed_in", "inactive_accounts", "ip_rules", "locked_accounts",
               "banned_addresses", "plaintext_without_tls", "apop_enabled", "app_passwords"):
        assert status[id] == "ok", (id, report)
