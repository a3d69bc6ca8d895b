# Shared by the benchmark scripts (source it): start a Poplar built and configured by
# the caller.
#
# start_poplar LOG   runs "${P[@]}" serve (P: the binary and its --config), standard
#                    error to LOG, and waits for `ready`; sets PORT, TLS_PORT and
#                    WEB_PORT from its `listening` lines and PID to the server's.
start_poplar() {
  exec 3< <("${P[@]}" serve 2>"$1")
  PORT= TLS_PORT= WEB_PORT=
  local line web
  while IFS= read -r -t 60 line <&3; do
    case "$line" in
      "listening pop3 "*) PORT=${line##*:} ;;
      "listening pop3s "*) TLS_PORT=${line##*:} ;;
      "listening web https://"*) web=${line##*:}; WEB_PORT=${web%/} ;;
      ready) break ;;
    esac
  done
  cat <&3 >/dev/null &
  PID=$(pgrep -f "${P[2]} serve" | head -1)
}
