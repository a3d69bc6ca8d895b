"""The firewall filters for the audit log against a real one the server wrote.

contrib/fail2ban/filter.d/poplar.conf, with Debian's fail2ban-regex: every failed
sign-in matches (wrong password, unknown user, throttled, locked, outside the user's
networks), with its source address as <HOST> and its "time" as the failure time; no
success and no other event does.

contrib/crowdsec: the YAML parses; the parser's filter and expressions, evaluated by a
transliteration of the small part of CrowdSec's expr language they use, keep exactly
the failed sign-ins with their address, user and time; a leaky-bucket replay of the
scenarios bans a brute force and a spray, not a typo; and Debian's crowdsec engine,
unpacked (not installed) by tests/peers/fetch-crowdsec.sh, replays the log with the
hub's s00 and s02 parsers and ours and raises exactly the expected alerts.

fail2ban and crowdsec are installed by scripts/test (tests/peers/install-fail2ban.sh,
tests/peers/fetch-crowdsec.sh); these tests try those scripts themselves when a tool is
missing. Under CI=true a tool that cannot be installed is a failure, never a skip."""

import ast
import datetime
import json
import os
import re
import shutil
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT, free_port, plain_ir, read_audit, require_peer

FILTER = REPO_ROOT / "contrib" / "fail2ban" / "filter.d" / "poplar.conf"
JAIL = REPO_ROOT / "contrib" / "fail2ban" / "jail.d" / "poplar.local"



def fail2ban_regex(log, mode: str = "normal", out: str | None = None) -> str:
    """Runs fail2ban-regex on `log` with the filter; its standard output."""
    tool = require_fail2ban_regex()
    spec = f"{FILTER}[mode={mode}]"
    args = [tool] + (["-o", out] if out else []) + [str(log), spec]
    p = subprocess.run(args, capture_output=True, timeout=120)
    text = p.stdout.decode(errors="replace")
    assert p.returncode == 0, f"{args} failed ({p.returncode}):\n{text}\n{p.stderr.decode()}"
    return text


def line_counts(output: str) -> tuple[int, int, int]:
    """(lines, ignored, matched) from the "Lines: N lines, I ignored, M matched" summary."""
    m = re.search(r"^Lines: (\d+) lines, (\d+) ignored, (\d+) matched", output, re.M)
    assert m, f"no Lines: summary in fail2ban-regex output:\n{output}"
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def matched_rows(log, mode: str = "normal") -> list[tuple[str, int]]:
    """(host, unix time) of every match, from `fail2ban-regex -o row`."""
    rows = []
    for line in fail2ban_regex(log, mode, out="row").splitlines():
        line = line.strip().rstrip(",")
        if not line.startswith("["):
            continue
        host, when, _info = ast.literal_eval(line.replace("\t", " "))
        rows.append((host, int(when)))
    return rows


def instant(rfc3339: str) -> datetime.datetime:
    """An RFC 3339 time, with any number of fractional digits (Go drops trailing zeros)."""
    m = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", rfc3339)
    assert m, rfc3339
    fraction = (m.group(2) or "").ljust(6, "0")[:6]
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.datetime.fromisoformat(f"{m.group(1)}.{fraction}{zone}")


def unix(rfc3339: str) -> int:
    return int(instant(rfc3339).timestamp())


def audit_records(srv) -> list[dict]:
    return read_audit(srv.data_dir / "audit.log")


def attempt(srv, user: str, password: str, source: str, tls: bool = False) -> str:
    """One sign-in attempt (USER/PASS on the plain port, or AUTH PLAIN on POP3S)."""
    with (srv.tls(source=source) if tls else srv.plain(source=source)) as c:
        if tls:
            reply = c.cmd("AUTH PLAIN " + plain_ir(user, password))
        else:
            c.ok(f"USER {user}")
            reply = c.cmd(f"PASS {password}")
        c.quit()
    return reply


@dataclass
class SignIns:
    """What the server was asked and what its audit log says."""
    log: Path
    records: list[dict]
    failures: list[dict]  # "event":"auth", "result":"failure"
    refused: list[dict]   # "event":"refused", "reason":"banned"


