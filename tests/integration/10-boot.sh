#!/usr/bin/env bash
# Boot tests: the guest reaches init with 1 and 2 vCPUs, its output arrives
# on the serial console, and debug-exit, poweroff and reboot end vmm.
source "$(dirname "$0")/lib.sh"

test_boot_cpus() {
	local n=$1 name="boot_${1}cpu"
	boot "$name" $BOOT_TIMEOUT --cpus "$n" --mem 256M --cmdline "$CMDLINE_BASE vmm.job=hello"
	expect_status "$name" "$name" 0 &&
		expect_line "$name" "$name" "^vmm-guest: hello" &&
		expect_line "$name" "$name" "^vmm-guest: cpus=$n\$" &&
		pass "$name"
}

test_serial_output() {
	# Without "quiet" the kernel's own boot log must come through the UART.
	# loglevel=6: notices (the banner) but not the info chatter, which takes
	# minutes to crawl through an emulated UART under nested emulation.
	boot serial $((2 * BOOT_TIMEOUT)) --mem 128M \
		--cmdline "console=ttyS0 reboot=k panic=1 pci=off loglevel=6 vmm.job=hello"
	expect_status serial_output serial 0 &&
		expect_line serial_output serial "Linux version 6\.1" &&
		expect_line serial_output serial "^vmm-guest: init" &&
		pass serial_output
}

test_vmlinux() {
	# The same kernel as an uncompressed ELF vmlinux, entered at startup_64.
	KERNEL=${KERNEL%/*}/vmlinux boot vmlinux $BOOT_TIMEOUT --cpus 2 --mem 256M \
		--cmdline "$CMDLINE_BASE vmm.job=hello"
	expect_status boot_vmlinux vmlinux 0 &&
		expect_line boot_vmlinux vmlinux "^vmm-guest: cpus=2\$" &&
		pass boot_vmlinux
}

test_debug_exit() {
	boot exit42 $BOOT_TIMEOUT --mem 128M --cmdline "$CMDLINE_BASE vmm.job=exit vmm.arg=42"
	expect_status debug_exit_status exit42 42 && pass debug_exit_status
}

test_shell_status() {
	# The guest's own program decides the status: it travels out through the port.
	boot sh7 $BOOT_TIMEOUT --mem 128M --cmdline "$CMDLINE_BASE vmm.job=sh vmm.arg=\"echo from-shell; exit 7\""
	expect_status shell_exit_status sh7 7 &&
		expect_line shell_exit_status sh7 "^from-shell" &&
		pass shell_exit_status
}

test_tsc_deadline() {
	# KVM emulates the TSC-deadline timer; with its CPUID bit the guest
	# uses it and skips calibrating its LAPIC timer (about 100 ms of guest
	# time at every boot, 250 ms nested).
	boot tscdl $BOOT_TIMEOUT --mem 128M --cmdline "$CMDLINE_BASE vmm.job=sh vmm.arg=\"grep -o -m1 tsc_deadline_timer /proc/cpuinfo; dmesg | grep -o 'TSC deadline timer available'; exit 0\""
	expect_status tsc_deadline_timer tscdl 0 &&
		expect_line tsc_deadline_timer tscdl "^tsc_deadline_timer" &&
		expect_line tsc_deadline_timer tscdl "^TSC deadline timer available" &&
		pass tsc_deadline_timer
}

test_poweroff() {
	boot poweroff $BOOT_TIMEOUT --mem 128M --cmdline "$CMDLINE_BASE vmm.job=poweroff"
	expect_status guest_poweroff poweroff 0 && pass guest_poweroff
}

test_reboot() {
	boot reboot $BOOT_TIMEOUT --mem 128M --cmdline "$CMDLINE_BASE vmm.job=reboot"
	expect_status guest_reboot reboot 0 && pass guest_reboot
}

test_above_4g() {
	# 3.5 GiB: RAM continues at 4 GiB after the 32-bit MMIO hole.
	boot big $((2 * BOOT_TIMEOUT)) --mem 3584M --cmdline "$CMDLINE_BASE vmm.job=hello"
	local kib
	kib=$(out_of big | sed -n 's/^vmm-guest: memtotal-kib=//p')
	if expect_status mem_above_4g big 0 && [ -n "$kib" ] && [ "$kib" -gt $((3300 * 1024)) ]; then
		pass mem_above_4g
	elif [ "$(rc_of big)" = 0 ]; then
		fail mem_above_4g "guest MemTotal ${kib:-?} kB, expected more than 3300 MiB"
	fi
}

test_ctrl_a_x() {
	# On a terminal, Ctrl-A x quits with status 0 and the terminal is restored.
	printf '\001x' >"$WORK/keys"
	timeout -k 5 $BOOT_TIMEOUT script -qec "$VMM run --kernel $KERNEL --initrd $INITRD --mem 128M \
		--cmdline 'console=ttyS0 quiet vmm.job=sh vmm.arg=\"sleep 600\"'" /dev/null \
		<"$WORK/keys" >"$WORK/ctrla.out" 2>&1
	local rc=$?
	if [ $rc = 0 ]; then
		pass console_ctrl_a_x
	else
		fail console_ctrl_a_x "exit status $rc" "$(tail -5 "$WORK/ctrla.out")"
	fi
}

test_boot_cpus 1
test_boot_cpus 2
test_vmlinux
test_serial_output
test_debug_exit
test_shell_status
test_tsc_deadline
test_poweroff
test_reboot
test_above_4g
test_ctrl_a_x

exit 0
