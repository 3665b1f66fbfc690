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
#include "kvm.h"
#include "mem.h"
#include "virtio/balloon.h"
#include "virtio/blk.h"
#include "virtio/mmio.h"
#include "x86/legacy.h"
#include "x86/uart.h"

struct vcpu;
struct migration;

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
	char *cmdline;           /* --cmdline plus the virtio-mmio devices */
	unsigned ncpus;
	struct vcpu *vcpus;

	uint64_t start_ns;
	_Atomic uint64_t boot_marker_ns; /* 0 until the guest writes the marker */

	/* Pausing the vCPUs (for migration): see vm_pause(). */
	pthread_mutex_t pause_lock;
	pthread_cond_t pause_cond;
	bool pause_requested;
	unsigned paused_vcpus;
	bool paused; /* paused through the control socket (main thread only) */

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
/* Stops every vCPU outside KVM_RUN with its pending I/O completed (through
 * immediate_exit), so its state can be saved. Waits at most timeout_ms.
 * 0, -ETIMEDOUT (the vCPUs are resumed again) or -ECANCELED (VM stopping). */
int vm_pause(struct vm *vm, int timeout_ms);
void vm_resume(struct vm *vm);
/* Called by a vCPU thread whenever KVM_RUN returned EINTR. */
void vm_pause_point(struct vm *vm, struct vcpu *vcpu);
/* Sets an interrupt line of the in-kernel irqchip. */
int vm_set_irq(struct vm *vm, unsigned gsi, int level);

#endif