@pytest.fixture(scope="module")
def signins(module_server) -> SignIns:
    """A real audit log: successes on both ports, and failures of every common kind
    (wrong password, unknown user, throttled, locked, outside the user's networks)
    from several 127.x addresses, a LOGIN-DELAY refusal and a banned address."""
    srv = module_server(
        users={"alice": "alice pw", "bob": "bob pw", "carol": "carol pw", "dave": "dave pw",
               "erin": "erin pw"},
        auth={"plaintext_networks": ["127.0.0.0/8"], "failure_delay_ms": 0},
        defence={"lockout_threshold": 3, "ban_accounts": 3, "login_delay_secs": 60},
    )
    srv.cli("user", "networks", "erin", "10.0.0.0/8", check=True)
    replies: list[tuple[str, str]] = []  # (source, reply) of every attempt

    def go(user, password, source, tls=False):
        replies.append((source, attempt(srv, user, password, source, tls)))

    # Successes, on both ports; carol's makes 127.4.0.0/24 familiar to her.
    go("alice", "alice pw", "127.1.0.1")
    go("bob", "bob pw", "127.1.0.2", tls=True)
    go("carol", "carol pw", "127.4.0.9")
    go("dave", "dave pw", "127.1.0.4", tls=True)
    # The right password again within LOGIN-DELAY: not an attack, not matched.
    go("alice", "alice pw", "127.1.0.1")
    # Wrong passwords and an unknown user.
    go("alice", "guess 1", "127.2.0.1")
    go("bob", "guess 1", "127.2.0.2", tls=True)
    go("nobody", "guess 1", "127.3.0.1")
    # Throttled: carol from a familiar network (no lock), until even her password waits.
    for i in range(4):
        go("carol", f"guess {i}", "127.4.0.1")
    go("carol", "carol pw", "127.4.0.1")
    # Locked: dave fails from three networks he never used, then is locked there.
    for i in range(3):
        go("dave", f"guess {i}", f"127.5.{i}.1")
    go("dave", "dave pw", "127.5.9.1")
    # Outside erin's networks, with her right password.
    go("erin", "erin pw", "127.6.0.1", tls=True)
    # A spray over three unknown names bans 127.7.0.1; it is then refused at the greeting.
    for user in ("spray1", "spray2", "spray3"):
        go(user, "Summer2024!", "127.7.0.1")
    with srv.plain(greet=False, source="127.7.0.1") as c:
        assert c.readline().startswith("-ERR [SYS/TEMP]")

    refusals = [(s, r) for s, r in replies if r.startswith("-ERR [AUTH]")]
    successes = [(s, r) for s, r in replies if r.startswith("+OK")]
    assert len(successes) == 4, replies
    assert any(r.startswith("-ERR [LOGIN-DELAY]") for _, r in replies), replies

    # Every attempt is in the log before its answer; the refusal at the greeting too.
    deadline = time.monotonic() + 5
    while True:
        records = audit_records(srv)
        auth = [r for r in records if r["event"] == "auth"]
        refused = [r for r in records if r["event"] == "refused" and r["reason"] == "banned"]
        if (len(auth) == len(replies) and refused) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    failures = [r for r in auth if r["result"] == "failure"]
    assert len(failures) == len(refusals), (failures, refusals)
    assert Counter(r["src_ip"] for r in failures) == Counter(s for s, _ in refusals)
    reasons = {r["reason"] for r in failures}
    assert {"bad_password", "unknown_user", "throttled", "locked", "ip_denied"} <= reasons, reasons
    assert sum(r["result"] == "success" for r in auth) == len(successes)
    assert any(r["result"] == "login_delay" for r in auth)
    return SignIns(srv.data_dir / "audit.log", records, failures, refused)


def test_filter_matches_every_failed_sign_in_and_no_success(signins):
    out = fail2ban_regex(signins.log)
    lines, ignored, matched = line_counts(out)
    assert (lines, ignored, matched) == (len(signins.records), 0, len(signins.failures)), out
    # Every line had its date found.
    assert f"[{len(signins.records)}] " in out.split("Date template hits:")[1], out
    # The right hosts, at the right times: each match is one failure line.
    rows = matched_rows(signins.log)
    assert Counter(rows) == Counter((r["src_ip"], unix(r["time"])) for r in signins.failures), rows
    # Addresses that only signed in successfully are never named.
    hosts = {h for h, _ in rows}
    assert hosts.isdisjoint({"127.1.0.1", "127.1.0.2", "127.1.0.4", "127.4.0.9"}), hosts


