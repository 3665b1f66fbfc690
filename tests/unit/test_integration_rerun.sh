#!/usr/bin/env bash
# tests/run's integration suite: a test host that stalled or crashed runs
# the tests again once, from the script it was in; a script whose failures
# all carry emulator evidence runs once more, alone. Neither rerun may hide
# that the test host ended a run unfinished (timed out, or crashed again
# in the rerun): the scripts it never reached did not pass. Fresh-clone
# run 31 (2026-12-03) counted "371 passed, 0 failed" after its rerun from
# 52-migrate-faults.sh crashed too, and 55- to 70-*.sh never ran. No test
# host needed: a made-up runner stands in for scripts/testhost
# (VMM_INTEGRATION_RUNNER).
set -u
cd "$(dirname "$0")/../.."
# shellcheck source=tests/unit/rerun_case.sh
source tests/unit/rerun_case.sh
case_() { rerun_case integration_rerun VMM_INTEGRATION_RUNNER integration "$@"; }

m50='-- tests/integration/50-migrate.sh'
m52='-- tests/integration/52-migrate-faults.sh'
fault='FAIL: hop\nEMULATOR-FAULT: hop'
oops='    [   35.97] BUG: TASK stack guard page was hit at 00000000904cbdb5'
panic='    [   17.88] Kernel panic - not syncing: Fatal exception in interrupt'

# Crashed in 52, ran clean from 52, then 50's emulation fault passed alone.
case_ crashed_then_clean "3 passed, 0 failed" 3 \
	"125|$m50\n$fault\n$m52\nPASS: f1\n$oops" \
	"0|$m52\nPASS: f1\nPASS: f2" \
	"0|$m50\nPASS: hop"
# Run 31: the rerun from 52 crashed again; 50 then passed alone. The scripts
# after 52 never ran: not a green run.
case_ crashed_twice_then_emulator_rerun "1 passed, 1 failed" 3 \
	"125|$m50\n$fault\n$m52\nPASS: f1\n$oops" \
	"125|$m52\n$panic" \
	"0|$m50\nPASS: hop"
# Timed out in 60 (no rerun for that); 50's emulation fault passed alone.
case_ timed_out_then_emulator_rerun "2 passed, 1 failed" 2 \
	"124|$m50\n$fault\n-- tests/integration/60-blk.sh\nPASS: b" \
	"0|$m50\nPASS: hop"
# An emulation fault whose rerun fails again counts as failed.
case_ emulator_rerun_fails "0 passed, 1 failed" 2 \
	"1|$m50\n$fault" \
	"1|$m50\nFAIL: hop"
exit $bad
