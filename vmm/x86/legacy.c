/* Legacy PC ports; see legacy.h. */
#include "legacy.h"

#include <stdio.h>
#include <string.h>

#include "../util.h"
#include "../vm.h"
#include "acpi.h"

#define I8042_DATA_PORT    0x60
#define I8042_COMMAND_PORT 0x64
#define I8042_CMD_RESET    0xfe
#define CMOS_PORT          0x70

static void i8042_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
	struct vm *vm = opaque;

	if (!is_write) {
		/* Status 0: both buffers empty, so the guest's kb_wait() returns at once. */
		memset(data, 0, len);
		return;
	}
	if (offset == I8042_COMMAND_PORT - I8042_DATA_PORT && data[0] == I8042_CMD_RESET)
		vm_request_stop(vm, VM_STOP_RESET, 0);
}

static void cmos_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
	(void)opaque;
	(void)offset;
	/* No RTC: reads as zero, so "update in progress" is never set and the
	 * guest takes its wall clock from kvmclock instead. */
	if (!is_write)
		memset(data, 0, len);
}

static void test_ports_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
	struct vm *vm = opaque;
	uint64_t expected = 0;

	if (!is_write) {
		memset(data, 0xff, len);
		return;
	}
	if (offset == 0) {
		vm_request_stop(vm, VM_STOP_DEBUG_EXIT, data[0]);
	} else if (atomic_compare_exchange_strong(&vm->boot_marker_ns, &expected,
						  now_ns() - vm->start_ns)) {
		if (vm->cfg->boot_timer)
			log_err("guest boot marker after %.3f ms",
				(double)atomic_load(&vm->boot_marker_ns) / 1e6);
	}
}

static void acpi_pm_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
	struct vm *vm = opaque;

	if (!is_write) {
		memset(data, 0, len);
		return;
	}
	if (offset == 0 && acpi_is_poweroff(data[0]))
		vm_request_stop(vm, VM_STOP_POWEROFF, 0);
	else if (offset == ACPI_RESET_PORT - ACPI_SLEEP_CTL_PORT && data[0] == ACPI_RESET_VALUE)
		vm_request_stop(vm, VM_STOP_RESET, 0);
}

int legacy_register(struct vm *vm)
{
	int rc = bus_register(&vm->pio, I8042_DATA_PORT, 5, i8042_io, vm);

	if (!rc)
		rc = bus_register(&vm->pio, CMOS_PORT, 2, cmos_io, vm);
	if (!rc)
		rc = bus_register(&vm->pio, DEBUG_EXIT_PORT, 2, test_ports_io, vm);
	if (!rc)
		rc = bus_register(&vm->pio, ACPI_SLEEP_CTL_PORT, 3, acpi_pm_io, vm);
	return rc;
}