def test_aggressive_mode_adds_connections_refused_while_banned(signins):
    out = fail2ban_regex(signins.log, mode="aggressive")
    assert line_counts(out)[2] == len(signins.failures) + len(signins.refused), out
    rows = matched_rows(signins.log, mode="aggressive")
    assert Counter(h for h, _ in rows) == Counter(
        r["src_ip"] for r in signins.failures + signins.refused), rows


def test_filter_on_edge_cases(tmp_path):
    """Lines the server writes rarely or that an attacker shapes: IPv6 sources, a user
    name that imitates a failure, results that are not attacks, other events."""
    t = "2026-11-22T06:20:0{}.123Z"
    lines = [
        # Matched: failures (IPv4, IPv6, a name with quotes and a backslash).
        {"time": t.format(1), "event": "auth", "session": "s1", "src_ip": "192.0.2.7",
         "src_port": 40000, "local_ip": "192.0.2.1", "local_port": 995, "listener": "pop3s",
         "tls_version": "TLSv1_3", "tls_cipher": "TLS13_AES_256_GCM_SHA384", "sni": "mail",
         "user": "alice", "mechanism": "PLAIN", "result": "failure", "reason": "bad_password"},
        {"time": t.format(2), "event": "auth", "session": "s2", "src_ip": "2001:db8::5",
         "src_port": 1, "user": 'x"\\y', "mechanism": "USER", "result": "failure",
         "reason": "unknown_user"},
        # Not matched: a success whose user name imitates a failure and another source.
        {"time": t.format(3), "event": "auth", "session": "s3", "src_ip": "198.51.100.9",
         "src_port": 2, "user": 'a","result":"failure","src_ip":"203.0.113.1',
         "user_resolved": "a", "mechanism": "USER", "result": "success"},
        {"time": t.format(4), "event": "auth", "session": "s4", "src_ip": "198.51.100.9",
         "src_port": 3, "user": "a", "mechanism": "USER", "result": "unavailable"},
        {"time": t.format(5), "event": "auth", "session": "s5", "src_ip": "198.51.100.9",
         "src_port": 4, "user": "a", "mechanism": "USER", "result": "login_delay"},
        {"time": t.format(6), "event": "refused", "session": "s6", "src_ip": "203.0.113.3",
         "src_port": 5, "reason": "busy"},
        {"time": t.format(7), "event": "lock", "user": "bob", "reason": "unfamiliar_network_failures",
         "failures": 50, "until": "2026-11-22T07:20:00.000Z"},
        {"time": t.format(8), "event": "ban", "source": "203.0.113.4", "accounts": 10,
         "until": "2026-11-22T07:20:00.000Z"},
        {"time": t.format(9), "event": "disconnect", "session": "s1", "src_ip": "192.0.2.7",
         "src_port": 40000, "user": "alice", "end": "quit", "retrieved": 0, "deleted": 0,
         "bytes_sent": 10},
    ]
    log = tmp_path / "audit.log"
    log.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in lines))
    out = fail2ban_regex(log)
    assert line_counts(out) == (len(lines), 0, 2), out
    assert sorted(matched_rows(log)) == [("192.0.2.7", unix(t.format(1))),
                                         ("2001:db8::5", unix(t.format(2)))]
    # "busy" refusals are not bans: even aggressive mode leaves them alone.
    assert line_counts(fail2ban_regex(log, mode="aggressive"))[2] == 2


def test_jail_example_names_the_filter():
    text = JAIL.read_text()
    assert re.search(r"^\[poplar\]$", text, re.M)
    assert re.search(r"^filter\s*=\s*poplar$", text, re.M)
    assert re.search(r"^logpath\s*=\s*\S*audit\.log$", text, re.M)


# --------------------------------------------------------------------------- CrowdSec

CROWDSEC = REPO_ROOT / "contrib" / "crowdsec"
PARSER = CROWDSEC / "parsers" / "s01-parse" / "poplar-logs.yaml"
SCENARIOS = CROWDSEC / "scenarios" / "poplar-bf.yaml"
ACQUIS = CROWDSEC / "acquis.d" / "poplar.yaml"


