#!/usr/bin/env bash
# Issue 17's overload figures on this machine, each on a fresh release server
# (bench/run-poplar.sh): idle signed-in TLS sessions at 5,000 (password users, like
# compare.sh's idle figure) and at the most this machine's open-file limit allows
# (app-password users, connecting from many loopback /24s), then the real user's
# sign-in latency while a flood of silent connections is open (bench/flood.py).
#
#   bench/overload.sh                      # everything; about 25 minutes the first time
#   STEPS=idle5k,idle,flood bench/overload.sh
#
# Knobs: SESSIONS (the large idle run; default: what RLIMIT_NOFILE allows, at most
# 20,000), FLOOD (silent connections per POP3 port; default: what the flood client's
# RLIMIT_NOFILE allows, at most 10,000), LOG (default bench/results/DATE-overload.log).
# Users get cheap argon2id hashes (1 MiB, t=1) so that hashing buffers do not count as
# session memory, as in compare.sh's idle run; the maildrops are 10 x 4 KiB each.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
cd "$REPO"
STEPS=${STEPS:-idle5k,idle,flood}
LOG=${LOG:-$REPO/bench/results/$(date -u +%F)-overload.log}
on() { case ",$STEPS," in *",$1,"*) return 0;; esac; return 1; }
cargo build --release -q -p poplar -p poplar-bench
HARD=$(ulimit -Hn)
[ "$HARD" = unlimited ] && HARD=1048576
# A signed-in session holds two descriptors in the server (socket, maildrop lock);
# the client one. 1,024 are the server's reserve.
FIT=$(( (HARD - 1024) / 2 ))
SESSIONS=${SESSIONS:-$(( FIT < 20000 ? FIT / 1000 * 1000 : 20000 ))}
FLOOD=${FLOOD:-$(( (HARD - 2048) / 2 < 10000 ? (HARD - 2048) / 2 / 1000 * 1000 : 10000 ))}
export ARGON2_MEMORY_KIB=1024 ARGON2_ITERATIONS=1 PRESET=
{
  echo "# $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD) $(nproc) cores, RLIMIT_NOFILE hard $HARD"
  if on idle5k; then
    echo "## idle 5,000 (password users)"
    BENCH_DIR=/tmp/poplar-bench-idle5k IDLE_USERS=5000 bench/run-poplar.sh sh -c '
      ulimit -n "$(ulimit -Hn)"
      target/release/poplar-bench --port $POPLAR_PORT --tls-port $POPLAR_TLS_PORT --cafile $POPLAR_CA \
        --server-pid $POPLAR_PID --user "u{i}" --users 5000 --password "$BENCH_PASSWORD" \
        idle --sessions 5000 --open-concurrency 16 --settle 3 --warmup 16'
  fi
  if on idle; then
    echo "## idle $SESSIONS (app-password users, 200 source /24s)"
    BENCH_DIR=/tmp/poplar-bench-idle$SESSIONS IDLE_USERS=$SESSIONS APP_PASSWORDS=$SESSIONS \
      bench/run-poplar.sh sh -c "
      ulimit -n \"\$(ulimit -Hn)\"
      target/release/poplar-bench --port \$POPLAR_PORT --tls-port \$POPLAR_TLS_PORT --cafile \$POPLAR_CA \
        --server-pid \$POPLAR_PID --user 'u{i}' --users $SESSIONS --password-file \$POPLAR_APP_PASSWORDS \
        --sources 200 idle --sessions $SESSIONS --open-concurrency 16 --settle 3 --warmup 16"
  fi
  if on flood; then
    echo "## real sign-ins while $FLOOD silent connections per POP3 port are open (10 per address, one /24 each)"
    BENCH_DIR=/tmp/poplar-bench-idle5k IDLE_USERS=5000 bench/run-poplar.sh sh -c "
      ulimit -n \"\$(ulimit -Hn)\"
      python3 bench/flood.py --pop3 127.0.0.1:\$POPLAR_PORT --pop3s 127.0.0.1:\$POPLAR_TLS_PORT \
        --cafile \$POPLAR_CA --user u0 --password \"\$BENCH_PASSWORD\" --count $FLOOD --rounds 50 \
        --floods 3 --pid \$POPLAR_PID"
  fi
} 2>&1 | tee -a "$LOG"
