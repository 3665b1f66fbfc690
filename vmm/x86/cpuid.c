/* CPUID patching; see cpuid.h. Every vCPU is one core of a single socket
 * with one thread per core, and its APIC id is its index. */
#include "cpuid.h"

#include <stdbool.h>

#define CPUID_HYPERVISOR (1u << 31) /* leaf 1 ECX */
#define CPUID_HTT        (1u << 28) /* leaf 1 EDX */
#define CPUID_TSC_DEADLINE (1u << 24) /* leaf 1 ECX */
#define TOPO_LEVEL_SMT   1
#define TOPO_LEVEL_CORE  2

static unsigned order_of(unsigned n)
{
	unsigned bits = 0;

	while ((1u << bits) < n)
		bits++;
	return bits;
}

static void patch_topology_leaf(struct kvm_cpuid_entry2 *e, unsigned cpu, unsigned ncpus)
{
	e->edx = cpu; /* x2APIC id */
	switch (e->index) {
	case 0:
		e->eax = 0; /* one thread per core: no SMT bits */
		e->ebx = 1;
		e->ecx = TOPO_LEVEL_SMT << 8;
		break;
	case 1:
		e->eax = order_of(ncpus);
		e->ebx = ncpus;
		e->ecx = TOPO_LEVEL_CORE << 8 | 1;
		break;
	default:
		e->eax = e->ebx = 0;
		e->ecx = e->index;
		break;
	}
}

void cpuid_patch(struct kvm_cpuid2 *cpuid, unsigned cpu, unsigned ncpus)
{
	for (unsigned i = 0; i < cpuid->nent; i++) {
		struct kvm_cpuid_entry2 *e = &cpuid->entries[i];

		switch (e->function) {
		case 1:
			e->ebx = (e->ebx & 0x0000ffff) | (cpu << 24) | ((ncpus & 0xff) << 16);
			e->ecx |= CPUID_HYPERVISOR;
			if (ncpus > 1)
				e->edx |= CPUID_HTT;
			else
				e->edx &= ~CPUID_HTT;
			break;
		case 4:
			/* Intel: cores per package sharing this cache level. */
			e->eax = (e->eax & 0x03ffffff) | ((order_of(ncpus) ? (1u << order_of(ncpus)) - 1 : 0) << 26);
			break;
		case 0xb:
		case 0x1f:
			patch_topology_leaf(e, cpu, ncpus);
			break;
		case 0x80000008:
			/* AMD: ApicIdSize and the number of cores minus one. */
			e->ecx = (e->ecx & ~0xf0ffu) | (order_of(ncpus) << 12) | ((ncpus - 1) & 0xff);
			break;
		case 0x8000001e:
			e->eax = cpu; /* extended APIC id */
			e->ebx = cpu & 0xff; /* core id, one thread per core */
			e->ecx = 0;  /* node 0 */
			break;
		}
	}
}

void cpuid_set_tsc_deadline(struct kvm_cpuid2 *cpuid)
{
	for (unsigned i = 0; i < cpuid->nent; i++)
		if (cpuid->entries[i].function == 1)
			cpuid->entries[i].ecx |= CPUID_TSC_DEADLINE;
}
