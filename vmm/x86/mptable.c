/* MP table construction; see mptable.h. All fields are little-endian, as on
 * the x86 guest, and written byte by byte so the host's layout never leaks. */
#include "mptable.h"

#include <errno.h>
#include <string.h>

#include "vmm/le.h"

#define MPF_SIZE 16
#define MPC_HDR_SIZE 44
#define MPC_CPU_SIZE 20
#define MPC_SMALL_SIZE 8 /* bus, IOAPIC, I/O and local interrupt entries */

enum { MP_PROCESSOR = 0, MP_BUS = 1, MP_IOAPIC = 2, MP_INTSRC = 3, MP_LINTSRC = 4 };
enum { MP_INT = 0, MP_NMI = 1, MP_EXTINT = 3 };

size_t mptable_size(unsigned ncpus)
{
	return MPF_SIZE + MPC_HDR_SIZE + (size_t)ncpus * MPC_CPU_SIZE +
	       (2 + MPTABLE_IOAPIC_PINS + 2) * MPC_SMALL_SIZE;
}

static uint8_t *put_cpu(uint8_t *p, unsigned id)
{
	p[0] = MP_PROCESSOR;
	p[1] = (uint8_t)id;                  /* local APIC id */
	p[2] = 0x14;                         /* local APIC version */
	p[3] = (uint8_t)(1 | (id == 0) << 1); /* enabled, bootstrap processor */
	put_le32(p + 4, 0x600);                 /* family 6 */
	put_le32(p + 8, 0x201);                 /* FPU and APIC present */
	return p + MPC_CPU_SIZE;
}

/* An I/O or local interrupt entry; polarity and trigger conform to the bus. */
static uint8_t *put_irq(uint8_t *p, uint8_t type, uint8_t irqtype, uint8_t src_irq,
			uint8_t dst_apic, uint8_t dst_pin)
{
	p[0] = type;
	p[1] = irqtype;
	p[4] = 0; /* source bus: ISA */
	p[5] = src_irq;
	p[6] = dst_apic;
	p[7] = dst_pin;
	return p + MPC_SMALL_SIZE;
}

int mptable_write(uint8_t *buf, size_t bufsize, uint32_t gpa, unsigned ncpus)
{
	size_t size = mptable_size(ncpus);
	uint8_t ioapic_id = (uint8_t)ncpus;
	uint8_t *mpc = buf + MPF_SIZE, *p;

	if (ncpus == 0 || ncpus > 254)
		return -EINVAL;
	if (bufsize < size)
		return -ENOSPC;
	memset(buf, 0, size);

	memcpy(buf, "_MP_", 4);
	put_le32(buf + 4, gpa + MPF_SIZE);
	buf[8] = 1; /* length in 16-byte units */
	buf[9] = 4; /* MP spec 1.4 */

	memcpy(mpc, "PCMP", 4);
	put_le16(mpc + 4, (uint16_t)(size - MPF_SIZE));
	mpc[6] = 4;
	memcpy(mpc + 8, "VMM     ", 8);
	memcpy(mpc + 16, "MICROVM     ", 12);
	put_le16(mpc + 34, (uint16_t)(ncpus + 2 + MPTABLE_IOAPIC_PINS + 2));
	put_le32(mpc + 36, MPTABLE_LAPIC_ADDR);

	p = mpc + MPC_HDR_SIZE;
	for (unsigned i = 0; i < ncpus; i++)
		p = put_cpu(p, i);
	p[0] = MP_BUS; /* bus 0 */
	memcpy(p + 2, "ISA   ", 6);
	p += MPC_SMALL_SIZE;
	p[0] = MP_IOAPIC;
	p[1] = ioapic_id;
	p[2] = 0x11; /* IOAPIC version */
	p[3] = 1;    /* enabled */
	put_le32(p + 4, MPTABLE_IOAPIC_ADDR);
	p += MPC_SMALL_SIZE;
	/* Every IOAPIC pin is wired to the ISA IRQ of the same number. */
	for (unsigned pin = 0; pin < MPTABLE_IOAPIC_PINS; pin++)
		p = put_irq(p, MP_INTSRC, MP_INT, (uint8_t)pin, ioapic_id, (uint8_t)pin);
	/* Virtual wire mode: the PIC reaches the BSP through LINT0, NMIs all CPUs through LINT1. */
	p = put_irq(p, MP_LINTSRC, MP_EXTINT, 0, 0, 0);
	p = put_irq(p, MP_LINTSRC, MP_NMI, 0, 0xff, 1);

	mpc[7] = checksum8(mpc, size - MPF_SIZE);
	buf[10] = checksum8(buf, MPF_SIZE);
	return (int)size;
}
