#!/usr/bin/env bash
# Live migration between two vmm processes over loopback TCP: the guest
# keeps running and its memory stays intact over four hops, with and
# without free-page skipping, over four connections, with compression
# workers, with two vCPUs and
# with KVM's dirty ring;
# failures on either side leave the source running or the destination
# unstarted; bad streams, and connections that do not join, are refused
# with a clear error; a cancel resumes the source.
source "$(dirname "$0")/lib.sh"

ARGS="--mem 256M --balloon stats=1,free-page-hint,free-page-reporting"
MIG_TIMEOUT=$((30 * SLOW))
# The guest runs memcheck and prints its uptime every second.
GUEST="memcheck 32 250 & while true; do echo uptime \$(cut -d' ' -f1 /proc/uptime); sleep 1; done"
source "$(dirname "$0")/migrate-lib.sh"

# hop TEST FROM TO [migrate args]: migrates the guest from FROM to a new
# destination TO and checks it goes on there with memory intact.
hop() {
	local test=$1 from=$2 to=$3 up rc
	shift 3
	next_port
	start_dst "$to"
	up=$(last_uptime "$from")
	# Another client polling the status must not make `vmm migrate` miss
	# the end (the first reader of the final phase let the source exit).
	monitor_status "$WORK/$from.sock" &
	local mon=$!
	timeout -k 5 "$MIG_TIMEOUT" "$VMM" migrate "$WORK/$from.sock" "tcp:127.0.0.1:$PORT" "$@" \
		>"$WORK/$test.migrate" 2>&1
	rc=$?
	kill $mon 2>/dev/null
	wait $mon 2>/dev/null
	reap_source "$src_pid" $rc
	src_pid=$dst_pid
	if [ $rc -ne 0 ] || [ "$src_rc" != 0 ]; then
		fail "$test" "vmm migrate: status $rc, source vmm: status $src_rc" "$(cat "$WORK/$test.migrate")" \
			"source: $(tail -3 "$WORK/$from.err")" "destination: $(tail -3 "$WORK/$to.err")" \
			"source console: $(tail -4 "$WORK/$from.out")"
		return 1
	fi
	if ! wait_for $((20 * SLOW)) passes_past "$to" 1; then
		fail "$test" "no full memcheck pass on the destination" "$(tail -5 "$WORK/$to.out")" \
			"$(vcpu_brief "$WORK/$to.sock")" "destination: $(tail -3 "$WORK/$to.err")"
		return 1
	fi
	# The uptime line comes from another guest process than memcheck: it
	# may come after the passes, so it is waited for (bounded) too.
	if grep -q 'memcheck: FAIL' "$WORK/$to.out" || ! wait_for $((10 * SLOW)) up_past "$to" "$up"; then
		fail "$test" "memory or clock wrong after the hop (uptime before: $up)" \
			"$(grep -m3 -e FAIL -e uptime "$WORK/$to.out")"
		return 1
	fi
	# A forced dirty-log mode is the one the migration used.
	local mode
	mode=$(sed -n 's/.*--dirty-log \([a-z-]*\).*/\1/p' <<<" $* ")
	if [ -n "$mode" ] && ! grep -q "dirty log: $mode\$" "$WORK/$test.migrate"; then
		fail "$test" "--dirty-log $mode was not the mode used" "$(cat "$WORK/$test.migrate")"
		return 1
	fi
	# One free page hint round per pre-copy pass (the bulk pass and each
	# iteration), none without skipping. A guest whose balloon driver is
	# not up yet takes part in none; that is not checked.
	local iters rounds hinted want
	iters=$(sed -n 's/.* \([0-9]*\) iterations.*/\1/p' "$WORK/$test.migrate")
	rounds=$(sed -n 's/.*(\([0-9]*\) hint rounds).*/\1/p' "$WORK/$test.migrate")
	hinted=$(sed -n 's/.*skipped as free: \([0-9]*\) hinted.*/\1/p' "$WORK/$test.migrate")
	want=$((iters + 1))
	case " $* " in *" --no-skip-free "*) want=0 ;; esac
	if [ "$rounds" = 0 ] && [ "$hinted" = 0 ] && [ "$want" != 0 ]; then
		echo "    $test: no hint round (the guest's balloon did not answer); rounds not checked"
	elif [ "$rounds" != "$want" ]; then
		fail "$test" "$rounds hint rounds for $iters iterations, expected $want" \
			"$(cat "$WORK/$test.migrate")"
		return 1
	fi
	echo "    $test: $(head -3 "$WORK/$test.migrate" | tr '\n' ' ')"
	pass "$test"
}

