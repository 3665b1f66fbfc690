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
		if (vm->cfg->boot_timer) {
			const uint64_t *t = vm->boot_step_ns;

			log_err("guest boot marker after %.3f ms", (double)atomic_load(&vm->boot_marker_ns) / 1e6);
			/* Where vmm's own share went: each step's end, in ms. */
			log_err("boot steps (ms): kvm %.1f, vm %.1f, memory %.1f, devices %.1f, "
				"kernel and initrd loaded %.1f, vcpus %.1f", t[0] / 1e6, t[1] / 1e6,
				t[2] / 1e6, t[3] / 1e6, t[4] / 1e6, t[5] / 1e6);
		}
	}
}

/* The 16-bit register at byte offset reg (0: PM1 status, 2: PM1 enable,
 * 4: PM1 control) of the PM block, or NULL. */
static uint16_t *pm_reg(struct legacy_devices *legacy, uint64_t reg)
{
	switch (reg) {
	case 0: return &legacy->pm1_sts;
	case 2: return &legacy->pm1_en;
	case 4: return &legacy->pm1_cnt;
	}
	return NULL;
}

/* PM1 status (write 1 to clear), PM1 enable and PM1 control keep what the
 * guest wrote, since ACPICA reads back what it enables; control always shows
 * SCI_EN, so the guest sees the machine in ACPI mode. */
static void acpi_pm_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
	struct legacy_devices *legacy = opaque;

	for (uint32_t i = 0; i < len; i++) {
		uint64_t byte = offset + i;
		unsigned shift = (unsigned)(byte & 1) * 8;
		uint16_t *reg = pm_reg(legacy, byte & ~1ULL);
		uint16_t v = (uint16_t)(data[i] << shift);

		if (!is_write) {
			uint16_t cur = reg ? *reg : 0;

			if (reg == &legacy->pm1_cnt)
				cur |= ACPI_PM1_SCI_EN;
			data[i] = (uint8_t)(cur >> shift);
		} else if (reg == &legacy->pm1_sts) {
			*reg &= (uint16_t)~v;
		} else if (reg) {
			*reg = (uint16_t)((*reg & ~(0xffu << shift)) | v);
		} else if (byte == ACPI_RESET_PORT - ACPI_PM1_EVT_PORT && data[i] == ACPI_RESET_VALUE) {
			vm_request_stop(legacy->vm, VM_STOP_RESET, 0);
		}
	}
	if (is_write && acpi_is_poweroff(legacy->pm1_cnt))
		vm_request_stop(legacy->vm, VM_STOP_POWEROFF, 0);
}

int legacy_register(struct vm *vm)
{
	vm->legacy.vm = vm;
	int rc = bus_register(&vm->pio, I8042_DATA_PORT, 5, i8042_io, vm);

	if (!rc)
		rc = bus_register(&vm->pio, CMOS_PORT, 2, cmos_io, vm);
	if (!rc)
		rc = bus_register(&vm->pio, DEBUG_EXIT_PORT, 2, test_ports_io, vm);
	if (!rc)
		rc = bus_register(&vm->pio, ACPI_PM1_EVT_PORT, ACPI_PM_PORTS_LEN, acpi_pm_io,
				  &vm->legacy);
	return rc;
}
