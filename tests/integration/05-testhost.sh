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

# A guest's triple fault must leave its RIP in the kvm_exit trace
# (scripts/testhost.d/init): KVM on AMD resets the vCPU before it reports
# the shutdown, so vmm sees only the reset vector, and an emulation fault
# that ended in a triple fault failed CI's blk_garbage with no evidence
# (2026-12-03). reboot=t makes our guest kernel triple-fault on purpose
# (an empty IDT, then int3), at a RIP in its own text.
boot triple $BOOT_TIMEOUT --mem 128M --cmdline "$CMDLINE_BASE reboot=t vmm.job=reboot"
rip=$(kvm_exit_rips shutdown | tail -n1)
if ! out_of triple | grep -q 'triple fault at rip 0xfff0 '; then
	fail testhost_traces_triple_fault "the guest did not triple-fault as reboot=t makes it" "$(out_of triple | tail -5)"
elif [[ $rip =~ ^0xffffffff[89ab][0-9a-f]{7}$ ]]; then
	pass testhost_traces_triple_fault
else
	fail testhost_traces_triple_fault "the kvm_exit trace has no shutdown at a guest kernel RIP (last: '${rip:-none}')" \
		"$(cat /sys/kernel/tracing/events/kvm/kvm_exit/filter 2>&1 | head -2)"
fi
exit 0
