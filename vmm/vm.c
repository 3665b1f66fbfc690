/* Machine set-up, the main thread's loop, and tear-down; see vm.h. */
#include "vm.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "control.h"
#include "loop.h"
#include "migrate/migration.h"
#include "util.h"
#include "vcpu.h"
#include "virtio/mmio.h"
#include "x86/acpi.h"
#include "x86/boot.h"
#include "x86/cpuid.h"
#include "x86/legacy.h"
#include "x86/mptable.h"
#include "x86/regs.h"

#define KVM_DEVICE "/dev/kvm"
/* Intel needs three pages for the TSS and one for the real-mode identity
 * map; both go just below the BIOS ROM, inside the MMIO hole. */
#define TSS_GPA          0xfffbd000ULL
#define IDENTITY_MAP_GPA 0xfffbc000ULL

struct file_map {
	const uint8_t *data;
	size_t size;
};

static void map_file(const char *what, const char *path, struct file_map *fm)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		die("cannot open %s %s: %s", what, path, strerror(errno));
	if (fstat(fd, &st) < 0)
		die("cannot stat %s %s: %s", what, path, strerror(errno));
	if (!S_ISREG(st.st_mode))
		die("%s %s is not a regular file", what, path);
	fm->size = (size_t)st.st_size;
	fm->data = NULL;
	if (fm->size) {
		void *p = mmap(NULL, fm->size, PROT_READ, MAP_PRIVATE, fd, 0);

		if (p == MAP_FAILED)
			die("cannot read %s %s: %s", what, path, strerror(errno));
		fm->data = p;
	}
	close(fd);
}

static void unmap_file(struct file_map *fm)
{
	if (fm->data)
		munmap((void *)fm->data, fm->size);
}

static void vm_ioctl_or_die(struct vm *vm, unsigned long req, unsigned long arg, const char *name)
{
	if (ioctl(vm->fd, req, arg) < 0)
		die("%s: %s", name, strerror(errno));
}

static void create_kvm_vm(struct vm *vm)
{
	struct kvm_pit_config pit = { .flags = 0 };

	do
		vm->fd = ioctl(vm->kvm.fd, KVM_CREATE_VM, 0);
	while (vm->fd < 0 && errno == EINTR);
	if (vm->fd < 0)
		die("KVM_CREATE_VM: %s", strerror(errno));
	/* KVM takes the ring only before the first vCPU; its API asks for it
	 * right after KVM_CREATE_VM. */
	if (vm->cfg->dirty_ring) {
		char err[256];

		if (dirty_ring_enable(vm->fd, vm->cfg->dirty_ring, err, sizeof(err)))
			die("%s", err);
	}
	vm_ioctl_or_die(vm, KVM_SET_TSS_ADDR, TSS_GPA, "KVM_SET_TSS_ADDR");
	{
		uint64_t idmap = IDENTITY_MAP_GPA;

		vm_ioctl_or_die(vm, KVM_SET_IDENTITY_MAP_ADDR, (unsigned long)&idmap,
				"KVM_SET_IDENTITY_MAP_ADDR");
	}
	vm_ioctl_or_die(vm, KVM_CREATE_IRQCHIP, 0, "KVM_CREATE_IRQCHIP");
	vm_ioctl_or_die(vm, KVM_CREATE_PIT2, (unsigned long)&pit, "KVM_CREATE_PIT2");
}

static void setup_memory(struct vm *vm)
{
	int rc = guest_mem_alloc(&vm->mem, vm->cfg->mem_size);

	if (!rc)
		rc = guest_mem_dirty_alloc(&vm->mem);
	if (rc)
		die("cannot map %llu MiB of guest memory: %s",
		    (unsigned long long)(vm->cfg->mem_size >> 20), strerror(-rc));
	for (unsigned i = 0; i < vm->mem.nregions; i++) {
		struct kvm_userspace_memory_region region = {
			.slot = i,
			.guest_phys_addr = vm->mem.regions[i].gpa,
			.memory_size = vm->mem.regions[i].size,
			.userspace_addr = (uintptr_t)vm->mem.regions[i].hva,
		};

		vm_ioctl_or_die(vm, KVM_SET_USER_MEMORY_REGION, (unsigned long)&region,
				"KVM_SET_USER_MEMORY_REGION");
	}
}

