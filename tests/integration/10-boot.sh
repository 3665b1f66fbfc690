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
	boot serial $BOOT_TIMEOUT --mem 128M --cmdline "console=ttyS0 reboot=k panic=1 pci=off vmm.job=hello"
	expect_status serial_output serial 0 &&
		expect_line serial_output serial "Linux version 6\.1" &&
		expect_line serial_output serial "^vmm-guest: init" &&
		pass serial_output
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

test_poweroff() {
	boot poweroff $BOOT_TIMEOUT --mem 128M --cmdline "$CMDLINE_BASE vmm.job=poweroff"
	expect_status guest_poweroff poweroff 0 && pass guest_poweroff
}

test_reboot() {
	boot reboot $BOOT_TIMEOUT --mem 128M --cmdline "$CMDLINE_BASE vmm.job=reboot"
	expect_status guest_reboot reboot 0 && pass guest_reboot
}

test_boot_cpus 1
test_boot_cpus 2
test_serial_output
test_debug_exit
test_shell_status
test_poweroff
test_reboot
