/* struct vm: the KVM VM, its memory, buses, devices and vCPUs. Set-up and
 * tear-down live in vm.c; the run loop of each vCPU in vcpu.c. */
#ifndef VMM_VM_H
#define VMM_VM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "bus.h"
#include "config.h"
#include "console.h"
#include "dirty_ring.h"
#include "kvm.h"
#include "mem.h"
#include "virtio/balloon.h"
#include "virtio/blk.h"
#include "virtio/mmio.h"
#include "x86/legacy.h"
#include "x86/uart.h"

struct vcpu;
struct migration;
struct receiver;

/* Who holds the vCPUs paused. Each owner pauses and resumes only its own
 * hold, so auto-converge cannot resume a guest the user paused, and a
 * migration cannot resume one paused by anyone else. */
enum vm_pause_owner {
	VM_PAUSE_USER = 1u << 0,      /* `vmm pause` */
	VM_PAUSE_MIGRATION = 1u << 1, /* stop-and-copy, and after COMMIT */
	VM_PAUSE_THROTTLE = 1u << 2,  /* auto-converge */
	VM_PAUSE_DEBUG = 1u << 3,     /* debug-vcpus, for the length of a read */
};

enum vm_stop_reason {
	VM_STOP_NONE = 0,
	VM_STOP_DEBUG_EXIT,   /* status is the byte the guest wrote */
	VM_STOP_POWEROFF,
	VM_STOP_RESET,
	VM_STOP_SIGNAL,
	VM_STOP_ERROR,
	VM_STOP_CONSOLE_QUIT, /* Ctrl-A x */
	VM_STOP_MIGRATED,     /* the guest now runs on the destination */
};

struct vm {
	const struct vm_config *cfg;
	struct kvm kvm;
	int fd;
	struct guest_mem mem;
	struct bus pio;
	struct bus mmio;
	struct uart uart;
	struct console console;
	struct legacy_devices legacy;
	struct balloon *balloon; /* NULL without --balloon */
	struct blk *disks[BLK_MAX_DISKS]; /* --disk, in order */
	unsigned ndisks;
	/* Every virtio device, in MMIO order: what migration and pausing walk
	 * (vmm/devices.c), without knowing any device by name. */
	struct virtio_dev *virtio[VIRTIO_MMIO_MAX_DEVICES];
	unsigned nvirtio;
	struct migration *migration; /* the outgoing migration, if one was started */
	struct receiver *incoming;   /* an incoming one, from COMMIT until the vCPUs run */
	char *cmdline;           /* --cmdline plus the virtio-mmio devices */
	unsigned ncpus;
	struct vcpu *vcpus;
	/* --dirty-ring: each vCPU's ring (vcpus[i].ring is ring[i]); n 0 without. */
	struct dirty_rings rings;

	uint64_t start_ns;
	/* --boot-timer: when vm_create finished each step, ns after start_ns
	 * (KVM opened, VM created, memory, devices, kernel loaded, vCPUs). */
	uint64_t boot_step_ns[6];
	_Atomic uint64_t boot_marker_ns; /* 0 until the guest writes the marker */

	/* Pausing the vCPUs: see vm_pause(). They run only while no owner
	 * (enum vm_pause_owner) holds a pause. */
	pthread_mutex_t pause_lock;
	pthread_cond_t pause_cond;
	unsigned pause_owners;
	unsigned paused_vcpus;

	/* SIGINT, SIGTERM and SIGHUP, blocked in every thread, arrive here. */
	int signal_fd;
	/* The first stop request wins; stop_fd wakes the main loop. */
	_Atomic int stop_reason;
	int exit_status;
	int stop_fd;
};

/* Builds the whole machine from cfg; dies with a one-line message on error. */
void vm_create(struct vm *vm, const struct vm_config *cfg);
/* Starts the vCPUs, serves the console and control socket until the guest
 * or a signal stops the VM, tears everything down and returns the exit status. */
int vm_run(struct vm *vm);
/* Asks the VM to stop with the given exit status; later requests are ignored. */
void vm_request_stop(struct vm *vm, enum vm_stop_reason reason, int status);
/* Adds owner's hold and stops every vCPU outside KVM_RUN with its pending
 * I/O completed (through immediate_exit), so its state can be saved. Waits
 * at most timeout_ms. 0, -ETIMEDOUT or -ECANCELED (VM stopping); on error
 * owner's hold is dropped again. */
int vm_pause(struct vm *vm, unsigned owner, int timeout_ms);
/* Drops owner's hold; the vCPUs run again once no owner holds one. */
void vm_resume(struct vm *vm, unsigned owner);
/* Whether owner holds a pause. */
bool vm_paused_by(struct vm *vm, unsigned owner);
/* Called by a vCPU thread whenever KVM_RUN returned EINTR. */
void vm_pause_point(struct vm *vm, struct vcpu *vcpu);
/* Sets an interrupt line of the in-kernel irqchip. */
int vm_set_irq(struct vm *vm, unsigned gsi, int level);

#endif