static void load_guest(struct vm *vm, struct boot_entry *entry)
{
	struct file_map kernel, initrd = { 0 };
	char err[256];
	uint8_t *mpt, *acpi;
	int rc;

	map_file("kernel", vm->cfg->kernel, &kernel);
	if (vm->cfg->initrd)
		map_file("initrd", vm->cfg->initrd, &initrd);
	if (!kernel.size)
		die("kernel %s: not a bzImage or ELF vmlinux (empty file)", vm->cfg->kernel);
	rc = boot_load(&vm->mem, kernel.data, kernel.size, vm->cfg->initrd ? initrd.data : NULL,
		       initrd.size, vm->cmdline, entry, err, sizeof(err));
	if (rc)
		die("%s", err);
	unmap_file(&kernel);
	unmap_file(&initrd);
	if (regs_write_boot_tables(&vm->mem))
		die("guest memory too small for the boot page tables");
	mpt = gpa_to_hva(&vm->mem, BOOT_BIOS_GPA, mptable_size(vm->ncpus));
	if (!mpt || mptable_write(mpt, mptable_size(vm->ncpus), BOOT_BIOS_GPA, vm->ncpus) < 0)
		die("cannot write the MP table for %u vCPUs", vm->ncpus);
	acpi = gpa_to_hva(&vm->mem, ACPI_RSDP_GPA, BOOT_BIOS_GPA - ACPI_RSDP_GPA);
	if (!acpi || acpi_write_tables(acpi, BOOT_BIOS_GPA - ACPI_RSDP_GPA, vm->ncpus) < 0)
		die("cannot write the ACPI tables for %u vCPUs", vm->ncpus);
}

static void uart_set_irq(void *opaque, int level)
{
	vm_set_irq(opaque, UART_COM1_IRQ, level);
}

static void uart_output(void *opaque, uint8_t byte)
{
	struct vm *vm = opaque;

	console_output(&vm->console, byte);
}

static const struct uart_ops com1_ops = {
	.set_irq = uart_set_irq,
	.output = uart_output,
};

/* Appends the device to the guest command line, as virtio_mmio expects,
 * and to the VM's device list. */
static void announce_virtio(struct vm *vm, struct virtio_dev *dev)
{
	char param[96];
	char *cmdline;

	virtio_mmio_cmdline(dev, param, sizeof(param));
	if (asprintf(&cmdline, "%s %s", vm->cmdline, param) < 0)
		die("out of memory");
	free(vm->cmdline);
	vm->cmdline = cmdline;
	vm->virtio[vm->nvirtio++] = dev;
}

static void setup_devices(struct vm *vm)
{
	char err[256];

	if (console_open(&vm->console, vm->cfg->console, vm->cfg->console_path, err, sizeof(err)))
		die("%s", err);
	uart_init(&vm->uart, &com1_ops, vm);
	if (bus_register(&vm->pio, UART_COM1_BASE, UART_NREGS, uart_io, &vm->uart) ||
	    legacy_register(vm))
		die("cannot register the legacy devices");
	vm->cmdline = strdup(vm->cfg->cmdline);
	if (!vm->cmdline)
		die("out of memory");
	if (vm->cfg->balloon.enabled) {
		vm->balloon = calloc(1, sizeof(*vm->balloon));
		if (!vm->balloon ||
		    balloon_create(vm, vm->balloon, &vm->cfg->balloon, vm->nvirtio, err, sizeof(err)))
			die("%s", vm->balloon ? err : "out of memory");
		announce_virtio(vm, &vm->balloon->dev);
	}
	for (unsigned i = 0; i < vm->cfg->ndisks; i++) {
		struct blk *b = blk_create(vm, &vm->cfg->disks[i], vm->nvirtio, i, err, sizeof(err));

		if (!b)
			die("%s", err);
		vm->disks[vm->ndisks++] = b;
		announce_virtio(vm, blk_dev(b));
	}
}

static struct kvm_cpuid2 *supported_cpuid(struct vm *vm)
{
	for (unsigned nent = 128; nent <= 4096; nent *= 2) {
		struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + nent * sizeof(c->entries[0]));

