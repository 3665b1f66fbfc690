#!/usr/bin/env bash
# The control socket never waits on the main loop: while a hint round is
# held open (the guest is paused, so it cannot answer), another client's
# `vmm status` is answered at once and a SIGTERM ends vmm at once; the
# round's reply comes when the guest, resumed, ends it. Idle clients are
# closed after the idle timeout (VMM_CONTROL_IDLE_S), and a client beyond
# the limit is told so in one JSON line.
source "$(dirname "$0")/lib.sh"

IDLE_S=$((2 * SLOW))
HINT_TIMEOUT_MS=300000 # far longer than any wait below: only the guest or vmm ends the round
sock="$WORK/h.sock"
VMM_CONTROL_IDLE_S=$IDLE_S start_guest h 128 --balloon free-page-hint \
	--cmdline "$CMDLINE_BASE vmm.job=sh vmm.arg=\"echo ready; while true; do sleep 1; done\""

# hint_client NAME: a client that asks for a hint round and waits for the
# reply (into $WORK/NAME.reply); sets $hint_pid.
hint_client() {
	/usr/bin/python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(b"{\"cmd\":\"hint\",\"timeout_ms\":%d}\n" % int(sys.argv[3]))
line = s.makefile().readline().strip()
open(sys.argv[2] + ".tmp", "w").write(line)
__import__("os").replace(sys.argv[2] + ".tmp", sys.argv[2])' "$sock" "$WORK/$1.reply" "$HINT_TIMEOUT_MS" &
	hint_pid=$!
}
hint_state() { "$VMM" balloon "$sock" --stats 2>/dev/null | sed -n 's/.*"hint_cmd_id": *\([0-9]*\).*/\1/p'; }
round_running() { [ "$(hint_state)" -ge 2 ] 2>/dev/null; }
hint_works() { "$VMM" hint "$sock" --json >"$WORK/first.hint" 2>&1; }
cleanup() { kill -9 $pid 2>/dev/null; kill $hint_pid 2>/dev/null; wait 2>/dev/null; }

# A first round, with the guest running: its balloon driver is up and
# answers; the reply comes through the deferred path.
if ! wait_for $((30 * SLOW)) grep -q '^ready' "$WORK/h.out" || ! wait_for $((20 * SLOW)) hint_works; then
	fail control_hint_deferred "the guest never answered a hint round" "$(cat "$WORK/first.hint" 2>/dev/null)" \
		"$(out_of h | tail -5)"
	cleanup
	exit 0
fi
pass control_hint_deferred

# --- Idle clients: the limit is full, one more is refused in one line; the
# idle ones are closed after the timeout, and clients are served again. ---
idle=$(/usr/bin/python3 -c '
import socket, sys, time
path, n, idle = sys.argv[1], 32, float(sys.argv[2])
socks = []
for i in range(n):
    # Blocking connects: a full listen backlog makes them wait, not fail.
    s = socket.socket(socket.AF_UNIX); s.connect(path); socks.append(s)
extra = socket.socket(socket.AF_UNIX); extra.connect(path); extra.settimeout(10)
print("extra", extra.makefile().readline().strip())
t0 = time.time()
early = 0
time.sleep(idle * 0.3)
for s in socks:
    s.setblocking(False)
    try:
        early += s.recv(1) == b""
    except BlockingIOError:
        pass
closed = 0
for s in socks:
    s.settimeout(max(0.1, t0 + idle + 10 - time.time()))
    try:
        closed += s.recv(1) == b""
    except OSError:
        pass
print("early", early, "closed", closed, "of", n)' "$sock" "$IDLE_S" 2>&1)
if echo "$idle" | grep -q '^extra {"ok":false,"error":"too many control connections' &&
	echo "$idle" | grep -q '^early 0 closed 32 of 32$' && "$VMM" status "$sock" >/dev/null 2>&1; then
	pass control_idle_clients_closed
else
	fail control_idle_clients_closed "$idle" "status: $("$VMM" status "$sock" 2>&1)"
fi

# --- A round held open: the guest is paused, so it cannot end it. ---
if ! "$VMM" pause "$sock" >/dev/null; then
	fail control_status_during_hint "cannot pause the guest"
	cleanup
	exit 0
fi
hint_client held
if ! wait_for $((5 * SLOW)) round_running; then
	fail control_status_during_hint "the hint round never started" "$(hint_state)"
else
	t0=$SECONDS
	status=$(timeout -k 2 $((5 * SLOW)) "$VMM" status "$sock" 2>&1)
	rc=$?
	if [ $rc = 0 ] && echo "$status" | grep -q '"state": "paused"' && [ ! -e "$WORK/held.reply" ]; then
		pass control_status_during_hint
	else
		fail control_status_during_hint "vmm status: status $rc after $((SECONDS - t0)) s: $status" \
			"hint reply: $(cat "$WORK/held.reply" 2>/dev/null)"
	fi
fi
# Resumed, the guest ends the round, and the waiting client gets its reply.
"$VMM" resume "$sock" >/dev/null
if wait_for $((20 * SLOW)) test -e "$WORK/held.reply" && grep -q '"ok": *true' "$WORK/held.reply" &&
	grep -q '"ranges"' "$WORK/held.reply"; then
	pass control_hint_reply_after_resume
else
	fail control_hint_reply_after_resume "reply: $(cat "$WORK/held.reply" 2>/dev/null)"
fi

# --- SIGTERM while a round is held open: vmm ends at once, cleanly. ---
"$VMM" pause "$sock" >/dev/null
hint_client term
if ! wait_for $((5 * SLOW)) round_running; then
	fail control_sigterm_during_hint "the hint round never started"
	cleanup
	exit 0
fi
stopped_cleanly control_sigterm_during_hint $pid "$sock"
cleanup
exit 0