def load_yaml(path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


class Attrs(dict):
    """evt.Parsed.x / evt.Meta.x: attribute access to a dict, "" when missing (as in
    CrowdSec, where a missing map key reads as the empty string)."""

    def __getattr__(self, name):
        value = self.get(name, "")
        return Attrs(value) if isinstance(value, dict) else value


def json_extract(text: str, path: str) -> str:
    """CrowdSec's JsonExtract: the value at `path` as a string; "" if there is none."""
    try:
        value = json.loads(text)
    except ValueError:
        return ""
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return ""
        value = value[key]
    return value if isinstance(value, str) else json.dumps(value)


def crowdsec_expr(expr: str, evt: Attrs):
    """Evaluates the subset of CrowdSec's expr language these files use: comparisons,
    && and ||, field access on evt, JsonExtract and string literals. Anything else is a
    test failure, so a change to the YAML beyond this subset is noticed."""
    source = expr.replace("&&", " and ").replace("||", " or ").replace("JsonExtract(", "json_extract(")
    tree = ast.parse(source, mode="eval")
    allowed = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.Compare, ast.Eq,
               ast.NotEq, ast.In, ast.Call, ast.Attribute, ast.Name, ast.Constant,
               ast.List, ast.Load)
    for node in ast.walk(tree):
        assert isinstance(node, allowed), f"{type(node).__name__} in {expr!r} is outside the tested subset"
        if isinstance(node, ast.Name):
            assert node.id in ("evt", "json_extract"), expr
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name) and node.func.id == "json_extract", expr
    return eval(compile(tree, "<expr>", "eval"), {"__builtins__": {}},  # noqa: S307 - vetted above
                {"evt": evt, "json_extract": json_extract})


def parse_line(parser: dict, line: str) -> Attrs | None:
    """What the parser node makes of one line read with `type: poplar` (after the hub's
    non-syslog s00 parser): the event with its Meta and StrTime, or None if dropped."""
    evt = Attrs(Parsed=Attrs(program="poplar", message=line), Meta=Attrs(), StrTime="")
    if not crowdsec_expr(parser["filter"], evt):
        return None
    for static in parser["statics"]:
        value = static["value"] if "value" in static else crowdsec_expr(static["expression"], evt)
        if "meta" in static:
            evt["Meta"][static["meta"]] = value
        else:
            assert static["target"] == "evt.StrTime", static
            evt["StrTime"] = value
    return evt


def test_crowdsec_files_parse():
    (parser,) = load_yaml(PARSER)
    assert parser["onsuccess"] == "next_stage" and parser["name"] == "poplar/poplar-logs"
    metas = {s.get("meta") for s in parser["statics"]}
    assert {"log_type", "source_ip", "target_user", "service"} <= metas
    assert any(s.get("target") == "evt.StrTime" for s in parser["statics"])
    scenarios = load_yaml(SCENARIOS)
    assert [s["name"] for s in scenarios] == ["poplar/pop3-bf", "poplar/pop3-bf_user-enum"]
    for s in scenarios:
        assert s["type"] == "leaky" and s["groupby"] == "evt.Meta.source_ip"
        assert isinstance(s["capacity"], int) and re.fullmatch(r"\d+[smh]", s["leakspeed"])
        assert s["labels"]["remediation"] is True and s["labels"]["service"] == "pop3"
    assert scenarios[1]["distinct"] == "evt.Meta.target_user"
    (acquis, *_) = load_yaml(ACQUIS)
    assert acquis["labels"]["type"] == "poplar" and acquis["filenames"]


def test_crowdsec_parser_keeps_exactly_the_failed_sign_ins(signins):
    (parser,) = load_yaml(PARSER)
    lines = signins.log.read_text().splitlines()
    kept = [e for e in (parse_line(parser, line) for line in lines) if e is not None]
    assert [(e.Meta.source_ip, e.Meta.target_user, e.Meta.reason, e.StrTime) for e in kept] == [
        (r["src_ip"], r["user"], r["reason"], r["time"]) for r in signins.failures]
    assert {e.Meta.log_type for e in kept} == {"pop3_failed_auth"}
    # Lines that are not Poplar's JSON (another program's log, journald noise) are dropped.
    assert parse_line(parser, "Nov 22 06:20:01 host poplar[1]: INFO ready") is None