# --compress auto (the default) must measure both ways before it decides:
# after the first zstd chunk comes a burst of raw ones that times the
# link, so a hop of many chunks sends some of each, whichever wins.
auto_compress_check() {
	local raw zstd
	raw=$(sed -n 's/.*pages sent: \([0-9]*\) raw, \([0-9]*\) zstd.*/\1/p' "$WORK/$1.migrate")
	zstd=$(sed -n 's/.*pages sent: \([0-9]*\) raw, \([0-9]*\) zstd.*/\2/p' "$WORK/$1.migrate")
	if [ "${raw:-0}" -gt 0 ] && [ "${zstd:-0}" -gt 0 ]; then
		pass migrate_auto_compress_measures
	else
		fail migrate_auto_compress_measures "--compress auto: $raw raw, $zstd zstd pages" \
			"$(cat "$WORK/$1.migrate")"
	fi
	return 0 # the hops go on either way
}

# --compress-threads: the workers' frames went out (and the hop checked
# that memory arrived intact).
zstd_check() {
	local zstd
	zstd=$(sed -n 's/.*pages sent: \([0-9]*\) raw, \([0-9]*\) zstd.*/\2/p' "$WORK/$1.migrate")
	if [ "${zstd:-0}" -gt 0 ]; then
		pass "$1_zstd_sent"
	else
		fail "$1_zstd_sent" "no zstd pages" "$(cat "$WORK/$1.migrate")"
	fi
}

# Whether NAME's balloon has a free page hint round going (cmd id >= 2).
hint_round_active() {
	local id
	id=$("$VMM" balloon "$WORK/$1.sock" --stats 2>/dev/null | sed -n 's/.*"hint_cmd_id": *\([0-9]*\).*/\1/p')
	[ -n "$id" ] && [ "$id" -ge 2 ]
}

# --- Four hops with free-page skipping, one without, one over four connections. ---
echo "    (migration tests: port $PORT, slow factor $SLOW)"
start_src a0
if wait_for $((30 * SLOW)) guest_up a0; then
	hop migrate_hop1 a0 b1 && auto_compress_check migrate_hop1 &&
		hop migrate_hop2 b1 a2 --compress zstd && hop migrate_hop3_get_log a2 b3 --dirty-log get-log &&
		hop migrate_hop4_clear_log b3 a4 --compress zstd --dirty-log clear-log &&
		hop migrate_no_skip_free a4 b5 --no-skip-free --compress none &&
		hop migrate_connections_4 b5 a6 --connections 4 &&
		hop migrate_compress_threads a6 b7 --compress zstd --compress-threads 2 --connections 2 &&
		zstd_check migrate_compress_threads
else
	fail migrate_hop1 "the source guest never ran memcheck" "$(tail -5 "$WORK/a0.out")"
fi
cleanup

# --- Two vCPUs, a checker on each. ---
GUEST="memcheck 16 125 & memcheck 16 125 & while true; do echo uptime \$(cut -d' ' -f1 /proc/uptime); sleep 1; done"
ARGS="$ARGS --cpus 2"
start_src c0
if wait_for $((30 * SLOW)) passes_past c0 1; then
	hop migrate_2vcpu c0 c1 --connections 2
else
	fail migrate_2vcpu "the source guest never ran memcheck" "$(tail -5 "$WORK/c0.out")"
fi
cleanup

# --- KVM's dirty ring: both sides run with --dirty-ring, two vCPUs (two
# rings, each harvested by its vCPU thread when full), the hop forces the
# dirty-ring mode; get-log is then refused at once. The ring is enabled
# before memory and the kernel are looked at, so a kernel that is not a
# file tells a host with the capability from one without. ---
ring_probe=$("$VMM" run --kernel /dev/null --mem 32M --console none --dirty-ring 4096 2>&1)
if grep -q "lacks KVM_CAP_DIRTY_LOG_RING" <<<"$ring_probe"; then
	echo "SKIP: migrate_dirty_ring, migrate_dirty_ring_get_log_refused ($ring_probe)"
