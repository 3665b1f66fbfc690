#!/usr/bin/env bash
# SIGTERM, SIGINT and SIGHUP stop vmm cleanly (exit status 128+N, the
# control socket file removed, a terminal out of raw mode again) even with
# device threads running (balloon statistics, a disk), and a SIGTERM while
# `--incoming` waits for its source ends vmm at once, just as cleanly.
source "$(dirname "$0")/lib.sh"

# spawn NAME CMD...: runs CMD in the background under a small Python parent
# that records how it ended in $WORK/NAME.how, "exit N" or "signal N"
# (bash's wait cannot tell exit(143) from death by SIGTERM); output in
# $WORK/NAME.out. Sets $pid to CMD's own pid. CMD starts with SIGINT at
# its default, as from a terminal (a background job of a script has it
# ignored).
spawn() {
	local name=$1
	shift
	/usr/bin/python3 -c '
import os, signal, subprocess, sys
w = sys.argv[1]
signal.signal(signal.SIGINT, signal.SIG_DFL)
p = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=open(w + ".out", "w"),
                     stderr=subprocess.STDOUT)
open(w + ".pid.tmp", "w").write(str(p.pid))
os.replace(w + ".pid.tmp", w + ".pid")
r = p.wait()
open(w + ".how.tmp", "w").write("exit %d" % r if r >= 0 else "signal %d" % -r)
os.replace(w + ".how.tmp", w + ".how")' "$WORK/$name" "$@" &
	pid=
	wait_for $((5 * SLOW)) test -s "$WORK/$name.pid" && pid=$(cat "$WORK/$name.pid")
}
how() { cat "$WORK/$1.how" 2>/dev/null; }
ended() { [ -s "$WORK/$1.how" ]; }

# stopped TEST NAME PID SIGNAL: after kill -SIGNAL, NAME exits 128+N within
# a bounded wait, leaving no socket file behind.
stopped() {
	local test=$1 name=$2 p=$3 sig=$4 want
	want="exit $((128 + $(kill -l "$sig")))"
	if ! wait_for $((10 * SLOW)) ended "$name"; then
		kill -9 "$p" 2>/dev/null
		fail "$test" "still running $((10 * SLOW)) s after SIG$sig" "$(tail -5 "$WORK/$name.out")"
	elif [ "$(how "$name")" != "$want" ] || [ -e "$WORK/$name.sock" ]; then
		fail "$test" "ended with '$(how "$name")', expected '$want'; socket file left: \
$([ -e "$WORK/$name.sock" ] && echo yes || echo no)" "$(tail -5 "$WORK/$name.out")"
	else
		pass "$test"
	fi
}

# Three guests with a balloon polling statistics every second and a disk:
# their device threads exist from start-up, before the main loop runs.
declare -A pids
for sig in TERM INT HUP; do
	truncate -s 16M "$WORK/$sig.img"
	spawn "$sig" "$VMM" run --kernel "$KERNEL" --initrd "$INITRD" --mem 128M \
		--balloon stats=1 --disk "$WORK/$sig.img" --api-socket "$WORK/$sig.sock" \
		--cmdline "$CMDLINE_BASE vmm.job=sh vmm.arg=\"echo ready; while true; do sleep 1; done\""
	pids[$sig]=$pid
done
ready() { grep -q '^ready' "$WORK/$1.out" 2>/dev/null && [ -S "$WORK/$1.sock" ]; }
for sig in TERM INT HUP; do
	test=sig${sig,,}_with_device_threads
	if [ -z "${pids[$sig]}" ] || ! wait_for $((60 * SLOW)) ready "$sig"; then
		fail "$test" "the guest never got ready" "$(tail -5 "$WORK/$sig.out" 2>/dev/null)"
		[ -n "${pids[$sig]}" ] && kill -9 "${pids[$sig]}" 2>/dev/null
		continue
	fi
	# A few statistics rounds, so the balloon's thread has been busy.
	sleep 2
	kill -s "$sig" "${pids[$sig]}"
	stopped "$test" "$sig" "${pids[$sig]}" "$sig"
done

# On a terminal (script's pty), the terminal comes back out of raw mode.
truncate -s 16M "$WORK/tty.img"
mkfifo "$WORK/tty.in"
exec 7<>"$WORK/tty.in" # script's stdin: open, never at its end
script -qec "$VMM run --kernel $KERNEL --initrd $INITRD --mem 128M --balloon stats=1 \
	--disk $WORK/tty.img --api-socket $WORK/tty.sock \
	--cmdline 'console=ttyS0 quiet vmm.job=sh vmm.arg=\"echo ready; sleep 600\"'; \
	echo status=\$?; stty -a" /dev/null <&7 >"$WORK/tty.out" 2>&1 &
script_pid=$!
# The vmm process itself (not the shell script runs it from); builtins
# only, since every exec is slow in the test host.
tty_vmm() {
	local p comm args
	for p in /proc/[0-9]*; do
		read -r comm <"$p/comm" 2>/dev/null && [ "$comm" = vmm ] || continue
		mapfile -d '' args <"$p/cmdline" 2>/dev/null
		[[ " ${args[*]} " == *" $WORK/tty.sock "* ]] && echo "${p#/proc/}" && return 0
	done
	return 1
}
tty_ready() { grep -q '^ready' "$WORK/tty.out" 2>/dev/null && tty_vmm >/dev/null; }
tty_done() { grep -q '^status=' "$WORK/tty.out" 2>/dev/null && grep -q 'icanon' "$WORK/tty.out"; }
if ! wait_for $((60 * SLOW)) tty_ready; then
	fail sigterm_restores_terminal "the guest never got ready" "$(tr -d '\r' <"$WORK/tty.out" | tail -5)"
else
	kill -TERM "$(tty_vmm)"
	if ! wait_for $((10 * SLOW)) tty_done; then
		fail sigterm_restores_terminal "no status after SIGTERM" "$(tr -d '\r' <"$WORK/tty.out" | tail -5)"
	elif ! tr -d '\r' <"$WORK/tty.out" | grep -q '^status=143$' ||
		! grep -Eq '(^| )icanon( |$)' "$WORK/tty.out"; then
		fail sigterm_restores_terminal "the terminal after vmm: $(tr -d '\r' <"$WORK/tty.out" |
			grep -E '^status=|icanon')"
	else
		pass sigterm_restores_terminal
	fi
fi
p=$(tty_vmm) && kill -9 "$p"
kill "$script_pid" 2>/dev/null
exec 7>&-

# --incoming, waiting for a source that never comes.
PORT=$((48000 + RANDOM % 1000))
truncate -s 16M "$WORK/in.img"
spawn in "$VMM" run --incoming "tcp:127.0.0.1:$PORT" --mem 128M --balloon stats=1 \
	--disk "$WORK/in.img" --api-socket "$WORK/in.sock" --console none
if [ -z "$pid" ] || ! wait_for $((5 * SLOW)) port_open "$PORT"; then
	fail sigterm_incoming_wait "the destination never listened" "$(cat "$WORK/in.out" 2>/dev/null)"
	[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
else
	kill -TERM "$pid"
	stopped sigterm_incoming_wait in "$pid" TERM
fi
wait
exit 0
