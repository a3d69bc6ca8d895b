"""Parallel guesses are decided as if they came one after another (issue 18).

The sign-in defence reserves before it checks: the directory counts an admitted attempt
as a failure in the same transaction that read the counts, so fifty wrong passwords sent
at the same moment get no more credential checks than fifty sent in turn, and a spray
from many addresses no more than the account's lock allows, on one node or on two
sharing a PostgreSQL directory. The audit log tells checked attempts (`bad_password`)
from those refused unchecked (`throttled`, `locked`).
"""

from __future__ import annotations

import threading

from conftest import read_audit

PW = "alice secret pw"
PLAIN = {"plaintext_networks": ["127.0.0.0/8"], "failure_delay_ms": 0,
         # A hash of a few milliseconds, so that checks overlap as they would in
         # production: without the reservation, every attempt of a burst was admitted
         # before the first one's failure was counted.
         "argon2_memory_kib": 8192, "argon2_iterations": 2}
#: The defaults these bounds come from (`[defence]`): a (user, source) gets
#: `throttle_after` failures free and one more checked before its first wait; an
#: account locks for unfamiliar networks after `lockout_threshold`.
THROTTLE_AFTER = 3
LOCKOUT_THRESHOLD = 50
#: A wait longer than any burst takes, however loaded the machine: with the default
#: two seconds, a guess that reaches the server after the first wait is over is
#: rightly checked (as it would be if sent in turn), and the bound would not hold.
SLOW_THROTTLE = {"throttle_base_secs": 120, "throttle_max_secs": 900}