else
	ARGS_NO_RING=$ARGS
	ARGS="$ARGS --dirty-ring 4096"
	start_src r0
	if wait_for $((30 * SLOW)) passes_past r0 1; then
		if hop migrate_dirty_ring r0 r1 --dirty-log dirty-ring --connections 2; then
			m_out=$("$VMM" migrate "$WORK/r1.sock" "tcp:127.0.0.1:$PORT" --dirty-log get-log 2>&1)
			m_rc=$?
			if [ $m_rc -eq 1 ] && grep -q "get-log: the VM runs with a dirty ring" <<<"$m_out" &&
				kill -0 "$src_pid" 2>/dev/null; then
				pass migrate_dirty_ring_get_log_refused
			else
				fail migrate_dirty_ring_get_log_refused "vmm migrate: status $m_rc" "$m_out"
			fi
		fi
	else
		fail migrate_dirty_ring "the source guest never ran memcheck" "$(tail -5 "$WORK/r0.out")" \
			"$(tail -3 "$WORK/r0.err")"
	fi
	cleanup
	ARGS=$ARGS_NO_RING
fi
# --- A large, mostly free guest that rewrites 64 MiB fast: the bulk pass
# skips most of its 3 GiB, and the rate that estimates the downtime must
# count only the pages it read. Counting the skipped ones too made the
# pass look ~30 times faster than it was, so the estimate after it said
# the 16k pages dirtied meanwhile fit in the downtime, and the guest went
# to a stop-and-copy of all of them (8 GiB: 1.4 s down, no iteration). ---
ARGS_SMALL=$ARGS
ARGS="--mem 3072M --balloon stats=1,free-page-hint,free-page-reporting"
GUEST="memcheck 64 5000 & while true; do echo uptime \$(cut -d' ' -f1 /proc/uptime); sleep 1; done"
start_src l0
if wait_for $((30 * SLOW)) passes_past l0 1; then
	if hop migrate_large_free_guest l0 l1; then
		iters=$(sed -n 's/.* \([0-9]*\) iterations.*/\1/p' "$WORK/migrate_large_free_guest.migrate")
		if [ "${iters:-0}" -ge 1 ]; then
			pass migrate_large_free_guest_iterates
		else
			fail migrate_large_free_guest_iterates \
				"stop-and-copy right after the bulk pass, with 64 MiB being rewritten" \
				"$(cat "$WORK/migrate_large_free_guest.migrate")"
		fi
	fi
else
	fail migrate_large_free_guest "the source guest never ran memcheck" "$(tail -5 "$WORK/l0.out")" \
		"$(tail -3 "$WORK/l0.err")"
fi
cleanup
ARGS=$ARGS_SMALL

ARGS="--mem 256M --balloon stats=1,free-page-hint,free-page-reporting"
GUEST="memcheck 128 2000 & while true; do echo uptime \$(cut -d' ' -f1 /proc/uptime); sleep 1; done"

