#!/usr/bin/env bash
# Poplar and the Dovecot peer, back to back, on identical maildrops (populate.py), in
# two configurations, and ONE table of both with ratios and issue 3's targets.
#
#   bench/compare.sh                       # everything (about 25 min on 2 cores; the first
#                                          # time ~4 min more to add 5,000 Poplar users)
#   CONFIGS=equal bench/compare.sh         # only the equal-hash-cost configuration
#   bench/charts.py table bench/results/DATE-compare.jsonl   # the table again
#
# Configurations:
#   equal     argon2id m=64 MiB, t=2, p=1 on both. Dovecot: PEER_SCHEME=ARGON2ID
#             (start.sh's doveadm hashes use m=65536,t=2,p=1). Poplar: run-poplar.sh
#             with ARGON2_MEMORY_KIB=65536 ARGON2_ITERATIONS=2 (the users' hashes AND
#             [auth] argon2_* in the server's config; Poplar's p is 1), failure_delay_ms=0.
#   defaults  each server's own defaults. Dovecot: PEER_SCHEME=CRYPT, the scheme
#             `doveadm pw` picks by default in 2.3 (bcrypt, $2y$05), auth_failure_delay
#             2 s. Poplar: argon2id 19 MiB/t=2, failure_delay_ms=1000.
# Both: implicit TLS (TLS 1.3) on loopback, no auth cache, the same poplar-bench client.
#
# Scenarios (per configuration and server): login c=8 (plus c=1,4,16 for the chart),
# RETR 1 x 50 MB, RETR 1,000 x 20 KiB pipelined, scale on bulk (100,000 msgs: first
# open with the server's index/caches deleted, then warm); in "defaults" also scale on
# alice (10) and small (1,000), idle sessions (200, then $POPLAR_SESSIONS for Poplar
# and $SESSIONS for Dovecot, each on a fresh Poplar), and failed sign-ins; for Poplar
# alone also sign-ins with app passwords (c=8 and 16; $APP_PASSWORDS users) and the
# server's RSS growth during a 100 MB RETR. Machine limits measured in the same run:
# openssl speed AES-128/256-GCM (one core), argon2id m=64 MiB,t=2 hashes/s with 2
# processes, and the loopback TLS ceiling of one 50 MB RETR (`poplar-bench tls-ceiling`:
# an in-memory sender against the same client; once after the other limits and once
# more at the end, the table takes the higher median). The stored-message ceiling (the
# same sender reading `big` from the page cache, CRLF + dot-stuffing, on one thread) is
# measured at those two points and right after each round of Poplar's RETR 50 MB, so
# that each round has its limit measured beside it (see BENCHMARKS.md).
#
# Knobs: DUR=6 (login seconds)  SWEEP_DUR=5  RUNS=3 (RETR rounds)
#        RETR_REPEAT=5 (RETRs of the 50 MB message per round, and runs per ceiling)
#        SESSIONS=1000 (Dovecot's idle sessions; also the number of u{i} users Poplar's
#        "defaults" sign-ins spread over, as before)
#        POPLAR_SESSIONS=5000 (Poplar's idle sessions and its u{i} users: issue 3's
#        target is at 5,000 sessions of 5,000 distinct users; the users missing from
#        /tmp/poplar-bench are added once, before the "defaults" configuration, one
#        argon2id hash each: about 4 minutes the first time, then kept)
#        CONFIGS="equal defaults"  OUT=bench/results/<date>-compare.jsonl
#        DOVECOT_FAIL_COUNT=8  POPLAR_FAIL_COUNT=30 (per reason)
# Every command runs under `timeout`; every loop is bounded. Servers are stopped by PID
# (run-poplar.sh's trap) and by /work/shared/dovecot/stop.sh.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SHARED=${SHARED:-/work/shared}
TOOL=${TOOL:-$REPO/target/release/poplar-bench}
export POPLAR_BIN=${POPLAR_BIN:-$REPO/target/release/poplar}
DUR=${DUR:-6}; SWEEP_DUR=${SWEEP_DUR:-5}; RUNS=${RUNS:-3}; RETR_REPEAT=${RETR_REPEAT:-5}; SESSIONS=${SESSIONS:-1000}
POPLAR_SESSIONS=${POPLAR_SESSIONS:-5000}
APP_PASSWORDS=${APP_PASSWORDS:-100}
CONFIGS=${CONFIGS:-equal defaults}
DOVECOT_FAIL_COUNT=${DOVECOT_FAIL_COUNT:-8}; POPLAR_FAIL_COUNT=${POPLAR_FAIL_COUNT:-30}
PW=bench-Secret-0
PEER=${PEER:-/tmp/dovecot-peer}

