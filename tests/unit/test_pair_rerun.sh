#!/usr/bin/env bash
# tests/run's two-host suite: when one of the two test hosts stalled (75)
# or its kernel crashed (125 with the panic on its console), the suite runs
# once more and only that run counts; any other failure counts as it is
# and is never run again. No test host needed: a made-up runner stands in
# for scripts/testhost-pair (VMM_PAIR_RUNNER).
set -u
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bad=0

# case NAME FIRST SECOND WANT-LAST-LINE WANT-CALLS: FIRST and SECOND are what
# the runner prints and returns on its first and second call ("STATUS|LINES").
case_() {
	local name=$1 first=$2 second=$3 want=$4 calls=$5 out got n
	rm -f "$work/calls"
	cat >"$work/runner" <<RUNNER
#!/usr/bin/env bash
echo x >>"$work/calls"
n=\$(wc -l <"$work/calls")
if [ "\$n" = 1 ]; then spec='$first'; else spec='$second'; fi
printf '%b\n' "\${spec#*|}"
exit "\${spec%%|*}"
RUNNER
	chmod +x "$work/runner"
	out=$(VMM_PAIR_RUNNER=$work/runner tests/run pair 2>&1)
	got=$(tail -n1 <<<"$out")
	n=$(wc -l <"$work/calls" 2>/dev/null || echo 0)
	if [ "$got" = "$want" ] && [ "$n" = "$calls" ]; then
		echo "PASS: pair_rerun_$name"
	else
		echo "FAIL: pair_rerun_$name (last line '$got', expected '$want'; runner called $n times, expected $calls)"
		sed 's/^/    /' <<<"$out"
		bad=1
	fi
}

case_ stalled '75|PASS: a\nFAIL: b' '0|PASS: a\nPASS: b' "2 passed, 0 failed" 2
case_ kernel_crashed '125|PASS: a\n[host2]     [  296.17] Kernel panic - not syncing: NMI\nFAIL: b' \
	'0|PASS: a\nPASS: b' "2 passed, 0 failed" 2
case_ stalled_twice '75|FAIL: a' '75|PASS: a\nFAIL: b' "1 passed, 1 failed" 2
case_ plain_failure '1|PASS: a\nFAIL: b' '0|PASS: a\nPASS: b' "1 passed, 1 failed" 1
case_ failed_host_without_panic '125|FAIL: b' '0|PASS: b' "0 passed, 1 failed" 1
exit $bad
