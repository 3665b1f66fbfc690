/* Per-vCPU CPUID: KVM's supported set, with the APIC id, the topology and
 * the hypervisor bit filled in for each vCPU. */
#ifndef VMM_X86_CPUID_H
#define VMM_X86_CPUID_H

#include <linux/kvm.h>

/* Adjusts entries (from KVM_GET_SUPPORTED_CPUID) for vCPU cpu of ncpus. */
void cpuid_patch(struct kvm_cpuid2 *cpuid, unsigned cpu, unsigned ncpus);
/* Sets the TSC-deadline timer bit (leaf 1 ECX bit 24), which
 * KVM_GET_SUPPORTED_CPUID leaves clear because KVM emulates the timer
 * itself (KVM_CAP_TSC_DEADLINE_TIMER says it can). Without it Linux
 * calibrates its LAPIC timer against another clock at boot, for about
 * 100 ms of guest time (HZ/10 jiffies; 250 ms of a nested boot here). */
void cpuid_set_tsc_deadline(struct kvm_cpuid2 *cpuid);

#endif
