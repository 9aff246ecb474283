#!/usr/bin/env bash
# Start eventbusd and one demo collector in the foreground; Ctrl-C stops both.
set -euo pipefail
BIN="${VENV:-.venv}/bin"
SOCK=$("$BIN/python" -c 'from eventbus.paths import resolve_socket_path; print(resolve_socket_path(None))')
pids=()
stop() {
    trap - INT TERM EXIT
    [ ${#pids[@]} -gt 0 ] && kill -TERM "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    echo "eventbus stopped."
}
trap stop INT TERM EXIT

"$BIN/eventbusd" &
pids+=($!)
for _ in $(seq 100); do
    "$BIN/eventbusctl" status >/dev/null 2>&1 && break
    if ! kill -0 "${pids[0]}" 2>/dev/null; then echo "eventbusd failed to start" >&2; exit 1; fi
    sleep 0.1
done
"$BIN/eventbus-collector" run demo &
pids+=($!)

cat <<MSG

  eventbusd is listening on $SOCK
  with one demo collector (operations: echo, sleep, compute, io, fail).

  In another terminal:
    $BIN/eventbusctl submit echo --payload '{"hello":1}' --wait
    $BIN/eventbusctl collectors
    $BIN/eventbusctl watch

  Ctrl-C stops both.

MSG
wait -n "${pids[@]}" || true