# --- The destination dies mid-stream: the source goes on. ---
start_src d0
if wait_for $((30 * SLOW)) guest_up d0; then
	next_port
	start_dst d1
	"$VMM" migrate "$WORK/d0.sock" "tcp:127.0.0.1:$PORT" --no-skip-free --compress none \
		>"$WORK/d.migrate" 2>&1 &
	mig=$!
	sleep 0.5
	kill -9 $dst_pid
	wait_for $((40 * SLOW)) gone "$mig"
	kill -9 $mig 2>/dev/null
	wait $mig
	rc=$?
	up=$(last_uptime d0)
	if [ $rc -ne 0 ] && grep -q "migrate: failed" "$WORK/d.migrate" && kill -0 $src_pid &&
		wait_for $((10 * SLOW)) up_past d0 "$up"; then
		pass migrate_destination_killed
	else
		fail migrate_destination_killed "vmm migrate status $rc; source alive: $(kill -0 $src_pid 2>/dev/null && echo yes || echo no)" \
			"$(cat "$WORK/d.migrate")"
	fi
	# --- Cancel during pre-copy: the source resumes, the hint round is DONE. ---
	next_port
	start_dst d2
	"$VMM" migrate "$WORK/d0.sock" "tcp:127.0.0.1:$PORT" >"$WORK/g.migrate" 2>&1 &
	mig=$!
	# Cancel while a hint round runs (cmd id 2 or more; an earlier failed
	# migration of d0 left DONE, 1), so DONE afterwards is this cancel's.
	active=no
	wait_for $((10 * SLOW)) hint_round_active d0 && active=yes
	# While it runs, the guest's pause is the migration's: pause and
	# resume are refused with a reason (before, `vmm resume` could resume
	# a source in stop-and-copy, and the throttle a guest the user paused).
	p_out=$("$VMM" pause "$WORK/d0.sock" 2>&1)
	p_rc=$?
	r_out=$("$VMM" resume "$WORK/d0.sock" 2>&1)
	r_rc=$?
	if [ $p_rc -ne 0 ] && [ $r_rc -ne 0 ] && grep -q "a migration is running" <<<"$p_out$r_out"; then
		pass migrate_pause_refused_while_migrating
	else
		fail migrate_pause_refused_while_migrating "pause: $p_rc $p_out" "resume: $r_rc $r_out"
	fi
	"$VMM" migrate "$WORK/d0.sock" --cancel >/dev/null 2>&1
	wait_for $((20 * SLOW)) gone "$mig"
	kill -9 $mig 2>/dev/null
	wait $mig
	rc=$?
	up=$(last_uptime d0)
	hint=$(json_field "$("$VMM" balloon "$WORK/d0.sock" --stats)" hint_cmd_id)
	if [ $rc -ne 0 ] && [ $active = yes ] && grep -q cancelled "$WORK/g.migrate" &&
		wait_for $((10 * SLOW)) up_past d0 "$up" && [ "$hint" = 1 ]; then
		pass migrate_cancel_resumes
	else
		fail migrate_cancel_resumes "vmm migrate status $rc, round seen running: $active, hint cmd id '$hint'" \
			"$(cat "$WORK/g.migrate")"
	fi
	kill -9 $dst_pid 2>/dev/null
	# --- A guest the user paused is not migrated, and stays paused. ---
	"$VMM" pause "$WORK/d0.sock" >/dev/null 2>&1
	m_out=$("$VMM" migrate "$WORK/d0.sock" "tcp:127.0.0.1:$PORT" 2>&1)
	m_rc=$?
	st=$(json_field "$("$VMM" status "$WORK/d0.sock")" state)
	"$VMM" resume "$WORK/d0.sock" >/dev/null 2>&1
	st2=$(json_field "$("$VMM" status "$WORK/d0.sock")" state)
	if [ $m_rc -ne 0 ] && grep -q "the VM is paused" <<<"$m_out" && [ "$st" = paused ] &&
		[ "$st2" = running ]; then
		pass migrate_refused_while_paused
	else
		fail migrate_refused_while_paused "migrate: $m_rc $m_out" "state after: $st, after resume: $st2"
	fi
else
	fail migrate_destination_killed "the source guest never ran" "$(tail -5 "$WORK/d0.out")"
fi
cleanup

# --- The source dies mid-stream: the destination exits, the guest never runs there. ---
start_src e0
if wait_for $((30 * SLOW)) guest_up e0; then
	next_port
	start_dst e1
	"$VMM" migrate "$WORK/e0.sock" "tcp:127.0.0.1:$PORT" --no-skip-free --compress none \
		>/dev/null 2>&1 &
	sleep 0.5
	kill -9 $src_pid
	wait_for $((70 * SLOW)) gone "$dst_pid"
	kill -9 $dst_pid 2>/dev/null
	wait $dst_pid
	rc=$?
	if [ $rc -ne 0 ] && grep -q "incoming migration failed" "$WORK/e1.err" && [ ! -s "$WORK/e1.out" ]; then
		pass migrate_source_killed
	else
		fail migrate_source_killed "destination status $rc" "$(cat "$WORK/e1.err")" "$(head -3 "$WORK/e1.out")"
	fi
fi
cleanup

# --- Bad streams to --incoming: each a clear one-line error, nothing runs. ---
bad_stream() {
	local test=$1 re=$2 hex=$3
	next_port
	start_dst "$test"
	/usr/bin/python3 - "$PORT" "$hex" <<'PY'
import socket, sys, struct
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(bytes.fromhex(sys.argv[2]))
try:
    s.recv(4096)
except Exception:
    pass
s.close()
PY
	expect_refusal "$test" "$re"
}
# hello VERSION RAM_BYTES [CONNECTIONS]: a HELLO record, in hex.
hello() {
	/usr/bin/python3 -c "$PYREC"'
print(hello(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])).hex())' "$1" "$2" "${3:-1}"
}
bad_stream migrate_incoming_garbage "bad migration stream" "$(head -c 64 /dev/urandom | od -An -tx1 | tr -d ' \n')"
good=$(hello 4 $((256 << 20)))
bad_stream migrate_incoming_truncated "stream ended early" "${good:0:40}"
bad_stream migrate_incoming_version "unsupported stream version" "$(hello 2 $((256 << 20)))"
bad_stream migrate_incoming_version5 "unsupported stream version" "$(hello 5 $((256 << 20)))"
bad_stream migrate_incoming_version3 "unsupported stream version" "$(hello 3 $((256 << 20)))"
bad_stream migrate_incoming_mem_size "guest memory 256 MiB here, 512 MiB there" "$(hello 4 $((512 << 20)))"
bad_stream migrate_incoming_connections "the source asks for 17 connections; at most 16 here" \
	"$(hello 4 $((256 << 20)) 17)"