# The stored-message ceiling: poplar-bench's own sender thread reads `big` from the page
# cache, CRLF-converts and dot-stuffs it and sends it over TLS to the same client; it
# also times the read and the stuffing alone. `stored_ceiling TAG` labels it
# RUN_ID/ceiling[/TAG]; with a TAG it pairs with the RETR just before it (charts.py).
# `big` is Poplar's own copy of the message ($MAILROOT inside `__run poplar`; outside,
# whichever run-poplar.sh directory has it: /tmp/poplar-bench or /tmp/poplar-bench-m65536).
big_file() {
  if [ -n "${MAILROOT:-}" ]; then
    ls "$MAILROOT"/big/Maildir/cur/* "$MAILROOT"/big/Maildir/new/* 2>/dev/null | head -1
  else
    ls /tmp/poplar-bench*/mail/big/Maildir/cur/* /tmp/poplar-bench*/mail/big/Maildir/new/* 2>/dev/null | head -1
  fi
}
stored_ceiling() {
  local big
  big=$(big_file)
  if [ -z "$big" ]; then echo "stored-message ceiling skipped: no maildrop 'big' built yet"; return 0; fi
  cat "$big" > /dev/null
  timeout 120 "$TOOL" --json "$OUT" --label "$RUN_ID/ceiling${1:+/$1}" tls-ceiling --repeat "$RETR_REPEAT" --from-file "$big" \
    || echo "tls-ceiling --from-file failed (exit $?)"
}

# ------------------------------------------------------------------ inner: one server
# Called as `compare.sh __run SERVER CFG SECTIONS...` (for Poplar under run-poplar.sh).
if [ "${1:-}" = __run ]; then
  SERVER=$2; CFG=$3; shift 3; SECTIONS=" $* "
  on() { [[ "$SECTIONS" == *" $1 "* ]]; }
  if [ "$SERVER" = poplar ]; then
    PORT=$POPLAR_PORT; TLS_PORT=$POPLAR_TLS_PORT; CA=$POPLAR_CA; PID=$POPLAR_PID
    # Sign-ins spread over $LOGIN_USERS users (100 in "equal", $SESSIONS in "defaults"),
    # whatever the number of users made for the idle sessions.
    LOGIN_USER=(--user 'u{i}' --users "${LOGIN_USERS:-$IDLE_USERS}" --password "$PW")
    FAIL_USER=(--user alice --password "$PW"); FAIL_COUNT=$POPLAR_FAIL_COUNT
    MAIL=$POPLAR_BENCH_DIR/mail; MAILROOT=$MAIL
    first_open() { rm -f "$MAIL"/bulk/Maildir/poplar-listing "$MAIL"/bulk/Maildir/poplar-sizes; }
  else
    PORT=21110; TLS_PORT=21995; CA=$PEER/tls/cert.pem; PID=$(cat "$PEER/run/master.pid")
    # Dovecot does not lock a maildrop per session: one user serves every session.
    LOGIN_USER=(--user alice --password alice-Secret-1)
    FAIL_USER=(--user alice --password alice-Secret-1); FAIL_COUNT=$DOVECOT_FAIL_COUNT
    first_open() { rm -f "$PEER"/mail/bulk/Maildir/dovecot* "$PEER"/mail/bulk/Maildir/*/dovecot* 2>/dev/null; }
    MAILROOT=$PEER/mail
  fi
  warm_files() { find "$@" -type f -exec cat {} + > /dev/null 2>&1 || true; }
  warm_dirs() { find "$@" -printf '%s\n' > /dev/null 2>&1 || true; }
  COMMON=(--port "$PORT" --tls-port "$TLS_PORT" --cafile "$CA" --server-pid "$PID" --json "$OUT")
  B() { local tag=$1; shift; timeout "${BT:-300}" "$TOOL" "${COMMON[@]}" --label "$RUN_ID/$CFG/$SERVER/$tag" "$@"; }
  echo "--- $SERVER ($CFG): pid $PID, sections:$SECTIONS"
  if on idle200; then B idle-200 --user 'u{i}' --users 200 --password "$PW" idle --sessions 200 --open-concurrency 16 --settle 3 --warmup 16; fi
  if on idle; then
    # Poplar: $POPLAR_SESSIONS sessions of as many distinct users (a maildrop is
    # exclusive); Dovecot: $SESSIONS sessions of one user.
    if [ "$SERVER" = poplar ]; then
      N=$POPLAR_SESSIONS; U=(--user 'u{i}' --users "$N" --password "$PW")
    else
      N=$SESSIONS; U=("${LOGIN_USER[@]}")
    fi
    # One sign-in (argon2id) per session: about a minute for 5,000 on 2 cores.
    BT=900 B idle "${U[@]}" idle --sessions "$N" --open-concurrency 16 --settle 3 --warmup 16
  fi
  if on idle200d; then B idle-200 "${LOGIN_USER[@]}" idle --sessions 200 --open-concurrency 16 --settle 3 --warmup 16; fi
  if on login; then
    B login-c8 "${LOGIN_USER[@]}" login --concurrency 8 --duration "$DUR" --max-logins 20000
    for c in 1 4 16; do B "login-c$c" "${LOGIN_USER[@]}" login --concurrency $c --duration "$SWEEP_DUR" --max-logins 20000; done
  fi
  if on retr; then
    # Both servers read the same files from a warm page cache: this machine's kernel
    # reclaims idle page cache within minutes (DAMON), and a cold first run would
    # measure the virtual disk instead of the server.
    warm_files "$MAILROOT/big" "$MAILROOT/small"
    # Poplar's RETR 50 MB is paired with the stored-message ceiling measured right after
    # it: this VM runs in phases (the same transfer at ~900 or ~1,450 MB/s for seconds at
    # a time), so a limit measured minutes apart says little about one RETR.
    for r in $(seq "$RUNS"); do
      B retr-big --user big --password "$PW" retr --repeat "$RETR_REPEAT"
      if [ "$SERVER" = poplar ]; then stored_ceiling "$CFG"; fi
      B retr-small-pipe --user small --password "$PW" retr --pipeline
    done
  fi
  if on applogin; then   # Poplar only: app passwords, checked with a keyed hash, no argon2
    for c in 8 16; do
      B "login-app-c$c" --user 'u{i}' --users "$APP_PASSWORDS" --password-file "$POPLAR_APP_PASSWORDS" login --concurrency $c --duration "$DUR" --max-logins 50000
    done
  fi
  if on huge; then       # Poplar only: the server's memory growth during a 100 MB RETR
    warm_files "$MAILROOT/huge"
    B retr-huge --user huge --password "$PW" retr --repeat 2
  fi
  if on scale; then
    first_open
    # The server's own index is gone; the directories and inodes are warm for both.
    warm_dirs "$MAILROOT/bulk"

    B scale-bulk --user bulk --password "$PW" scale --repeat 3
  fi
  if on scale-sizes; then
    B scale-alice --user alice --password "$( [ "$SERVER" = poplar ] && echo "$PW" || echo alice-Secret-1)" scale --repeat 3
    B scale-small --user small --password "$PW" scale --repeat 3
  fi
  if on failures; then B failures "${FAIL_USER[@]}" failures --concurrency 8 --count "$FAIL_COUNT"; fi
  exit 0
