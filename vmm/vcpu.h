/* vCPU threads: one per vCPU, each a flat KVM_RUN exit loop. A vCPU is
 * stopped by setting immediate_exit and signalling its thread, so a kick
 * that lands just before KVM_RUN is never lost. With --dirty-ring each
 * vCPU maps its dirty ring beside kvm_run, and its thread harvests the
 * ring itself when KVM says it is full (vmm/dirty_ring.h). */
#ifndef VMM_VCPU_H
#define VMM_VCPU_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdbool.h>

#include "x86/boot.h"

struct vm;
struct dirty_ring;

#define VCPU_KICK_SIGNAL SIGUSR1

struct vcpu {
	struct vm *vm;
	unsigned id;
	int fd;
	struct kvm_run *run;
	struct dirty_ring *ring; /* vm->rings.ring[id] with --dirty-ring, else NULL */
	unsigned ring_stuck;     /* ring-full exits in a row that found nothing to harvest */
	pthread_t thread;
	bool started;
};

/* Creates vCPU id with CPUID and initial registers. 0 or -errno; the
 * failing step is named in err. */
int vcpu_create(struct vm *vm, unsigned id, const struct kvm_cpuid2 *cpuid,
		const struct boot_entry *entry, struct vcpu *vcpu, char *err, size_t errlen);
/* Installs the kick signal handler; call once before starting threads. */
void vcpu_init_signals(void);
int vcpu_start(struct vcpu *vcpu);
void vcpu_kick(struct vcpu *vcpu);
void vcpu_join(struct vcpu *vcpu);
void vcpu_destroy(struct vcpu *vcpu);

#endif
