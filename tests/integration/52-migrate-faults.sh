#!/usr/bin/env bash
# The commit protocol under faults (docs/migration.md, "The commit
# protocol"): a fault at each step of a migration, on either side (the
# process killed, frozen, or its connections reset; injected with
# `vmm migrate --fault` and VMM_MIGRATE_FAULT), and a destination that
# answers with nonsense. After
# each: at most one guest runs, the one that runs has intact memory
# (memcheck), the source runs again exactly when the protocol says it may,
# and both sides end with a clear message and status. Every case leaves one
# running guest behind, which is the source of the next case.
source "$(dirname "$0")/lib.sh"

ARGS="--mem 128M --balloon stats=1,free-page-hint"
GUEST="memcheck 16 250 & while true; do echo uptime \$(cut -d' ' -f1 /proc/uptime); sleep 1; done"
source "$(dirname "$0")/migrate-lib.sh"
# Silent peers are given up on after this (both sides), instead of 30-60 s.
T_MS=$((1500 * SLOW))
export VMM_MIGRATE_TIMEOUT_MS=$T_MS
MIG_TIMEOUT=$((60 * SLOW))
n=0
cur=

# new_source: boots a fresh source guest as $cur (after a case lost it).
new_source() {
	n=$((n + 1))
	cur=s$n
	start_src "$cur"
	wait_for $((30 * SLOW)) guest_up "$cur"
}

# runs NAME: the guest of NAME makes progress (a new memcheck pass) and its
# memory is intact.
runs() {
	local p
	p=$(passes "$1")
	wait_for $((15 * SLOW)) passes_past "$1" "$p" && ! grep -q 'memcheck: FAIL' "$WORK/$1.out"
}
# state NAME: "running", "paused", or "gone".
state() {
	local j
	j=$("$VMM" status "$WORK/$1.sock" 2>/dev/null) || { echo gone; return; }
	json_field "$j" state
}
# never_ran NAME PID: the destination ended non-zero without a guest byte.
never_ran() {
	local rc
	wait_for $((MIG_TIMEOUT)) gone "$2" || return 1
	wait "$2"
	rc=$?
	[ $rc -ne 0 ] && [ ! -s "$WORK/$1.out" ]
}

# frozen_or_gone PID MIG: PID is stopped (SIGSTOP), or the migration MIG
# ended (the fault never came: the case fails on its checks).
frozen_or_gone() {
	grep -q '^State:.*T' "/proc/$1/status" 2>/dev/null || gone "$2"
}

