#!/usr/bin/env bash
# scripts/testhost.d/oops-line, which scripts/testhost uses to kill a test
# host whose kernel oopsed and did not panic (fresh-clone runs 31 and 32:
# 600 and 220 s of a test host running on with a dead vcpu0 thread). The
# console lines are the ones those runs kept.
set -u
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bad=0

# check NAME WANT-STATUS WANT-OUTPUT CONSOLE-LINES (printf %b, \r\n endings)
check() {
	local out rc
	printf '%b' "$4" >"$work/console"
	out=$(scripts/testhost.d/oops-line "$work/console")
	rc=$?
	if [ "$rc" = "$2" ] && [ "$out" = "$3" ]; then
		echo "PASS: oops_line_$1"
	else
		echo "FAIL: oops_line_$1 (status $rc, output '$out'; expected $2, '$3')"
		bad=1
	fi
}

boot='[    0.734716] mtrr: your CPUs had inconsistent fixed MTRR settings\r\n[    1.901424] amd_pstate: the _CPC object is not present in SBIOS or ACPI disabled\r\n'
guard='[   46.667913] BUG: TASK stack guard page was hit at 00000000212148a6 (stack is 000000005257c73d..000000003fa786ab)'
check stack_guard 0 "$guard" "${boot}$guard\r\n[   46.670262] Oops: stack guard page: 0000 [#1] PREEMPT SMP NOPTI\r\n[   46.670825] CPU: 0 UID: 0 PID: 1531 Comm: vcpu0\r\n"
check oops_only 0 '[   17.883013] Oops: general protection fault, probably for non-canonical address' \
	"${boot}[   17.883013] Oops: general protection fault, probably for non-canonical address\r\n[   17.884257] RIP: 0010:error_entry+0x14/0x170\r\n"
check healthy_boot 1 '' "$boot"
# A guest's or a program's text that merely contains the words is not the
# kernel's: only lines that start with the kernel's timestamp count.
check not_at_line_start 1 '' "${boot}testhost: BUG: in a message\r\nsome Oops: text\r\n"
check empty 1 '' ''
exit $bad
