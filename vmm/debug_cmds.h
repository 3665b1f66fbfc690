/* Read-only diagnostics on the control socket: `debug-vcpus` reports each
 * vCPU's state (registers, MP state, pending events, the LAPIC timer, the
 * TSC and its deadline) so that a guest that stopped making progress can
 * be told apart: halted with no timer armed, spinning at one RIP, or held
 * paused by vmm. scripts/soak-migrate reads it when a guest freezes. */
#ifndef VMM_DEBUG_CMDS_H
#define VMM_DEBUG_CMDS_H

#include <jansson.h>
#include <linux/kvm.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vm;

/* What one vCPU looks like from outside, as KVM reports it. */
struct debug_vcpu_state {
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_lapic_state lapic;
	struct kvm_vcpu_events events;
	struct kvm_mp_state mp;
	uint64_t tsc;          /* MSR_IA32_TSC, the guest's TSC now */
	uint64_t tsc_deadline; /* MSR_IA32_TSC_DEADLINE (0: disarmed) */
	uint64_t kvmclock;     /* MSR_KVM_SYSTEM_TIME_NEW */
	uint64_t async_pf_en;  /* MSR_KVM_ASYNC_PF_EN */
	uint64_t async_pf_int; /* MSR_KVM_ASYNC_PF_INT */
	unsigned nmsrs;        /* how many of the MSRs above KVM returned, in order */
	int tsc_khz;           /* KVM_GET_TSC_KHZ, or -1 */
};

/* Reads vcpu_fd's state. The vCPU must be outside KVM_RUN (KVM would wait
 * for it otherwise). 0 or -errno with the failing ioctl in err. */
int debug_vcpu_read(int vcpu_fd, struct debug_vcpu_state *st, char *err, size_t errlen);
/* The JSON object for one vCPU (pure: unit-tested). */
json_t *debug_vcpu_json(unsigned id, const struct debug_vcpu_state *st);
/* The control command: pauses the vCPUs for the read (a hold of its own,
 * released at once; holds of others are reported and kept), reads each. */
json_t *debug_cmd_vcpus(struct vm *vm, json_t *req, char *err, size_t errlen);

#endif