fi

# ------------------------------------------------------------------ outer
[ -x "$TOOL" ] || { echo "no $TOOL: cargo build --release -p poplar-bench"; exit 2; }
[ -x "$POPLAR_BIN" ] || { echo "no $POPLAR_BIN: cargo build --release -p poplar"; exit 2; }
mkdir -p "$HERE/results"
export OUT=${OUT:-$HERE/results/$(date +%F)-compare.jsonl}
export RUN_ID=${RUN_ID:-cmp$(date +%Y%m%dT%H%M%S)}
export TOOL SESSIONS POPLAR_SESSIONS DUR SWEEP_DUR RUNS RETR_REPEAT PW PEER DOVECOT_FAIL_COUNT POPLAR_FAIL_COUNT APP_PASSWORDS
SELF=$HERE/compare.sh
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
trap 'bash "$SHARED/dovecot/stop.sh" >/dev/null 2>&1 || true' EXIT
echo "=== compare: run $RUN_ID, configs: $CONFIGS, raw JSON -> $OUT"

# ---- machine limits (same run, same background load)
python3 - "$OUT" "$RUN_ID" <<'EOF'
import json, multiprocessing as mp, os, re, subprocess, sys, time
out, run = sys.argv[1], sys.argv[2]
rec = {"bench": "machine", "label": f"{run}/machine", "ts": time.time(),
       "nproc": os.cpu_count(), "loadavg1": os.getloadavg()[0]}
