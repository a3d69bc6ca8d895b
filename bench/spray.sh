#!/usr/bin/env bash
# The real user's sign-in time under a password spray (issue 18): 200 addresses each
# guess 2 passwords a second across 50 accounts for a minute, while the real user signs
# in from a network familiar to its account; and the same sign-ins with nothing else
# running (bench/spray.py says how each is timed).
#
#   bench/spray.sh                          # release build, default settings
#   SOURCES=200 RATE=2 DURATION=60 bench/spray.sh
#
# The server runs Poplar's defaults (argon2id 19 MiB t=2, one hashing thread per core,
# failure_delay_ms 1000) except that bans are off and the account lock is at its
# highest (100): nearly every sprayed guess the per-(user, source) throttle lets through
# then costs a hash, so what is measured is the hashing pool's fairness (a kept thread
# and a bounded queue for the others), the worst case for the real user. The spray
# client runs at nice 19 in a process of its own (bench/spray.py), as an attacker's
# machine would not share the server's cores; the real user's client at the normal
# priority. Results: bench/results/spray-<date>.json, with the audit log's reasons for
# the sprayed guesses.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
. "$REPO/bench/lib.sh"
SOURCES=${SOURCES:-200}
RATE=${RATE:-2}
DURATION=${DURATION:-60}
PASSWORD=bench-Secret-0
# POPLAR_BIN: another build to measure (an older commit's, for a before/after).
if [ -z "${POPLAR_BIN:-}" ]; then (cd "$REPO" && cargo build --release -q -p poplar); fi
POPLAR=${POPLAR_BIN:-$REPO/target/release/poplar}
DIR=$(mktemp -d /tmp/poplar-spray-XXXX)
PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$DIR"' EXIT
cat > "$DIR/poplar.toml" <<EOF
data_dir = "$DIR/data"
[listen]
pop3 = ["127.0.0.1:0"]
pop3s = ["127.0.0.1:0"]
[auth]
plaintext_networks = ["127.0.0.0/8"]
[defence]
ban_accounts = 0
lockout_threshold = 100
EOF
P=("$POPLAR" --config "$DIR/poplar.toml")
for i in $(seq 0 49); do echo "$PASSWORD" | "${P[@]}" user add "u$i" --password-stdin --allow-weak; done
POPLAR_LOG=warn start_poplar "$DIR/poplar.log"
ulimit -n "$(ulimit -Hn)"
mkdir -p "$REPO/bench/results"
OUT=$REPO/bench/results/spray-$(date -u +%Y%m%d-%H%M).json
echo "# $(date -u +%FT%TZ) commit $(git -C "$REPO" rev-parse --short HEAD) $(nproc) cores"
python3 "$REPO/bench/spray.py" --port "$PORT" --tls-port "$TLS_PORT" \
  --cafile "$DIR/data/tls/cert.pem" --password "$PASSWORD" --sources "$SOURCES" \
  --rate "$RATE" --duration "$DURATION" --json "$OUT"
python3 - "$DIR/data/audit.log" "$OUT" <<'PY'
import collections, json, sys
reasons = collections.Counter(
    r.get("reason") for r in map(json.loads, open(sys.argv[1]))
    if r.get("event") == "auth" and r.get("result") == "failure")
print("sprayed guesses by private reason:", dict(reasons.most_common()))
out = json.load(open(sys.argv[2]))
out["audit_reasons"] = dict(reasons.most_common())
json.dump(out, open(sys.argv[2], "w"), indent=2)
PY
echo "result: $OUT"
