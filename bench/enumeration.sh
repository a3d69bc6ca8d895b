#!/usr/bin/env bash
# Response times of failed sign-ins by reason, side by side (issue 5's enumeration
# benchmark): a wrong password, an unknown user, and a locked and a disabled account,
# each with a wrong and with the right password. A server that tells nothing answers all
# six with the same text after the same time. Poplar pads every failure to
# auth.failure_delay_ms (default 1000 ms) from the start of the attempt, whether it
# spent an argon2 hash or refused the attempt unchecked (locked, throttled).
#
#   bench/enumeration.sh                 # 40 attempts per reason, 4 at a time
#   COUNT=100 CONCURRENCY=8 bench/enumeration.sh
#
# Builds release binaries, runs Poplar on its default settings (argon2id 19 MiB t=2,
# failure delay 1 s) in a temporary folder on ephemeral ports over TLS, and writes the
# JSON result to bench/results/enumeration-<date>.json.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
COUNT=${COUNT:-40}
CONCURRENCY=${CONCURRENCY:-4}
PASSWORD=bench-Secret-0
(cd "$REPO" && cargo build --release -q -p poplar -p poplar-bench)
POPLAR=$REPO/target/release/poplar
BENCH=$REPO/target/release/poplar-bench
DIR=$(mktemp -d /tmp/poplar-enum-XXXX)
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$DIR"' EXIT
cat > "$DIR/poplar.toml" <<EOF
data_dir = "$DIR/data"
[listen]
pop3 = ["127.0.0.1:0"]
pop3s = ["127.0.0.1:0"]
[auth]
# Plain USER/PASS from loopback only, to lock the account below from many addresses.
plaintext_networks = ["127.0.0.0/8"]
[defence]
lockout_threshold = 5
# All attempts come from 127.0.0.1, which would be banned after ten unknown names and
# then refused at connect; bans are off so that every case reaches the sign-in.
# Throttling stays on: after three failures alice's wrong passwords are refused
# unchecked, which is one more case that must look the same.
ban_accounts = 0
EOF
P=("$POPLAR" --config "$DIR/poplar.toml")
for u in alice lock dis; do echo "$PASSWORD" | "${P[@]}" user add "$u" --password-stdin --allow-weak 2>/dev/null; done
"${P[@]}" user disable dis
exec 3< <("${P[@]}" serve 2>"$DIR/poplar.log")
PID=$!
while IFS= read -r -t 60 line <&3; do
  case "$line" in
    "listening pop3 "*) PORT=${line##*:} ;;
    "listening pop3s "*) TLS_PORT=${line##*:} ;;
    ready) break ;;
  esac
done
cat <&3 >/dev/null &
PID=$(pgrep -f "$DIR/poplar.toml serve" | head -1)
# Lock `lock` for unfamiliar networks: five wrong passwords from five addresses.
python3 - "$PORT" <<'PY'
import socket, sys
port = int(sys.argv[1])
for i in range(5):
    s = socket.create_connection(("127.0.0.1", port), source_address=(f"127.77.0.{i + 1}", 0))
    f = s.makefile("rwb")
    f.readline()
    for line in (b"USER lock\r\n", f"PASS wrong{i}\r\n".encode(), b"QUIT\r\n"):
        f.write(line); f.flush(); f.readline()
    s.close()
PY
"${P[@]}" lockout list | sed -n '/accounts locked/,/failures by/p'
mkdir -p "$REPO/bench/results"
OUT=$REPO/bench/results/enumeration-$(date -u +%Y%m%d-%H%M).json
"$BENCH" --port "$PORT" --tls-port "$TLS_PORT" --cafile "$DIR/data/tls/cert.pem" \
  --server-pid "$PID" --user alice --password "$PASSWORD" --json "$OUT" \
  failures --count "$COUNT" --concurrency "$CONCURRENCY" \
  --reasons wrong-password,unknown-user,locked-wrong,locked-right,disabled-wrong,disabled-right \
  --locked-user lock --locked-password "$PASSWORD" \
  --disabled-user dis --disabled-password "$PASSWORD"
echo "result: $OUT"