for alg in ("aes-128-gcm", "aes-256-gcm"):
    o = subprocess.run(["timeout", "30", "openssl", "speed", "-evp", alg, "-seconds", "2", "-bytes", "16384"],
                       capture_output=True, text=True).stdout
    m = re.search(r"^%s\s+([\d.]+)k" % alg.upper(), o, re.M)
    rec[alg.replace("-", "_") + "_MBps"] = round(float(m.group(1)) / 1000, 1) if m else None
def worker(q, secs):
    from argon2.low_level import hash_secret_raw, Type
    n, end = 0, time.time() + secs
    while time.time() < end:
        hash_secret_raw(b"bench-Secret-0", os.urandom(16), time_cost=2, memory_cost=65536,
                        parallelism=1, hash_len=32, type=Type.ID)
        n += 1
    q.put(n)
def rate(target, suffix):
    """Hashes per second with 1 and with 2 processes running `target`."""
    for threads in (1, 2):
        q, secs = mp.Queue(), 5.0
        t0 = time.time()
        ps = [mp.Process(target=target, args=(q, secs)) for _ in range(threads)]
        [p.start() for p in ps]; [p.join(60) for p in ps]
        rec[f"argon2id_64m_t2_{threads}proc_per_s{suffix}"] = round(sum(q.get() for _ in ps) / (time.time() - t0), 2)
try:
    import argon2  # noqa
    rate(worker, "")
except ImportError:
    rec["argon2id_note"] = "argon2-cffi not installed (pip install argon2-cffi)"
# The same with libsodium (Dovecot's argon2; AVX2 code), through ctypes: the faster of
# the two implementations is the machine's rate the sign-in target is measured against.
def sodium(q, secs):
    import ctypes
    s = ctypes.CDLL("libsodium.so.23"); s.sodium_init()
    buf, pw, n, end = ctypes.create_string_buffer(32), b"bench-Secret-0", 0, time.time() + secs
    while time.time() < end:
        assert s.crypto_pwhash(buf, ctypes.c_ulonglong(32), pw, ctypes.c_ulonglong(len(pw)), os.urandom(16),
                               ctypes.c_ulonglong(2), ctypes.c_size_t(64 << 20), ctypes.c_int(2)) == 0  # ARGON2ID13
        n += 1
    q.put(n)
try:
    import ctypes; ctypes.CDLL("libsodium.so.23")
    rate(sodium, "_libsodium")
except OSError:
    rec["libsodium_note"] = "libsodium.so.23 not found"