# --- Streams that end before the guest has all it needs: refused before
# READY, so the guest never runs. ---
# short_stream TEST REGEX SCENARIO: a Python source whose stream ends early.
short_stream() {
	local test=$1 re=$2
	next_port
	start_dst "$test"
	/usr/bin/python3 -c "$PYREC"'
port, what, ram = int(sys.argv[1]), sys.argv[2], 256 << 20
c0 = socket.create_connection(("127.0.0.1", port), timeout=120)
c0.sendall(hello(4, ram, 1, 55))
assert read_rec(c0)[0] == 2  # ACK(SETUP)
assert read_rec(c0)[0] == 2  # ACK(CONNECTED)
c0.sendall(rec(4, struct.pack("<I", 0)))  # ITER 0
pages, nstate = 0, 0
if what == "nostate":
    # SKIP for all of RAM, 2^16 pages a range: memory is accounted for.
    n = ram >> 12
    ranges = [(g << 28, 1 << 16) for g in range(n >> 16)]
    c0.sendall(rec(3, struct.pack("<BBH", 4, 12, len(ranges)) +
                   b"".join(struct.pack("<QI", a, p) for a, p in ranges)))
    pages = n
c0.sendall(rec(5, b""))  # PRECOPY_DONE
c0.sendall(rec(7, struct.pack("<QI", pages, nstate)))  # END
try:
    while True:
        t, p = read_rec(c0)
        if t == 2 and struct.unpack_from("<H", p)[0] == 3:
            c0.sendall(rec(11, struct.pack("<Q", 55)))  # READY: COMMIT
except Exception:
    pass
' "$PORT" "$3"
	expect_refusal "$test" "$re"
	if [ -s "$WORK/$test.out" ]; then
		fail "${test}_guest_silent" "the guest printed something" "$(head -3 "$WORK/$test.out")"
	fi
}
short_stream migrate_incoming_no_ram "incomplete stream: 65536 pages of guest memory never arrived" noram
short_stream migrate_incoming_no_state "incomplete stream: no VM state" nostate

# --- Connections after the first: each must JOIN, in time, and carry only
# its own stripes. ---
# bad_join TEST REGEX SCENARIO: a Python source that sends HELLO for two
# connections, then does SCENARIO; the destination must refuse in one line.
bad_join() {
	local test=$1 re=$2
	next_port
	start_dst "$test"
	/usr/bin/python3 -c "$PYREC"'
port, what = int(sys.argv[1]), sys.argv[2]
c0 = socket.create_connection(("127.0.0.1", port), timeout=120)
c0.sendall(hello(4, 256 << 20, 2, 1234))
assert read_rec(c0)[0] == 2  # ACK(SETUP)
if what == "foreign":
    c1 = socket.create_connection(("127.0.0.1", port), timeout=120)
    c1.sendall(join(4321, 1, 2))
elif what == "stripe":
    c1 = socket.create_connection(("127.0.0.1", port), timeout=120)
    c1.sendall(join(1234, 1, 2))
    assert read_rec(c0)[0] == 2  # ACK(CONNECTED)
    # ZERO, one range at guest address 0: stripe 0 belongs to connection 0.
    c1.sendall(rec(3, struct.pack("<BBHQI", 2, 12, 1, 0, 1)))
try:
    read_rec(c0)  # the ERROR, or the connection closing
except Exception:
    pass
' "$PORT" "$3"
	expect_refusal "$test" "$re"
}
bad_join migrate_incoming_foreign_join "did not join: JOIN does not belong to this migration" foreign
bad_join migrate_incoming_wrong_stripe "connection 1: records out of order: RAM range outside this connection's stripes" stripe
# The second connection never comes: a bounded wait (30 s), then a clear error.
bad_join migrate_incoming_connection_missing "only 1 of the 2 migration connections arrived within 30 s" missing

exit 0