		if (!c)
			die("out of memory");
		c->nent = nent;
		if (ioctl(vm->kvm.fd, KVM_GET_SUPPORTED_CPUID, c) == 0) {
			if (ioctl(vm->kvm.fd, KVM_CHECK_EXTENSION, KVM_CAP_TSC_DEADLINE_TIMER) > 0)
				cpuid_set_tsc_deadline(c);
			return c;
		}
		free(c);
		if (errno != E2BIG)
			die("KVM_GET_SUPPORTED_CPUID: %s", strerror(errno));
	}
	die("KVM_GET_SUPPORTED_CPUID: too many entries");
}

static void create_vcpus(struct vm *vm, const struct boot_entry *entry)
{
	struct kvm_cpuid2 *cpuid = supported_cpuid(vm);
	char err[256];

	vm->vcpus = calloc(vm->ncpus, sizeof(*vm->vcpus));
	if (!vm->vcpus)
		die("out of memory");
	if (vm->cfg->dirty_ring) {
		vm->rings.ring = calloc(vm->ncpus, sizeof(*vm->rings.ring));
		if (!vm->rings.ring)
			die("out of memory");
		vm->rings.n = vm->ncpus;
		vm->rings.entries = vm->cfg->dirty_ring;
	}
	for (unsigned i = 0; i < vm->ncpus; i++)
		if (vcpu_create(vm, i, cpuid, entry, &vm->vcpus[i], err, sizeof(err)))
			die("%s", err);
	free(cpuid);
}

/* SIGINT, SIGTERM and SIGHUP stop vmm with status 128+N. This runs before
 * vm_create starts any thread, so that every thread inherits the mask: a
 * stop signal is only ever taken from vm->signal_fd (the main loop, and the
 * wait for a migration source), never by a thread whose default action
 * would end the process without tearing down; the kick is unblocked by
 * each vCPU thread for itself. */
static void block_signals(struct vm *vm)
{
	sigset_t signals;

	sigemptyset(&signals);
	sigaddset(&signals, SIGINT);
	sigaddset(&signals, SIGTERM);
	sigaddset(&signals, SIGHUP);
	sigaddset(&signals, VCPU_KICK_SIGNAL);
	pthread_sigmask(SIG_BLOCK, &signals, NULL);
	sigdelset(&signals, VCPU_KICK_SIGNAL);
	vm->signal_fd = signalfd(-1, &signals, SFD_CLOEXEC | SFD_NONBLOCK);
	if (vm->signal_fd < 0)
		die("signalfd: %s", strerror(errno));
	signal(SIGPIPE, SIG_IGN);
	vcpu_init_signals();
}

void vm_create(struct vm *vm, const struct vm_config *cfg)
{
	struct boot_entry entry;
	char err[256];

	memset(vm, 0, sizeof(*vm));
	block_signals(vm);
	vm->start_ns = now_ns();
	pthread_mutex_init(&vm->pause_lock, NULL);
	pthread_cond_init(&vm->pause_cond, NULL);
	vm->cfg = cfg;
	vm->ncpus = cfg->cpus;
	vm->fd = -1;
	if (kvm_open(&vm->kvm, KVM_DEVICE, err, sizeof(err)))
		die("%s", err);
	if (vm->ncpus > (unsigned)vm->kvm.max_vcpus)
		die("--cpus %u: this host's KVM supports at most %d vCPUs", vm->ncpus,
		    vm->kvm.max_vcpus);
	vm->boot_step_ns[0] = now_ns() - vm->start_ns;
	create_kvm_vm(vm);
	vm->boot_step_ns[1] = now_ns() - vm->start_ns;
	setup_memory(vm);
	vm->boot_step_ns[2] = now_ns() - vm->start_ns;
	setup_devices(vm);
	vm->boot_step_ns[3] = now_ns() - vm->start_ns;
	/* An incoming guest arrives with its memory and registers. */
	if (!cfg->incoming)
		load_guest(vm, &entry);
	else
		entry = (struct boot_entry){ 0, 0 };
	vm->boot_step_ns[4] = now_ns() - vm->start_ns;
	create_vcpus(vm, &entry);
	vm->boot_step_ns[5] = now_ns() - vm->start_ns;
	vm->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (vm->stop_fd < 0)
		die("eventfd: %s", strerror(errno));
}

void vm_request_stop(struct vm *vm, enum vm_stop_reason reason, int status)
{
	int expected = VM_STOP_NONE;
	uint64_t one = 1;

	if (!atomic_compare_exchange_strong(&vm->stop_reason, &expected, (int)reason))
		return;
	vm->exit_status = status;
	(void)!write(vm->stop_fd, &one, sizeof(one));
}

