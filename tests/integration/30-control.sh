#!/usr/bin/env bash
# The control socket of a running guest: mode 0600, status answers, bad
# requests get error replies and leave vmm running, SIGTERM tears down.
source "$(dirname "$0")/lib.sh"

sock="$WORK/api.sock"
timeout -k 5 $((20 * SLOW)) "$VMM" run --kernel "$KERNEL" --initrd "$INITRD" --mem 128M \
	--api-socket "$sock" \
	--cmdline "$CMDLINE_BASE vmm.job=sh vmm.arg=\"i=0; while true; do i=\$((i+1)); echo tick \$i; sleep 0.2; done\"" \
	</dev/null >"$WORK/ctl.out" 2>&1 &
pid=$!

# send_raw TEXT: one request over the socket, prints the reply line.
send_raw() {
	/usr/bin/python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
print(s.makefile().readline().strip())' "$sock" "$1"
}

if ! wait_for $((5 * SLOW)) test -S "$sock"; then
	fail control_socket "socket $sock never appeared" "$(tail -5 "$WORK/ctl.out")"
	kill -9 $pid 2>/dev/null
	exit 0
fi

mode=$(stat -c %a "$sock")
[ "$mode" = 600 ] && pass control_socket_mode_0600 || fail control_socket_mode_0600 "mode is $mode"

status=$("$VMM" status "$sock" 2>&1)
if echo "$status" | grep -q '"state": "running"' && echo "$status" | grep -q '"cpus": 1'; then
	pass control_status
else
	fail control_status "reply: $status"
fi

ok=1
for req in 'not json' '[1,2]' '{"nocmd":1}' '{"cmd":42}' '{"cmd":"explode"}' '{"cmd":"status"'; do
	reply=$(send_raw "$req" 2>&1)
	if ! echo "$reply" | grep -q '"ok": *false'; then
		ok=0
		fail control_rejects_bad_requests "request '$req' got '$reply'"
	fi
done
[ $ok = 1 ] && pass control_rejects_bad_requests

if kill -0 $pid 2>/dev/null && "$VMM" status "$sock" >/dev/null 2>&1; then
	pass control_survives_bad_requests
else
	fail control_survives_bad_requests "vmm is gone after bad requests"
fi

ticks() { grep -c '^tick' "$WORK/ctl.out"; }
ticked_past() { [ "$(ticks)" -gt "$1" ]; }
if wait_for $((10 * SLOW)) ticked_past 2; then
	"$VMM" pause "$sock" >/dev/null
	state=$("$VMM" status "$sock" | grep '"state"')
	n1=$(ticks)
	sleep 2
	n2=$(ticks)
	"$VMM" resume "$sock" >/dev/null
	if [ "$n1" = "$n2" ] && echo "$state" | grep -q paused &&
		wait_for $((5 * SLOW)) ticked_past "$n2"; then
		pass control_pause_resume
	else
		fail control_pause_resume "ticks $n1 -> $n2 while paused, $(ticks) after resume; $state"
	fi
else
	fail control_pause_resume "the guest never ticked" "$(tail -5 "$WORK/ctl.out")"
fi

out=$("$VMM" status "$WORK/nonexistent.sock" 2>&1)
rc=$?
if [ $rc -ne 0 ] && echo "$out" | grep -q "cannot connect to"; then
	pass status_wrong_socket
else
	fail status_wrong_socket "status $rc, output: $out"
fi

stopped_cleanly sigterm_clean_teardown $pid "$sock"

exit 0
