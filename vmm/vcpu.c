/* vCPU creation and the exit loop; see vcpu.h. */
#include "vcpu.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dirty_ring.h"
#include "util.h"
#include "vm.h"
#include "x86/cpuid.h"
#include "x86/regs.h"

static void kick_handler(int sig)
{
	(void)sig; /* only here to make KVM_RUN return EINTR */
}

void vcpu_init_signals(void)
{
	struct sigaction sa = { .sa_handler = kick_handler };

	sigemptyset(&sa.sa_mask);
	sigaction(VCPU_KICK_SIGNAL, &sa, NULL);
}

int vcpu_create(struct vm *vm, unsigned id, const struct kvm_cpuid2 *cpuid,
		const struct boot_entry *entry, struct vcpu *vcpu, char *err, size_t errlen)
{
	size_t cpuid_size = sizeof(*cpuid) + cpuid->nent * sizeof(cpuid->entries[0]);
	struct kvm_cpuid2 *mine;
	int rc;

	memset(vcpu, 0, sizeof(*vcpu));
	vcpu->vm = vm;
	vcpu->id = id;
	vcpu->fd = ioctl(vm->fd, KVM_CREATE_VCPU, (unsigned long)id);
	if (vcpu->fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "vCPU %u: KVM_CREATE_VCPU: %s", id, strerror(errno));
		return rc;
	}
	vcpu->run = mmap(NULL, (size_t)vm->kvm.vcpu_mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED,
			 vcpu->fd, 0);
	if (vcpu->run == MAP_FAILED) {
		rc = -errno;
		vcpu->run = NULL;
		snprintf(err, errlen, "vCPU %u: cannot map kvm_run: %s", id, strerror(errno));
		return rc;
	}
	if (vm->rings.entries) {
		char why[160];

		rc = dirty_ring_map(&vm->rings.ring[id], vcpu->fd, vm->rings.entries, why, sizeof(why));
		if (rc) {
			snprintf(err, errlen, "vCPU %u: %s", id, why);
			return rc;
		}
		vcpu->ring = &vm->rings.ring[id];
	}
	mine = malloc(cpuid_size);
	if (!mine) {
		snprintf(err, errlen, "vCPU %u: out of memory", id);
		return -ENOMEM;
	}
	memcpy(mine, cpuid, cpuid_size);
	cpuid_patch(mine, id, vm->ncpus);
	rc = ioctl(vcpu->fd, KVM_SET_CPUID2, mine) < 0 ? -errno : 0;
	free(mine);
	if (rc) {
		snprintf(err, errlen, "vCPU %u: KVM_SET_CPUID2: %s", id, strerror(-rc));
		return rc;
	}
	rc = regs_init_vcpu(vcpu->fd, entry, id == 0);
	if (rc)
		snprintf(err, errlen, "vCPU %u: initial register state: %s", id, strerror(-rc));
	return rc;
}

static void handle_io(struct vcpu *vcpu)
{
	struct kvm_run *run = vcpu->run;
	uint8_t *data = (uint8_t *)run + run->io.data_offset;
	bool is_write = run->io.direction == KVM_EXIT_IO_OUT;

	/* String I/O (rep outsb and friends) arrives as count items in a row. */
	for (uint32_t i = 0; i < run->io.count; i++, data += run->io.size)
		bus_dispatch(&vcpu->vm->pio, run->io.port, data, run->io.size, is_write);
}

static void handle_mmio(struct vcpu *vcpu)
{
	struct kvm_run *run = vcpu->run;
	uint32_t len = run->mmio.len <= sizeof(run->mmio.data) ? run->mmio.len : sizeof(run->mmio.data);

	bus_dispatch(&vcpu->vm->mmio, run->mmio.phys_addr, run->mmio.data, len, run->mmio.is_write);
}