void vm_pause_point(struct vm *vm, struct vcpu *vcpu)
{
	pthread_mutex_lock(&vm->pause_lock);
	if (vm->pause_owners) {
		vm->paused_vcpus++;
		pthread_cond_broadcast(&vm->pause_cond);
		while (vm->pause_owners && atomic_load(&vm->stop_reason) == VM_STOP_NONE)
			pthread_cond_wait(&vm->pause_cond, &vm->pause_lock);
		vm->paused_vcpus--;
	}
	/* Cleared under the lock, so a new pause request cannot be lost. */
	if (!vm->pause_owners)
		vcpu->run->immediate_exit = 0;
	pthread_mutex_unlock(&vm->pause_lock);
}

int vm_pause(struct vm *vm, unsigned owner, int timeout_ms)
{
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000ULL;
	int rc = 0;

	pthread_mutex_lock(&vm->pause_lock);
	vm->pause_owners |= owner;
	for (unsigned i = 0; i < vm->ncpus; i++)
		vcpu_kick(&vm->vcpus[i]);
	while (vm->paused_vcpus < vm->ncpus && !rc) {
		struct timespec ts;
		uint64_t now = now_ns();

		if (atomic_load(&vm->stop_reason) != VM_STOP_NONE)
			rc = -ECANCELED;
		else if (now >= deadline)
			rc = -ETIMEDOUT;
		if (rc)
			break;
		/* Short waits: kicks can race with a vCPU entering KVM_RUN. */
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 10000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&vm->pause_cond, &vm->pause_lock, &ts);
		for (unsigned i = 0; i < vm->ncpus; i++)
			vcpu_kick(&vm->vcpus[i]);
	}
	pthread_mutex_unlock(&vm->pause_lock);
	if (rc)
		vm_resume(vm, owner);
	return rc;
}

void vm_resume(struct vm *vm, unsigned owner)
{
	pthread_mutex_lock(&vm->pause_lock);
	vm->pause_owners &= ~owner;
	pthread_cond_broadcast(&vm->pause_cond);
	pthread_mutex_unlock(&vm->pause_lock);
}

bool vm_paused_by(struct vm *vm, unsigned owner)
{
	bool held;

	pthread_mutex_lock(&vm->pause_lock);
	held = (vm->pause_owners & owner) != 0;
	pthread_mutex_unlock(&vm->pause_lock);
	return held;
}

int vm_set_irq(struct vm *vm, unsigned gsi, int level)
{
	struct kvm_irq_level irq = { .irq = gsi, .level = level };

	return ioctl(vm->fd, KVM_IRQ_LINE, &irq) < 0 ? -errno : 0;
}

/* The main thread's view of a running VM: its event sources. */
struct runtime {
	struct vm *vm;
	struct loop loop;
	struct control control;
	bool have_control;
	struct loop_source stop_src;
	struct loop_source signal_src;
	struct loop_source stdin_src;
	bool stdin_open;
};

static void stop_event(struct loop_source *src, uint32_t events)
{
	uint64_t v;

	(void)events;
	(void)!read(src->fd, &v, sizeof(v));
}

/* 128 + the number of a stop signal waiting on the signalfd, or 0. */
static int signal_status(int signal_fd)
{
	struct signalfd_siginfo si;

	return read(signal_fd, &si, sizeof(si)) == sizeof(si) ? 128 + (int)si.ssi_signo : 0;
}

static void signal_event(struct loop_source *src, uint32_t events)
{
	struct runtime *rt = container_of(src, struct runtime, signal_src);
	int status = signal_status(src->fd);

	(void)events;
	if (status)
		vm_request_stop(rt->vm, VM_STOP_SIGNAL, status);
}

static void flush_console_input(struct runtime *rt)
{
	struct console *c = &rt->vm->console;
	size_t n = uart_receive(&rt->vm->uart, c->pending, c->npending);

	c->npending -= n;
	memmove(c->pending, c->pending + n, c->npending);
}

