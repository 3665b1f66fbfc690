#!/usr/bin/env bash
# The test host itself (scripts/testhost), before any test relies on it.
# Skipped where vmm runs natively.
source "$(dirname "$0")/lib.sh"

[ -n "${VMM_TESTHOST_NESTED:-}" ] || exit 0

# An oops in the test host's kernel is the emulator handing it a guest's
# state (docs/testhost.md, "Emulation faults"); the kernel must panic at
# once, so scripts/testhost ends and tests/run runs the tests again. Without
# oops=panic a test host whose vcpu0 thread oopsed ran on for 600 s, its
# tests waiting on that thread, until the scheduler found the corrupted
# stack (fresh-clone run 31, 2026-12-03).
v=$(cat /proc/sys/kernel/panic_on_oops 2>/dev/null)
if [ "$v" = 1 ]; then
	pass testhost_panics_on_oops
else
	fail testhost_panics_on_oops "kernel.panic_on_oops is '${v:-unreadable}', not 1 (scripts/testhost's kernel command line)"
fi
exit 0