def replay(scenario: dict, events: list[tuple[float, Attrs]]) -> set[str]:
    """The groups (source addresses) a leaky bucket overflows for: each event fills one
    unit, the bucket leaks one unit per `leakspeed`, and overflows above `capacity`; with
    `distinct`, a value already in the bucket is not counted again."""
    leak = int(scenario["leakspeed"][:-1]) * {"s": 1, "m": 60, "h": 3600}[scenario["leakspeed"][-1]]
    buckets: dict[str, tuple[float, float, set]] = {}
    overflowed = set()
    for t, evt in events:
        if not crowdsec_expr(scenario["filter"], evt):
            continue
        group = crowdsec_expr(scenario["groupby"], evt)
        level, last, seen = buckets.get(group, (0.0, t, set()))
        level = max(0.0, level - (t - last) / leak)
        if "distinct" in scenario:
            value = crowdsec_expr(scenario["distinct"], evt)
            if value in seen:
                buckets[group] = (level, t, seen)
                continue
            seen = seen | {value}
        level += 1
        buckets[group] = (level, t, seen)
        if level > scenario["capacity"]:
            overflowed.add(group)
    return overflowed


def test_crowdsec_scenarios_ban_brute_force_and_spraying_not_a_typo():
    (parser,) = load_yaml(PARSER)
    brute_force, spraying = load_yaml(SCENARIOS)

    def failure(t: float, ip: str, user: str, result: str = "failure") -> tuple[float, Attrs]:
        stamp = datetime.datetime.fromtimestamp(1795328400 + t, datetime.timezone.utc)
        line = json.dumps({"time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                           "event": "auth", "session": f"s{t}", "src_ip": ip, "src_port": 1,
                           "user": user, "mechanism": "USER", "result": result,
                           **({"reason": "bad_password"} if result == "failure" else {})},
                          separators=(",", ":"))
        return t, parse_line(parser, line)

    events = []
    events += [failure(2 * i, "192.0.2.1", "alice") for i in range(10)]        # brute force
    events += [failure(3 * i, "192.0.2.2", f"user{i}") for i in range(8)]      # spraying
    events += [failure(0, "192.0.2.3", "bob"), failure(5, "192.0.2.3", "bob", "success")]
    events += [failure(600 * i, "192.0.2.4", "carol") for i in range(20)]      # a stale client
    events = [(t, e) for t, e in events if e is not None]
    assert len(events) == 10 + 8 + 1 + 20, "the success is not an event"
    assert replay(brute_force, events) == {"192.0.2.1", "192.0.2.2"}
    assert replay(spraying, events) == {"192.0.2.2"}


CROWDSEC_TREE = Path(os.environ.get("POPLAR_PEERS_DIR", "/var/cache/poplar-peers")) / "crowdsec"