# fault TEST SIDE POINT ACTION EXPECT: migrates $cur to a new destination
# with the fault POINT:ACTION injected on SIDE (source or dest) and checks
# EXPECT:
#   source    the migration fails, the source guest runs on, the
#             destination never runs the guest
#   dest      the guest runs at the destination only (the source is gone)
#   lost      the source was killed: the destination never runs it
#   unknown   vmm migrate exits 3 and the source stays paused; the
#             destination never runs it; `vmm resume --force` runs it here
#   dest-late the source stays paused (unknown); the destination, once
#             continued, runs the guest
fault() {
	local test=$1 side=$2 point=$3 action=$4 expect=$5 to dst_env= rc mig why= src_fault=()
	n=$((n + 1))
	to=d$n
	next_port
	if [ "$side" = dest ]; then dst_env="$point:$action"; else src_fault=(--fault "$point:$action"); fi
	VMM_MIGRATE_FAULT=$dst_env start_dst "$to"
	timeout -k 5 "$MIG_TIMEOUT" "$VMM" migrate "$WORK/$cur.sock" "tcp:127.0.0.1:$PORT" \
		"${src_fault[@]}" >"$WORK/$test.migrate" 2>&1 &
	mig=$!
	if [ "$action" = stop ]; then
		# The frozen side is continued once the other side has acted
		# without it: a source gave up (or is left with an unknown
		# outcome), a destination gave up, or runs the guest.
		local frozen=$src_pid
		[ "$side" = dest ] && frozen=$dst_pid
		wait_for $((MIG_TIMEOUT)) frozen_or_gone "$frozen" "$mig"
		if [ "$side" = dest ]; then
			wait_for $((MIG_TIMEOUT)) gone $mig
		elif [ "$expect" = dest ]; then
			wait_for $((MIG_TIMEOUT)) passes_past "$to" 0
		else
			wait_for $((MIG_TIMEOUT)) gone $dst_pid
		fi
		kill -CONT "$frozen"
	fi
	wait_for $((MIG_TIMEOUT)) gone $mig
	wait $mig
	rc=$?
	case $expect in
	source)
		never_ran "$to" $dst_pid || why="the destination ran the guest or did not end"
		[ -z "$why" ] && [ "$rc" -ne 0 ] || why="${why:-vmm migrate status $rc}"
		[ -z "$why" ] && runs "$cur" || why="${why:-the source guest did not resume intact}"
		;;
	lost)
		never_ran "$to" $dst_pid || why="the destination ran the guest or did not end"
		gone "$src_pid" || why="${why:-the source is still there}"
		grep -q "the source vmm exited before the migration ended" "$WORK/$test.migrate" ||
			why="${why:-vmm migrate did not say that the source exited}"
		;;
	dest)
		runs "$to" || why="the guest does not run intact at the destination"
		wait_for $((10 * SLOW)) gone "$src_pid" || why="${why:-the source did not end}"
		;;
	unknown)
		[ "$rc" -eq 3 ] && grep -q "outcome unknown" "$WORK/$test.migrate" || why="vmm migrate status $rc"
		[ -z "$why" ] && [ "$(state "$cur")" = paused ] || why="${why:-the source is $(state "$cur"), not paused}"
		[ -z "$why" ] && never_ran "$to" $dst_pid || why="${why:-the destination ran the guest}"
		[ -z "$why" ] && "$VMM" resume "$WORK/$cur.sock" >/dev/null 2>&1 && why="plain resume was accepted"
		[ -z "$why" ] && "$VMM" resume "$WORK/$cur.sock" --force >/dev/null 2>&1 || why="${why:-resume --force failed}"
		[ -z "$why" ] && runs "$cur" || why="${why:-the guest did not run intact after resume --force}"
		;;
	dest-late)
		[ "$rc" -eq 3 ] || why="vmm migrate status $rc"
		[ -z "$why" ] && runs "$to" || why="${why:-the guest does not run at the destination}"
		[ -z "$why" ] && [ "$(state "$cur")" = paused ] || why="${why:-the source is $(state "$cur"), not paused}"
		;;
	esac
	if [ -z "$why" ]; then
		pass "$test"
	else
		fail "$test" "$why" "vmm migrate ($rc): $(tr '\n' ' ' <"$WORK/$test.migrate")" \
			"source: $(tail -2 "$WORK/$cur.err" | tr '\n' ' ')" \
			"destination: $(tail -2 "$WORK/$to.err" | tr '\n' ' ')"
	fi
	# Whoever runs now is the next case's source.
	case $expect in
	dest | dest-late)
		kill -9 "$src_pid" 2>/dev/null
		cur=$to src_pid=$dst_pid ;;
	source | unknown) kill -9 "$dst_pid" 2>/dev/null ;;
	lost) kill -9 "$dst_pid" 2>/dev/null; cur= ;;
	esac
	if [ -z "$cur" ] || [ "$(state "$cur")" != running ]; then
		kill -9 "$src_pid" 2>/dev/null
		new_source || { fail "$test" "cannot boot the next source"; return 1; }
	fi
}

