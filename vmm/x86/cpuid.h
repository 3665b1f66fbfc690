/* Per-vCPU CPUID: KVM's supported set, with the APIC id, the topology and
 * the hypervisor bit filled in for each vCPU. */
#ifndef VMM_X86_CPUID_H
#define VMM_X86_CPUID_H

#include <linux/kvm.h>

/* Adjusts entries (from KVM_GET_SUPPORTED_CPUID) for vCPU cpu of ncpus. */
void cpuid_patch(struct kvm_cpuid2 *cpuid, unsigned cpu, unsigned ncpus);

#endif
