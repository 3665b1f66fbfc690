#!/usr/bin/env bash
# The device set in HELLO names the balloon's options: a destination whose
# --balloon differs from the source's is refused at HELLO, with one line
# naming both sets, before any RAM is sent; the source guest goes on.
source "$(dirname "$0")/lib.sh"

PORT=$((47000 + RANDOM % 1000))
SRC_BALLOON=stats=1,free-page-hint

"$VMM" run --kernel "$KERNEL" --initrd "$INITRD" --mem 128M --balloon "$SRC_BALLOON" \
	--api-socket "$WORK/src.sock" --console "file:$WORK/src.out" \
	--cmdline "$CMDLINE_BASE vmm.job=sh vmm.arg=\"while true; do echo up; sleep 1; done\"" \
	</dev/null 2>"$WORK/src.err" &
src_pid=$!

# migrate-status of the source, as JSON.
mig_status() {
	/usr/bin/python3 -c '
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(sys.argv[1])
s.sendall(b"{\"cmd\":\"migrate-status\"}\n")
print(s.makefile().readline().strip())' "$WORK/src.sock"
}
pages_sent() {
	/usr/bin/python3 -c '
import json, sys
d = json.loads(sys.argv[1])
print(d.get("pages_raw", 0) + d.get("pages_zstd", 0) + d.get("pages_zero", 0))' "$1"
}
up() { grep -q '^up' "$WORK/src.out" 2>/dev/null; }

# refused TEST DST_BALLOON DST_ENTRY: a destination with --balloon
# DST_BALLOON, whose device set names the balloon as balloonDST_ENTRY,
# refuses the source at HELLO.
refused() {
	local test=$1 dst=$2 rc dst_pid st
	PORT=$((PORT + 1))
	"$VMM" run --incoming "tcp:127.0.0.1:$PORT" --mem 128M --balloon "$dst" \
		--console "file:$WORK/$test.out" </dev/null 2>"$WORK/$test.err" &
	dst_pid=$!
	wait_for $((5 * SLOW)) port_open "$PORT"
	timeout -k 5 $((30 * SLOW)) "$VMM" migrate "$WORK/src.sock" "tcp:127.0.0.1:$PORT" \
		>"$WORK/$test.migrate" 2>&1
	rc=$?
	wait_for $((10 * SLOW)) gone "$dst_pid"
	kill -9 "$dst_pid" 2>/dev/null
	wait "$dst_pid" 2>/dev/null
	st=$(mig_status)
	local want="incompatible source: devices 'uart,balloon${3}' here, 'uart,balloon:stats:free-page-hint' there"
	if [ $rc -ne 0 ] && [ "$(wc -l <"$WORK/$test.err")" -eq 1 ] &&
		grep -qF "$want" "$WORK/$test.err" && [ "$(pages_sent "$st")" = 0 ] &&
		"$VMM" status "$WORK/src.sock" 2>&1 | grep -q '"state": "running"'; then
		pass "$test"
	else
		fail "$test" "vmm migrate status $rc; expected '$want'" "destination: $(cat "$WORK/$test.err")" \
			"source: $(cat "$WORK/$test.migrate")" "migrate-status: $st"
	fi
}

if ! wait_for $((60 * SLOW)) up; then
	fail migrate_balloon_options_refused "the source guest never ran" "$(tail -5 "$WORK/src.out")" \
		"$(cat "$WORK/src.err")"
	kill -9 $src_pid 2>/dev/null
	exit 0
fi
# Without the statistics queue the driver's third queue would be another.
refused migrate_balloon_options_refused free-page-hint ":free-page-hint"
# One feature more than the source offered.
refused migrate_balloon_extra_option_refused stats=1,free-page-hint,free-page-reporting \
	":stats:free-page-hint:free-page-reporting"
kill -9 $src_pid 2>/dev/null
wait $src_pid 2>/dev/null
exit 0