static void stdin_event(struct loop_source *src, uint32_t events)
{
	struct runtime *rt = container_of(src, struct runtime, stdin_src);
	struct console *c = &rt->vm->console;
	uint8_t buf[sizeof(c->pending)];
	bool quit = false;
	ssize_t n;

	(void)events;
	if (c->npending)
		return; /* the guest has not drained the UART yet: leave input in the kernel */
	n = read(src->fd, buf, sizeof(buf));
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (n <= 0) {
		loop_del(&rt->loop, src);
		rt->stdin_open = false;
		return;
	}
	c->npending = console_filter(c, buf, (size_t)n, c->pending, &quit);
	if (quit)
		vm_request_stop(rt->vm, VM_STOP_CONSOLE_QUIT, 0);
	flush_console_input(rt);
}

static void runtime_init(struct runtime *rt, struct vm *vm)
{
	char err[256];

	memset(rt, 0, sizeof(*rt));
	rt->vm = vm;
	if (loop_init(&rt->loop))
		die("epoll: %s", strerror(errno));
	rt->stop_src = (struct loop_source){ .fd = vm->stop_fd, .fn = stop_event };
	rt->signal_src = (struct loop_source){ .fd = vm->signal_fd, .fn = signal_event };
	if (loop_add(&rt->loop, &rt->stop_src, EPOLLIN) ||
	    loop_add(&rt->loop, &rt->signal_src, EPOLLIN))
		die("cannot set up the event loop: %s", strerror(errno));
	if (vm->console.in_fd >= 0) {
		rt->stdin_src = (struct loop_source){ .fd = vm->console.in_fd, .fn = stdin_event };
		/* stdin may be a regular file or /dev/null, which epoll refuses: no input then. */
		rt->stdin_open = loop_add(&rt->loop, &rt->stdin_src, EPOLLIN) == 0;
	}
	if (vm->cfg->api_socket) {
		if (control_open(&rt->control, vm->cfg->api_socket, vm->cfg->api_idle_s, &rt->loop, vm,
				 err, sizeof(err)))
			die("%s", err);
		rt->have_control = true;
	}
}

static void runtime_close(struct runtime *rt)
{
	if (rt->have_control)
		control_close(&rt->control);
	loop_close(&rt->loop);
}

static void vm_destroy(struct vm *vm)
{
	if (vm->balloon) {
		balloon_destroy(vm->balloon);
		free(vm->balloon);
	}
	for (unsigned i = 0; i < vm->ndisks; i++)
		blk_destroy(vm->disks[i]);
	free(vm->cmdline);
	for (unsigned i = 0; i < vm->ncpus; i++)
		vcpu_destroy(&vm->vcpus[i]);
	free(vm->vcpus);
	free(vm->rings.ring);
	console_close(&vm->console);
	close(vm->signal_fd);
	close(vm->stop_fd);
	close(vm->fd);
	guest_mem_free(&vm->mem);
	kvm_close(&vm->kvm);
}

int vm_run(struct vm *vm)
{
	struct runtime rt;
	int status;

	/* A stop signal ends the wait for the source (through vm->signal_fd);
	 * nothing of the guest has run, and the status says which signal. */
	if (vm->cfg->incoming && migrate_incoming(vm, vm->cfg->incoming)) {
		status = signal_status(vm->signal_fd);
		vm_destroy(vm);
		return status ? status : 1;
	}
	runtime_init(&rt, vm);

	for (unsigned i = 0; i < vm->ncpus; i++)
		if (vcpu_start(&vm->vcpus[i]))
			die("cannot start vCPU thread %u", i);
	/* A migrated-in guest runs now: the source may go. */
	migrate_incoming_running(vm);
	while (atomic_load(&vm->stop_reason) == VM_STOP_NONE) {
		if (loop_run_once(&rt.loop, vm->console.npending ? 10 : -1))
			break;
		if (vm->console.npending)
			flush_console_input(&rt);
	}
	/* An outgoing migration may hold the vCPUs paused: end it first. */
	migrate_destroy(vm);
	for (unsigned i = 0; i < vm->ncpus; i++)
		vcpu_kick(&vm->vcpus[i]);
	/* Paused vCPUs wait on the condition: wake them to see the stop. */
	vm_resume(vm, ~0u);
	for (unsigned i = 0; i < vm->ncpus; i++)
		vcpu_join(&vm->vcpus[i]);
	status = vm->exit_status;
	runtime_close(&rt);
	vm_destroy(vm);
	return status;
}