rec["cpu"] = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
rec["mem_kib"] = int(next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")))
open(out, "a").write(json.dumps(rec) + "\n")
print("machine:", {k: v for k, v in rec.items() if k not in ("label", "bench", "ts")})
EOF
# The loopback TLS ceiling of one 50 MB RETR for this client on this machine (see
# bench/README.md): the limit any server's RETR figure is measured against.
ceiling() {
  timeout 120 "$TOOL" --json "$OUT" --label "$RUN_ID/ceiling" tls-ceiling --repeat 5 \
    || echo "tls-ceiling failed (exit $?)"
  # The same for the stored message, once run-poplar.sh has built the maildrops; and
  # for that message converted to wire form beforehand and sent as it is (page cache
  # and TLS only: what no conversion at all would leave).
  stored_ceiling
  local big
  big=$(big_file)
  if [ -n "$big" ]; then
    timeout 120 "$TOOL" --json "$OUT" --label "$RUN_ID/ceiling" tls-ceiling --repeat 5 --from-file "$big" --wire-form \
      || echo "tls-ceiling --wire-form failed (exit $?)"
  fi
}
echo "=== TLS ceiling: in-memory sender, same client"
ceiling

# Poplar's u{i} users in "defaults": its idle sessions and its sign-ins use them.
POPLAR_USERS=$(( POPLAR_SESSIONS > SESSIONS ? POPLAR_SESSIONS : SESSIONS ))
for CFG in $CONFIGS; do
  case "$CFG" in
    equal)    SCHEME=ARGON2ID; PENV=(ARGON2_MEMORY_KIB=65536 ARGON2_ITERATIONS=2 IDLE_USERS=100 LOGIN_USERS=100 FAILURE_DELAY_MS=0)
              SEC="login retr scale"; PSEC=(); DSEC="login retr scale" ;;
    defaults) SCHEME=CRYPT;    PENV=(IDLE_USERS=$POPLAR_USERS LOGIN_USERS=$SESSIONS FAILURE_DELAY_MS=1000 APP_PASSWORDS=$APP_PASSWORDS PRESET=alice,big,small,bulk,huge)
              SEC="idle login applogin retr huge scale scale-sizes failures"; DSEC="idle200d idle login retr scale scale-sizes failures" ;;
    none) continue ;;   # CONFIGS=none: machine limits only (RUN_ID=... to add them to a run)
    *) echo "unknown config $CFG"; continue ;;
  esac
  # The 64 MiB users live in their own BENCH_DIR; share the default one's maildrops.
  if [ "$CFG" = equal ] && [ ! -e /tmp/poplar-bench-m65536/mail ] && [ -d /tmp/poplar-bench/mail ]; then
    mkdir -p /tmp/poplar-bench-m65536 && ln -s /tmp/poplar-bench/mail /tmp/poplar-bench-m65536/mail
  fi
  if [ "$CFG" = defaults ]; then
    # Maildrops and users u0..u$((POPLAR_USERS - 1)) first, with nothing else running:
    # the users missing from the bench dir cost one `poplar user add` (argon2id) each,
    # minutes the first time, nothing afterwards (the server starts and stops once).
    echo "=== [$CFG] Poplar setup: $POPLAR_USERS u{i} users (added once, then kept)"
    env "${PENV[@]}" timeout 1800 "$HERE/run-poplar.sh" true | grep -v '^  \|^point\|^poplar'
  fi
  echo "=== [$CFG] Dovecot, PEER_SCHEME=$SCHEME"
  PEER_SCHEME=$SCHEME timeout 300 bash "$SHARED/dovecot/start.sh" | tail -2
  timeout 1200 "$SELF" __run dovecot "$CFG" $DSEC
  bash "$SHARED/dovecot/stop.sh" >/dev/null 2>&1
  echo "=== [$CFG] Poplar ${PENV[*]}"
  if [ "$CFG" = defaults ]; then   # idle on fresh servers: the allocator keeps what earlier sections grew
    env "${PENV[@]}" timeout 600 "$HERE/run-poplar.sh" "$SELF" __run poplar "$CFG" idle200 | grep -v '^  \|^point\|^poplar:'
  fi
  env "${PENV[@]}" timeout 1800 "$HERE/run-poplar.sh" "$SELF" __run poplar "$CFG" $SEC | grep -v '^  \|^point\|^poplar:'
done

bash "$SHARED/dovecot/stop.sh" >/dev/null 2>&1 || true
echo "=== TLS ceiling again (the table takes the higher of the run's medians)"
ceiling
echo
python3 "$HERE/charts.py" table "$OUT" "$RUN_ID" | tee "$HERE/results/$(date +%F)-compare-table.md"
python3 "$HERE/charts.py" svg "$OUT" "$RUN_ID" "$HERE/results"