def test_crowdsec_engine_on_the_audit_log(signins, tmp_path):
    """The real engine (Debian's crowdsec, in replay mode) with the hub's s00 and s02
    parsers and ours: the parser keeps exactly the failed sign-ins, dateparse reads
    their time, and the buckets overflow for a brute force and a spray appended to the
    server's log, and for nothing the server's own sign-ins did."""
    tree = require_crowdsec()
    hub = tree / "usr/share/crowdsec/hub"
    etc = tree / "etc/crowdsec"
    conf, data, dump = tmp_path / "conf", tmp_path / "data", tmp_path / "dump"
    for d in ("parsers/s00-raw", "parsers/s01-parse", "parsers/s02-enrich", "scenarios"):
        (conf / d).mkdir(parents=True)
    data.mkdir()
    dump.mkdir()
    shutil.copytree(etc / "patterns", conf / "patterns")
    for name in ("simulation.yaml", "profiles.yaml"):
        shutil.copy(etc / name, conf / name)
    shutil.copy(hub / "parsers/s00-raw/crowdsecurity/syslog-logs.yaml", conf / "parsers/s00-raw")
    shutil.copy(hub / "parsers/s02-enrich/crowdsecurity/dateparse-enrich.yaml",
                conf / "parsers/s02-enrich")
    shutil.copy(PARSER, conf / "parsers/s01-parse")
    shutil.copy(SCENARIOS, conf / "scenarios")
    (conf / "acquis.yaml").write_text("")
    (tmp_path / "hub").mkdir()
    shutil.copy(hub / ".index.json", tmp_path / "hub")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "common": {"daemonize": False, "log_media": "stdout", "log_level": "warning"},
        "config_paths": {"config_dir": f"{conf}/", "data_dir": f"{data}/",
                         "simulation_path": str(conf / "simulation.yaml"),
                         "hub_dir": f"{tmp_path}/hub/", "index_path": f"{tmp_path}/hub/.index.json"},
        "crowdsec_service": {"acquisition_path": str(conf / "acquis.yaml"), "parser_routines": 1},
        "cscli": {"output": "human"},
        "db_config": {"type": "sqlite", "db_path": str(data / "crowdsec.db"), "use_wal": False},
        "api": {"client": {"credentials_path": str(conf / "local_api_credentials.yaml")},
                "server": {"listen_uri": f"127.0.0.1:{free_port()}",
                           "profiles_path": str(conf / "profiles.yaml")}},
    }))
    # The replay pushes alerts to its own local API, as a registered machine.
    subprocess.run([str(tree / "usr/bin/cscli"), "-c", str(config), "machines", "add", "poplar-test",
                    "--password", "poplar-test-password", "-f",
                    str(conf / "local_api_credentials.yaml"), "--force"],
                   capture_output=True, timeout=120, check=True)

    # The server's log, then a brute force and a spray in the same format.
    base = datetime.datetime(2026, 11, 22, 7, 0, tzinfo=datetime.timezone.utc)

    def failure(t: int, ip: str, user: str) -> str:
        stamp = (base + datetime.timedelta(seconds=t)).isoformat(timespec="milliseconds")
        return json.dumps({"time": stamp.replace("+00:00", "Z"), "event": "auth",
                           "session": f"x-{t}-{ip}", "src_ip": ip, "src_port": 40000,
                           "local_ip": "192.0.2.100", "local_port": 995, "listener": "pop3s",
                           "user": user, "mechanism": "PLAIN", "result": "failure",
                           "reason": "bad_password"}, separators=(",", ":"))

    attacks = [failure(2 * i, "192.0.2.1", "alice") for i in range(8)]
    attacks += [failure(3 * i, "192.0.2.2", f"user{i}") for i in range(7)]
    log = tmp_path / "audit.log"
    log.write_text(signins.log.read_text() + "\n".join(attacks) + "\n")
    p = subprocess.run([str(tree / "usr/bin/crowdsec"), "-c", str(config), "-dsn", f"file://{log}",
                        "-type", "poplar", "-dump-data", str(dump)],
                       capture_output=True, timeout=300)
    assert p.returncode == 0, (p.stdout + p.stderr).decode(errors="replace")[-4000:]

    parsed = yaml.safe_load((dump / "parser-dump.yaml").read_text())
    kept = [e["evt"] for e in parsed["s01-parse"]["poplar/poplar-logs"] if e.get("success")]
    expected = signins.failures + [json.loads(a) for a in attacks]
    assert [(e["Meta"]["source_ip"], e["Meta"]["target_user"], e["Meta"]["reason"], e["StrTime"])
            for e in kept] == [(r["src_ip"], r["user"], r["reason"], r["time"]) for r in expected]
    assert all(e["Meta"]["log_type"] == "pop3_failed_auth" for e in kept)
    dated = [e for e in parsed["s02-enrich"]["crowdsecurity/dateparse-enrich"] if e.get("success")]
    assert [instant(e["evt"]["MarshaledTime"]) for e in dated] == \
        [instant(r["time"]) for r in expected]

    overflows = yaml.safe_load((dump / "bucket-dump.yaml").read_text()) or []
    alerts = {(o["Overflow"]["Alert"]["scenario"], o["Overflow"]["Alert"]["source"]["ip"])
              for o in overflows}
    assert alerts == {("poplar/pop3-bf", "192.0.2.1"), ("poplar/pop3-bf", "192.0.2.2"),
                      ("poplar/pop3-bf_user-enum", "192.0.2.2")}, alerts


def require_fail2ban_regex() -> str:
    return require_peer("fail2ban-regex", "install-fail2ban.sh",
                        lambda: shutil.which("fail2ban-regex"))


def require_crowdsec() -> Path:
    """Debian's crowdsec package, unpacked (not installed) by tests/peers/fetch-crowdsec.sh."""
    return require_peer("crowdsec", "fetch-crowdsec.sh",
                        lambda: CROWDSEC_TREE if (CROWDSEC_TREE / "usr/bin/crowdsec").exists()
                        else None)
