/* libFuzzer target for the loaders of the migration stream's own STATE
 * sections (docs/migration-state.md): "vm" (state_load_vm), "vcpu"
 * (state_load_vcpu) and "uart" (uart_load). The virtio sections have
 * their own target, fuzz_devload.
 *
 * The input's first byte picks the section (mod 3: vm, vcpu, uart); the
 * rest is the section's bytes as a STATE record carries them.
 *
 * The vm and vcpu loaders run with fd -1, so a blob that passes every
 * check reaches its first ioctl and fails there with -EBADF. The
 * documented rule is that nothing is written to KVM before the whole blob
 * passed, so -EBADF promises a valid blob, which is checked here on its
 * own terms: the items parse, each irqchip item holds the chip its tag
 * names, the MSR item is well formed, and a TSC rate is not 0 (the saver
 * writes the item only for a rate KVM reported). Any other result must be
 * -EBADMSG with a reason.
 *
 * The UART loader must leave the UART as it was when it fails, and what it
 * accepts must be what uart_save() writes again: bytes the 16550 model
 * never holds (reserved bits, a flag other than 0 or 1) are refused, not
 * masked. The saved interrupt line (byte 8) is derived again on load, so
 * it only has to be 0 or 1. */
#include <errno.h>
#include <linux/kvm.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "migrate/state.h"
#include "vmm/x86/uart.h"
#include "tests/fuzz/fuzz.h"

#define UART_REGS 9 /* the register bytes ahead of the FIFO in uart_save() */

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void fuzz_vm(const uint8_t *blob, size_t len)
{
	static const struct {
		uint16_t tag;
		uint32_t chip;
	} chips[] = {
		{ STATE_VM_PIC_MASTER, KVM_IRQCHIP_PIC_MASTER },
		{ STATE_VM_PIC_SLAVE, KVM_IRQCHIP_PIC_SLAVE },
		{ STATE_VM_IOAPIC, KVM_IRQCHIP_IOAPIC },
	};
	struct state_item items[STATE_VM_NITEMS];
	char err[256] = "";
	int rc = state_load_vm(-1, blob, len, err, sizeof(err));

	ENSURE(rc == -EBADMSG || rc == -EBADF);
	ENSURE(err[0]);
	if (rc != -EBADF)
		return;
	ENSURE(state_parse_items(blob, len, state_vm_items, state_vm_nitems, items, err,
				 sizeof(err)) == 0);
	for (unsigned i = 0; i < sizeof(chips) / sizeof(chips[0]); i++) {
		const struct state_item *it =
			state_find_item(items, state_vm_items, state_vm_nitems, chips[i].tag);

		ENSURE(it && it->len == sizeof(struct kvm_irqchip));
		ENSURE(rd32(it->data + offsetof(struct kvm_irqchip, chip_id)) == chips[i].chip);
	}
}

static void fuzz_vcpu(const uint8_t *blob, size_t len)
{
	struct state_item items[STATE_VCPU_NITEMS];
	const struct state_item *it;
	char err[256] = "";
	int rc = state_load_vcpu(-1, blob, len, err, sizeof(err));

	ENSURE(rc == -EBADMSG || rc == -EBADF || rc == -ENOMEM);
	ENSURE(err[0]);
	if (rc != -EBADF)
		return;
	ENSURE(state_parse_items(blob, len, state_vcpu_items, state_vcpu_nitems, items, err,
				 sizeof(err)) == 0);
	it = state_find_item(items, state_vcpu_items, state_vcpu_nitems, STATE_VCPU_MSRS);
	ENSURE(it && state_check_msrs(it->data, it->len, err, sizeof(err)) == 0);
	it = state_find_item(items, state_vcpu_items, state_vcpu_nitems, STATE_VCPU_TSC_KHZ);
	ENSURE(!it || (it->len == 4 && rd32(it->data) != 0));
}

static int irq_level;

static void set_irq(void *opaque, int level)
{
	(void)opaque;
	irq_level = level;
}

static void output(void *opaque, uint8_t byte)
{
	(void)opaque;
	(void)byte;
}

static const struct uart_ops uart_ops = { .set_irq = set_irq, .output = output };

/* The UART's state without its lock (which holds no state). */
static void uart_snapshot(const struct uart *u, uint8_t *out, size_t size)
{
	size_t off = offsetof(struct uart, ier);

	ENSURE(size == sizeof(*u) - off);
	memcpy(out, (const uint8_t *)u + off, size);
}

static void fuzz_uart(const uint8_t *blob, size_t len)
{
	static struct uart u;
	static uint8_t before[sizeof(struct uart) - offsetof(struct uart, ier)];
	static uint8_t after[sizeof(before)];
	struct state_reader r;
	struct state_writer w;
	uint8_t busy[5] = { 'a', 'b', 'c', 'd', 'e' };
	int rc;

	/* A UART in use: bytes queued, interrupts enabled and raised. */
	uart_init(&u, &uart_ops, NULL);
	u.ier = 0x03;
	u.scr = 0x5a;
	uart_receive(&u, busy, sizeof(busy));
	uart_snapshot(&u, before, sizeof(before));

	state_reader_init(&r, blob, len);
	rc = uart_load(&u, &r);
	ENSURE(rc == 0 || rc == -EINVAL);
	if (rc) {
		uart_snapshot(&u, after, sizeof(after));
		ENSURE(!memcmp(before, after, sizeof(before)));
		return;
	}
	ENSURE(len >= UART_REGS && blob[UART_REGS - 1] <= 1);
	ENSURE(u.irq_level == irq_level);
	state_writer_init(&w);
	uart_save(&u, &w);
	ENSURE(!w.error && w.len == len);
	ENSURE(!memcmp(w.buf, blob, UART_REGS - 1));
	ENSURE(!memcmp(w.buf + UART_REGS, blob + UART_REGS, len - UART_REGS));
	state_writer_free(&w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	switch (data[0] % 3) {
	case 0: fuzz_vm(data + 1, size - 1); break;
	case 1: fuzz_vcpu(data + 1, size - 1); break;
	default: fuzz_uart(data + 1, size - 1); break;
	}
	return 0;
}
