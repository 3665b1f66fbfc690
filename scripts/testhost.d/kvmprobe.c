/*
 * kvmprobe: checks that /dev/kvm really works by running a tiny real-mode
 * guest:  a 20-million-iteration loop, then mov dx,0x3f8; mov al,'A';
 * out dx,al; hlt, and expecting KVM_EXIT_IO (port 0x3f8, out, 'A') followed
 * by KVM_EXIT_HLT. The loop must finish within a second: some hosts offer a
 * /dev/kvm that emulates guest code instruction by instruction (seen: a
 * kvm_pvm module without hardware virtualisation), which runs such a probe
 * correctly but a Linux guest thousands of times too slowly to be usable.
 *
 * Usage: kvmprobe [-v] [/dev/kvm]      exit 0 = usable, 1 = not usable
 * Used by scripts/testhost (compiled on the fly into its cache dir).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <signal.h>
#include <unistd.h>

static int verbose;

static int fail(const char *what)
{
	if (verbose)
		fprintf(stderr, "kvmprobe: %s: %s\n", what, strerror(errno));
	return 1;
}

static void on_alarm(int sig)
{
	(void)sig; /* only here so that a slow KVM_RUN returns EINTR */
}

static const char *exit_name(uint32_t r)
{
	switch (r) {
	case KVM_EXIT_IO: return "KVM_EXIT_IO";
	case KVM_EXIT_HLT: return "KVM_EXIT_HLT";
	case KVM_EXIT_MMIO: return "KVM_EXIT_MMIO";
	case KVM_EXIT_SHUTDOWN: return "KVM_EXIT_SHUTDOWN";
	case KVM_EXIT_FAIL_ENTRY: return "KVM_EXIT_FAIL_ENTRY";
	case KVM_EXIT_INTERNAL_ERROR: return "KVM_EXIT_INTERNAL_ERROR";
	default: return "other";
	}
}

int main(int argc, char **argv)
{
	const char *dev = "/dev/kvm";
	static const uint8_t code[] = {
		0x66, 0xb9, 0x00, 0x2d, 0x31, 0x01, /* mov ecx, 20000000 */
		0x66, 0x49,       /* loop: dec ecx */
		0x75, 0xfc,       /* jnz loop      */
		0xba, 0xf8, 0x03, /* mov dx, 0x3f8 */
		0xb0, 'A',        /* mov al, 'A'   */
		0xee,             /* out dx, al    */
		0xf4,             /* hlt           */
	};
	int kvm, vm, vcpu, ret, mmap_size;
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	struct kvm_run *run;
	uint8_t *mem;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-v"))
			verbose = 1;
		else
			dev = argv[i];
	}
	alarm(20); /* never hang */

	kvm = open(dev, O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		return fail("open");
	ret = ioctl(kvm, KVM_GET_API_VERSION, 0);
	if (ret != KVM_API_VERSION) {
		if (verbose)
			fprintf(stderr, "kvmprobe: KVM_GET_API_VERSION = %d\n", ret);
		return 1;
	}
	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0)
		return fail("KVM_CREATE_VM");
	mem = mmap(NULL, 0x1000, PROT_READ | PROT_WRITE,
		   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return fail("mmap");
	memcpy(mem, code, sizeof(code));
	struct kvm_userspace_memory_region region = {
		.slot = 0,
		.guest_phys_addr = 0x1000,
		.memory_size = 0x1000,
		.userspace_addr = (uintptr_t)mem,
	};
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
		return fail("KVM_SET_USER_MEMORY_REGION");
	vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu < 0)
		return fail("KVM_CREATE_VCPU");
	mmap_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (mmap_size <= 0)
		return fail("KVM_GET_VCPU_MMAP_SIZE");
	run = mmap(NULL, mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED)
		return fail("mmap vcpu");
	if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
		return fail("KVM_GET_SREGS");
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0)
		return fail("KVM_SET_SREGS");
	memset(&regs, 0, sizeof(regs));
	regs.rip = 0x1000;
	regs.rflags = 0x2;
	if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0)
		return fail("KVM_SET_REGS");

	{
		struct sigaction sa = { .sa_handler = on_alarm }; /* no SA_RESTART */
		struct itimerval one_second = { .it_value = { .tv_sec = 1 } };

		sigaction(SIGALRM, &sa, NULL);
		setitimer(ITIMER_REAL, &one_second, NULL);
	}
	if (ioctl(vcpu, KVM_RUN, 0) < 0) {
		if (errno == EINTR && verbose)
			fprintf(stderr, "kvmprobe: guest code runs too slowly (emulated KVM?)\n");
		return fail("KVM_RUN");
	}
	setitimer(ITIMER_REAL, &(struct itimerval){ 0 }, NULL);
	if (verbose)
		fprintf(stderr, "kvmprobe: exit 1: %s (%u)", exit_name(run->exit_reason),
			run->exit_reason);
	if (run->exit_reason != KVM_EXIT_IO || run->io.port != 0x3f8 ||
	    run->io.direction != KVM_EXIT_IO_OUT || run->io.size != 1 ||
	    *((uint8_t *)run + run->io.data_offset) != 'A') {
		if (verbose)
			fprintf(stderr, " unexpected\n");
		return 1;
	}
	if (verbose)
		fprintf(stderr, " port 0x%x out '%c'\n", run->io.port,
			*((uint8_t *)run + run->io.data_offset));
	if (ioctl(vcpu, KVM_RUN, 0) < 0)
		return fail("KVM_RUN");
	if (verbose)
		fprintf(stderr, "kvmprobe: exit 2: %s (%u)\n", exit_name(run->exit_reason),
			run->exit_reason);
	if (run->exit_reason != KVM_EXIT_HLT)
		return 1;
	if (verbose)
		fprintf(stderr, "kvmprobe: %s works\n", dev);
	return 0;
}
