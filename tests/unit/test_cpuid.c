/* cpuid_patch: per-vCPU APIC ids, topology and the hypervisor bit on a
 * synthetic CPUID table. */
#include <stdlib.h>
#include <string.h>

#include "tests/unit/unit.h"
#include "vmm/x86/cpuid.h"

#define HTT        (1u << 28)
#define HYPERVISOR (1u << 31)

enum { E_LEAF0, E_LEAF1, E_B0, E_B1, E_B2, E_8, E_1E, NENT };

static struct kvm_cpuid2 *make_cpuid(void)
{
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + NENT * sizeof(struct kvm_cpuid_entry2));

	if (!c)
		return NULL;
	c->nent = NENT;
	c->entries[E_LEAF0] = (struct kvm_cpuid_entry2){ .function = 0, .eax = 0x1f,
							 .ebx = 0x756e6547 };
	c->entries[E_LEAF1] = (struct kvm_cpuid_entry2){
		.function = 1, .eax = 0x000906ea, .ebx = 0xabcd0800, .ecx = 0x7ffafbff,
		.edx = 0xbfebfbff, /* HTT set, as on the host */
	};
	c->entries[E_B0] = (struct kvm_cpuid_entry2){ .function = 0xb, .index = 0, .eax = 9,
						      .ebx = 9, .ecx = 9, .edx = 9 };
	c->entries[E_B1] = (struct kvm_cpuid_entry2){ .function = 0xb, .index = 1, .eax = 9,
						      .ebx = 9, .ecx = 9, .edx = 9 };
	c->entries[E_B2] = (struct kvm_cpuid_entry2){ .function = 0xb, .index = 2, .eax = 9,
						      .ebx = 9, .ecx = 9, .edx = 9 };
	c->entries[E_8] = (struct kvm_cpuid_entry2){ .function = 0x80000008, .eax = 0x3030,
						     .ecx = 0xffffffff };
	c->entries[E_1E] = (struct kvm_cpuid_entry2){ .function = 0x8000001e, .eax = 99,
						      .ebx = 0x0100, .ecx = 0x0103 };
	return c;
}

static void check_cpu(unsigned cpu, unsigned ncpus)
{
	struct kvm_cpuid2 *c = make_cpuid();
	struct kvm_cpuid_entry2 *e;

	if (!c) {
		unit_fail(__FILE__, __LINE__, "out of memory");
		return;
	}
	cpuid_patch(c, cpu, ncpus);
	e = c->entries;

	/* Other leaves are left alone. */
	CHECK_EQ(e[E_LEAF0].eax, 0x1f);
	CHECK_EQ(e[E_LEAF0].ebx, 0x756e6547);
	CHECK_EQ(e[E_LEAF1].eax, 0x000906ea);

	/* Leaf 1: APIC id, logical processor count, hypervisor and HTT bits. */
	CHECK_EQ(e[E_LEAF1].ebx >> 24, cpu);
	CHECK_EQ((e[E_LEAF1].ebx >> 16) & 0xff, ncpus);
	CHECK_EQ(e[E_LEAF1].ebx & 0xffff, 0x0800); /* brand index, CLFLUSH size kept */
	CHECK(e[E_LEAF1].ecx & HYPERVISOR);
	CHECK_EQ(e[E_LEAF1].ecx & ~HYPERVISOR, 0x7ffafbff);
	CHECK_EQ(!!(e[E_LEAF1].edx & HTT), ncpus > 1);
	CHECK_EQ(e[E_LEAF1].edx & ~HTT, 0xbfebfbff & ~HTT);

	/* Leaf 0xb: one thread per core, ncpus cores, x2APIC id == cpu. */
	CHECK_EQ(e[E_B0].ebx, 1);
	CHECK_EQ((e[E_B0].ecx >> 8) & 0xff, 1); /* SMT level */
	CHECK_EQ(e[E_B0].ecx & 0xff, 0);
	CHECK_EQ(e[E_B0].eax & 0x1f, 0);
	CHECK_EQ(e[E_B0].edx, cpu);
	CHECK_EQ(e[E_B1].ebx, ncpus);
	CHECK_EQ(e[E_B1].edx, cpu);
	CHECK_EQ((e[E_B1].ecx >> 8) & 0xff, 2); /* core level */
	CHECK_EQ(e[E_B1].ecx & 0xff, 1);
	/* Shifting the APIC id right by EAX[4:0] leaves the package id: 0. */
	CHECK((1u << (e[E_B1].eax & 0x1f)) >= ncpus);
	CHECK((ncpus - 1) >> (e[E_B1].eax & 0x1f) == 0);
	CHECK_EQ(e[E_B2].ebx, 0); /* invalid level ends the enumeration */
	CHECK_EQ((e[E_B2].ecx >> 8) & 0xff, 0);
	CHECK_EQ(e[E_B2].ecx & 0xff, 2);
	CHECK_EQ(e[E_B2].edx, cpu);

	/* AMD: cores per package minus one, and the extended APIC id. */
	CHECK_EQ(e[E_8].ecx & 0xff, ncpus - 1);
	CHECK((1u << ((e[E_8].ecx >> 12) & 0xf)) >= ncpus);
	CHECK_EQ(e[E_8].eax, 0x3030);
	CHECK_EQ(e[E_1E].eax, cpu);
	CHECK_EQ(e[E_1E].ebx & 0xff, cpu);
	CHECK_EQ((e[E_1E].ebx >> 8) & 0xff, 0); /* one thread per core */
	free(c);
}

static void test_one_cpu(void)
{
	check_cpu(0, 1);
}

static void test_two_cpus(void)
{
	check_cpu(0, 2);
	check_cpu(1, 2);
}

static void test_many_cpus(void)
{
	check_cpu(0, 5);
	check_cpu(4, 5);
	check_cpu(17, 64);
	check_cpu(253, 254);
}

/* The TSC-deadline bit goes into leaf 1 ECX and nowhere else. */
static void test_tsc_deadline(void)
{
	struct kvm_cpuid2 *c = make_cpuid();

	if (!c) {
		unit_fail(__FILE__, __LINE__, "out of memory");
		return;
	}
	c->entries[E_LEAF1].ecx = 0x7efafbff; /* bit 24 clear, as KVM reports it */
	cpuid_set_tsc_deadline(c);
	CHECK_EQ(c->entries[E_LEAF1].ecx, 0x7ffafbff);
	CHECK_EQ(c->entries[E_LEAF1].edx, 0xbfebfbff);
	CHECK_EQ(c->entries[E_B0].ecx, 9);
	CHECK_EQ(c->entries[E_8].ecx, 0xffffffff);
	free(c);
}

int main(int argc, char **argv)
{
	unit_init(argc, argv);
	RUN(test_one_cpu);
	RUN(test_two_cpus);
	RUN(test_many_cpus);
	RUN(test_tsc_deadline);
	return unit_done();
}