static void handle_system_event(struct vcpu *vcpu)
{
	switch (vcpu->run->system_event.type) {
	case KVM_SYSTEM_EVENT_SHUTDOWN:
		vm_request_stop(vcpu->vm, VM_STOP_POWEROFF, 0);
		break;
	case KVM_SYSTEM_EVENT_RESET:
		vm_request_stop(vcpu->vm, VM_STOP_RESET, 0);
		break;
	default:
		log_err("vCPU %u: system event %u (guest crash)", vcpu->id,
			vcpu->run->system_event.type);
		vm_request_stop(vcpu->vm, VM_STOP_ERROR, 1);
		break;
	}
}

/* A ring-full exit that finds nothing to harvest or reset means KVM and
 * vmm disagree about the ring: re-entering would only exit again. */
#define RING_STUCK_LIMIT 100

/* KVM stops a vCPU whose dirty ring is nearly full (it keeps entries in
 * reserve for the writes the exit itself makes). The vCPU thread harvests
 * its own ring into the VMM-side dirty bitmap (mem->dirty, which the
 * migration's next sync takes; without one, the entries are discarded),
 * resets it with KVM_RESET_DIRTY_RINGS and goes back into the guest.
 *
 * This is safe for a migration in progress: a page harvested here is
 * re-protected by the reset before the ring's lock is released, and a sync
 * takes the bitmap only while it holds every ring's lock, so the page's
 * data is read (in the pass after that sync) only after the reset. A write
 * before the reset is in the data read later; a write after it logs the
 * page in the ring again. Outside a migration, dirty logging is off and
 * KVM fills no ring; one left over from the last migration is harvested
 * into a bitmap whose pages the next migration sends anyway (its first
 * sync reports every page). */
static void handle_dirty_ring_full(struct vcpu *vcpu)
{
	struct vm *vm = vcpu->vm;
	int reset = 0, n;

	if (!vcpu->ring) {
		log_err("vCPU %u: dirty ring full, but vmm has no ring", vcpu->id);
		vm_request_stop(vm, VM_STOP_ERROR, 1);
		return;
	}
	n = dirty_ring_collect(vcpu->ring, vm->fd, &vm->mem, vm->mem.dirty, &reset);
	if (n < 0) {
		log_err("vCPU %u: KVM_RESET_DIRTY_RINGS: %s", vcpu->id, strerror(-n));
		vm_request_stop(vm, VM_STOP_ERROR, 1);
		return;
	}
	/* A sync may have emptied the ring between KVM's exit and our lock:
	 * then the ring is no longer full, and KVM_RUN goes on. */
	vcpu->ring_stuck = n || reset ? 0 : vcpu->ring_stuck + 1;
	if (vcpu->ring_stuck >= RING_STUCK_LIMIT) {
		log_err("vCPU %u: KVM says the dirty ring is full, but no entry is ready to harvest",
			vcpu->id);
		vm_request_stop(vm, VM_STOP_ERROR, 1);
	}
}

static void report_fatal_exit(struct vcpu *vcpu)
{
	struct kvm_regs regs;
	unsigned long long rip = 0;

	if (ioctl(vcpu->fd, KVM_GET_REGS, &regs) == 0)
		rip = regs.rip;
	switch (vcpu->run->exit_reason) {
	case KVM_EXIT_FAIL_ENTRY:
		log_err("vCPU %u: VM entry failed (reason 0x%llx) at rip 0x%llx", vcpu->id,
			(unsigned long long)vcpu->run->fail_entry.hardware_entry_failure_reason, rip);
		break;
	case KVM_EXIT_INTERNAL_ERROR:
		log_err("vCPU %u: KVM internal error (suberror %u) at rip 0x%llx", vcpu->id,
			vcpu->run->internal.suberror, rip);
		break;
	default:
		log_err("vCPU %u: unhandled exit reason %u at rip 0x%llx", vcpu->id,
			vcpu->run->exit_reason, rip);
		break;
	}
	vm_request_stop(vcpu->vm, VM_STOP_ERROR, 1);
}

