#!/usr/bin/env bash
# Response times of failed sign-ins by reason, side by side (issue 5's enumeration
# benchmark): a wrong password, an unknown user, and a locked and a disabled account,
# each with a wrong and with the right password; then the security page (issue 18): an
# unknown user, an argon2id user, a user still on an imported {SSHA} hash, and a
# throttled (user, source), by bench/web_enumeration.py. A server that tells nothing answers all
# six with the same text after the same time. Poplar pads every failure to
# auth.failure_delay_ms (default 1000 ms) from the start of the attempt, whether it
# spent an argon2 hash or refused the attempt unchecked (locked, throttled).
#
#   bench/enumeration.sh                 # 40 attempts per reason, 4 at a time
#   COUNT=100 CONCURRENCY=8 bench/enumeration.sh
#
# Builds release binaries, runs Poplar on its default settings (argon2id 19 MiB t=2,
# failure delay 1 s) in a temporary folder on ephemeral ports over TLS, and writes the
# JSON results to bench/results/enumeration-<date>.json and enumeration-web-<date>.json.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
. "$REPO/bench/lib.sh"
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
start_poplar "$DIR/poplar.log"
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
kill "$PID" 2>/dev/null || true
wait 2>/dev/null || true

# The security page, on a server of its own: every attempt but the throttled case comes
# from an address of its own, so nothing is locked or banned and each is checked.
rm -rf "$DIR/data"
cat > "$DIR/poplar.toml" <<EOF
data_dir = "$DIR/data"
[listen]
pop3 = []
pop3s = ["127.0.0.1:0"]
[web]
listen = "127.0.0.1:0"
[defence]
lockout_threshold = 100
ban_accounts = 0
EOF
for u in alice thr; do echo "$PASSWORD" | "${P[@]}" user add "$u" --password-stdin --allow-weak >/dev/null; done
python3 - "$PASSWORD" > "$DIR/passwd" <<'PY'
import base64, hashlib, os, sys
salt = os.urandom(8)
print("old:{SSHA}" + base64.b64encode(hashlib.sha1(sys.argv[1].encode() + salt).digest() + salt).decode())
PY
"${P[@]}" user import --yes "$DIR/passwd"
start_poplar "$DIR/poplar-web.log"
WEB_OUT=$REPO/bench/results/enumeration-web-$(date -u +%Y%m%d-%H%M).json
python3 "$REPO/bench/web_enumeration.py" --port "$WEB_PORT" --count "$COUNT" \
  --concurrency "$CONCURRENCY" --argon2-user alice --legacy-user old --throttled-user thr \
  --audit "$DIR/data/audit.log" --json "$WEB_OUT"
echo "result: $WEB_OUT"