echo "    (fault tests: port $PORT, slow factor $SLOW, peers given up after $T_MS ms)"
new_source || fail migrate_fault_setup "the source guest never ran" "$(tail -3 "$WORK/$cur.out")"
# Before COMMIT: the source keeps (or, killed, loses) the guest.
fault migrate_fault_dest_setup_kill dest dest-setup kill source
fault migrate_fault_dest_bulk_reset dest dest-bulk reset source
fault migrate_fault_dest_iterate_stop dest dest-iterate stop source
fault migrate_fault_dest_stopcopy_kill dest dest-stop-copy kill source
fault migrate_fault_dest_end_reset dest dest-end reset source
fault migrate_fault_source_setup_reset source source-setup reset source
fault migrate_fault_source_bulk_kill source source-bulk kill lost
fault migrate_fault_source_iterate_stop source source-iterate stop source
fault migrate_fault_source_stopcopy_reset source source-stop-copy reset source
fault migrate_fault_source_end_kill source source-end kill lost
# After READY or COMMIT: never two guests; unknown outcomes stay paused.
fault migrate_fault_dest_ready_kill dest dest-ready kill unknown
fault migrate_fault_dest_ready_reset dest dest-ready reset unknown
fault migrate_fault_dest_ready_stop dest dest-ready stop dest-late
fault migrate_fault_dest_commit_kill dest dest-commit kill unknown
fault migrate_fault_source_commit_kill source source-commit kill dest
fault migrate_fault_source_commit_reset source source-commit reset dest-late
fault migrate_fault_source_commit_stop source source-commit stop dest

# --- A stop signal to the destination during the transfer: it ends before
# READY with 128+15, and the source keeps its guest. ---
n=$((n + 1))
next_port
VMM_MIGRATE_FAULT=dest-bulk:stop start_dst d$n
timeout -k 5 "$MIG_TIMEOUT" "$VMM" migrate "$WORK/$cur.sock" "tcp:127.0.0.1:$PORT" \
	>"$WORK/sigterm.migrate" 2>&1 &
mig=$!
wait_for $((MIG_TIMEOUT)) frozen_or_gone "$dst_pid" "$mig"
kill -TERM "$dst_pid"
kill -CONT "$dst_pid"
wait_for $((MIG_TIMEOUT)) gone "$dst_pid"
wait "$dst_pid"
d_rc=$?
wait_for $((MIG_TIMEOUT)) gone "$mig"
wait "$mig"
m_rc=$?
if [ $d_rc -eq 143 ] && [ $m_rc -eq 1 ] && [ ! -s "$WORK/d$n.out" ] && runs "$cur"; then
	pass migrate_sigterm_destination_during_transfer
else
	fail migrate_sigterm_destination_during_transfer "destination status $d_rc, vmm migrate $m_rc" \
		"$(cat "$WORK/d$n.err")" "$(cat "$WORK/sigterm.migrate")"
fi

# --- A destination that answers with nonsense: the source resumes. ---
# fake_dest TEST REGEX SCENARIO
fake_dest() {
	local test=$1 re=$2 rc
	next_port
	/usr/bin/python3 -c "$PYREC"'
port, what = int(sys.argv[1]), sys.argv[2]
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", port))
l.listen(1)
l.settimeout(120)
c, _ = l.accept()
read_rec(c)  # HELLO
if what == "garbage":
    c.sendall(bytes(range(64)))
elif what == "early-ready":
    c.sendall(ack(1) + ack(4) + ack(3))  # SETUP, CONNECTED, READY before anything
else:
    c.sendall(ack(1) + ack(4) + ack(6))  # RUNNING out of the blue
try:
    while c.recv(1 << 20):
        pass
except Exception:
    pass
' "$PORT" "$3" &
	local fake=$!
	wait_for $((5 * SLOW)) port_open "$PORT"
	timeout -k 5 "$MIG_TIMEOUT" "$VMM" migrate "$WORK/$cur.sock" "tcp:127.0.0.1:$PORT" \
		>"$WORK/$test.migrate" 2>&1
	rc=$?
	kill $fake 2>/dev/null
	wait $fake 2>/dev/null
	if [ $rc -eq 1 ] && grep -Eq "$re" "$WORK/$test.migrate" && runs "$cur"; then
		pass "$test"
	else
		fail "$test" "vmm migrate status $rc" "$(cat "$WORK/$test.migrate")" \
			"source: $(tail -n 3 "$WORK/$cur.err" 2>/dev/null)"
	fi
}
fake_dest migrate_fake_dest_garbage "bad reply from the destination" garbage
fake_dest migrate_fake_dest_early_ready "unexpected reply from the destination" early-ready
fake_dest migrate_fake_dest_running "unexpected reply from the destination" running

kill -9 "$src_pid" 2>/dev/null
cleanup
exit 0
