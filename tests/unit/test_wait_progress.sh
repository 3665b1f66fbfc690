#!/usr/bin/env bash
# tests/integration/lib.sh's wait_progress: it returns as soon as the
# condition holds, gives up early once the watched file (a guest's
# console) stops growing, and never waits past its bound. No KVM needed.
set -u
cd "$(dirname "$0")/../.."
VMM_TESTHOST_NESTED=
source tests/integration/lib.sh
bad=0
result() {
	if [ "$2" = 1 ]; then echo "PASS: wait_progress_$1"; else echo "FAIL: wait_progress_$1 ($3)"; bad=1; fi
}
f=$WORK/console
grow() { for _ in $(seq 1 "$1"); do echo line >>"$f"; sleep 0.3; done; }
done_file() { [ -e "$WORK/done" ]; }

# Growing, then the condition comes true: success.
: >"$f"
(grow 6; touch "$WORK/done") &
t0=$SECONDS
wait_progress 30 2 "$f" done_file >/dev/null
rc=$?
wait
result condition_met "$([ $rc = 0 ] && [ $((SECONDS - t0)) -lt 10 ] && echo 1)" "status $rc after $((SECONDS - t0)) s"

# Growing for a while, then still: given up after the stall, long before
# the bound, with a line that says so.
rm -f "$WORK/done"
: >"$f"
grow 4 &
t0=$SECONDS
out=$(wait_progress 60 2 "$f" done_file)
rc=$?
wait
result stall_gives_up "$([ $rc = 1 ] && [ $((SECONDS - t0)) -lt 10 ] && grep -q 'has not grown for 2 s' <<<"$out" && echo 1)" \
	"status $rc after $((SECONDS - t0)) s, output '$out'"

# Growing all the time, never done: the bound holds.
: >"$f"
grow 20 &
g=$!
t0=$SECONDS
wait_progress 3 2 "$f" done_file >/dev/null
rc=$?
kill $g 2>/dev/null
wait
result bound_holds "$([ $rc = 1 ] && [ $((SECONDS - t0)) -le 5 ] && echo 1)" "status $rc after $((SECONDS - t0)) s"
exit $bad