def burst(nodes, sources: list[str], per_source: int, user: str = "alice") -> list[str]:
    """`per_source` connections from each source, spread over `nodes`, each sends USER,
    then all send a distinct wrong PASS at the same moment. Their replies."""
    conns = []
    for s_i, source in enumerate(sources):
        for k in range(per_source):
            srv = nodes[(s_i * per_source + k) % len(nodes)]
            c = srv.plain(source=source)
            c.ok(f"USER {user}")
            conns.append(c)
    barrier = threading.Barrier(len(conns))
    replies: list[str | None] = [None] * len(conns)

    def guess(i: int, c) -> None:
        barrier.wait()
        try:
            replies[i] = c.cmd(f"PASS wrong guess {i}")
        finally:
            c.close()

    threads = [threading.Thread(target=guess, args=(i, c)) for i, c in enumerate(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(r is not None for r in replies), "a guess got no answer"
    return replies


def reasons(nodes, prefix: str) -> list[str]:
    """The private reason of every failed sign-in from addresses starting with `prefix`
    in the nodes' audit logs."""
    return [r.get("reason", "") for srv in nodes for r in read_audit(srv.data_dir / "audit.log")
            if r.get("event") == "auth" and r.get("result") == "failure"
            and r.get("src_ip", "").startswith(prefix)]


def wait_for_records(nodes, prefix: str, count: int) -> list[str]:
    import time
    deadline = time.monotonic() + 30
    while True:
        got = reasons(nodes, prefix)
        if len(got) >= count or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def test_fifty_guesses_at_once_from_one_address(server):
    srv = server(users={"alice": PW}, auth=PLAIN, defence=SLOW_THROTTLE,
                 limits={"max_connections_per_address": 60})
    replies = burst([srv], ["127.71.0.1"], 50)
    # Every guess gets the one answer, checked or not.
    assert all(r.startswith("-ERR [AUTH]") for r in replies), set(replies)
    got = wait_for_records([srv], "127.71.0.", 50)
    checked = got.count("bad_password")
    assert len(got) == 50 and checked + got.count("throttled") == 50, got
    assert 1 <= checked <= THROTTLE_AFTER + 1, f"{checked} of 50 parallel guesses were checked"
    # The real password still works from a familiar place once the wait is over; here
    # from another address (its own count is clean).
    with srv.plain(source="127.71.9.1") as c:
        c.ok("USER alice")
        assert c.cmd(f"PASS {PW}").startswith("+OK")
        c.quit()


def test_a_thousand_guesses_at_once_from_twenty_addresses(server):
    srv = server(users={"alice": PW}, auth=PLAIN, limits={"max_connections": 1500})
    sources = [f"127.72.{i}.1" for i in range(20)]
    replies = burst([srv], sources, 50)
    assert all(r.startswith("-ERR [AUTH]") for r in replies), set(replies)
    got = wait_for_records([srv], "127.72.", 1000)
    checked = got.count("bad_password")
    assert len(got) == 1000, len(got)
    assert 1 <= checked <= LOCKOUT_THRESHOLD, f"{checked} of 1,000 parallel guesses were checked"


def test_the_same_burst_on_two_nodes_sharing_postgres(server, pg_url):
    common = {"directory": {"url": pg_url}, "auth": PLAIN, "defence": SLOW_THROTTLE,
              "limits": {"max_connections": 1500}}
    a = server(users={"alice": PW}, **common)
    b = server(users={}, **common)
    sources = [f"127.73.{i}.1" for i in range(20)]
    replies = burst([a, b], sources, 50)
    assert all(r.startswith("-ERR [AUTH]") for r in replies), set(replies)
    got = wait_for_records([a, b], "127.73.", 1000)
    checked = got.count("bad_password")
    assert len(got) == 1000, len(got)
    assert 1 <= checked <= LOCKOUT_THRESHOLD, f"{checked} of 1,000 guesses on two nodes were checked"
    # One address's fifty, split over both nodes, get the one-node bound too.
    replies = burst([a, b], ["127.74.0.1"], 50, user="bob")
    assert all(r.startswith("-ERR [AUTH]") for r in replies), set(replies)
    got = wait_for_records([a, b], "127.74.", 50)
    checked = got.count("unknown_user")
    assert len(got) == 50 and 1 <= checked <= THROTTLE_AFTER + 1, got


def test_a_spray_waits_behind_the_real_user_or_is_refused_as_busy(server):
    """The hashing pool keeps a thread for accounts' own networks and bounds the queue
    for everyone else: a spray from many addresses fills its queue and the rest is
    refused unchecked (`busy`, counted nowhere), while the real user, from a network
    familiar to the account, still signs in."""
    srv = server(users={"alice": PW},
                 auth={**PLAIN, "argon2_memory_kib": 32768, "argon2_iterations": 3,
                       "max_concurrent_hashes": 2},
                 limits={"max_connections": 1500})
    home = "127.80.0.1"
    with srv.plain(source=home) as c:  # alice's network becomes familiar
        c.login("alice", PW)
        c.quit()
    # 200 guesses at once from 200 addresses, each at its own unknown name (no throttle
    # and no lock applies: only the pool stands between them and the real user).
    conns = []
    for i in range(200):
        c = srv.plain(source=f"127.81.{i}.1")
        c.ok(f"USER sprayed{i}")
        conns.append(c)
    barrier = threading.Barrier(len(conns) + 1)
    replies: list[str | None] = [None] * len(conns)

    def guess(i: int, c) -> None:
        barrier.wait()
        try:
            replies[i] = c.cmd("PASS Summer2026!")
        finally:
            c.close()

    threads = [threading.Thread(target=guess, args=(i, c)) for i, c in enumerate(conns)]
    for t in threads:
        t.start()
    barrier.wait()
    with srv.plain(source=home) as c:
        c.ok("USER alice")
        assert c.cmd(f"PASS {PW}").startswith("+OK"), "the real user got through the spray"
        c.quit()
    for t in threads:
        t.join(timeout=120)
    assert all(r == "-ERR [AUTH] invalid user name or password" for r in replies), set(replies)
    got = wait_for_records([srv], "127.81.", 200)
    busy, checked = got.count("busy"), got.count("unknown_user")
    assert busy + checked == 200 and busy >= 1 and checked >= 1, (busy, checked)
    # Refused as busy: counted nowhere (only the checked guesses have failures).
    listed = srv.cli("lockout", "list", check=True).stdout.decode()
    assert listed.count("sprayed") == checked, listed
    line = next(l for l in srv.scrape().splitlines()
                if l.startswith('poplar_sign_in_failures_total{reason="busy"}'))
    assert float(line.rsplit(" ", 1)[1]) == busy, line
    print(f"spray of 200: {checked} checked, {busy} refused as busy")
