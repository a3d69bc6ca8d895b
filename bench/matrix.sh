#!/usr/bin/env bash
# The measured matrix, against Poplar or the Dovecot peer, with poplar-bench (and,
# for RETR, pop3bench.py beside it on the same server, runs interleaved).
#
#   bench/run-poplar.sh bench/matrix.sh poplar [SECTION...]    # a fresh Poplar per call
#   bash /work/shared/dovecot/start.sh && bench/matrix.sh dovecot [SECTION...]
#
# SECTIONs (default: check login retr scale failures; idle on its own, on a fresh
# server, because a server's allocator keeps what earlier sections made it grow):
#   check login retr scale idle failures
# Knobs: OUT=results.jsonl  RUNS=3  DUR=10 (login seconds)  SESSIONS=1000  PY=1 (also
# pop3bench.py for RETR)  LABEL=...  FAIL_COUNT=100 (Dovecot: 30; it delays failures 2 s)
# Every command runs under `timeout`; every loop is bounded by RUNS.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SHARED_BENCH=${SHARED_BENCH:-/work/shared/bench}
TOOL=${TOOL:-$REPO/target/release/poplar-bench}
TARGET=${1:?usage: matrix.sh poplar|dovecot [SECTION...]}; shift
SECTIONS=${*:-check login retr scale failures}
OUT=${OUT:-/tmp/poplar-bench-results.jsonl}
RUNS=${RUNS:-3}; DUR=${DUR:-10}; SESSIONS=${SESSIONS:-1000}; PY=${PY:-1}
[ -x "$TOOL" ] || (cd "$REPO" && cargo build --release -p poplar-bench) || exit 2

case "$TARGET" in
  poplar)
    : "${POPLAR_PID:?run under bench/run-poplar.sh}"
    PORT=$POPLAR_PORT; TLS_PORT=$POPLAR_TLS_PORT; CA=$POPLAR_CA; PID=$POPLAR_PID
    PW=${BENCH_PASSWORD:-bench-Secret-0}
    LOGIN_USER=(--user 'u{i}' --users "${IDLE_USERS:-1000}" --password "$PW")
    IDLE_USER=(--user 'u{i}' --users "${IDLE_USERS:-1000}" --password "$PW")
    FAIL_USER=(--user alice --password "$PW")
    FAIL_COUNT=${FAIL_COUNT:-100}
    first_open() { :; }   # Poplar keeps no index: every open is a first open
    ;;
  dovecot)
    PEER=${PEER:-/tmp/dovecot-peer}
    PORT=21110; TLS_PORT=21995; CA=$PEER/tls/cert.pem; PID=$(cat "$PEER/run/master.pid")
    PW=bench-Secret-0
    # Dovecot does not lock a maildrop per session: one user serves every session.
    LOGIN_USER=(--user alice --password alice-Secret-1)
    IDLE_USER=(--user alice --password alice-Secret-1)
    FAIL_USER=(--user alice --password alice-Secret-1)
    FAIL_COUNT=${FAIL_COUNT:-30}
    first_open() { rm -f "$PEER"/mail/bulk/Maildir/dovecot* "$PEER"/mail/bulk/Maildir/*/dovecot* 2>/dev/null; }
    ;;
  *) echo "unknown target $TARGET"; exit 2 ;;
esac
LABEL=${LABEL:-$TARGET}
COMMON=(--port "$PORT" --tls-port "$TLS_PORT" --cafile "$CA" --server-pid "$PID" --json "$OUT")
B() { timeout 900 "$TOOL" "${COMMON[@]}" --label "$LABEL/poplar-bench" "$@"; }
P() { timeout 900 python3 "$SHARED_BENCH/pop3bench.py" "${COMMON[@]}" --label "$LABEL/pop3bench.py" "$@"; }
on() { [[ " $SECTIONS " == *" $1 "* ]]; }
echo "=== $TARGET: pid $PID, sections: $SECTIONS, results -> $OUT"

if on check; then
  B "${FAIL_USER[@]}" check
fi
if on login; then
  for c in 8 32; do
    for r in $(seq "$RUNS"); do B "${LOGIN_USER[@]}" login --concurrency $c --duration "$DUR" --max-logins 5000; done
  done
  B "${LOGIN_USER[@]}" --auth plain login --concurrency 8 --duration "$DUR" --max-logins 5000
fi
if on retr; then
  for r in $(seq "$RUNS"); do
    B --user big --password "$PW" retr
    [ "$PY" = 1 ] && P --mode tls --user big --password "$PW" retr
    B --user small --password "$PW" retr --pipeline
    [ "$PY" = 1 ] && P --mode tls --user small --password "$PW" retr --pipeline
    B --user small --password "$PW" retr
    [ "$PY" = 1 ] && P --mode tls --user small --password "$PW" retr
  done
fi
if on scale; then
  for r in $(seq "$RUNS"); do
    first_open
    B --label "$LABEL/poplar-bench-r$r" --user bulk --password "$PW" scale --repeat 2 --with-list
  done
fi
if on idle; then
  B "${IDLE_USER[@]}" idle --sessions "$SESSIONS" --open-concurrency 16 --warmup 64
fi
# Last: failed sign-ins make some servers slow down later ones from the same address.
if on failures; then
  B "${FAIL_USER[@]}" failures --concurrency 8 --count "$FAIL_COUNT"
fi
echo "=== done: python3 $SHARED_BENCH/summarize.py $OUT"
