#!/usr/bin/env bash
# tests/run's two-host suite: when one of the two test hosts stalled (75)
# or its kernel crashed (125 with the panic on its console), the suite runs
# once more and only that run counts; any other failure counts as it is
# and is never run again. No test host needed: a made-up runner stands in
# for scripts/testhost-pair (VMM_PAIR_RUNNER).
set -u
cd "$(dirname "$0")/../.."
# shellcheck source=tests/unit/rerun_case.sh
source tests/unit/rerun_case.sh
# case NAME FIRST SECOND WANT-LAST-LINE WANT-CALLS: FIRST and SECOND are what
# the runner prints and returns on its first and second call ("STATUS|LINES").
case_() { rerun_case pair_rerun VMM_PAIR_RUNNER pair "$1" "$4" "$5" "$2" "$3"; }

case_ stalled '75|PASS: a\nFAIL: b' '0|PASS: a\nPASS: b' "2 passed, 0 failed" 2
case_ kernel_crashed '125|PASS: a\n[host2]     [  296.17] Kernel panic - not syncing: NMI\nFAIL: b' \
	'0|PASS: a\nPASS: b' "2 passed, 0 failed" 2
case_ stalled_twice '75|FAIL: a' '75|PASS: a\nFAIL: b' "1 passed, 1 failed" 2
case_ plain_failure '1|PASS: a\nFAIL: b' '0|PASS: a\nPASS: b' "1 passed, 1 failed" 1
case_ failed_host_without_panic '125|FAIL: b' '0|PASS: b' "0 passed, 1 failed" 1
exit $bad