/* A triple fault: how x86 Linux ends a reboot when nothing else worked,
 * but also how a guest dies early. Which vCPU and where it was tell the
 * two apart (and an emulator's fault, docs/testhost.md). On AMD, KVM
 * INITs the vCPU before it reports the shutdown (the VMCB is undefined
 * after one), so there is no "where" to report: a vCPU found in the INIT
 * state (RIP 0xfff0, CR0 0x60000010) gets the plain message. */
static void report_triple_fault(struct vcpu *vcpu)
{
	struct kvm_regs regs;
	struct kvm_sregs sregs;

	if (ioctl(vcpu->fd, KVM_GET_REGS, &regs) == 0 && ioctl(vcpu->fd, KVM_GET_SREGS, &sregs) == 0 &&
	    !(regs.rip == 0xfff0 && sregs.cr0 == 0x60000010))
		log_err("vCPU %u: triple fault at rip 0x%llx (rsp 0x%llx, cr2 0x%llx, cr3 0x%llx),"
			" treated as a guest reset", vcpu->id, (unsigned long long)regs.rip,
			(unsigned long long)regs.rsp, (unsigned long long)sregs.cr2,
			(unsigned long long)sregs.cr3);
	else
		log_err("vCPU %u: triple fault, treated as a guest reset", vcpu->id);
}

static void *vcpu_thread(void *arg)
{
	struct vcpu *vcpu = arg;
	struct vm *vm = vcpu->vm;
	sigset_t kick;
	char name[16];

	snprintf(name, sizeof(name), "vcpu%u", vcpu->id);
	pthread_setname_np(pthread_self(), name);
	sigemptyset(&kick);
	sigaddset(&kick, VCPU_KICK_SIGNAL);
	pthread_sigmask(SIG_UNBLOCK, &kick, NULL);

	while (atomic_load(&vm->stop_reason) == VM_STOP_NONE) {
		if (ioctl(vcpu->fd, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN) {
				vm_pause_point(vm, vcpu);
				continue;
			}
			log_err("vCPU %u: KVM_RUN: %s", vcpu->id, strerror(errno));
			vm_request_stop(vm, VM_STOP_ERROR, 1);
			break;
		}
		switch (vcpu->run->exit_reason) {
		case KVM_EXIT_IO:
			handle_io(vcpu);
			break;
		case KVM_EXIT_MMIO:
			handle_mmio(vcpu);
			break;
		case KVM_EXIT_INTR:
			break;
		case KVM_EXIT_SHUTDOWN:
			report_triple_fault(vcpu);
			vm_request_stop(vm, VM_STOP_RESET, 0);
			break;
		case KVM_EXIT_SYSTEM_EVENT:
			handle_system_event(vcpu);
			break;
		case KVM_EXIT_DIRTY_RING_FULL:
			handle_dirty_ring_full(vcpu);
			break;
		default:
			report_fatal_exit(vcpu);
			break;
		}
	}
	return NULL;
}

int vcpu_start(struct vcpu *vcpu)
{
	int rc = pthread_create(&vcpu->thread, NULL, vcpu_thread, vcpu);

	if (rc)
		return -rc;
	vcpu->started = true;
	return 0;
}

void vcpu_kick(struct vcpu *vcpu)
{
	if (!vcpu->started)
		return;
	vcpu->run->immediate_exit = 1;
	pthread_kill(vcpu->thread, VCPU_KICK_SIGNAL);
}

void vcpu_join(struct vcpu *vcpu)
{
	if (vcpu->started)
		pthread_join(vcpu->thread, NULL);
	vcpu->started = false;
}

void vcpu_destroy(struct vcpu *vcpu)
{
	if (vcpu->run)
		munmap(vcpu->run, (size_t)vcpu->vm->kvm.vcpu_mmap_size);
	if (vcpu->ring)
		dirty_ring_destroy(vcpu->ring);
	if (vcpu->fd >= 0)
		close(vcpu->fd);
	vcpu->ring = NULL;
	vcpu->run = NULL;
	vcpu->fd = -1;
}
