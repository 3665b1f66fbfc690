/* mptable_write: the MP floating pointer and configuration table, checked
 * by walking the bytes as a guest would. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/unit.h"
#include "vmm/x86/mptable.h"

#define GPA 0xf0000u

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)get16(p) | (uint32_t)get16(p + 2) << 16;
}

static uint8_t sum(const uint8_t *p, size_t len)
{
	uint8_t s = 0;

	while (len--)
		s = (uint8_t)(s + *p++);
	return s;
}

/* Writes and checks the table for ncpus, as a guest would parse it. */
static void check_table(unsigned ncpus)
{
	size_t size = mptable_size(ncpus);
	uint8_t *buf = malloc(size + 64), *mpc, *p, *end;
	unsigned cpus = 0, buses = 0, ioapics = 0, intsrc = 0, lintsrc = 0, entries, bsps = 0;
	unsigned ioapic_id = 0xffff;
	uint16_t len;

	if (!buf) {
		unit_fail(__FILE__, __LINE__, "out of memory");
		return;
	}
	memset(buf, 0xcc, size + 64);
	CHECK_EQ(mptable_write(buf, size, GPA, ncpus), (int)size);
	/* Nothing written past the table. */
	for (size_t i = size; i < size + 64; i++)
		if (buf[i] != 0xcc) {
			unit_fail(__FILE__, __LINE__, "%u cpus: byte %zu past the table written",
				  ncpus, i);
			break;
		}

	/* Floating pointer. */
	CHECK(memcmp(buf, "_MP_", 4) == 0);
	CHECK_EQ(get32(buf + 4), GPA + 16);
	CHECK_EQ(buf[8], 1);
	CHECK_EQ(buf[9], 4);
	CHECK_EQ(sum(buf, 16), 0);
	CHECK_EQ(buf[11], 0); /* feature byte 1: 0 means a configuration table is present */

	/* Configuration table header. */
	mpc = buf + 16;
	CHECK(memcmp(mpc, "PCMP", 4) == 0);
	len = get16(mpc + 4);
	CHECK_EQ(len, size - 16);
	if (len > size - 16)
		len = (uint16_t)(size - 16);
	CHECK_EQ(sum(mpc, len), 0);
	CHECK_EQ(mpc[6], 4);
	entries = get16(mpc + 34);
	CHECK_EQ(entries, ncpus + 1 + 1 + 24 + 2);
	CHECK_EQ(get32(mpc + 36), 0xfee00000u);

	/* Entries, in the order the spec asks: processors, buses, I/O APICs,
	 * I/O interrupts, local interrupts. */
	p = mpc + 44;
	end = mpc + len;
	for (unsigned n = 0; n < entries && p < end; n++) {
		switch (p[0]) {
		case 0: /* processor */
			CHECK_EQ(p[1], cpus); /* APIC id == index */
			CHECK(p[3] & 1);      /* enabled */
			if (p[3] & 2)
				bsps++;
			CHECK_EQ(!!(p[3] & 2), cpus == 0);
			CHECK_EQ(buses + ioapics + intsrc + lintsrc, 0);
			cpus++;
			p += 20;
			break;
		case 1: /* bus */
			CHECK(memcmp(p + 2, "ISA   ", 6) == 0);
			CHECK_EQ(p[1], 0);
			buses++;
			p += 8;
			break;
		case 2: /* I/O APIC */
			ioapic_id = p[1];
			CHECK_EQ(p[1], ncpus);
			CHECK(p[3] & 1);
			CHECK_EQ(get32(p + 4), 0xfec00000u);
			ioapics++;
			p += 8;
			break;
		case 3: /* I/O interrupt: ISA IRQ n to IOAPIC pin n */
			CHECK_EQ(p[1], 0);      /* INT */
			CHECK_EQ(p[4], 0);      /* ISA bus */
			CHECK_EQ(p[5], intsrc); /* source IRQ */
			CHECK_EQ(p[6], ioapic_id);
			CHECK_EQ(p[7], intsrc); /* pin */
			CHECK_EQ(lintsrc, 0);
			intsrc++;
			p += 8;
			break;
		case 4: /* local interrupt */
			if (lintsrc == 0) {
				CHECK_EQ(p[1], 3); /* ExtINT */
				CHECK_EQ(p[7], 0); /* LINT0 */
			} else {
				CHECK_EQ(p[1], 1);    /* NMI */
				CHECK_EQ(p[6], 0xff); /* all local APICs */
				CHECK_EQ(p[7], 1);    /* LINT1 */
			}
			lintsrc++;
			p += 8;
			break;
		default:
			unit_fail(__FILE__, __LINE__, "%u cpus: entry %u has type %u", ncpus, n,
				  p[0]);
			p = end;
			break;
		}
	}
	CHECK(p == end); /* the entries fill the table exactly */
	CHECK_EQ(cpus, ncpus);
	CHECK_EQ(bsps, 1);
	CHECK_EQ(buses, 1);
	CHECK_EQ(ioapics, 1);
	CHECK_EQ(intsrc, 24);
	CHECK_EQ(lintsrc, 2);
	free(buf);
}

static void test_1_cpu(void)
{
	check_table(1);
}

static void test_2_cpus(void)
{
	check_table(2);
}

static void test_32_cpus(void)
{
	check_table(32);
}

static void test_254_cpus(void)
{
	check_table(254);
}

static void test_size(void)
{
	CHECK_EQ(mptable_size(1), 16 + 44 + 20 + 28 * 8);
	CHECK_EQ(mptable_size(254) - mptable_size(253), 20);
}

static void test_rejects(void)
{
	size_t size = mptable_size(4);
	uint8_t *buf = malloc(mptable_size(254) + 20);

	REQUIRE(buf);
	memset(buf, 0xcc, size);
	CHECK_EQ(mptable_write(buf, mptable_size(254) + 20, GPA, 0), -EINVAL);
	CHECK_EQ(mptable_write(buf, mptable_size(254) + 20, GPA, 255), -EINVAL);
	CHECK_EQ(mptable_write(buf, mptable_size(254) + 20, GPA, 1000), -EINVAL);
	CHECK_EQ(mptable_write(buf, size - 1, GPA, 4), -ENOSPC);
	CHECK_EQ(mptable_write(buf, 0, GPA, 1), -ENOSPC);
	CHECK_EQ(buf[0], 0xcc); /* rejected writes touch nothing */
	CHECK_EQ(buf[size - 1], 0xcc);
	CHECK_EQ(mptable_write(buf, size, GPA, 4), (int)size);
	free(buf);
}

int main(int argc, char **argv)
{
	unit_init(argc, argv);
	RUN(test_1_cpu);
	RUN(test_2_cpus);
	RUN(test_32_cpus);
	RUN(test_254_cpus);
	RUN(test_size);
	RUN(test_rejects);
	return unit_done();
}
