/* The tiny test VM of the KVM self-tests (tests/kvm/test_*.c), in the
 * style of the Linux KVM selftests' kvm_util: one VM with one vCPU, set up
 * in steps so that each test can put its own between them (a dirty ring
 * right after KVM_CREATE_VM, a PIT, RAM copied from another VM):
 *
 *	tvm_create_vm()		KVM_CREATE_VM
 *	tvm_setup_vm()		the TSS, identity map and in-kernel irqchip
 *	tvm_add_ram()		RAM in one slot or two
 *	tvm_create_vcpu()	the vCPU, all the CPUID KVM supports, kvm_run
 *	tvm_set_regs()		where the guest starts
 *	tvm_destroy()
 *
 * Header-only, as unit.h is: each test binary is built from its one .c
 * file (see the Makefile's kvmtests rule).
 *
 * The guests share a layout, so that the helpers here can read and run
 * any of them: code at CODE_GPA, a dword the guest increments on each
 * iteration at COUNTER_GPA, ctrl words the host sets from CTRL_GPA (their
 * layout is the guest's own, 8 bytes at most), and one OUT of the
 * counter's low byte to GUEST_PORT per iteration. */
#ifndef TESTS_KVM_TVM_H
#define TESTS_KVM_TVM_H

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../unit/unit.h"
#include "migrate/bitmap.h"
#include "migrate/dirty.h"
#include "vmm/dirty_ring.h"
#include "vmm/mem.h"

#define CODE_GPA 0x1000
#define COUNTER_GPA 0xf00
#define CTRL_GPA 0xf04
#define CTRL_SIZE 8
#define GUEST_PORT 0x10
#define TSS_GPA 0xfffbd000ULL
#define IDENTITY_MAP_GPA 0xfffbc000ULL

static int kvm_fd = -1;

struct tvm {
	int fd;
	int vcpu_fd;
	struct kvm_run *run;
	size_t run_size;
	struct guest_mem mem;
	/* The vCPU's dirty ring, when the test enabled one (rings.n 0 else). */
	struct dirty_ring ring;
	struct dirty_rings rings;
	unsigned full_exits; /* KVM_EXIT_DIRTY_RING_FULL seen */
	char error[256];     /* the first failure of tvm_run_once, for threads */
};

enum tvm_mode {
	TVM_REAL_MODE,
	TVM_FLAT32,
};

/* The selftests' pair: a raw ioctl, and one that fails the test. */
#define TEST_IOCTL(fd, req, arg)                                                           \
	({                                                                                 \
		int __r = ioctl((fd), (req), (arg));                                       \
		if (__r < 0)                                                               \
			unit_fail(__FILE__, __LINE__, "%s: %s", #req, strerror(errno));    \
		__r;                                                               \
	})

/* For main(): 0, or -1 with the binary's FAIL line printed, since no test
 * can run without it. */
static inline int tvm_open_kvm(void)
{
	kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm_fd < 0) {
		printf("FAIL: %s/open (/dev/kvm: %s)\n", unit_binary, strerror(errno));
		return -1;
	}
	return 0;
}

static inline uint32_t counter(struct tvm *t)
{
	uint32_t v;

	memcpy(&v, gpa_to_hva(&t->mem, COUNTER_GPA, 4), 4);
	return v;
}

/* t is all zero but its fds (-1), so tvm_destroy() may follow any step. */
static inline int tvm_create_vm(struct tvm *t)
{
	memset(t, 0, sizeof(*t));
	t->fd = t->vcpu_fd = -1;
	t->fd = TEST_IOCTL(kvm_fd, KVM_CREATE_VM, 0);
	return t->fd < 0 ? -1 : 0;
}

/* What vm.c sets up in every VM before its memory. */
static inline int tvm_setup_vm(struct tvm *t)
{
	uint64_t idmap = IDENTITY_MAP_GPA;

	if (TEST_IOCTL(t->fd, KVM_SET_TSS_ADDR, TSS_GPA) < 0 ||
	    TEST_IOCTL(t->fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0 ||
	    TEST_IOCTL(t->fd, KVM_CREATE_IRQCHIP, 0) < 0)
		return -1;
	return 0;
}

/* size bytes of RAM, with vmm's own dirty bitmap: one slot at guest 0, or
 * with slot1_gpa two halves, the second at guest slot1_gpa. A slot1_gpa
 * other than size / 2 makes a slot's place in the mapping differ from its
 * guest address, as the slot above the MMIO hole does in vmm. */
static inline int tvm_add_ram(struct tvm *t, uint64_t size, uint64_t slot1_gpa)
{
	if (guest_mem_alloc(&t->mem, size) || guest_mem_dirty_alloc(&t->mem)) {
		unit_fail(__FILE__, __LINE__, "cannot allocate guest memory");
		return -1;
	}
	if (slot1_gpa) {
		t->mem.nregions = 2;
		t->mem.regions[0].size = size / 2;
		t->mem.regions[1] = (struct mem_region){
			.gpa = slot1_gpa, .size = size / 2, .offset = size / 2,
			.hva = t->mem.base + size / 2,
		};
	}
	for (unsigned i = 0; i < t->mem.nregions; i++) {
		struct kvm_userspace_memory_region r = {
			.slot = i, .guest_phys_addr = t->mem.regions[i].gpa,
			.memory_size = t->mem.regions[i].size,
			.userspace_addr = (uintptr_t)t->mem.regions[i].hva,
		};

		if (TEST_IOCTL(t->fd, KVM_SET_USER_MEMORY_REGION, &r) < 0)
			return -1;
	}
	return 0;
}

/* KVM_GET_SUPPORTED_CPUID wants an array big enough for all its entries
 * and says E2BIG otherwise; how big is the host's, so grow until it fits. */
static inline int tvm_set_cpuid(struct tvm *t)
{
	for (unsigned nent = 128; nent <= 4096; nent *= 2) {
		struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + nent * sizeof(c->entries[0]));
		int rc;

		if (!c)
			return -1;
		c->nent = nent;
		rc = ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c);
		if (rc == 0)
			rc = TEST_IOCTL(t->vcpu_fd, KVM_SET_CPUID2, c);
		free(c);
		if (rc == 0 || errno != E2BIG)
			return rc;
	}
	return -1;
}

static inline int tvm_create_vcpu(struct tvm *t)
{
	int mmap_size;

	t->vcpu_fd = TEST_IOCTL(t->fd, KVM_CREATE_VCPU, 0);
	mmap_size = TEST_IOCTL(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (t->vcpu_fd < 0 || mmap_size <= 0 || tvm_set_cpuid(t) < 0)
		return -1;
	t->run_size = (size_t)mmap_size;
	t->run = mmap(NULL, t->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, t->vcpu_fd, 0);
	if (t->run == MAP_FAILED) {
		t->run = NULL;
		unit_fail(__FILE__, __LINE__, "mmap kvm_run: %s", strerror(errno));
		return -1;
	}
	return 0;
}

/* The guest starts at CODE_GPA, interrupts off: in real mode at CS:IP =
 * (CODE_GPA >> 4):0, everything else as KVM resets it; or in flat 32-bit
 * protected mode (no paging, so it reaches all of RAM). The flat segments
 * are set directly: the guest never loads one, so it needs no GDT. */
static inline int tvm_set_regs(struct tvm *t, enum tvm_mode mode)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs = { .rip = mode == TVM_FLAT32 ? CODE_GPA : 0, .rflags = 2 };

	if (TEST_IOCTL(t->vcpu_fd, KVM_GET_SREGS, &sregs) < 0)
		return -1;
	if (mode == TVM_FLAT32) {
		struct kvm_segment code = {
			.base = 0, .limit = 0xffffffff, .selector = 0x8, .type = 0xb,
			.present = 1, .db = 1, .s = 1, .g = 1,
		};
		struct kvm_segment data = code;

		data.selector = 0x10;
		data.type = 0x3;
		sregs.cr0 |= 1; /* PE */
		sregs.cs = code;
		sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
	} else {
		sregs.cs.selector = CODE_GPA >> 4;
		sregs.cs.base = CODE_GPA;
	}
	if (TEST_IOCTL(t->vcpu_fd, KVM_SET_SREGS, &sregs) < 0 ||
	    TEST_IOCTL(t->vcpu_fd, KVM_SET_REGS, &regs) < 0)
		return -1;
	return 0;
}

static inline void tvm_destroy(struct tvm *t)
{
	dirty_ring_destroy(&t->ring);
	if (t->run)
		munmap(t->run, t->run_size);
	if (t->vcpu_fd >= 0)
		close(t->vcpu_fd);
	if (t->fd >= 0)
		close(t->fd);
	guest_mem_free(&t->mem);
}

/* One guest iteration: KVM_RUN until the OUT; a full ring on the way is
 * harvested and reset as vcpu.c does it. The OUT's byte, or -1 with the
 * reason in t->error: vCPU threads call this, and unit_fail() is not for
 * threads. */
static inline int tvm_run_once(struct tvm *t)
{
	for (;;) {
		int rc = ioctl(t->vcpu_fd, KVM_RUN, 0), n;

		if (rc < 0 && errno == EINTR)
			continue;
		if (rc < 0) {
			snprintf(t->error, sizeof(t->error), "KVM_RUN: %s", strerror(errno));
			return -1;
		}
		if (t->run->exit_reason == KVM_EXIT_DIRTY_RING_FULL) {
			t->full_exits++;
			n = dirty_ring_collect(&t->ring, t->fd, &t->mem, t->mem.dirty, NULL);
			if (n < 0) {
				snprintf(t->error, sizeof(t->error), "KVM_RESET_DIRTY_RINGS: %s",
					 strerror(-n));
				return -1;
			}
			continue;
		}
		if (t->run->exit_reason != KVM_EXIT_IO || t->run->io.port != GUEST_PORT ||
		    t->run->io.direction != KVM_EXIT_IO_OUT || t->run->io.size != 1) {
			struct kvm_regs regs = { 0 };

			ioctl(t->vcpu_fd, KVM_GET_REGS, &regs);
			snprintf(t->error, sizeof(t->error),
				 "unexpected exit %u (port %#x) at rip %#llx", t->run->exit_reason,
				 t->run->io.port, (unsigned long long)regs.rip);
			return -1;
		}
		return ((uint8_t *)t->run)[t->run->io.data_offset];
	}
}

/* tvm_run_once() for the test's own thread: a failure fails the test. */
static inline int run_once(struct tvm *t)
{
	int rc = tvm_run_once(t);

	if (rc < 0)
		unit_fail(__FILE__, __LINE__, "%s", t->error);
	return rc;
}

static inline int run_iterations(struct tvm *t, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (run_once(t) < 0)
			return -1;
	return 0;
}

/* KVM marks a page dirty when it first maps it into a dirty-logged slot,
 * even for a read or an instruction fetch: it maps the page writable and
 * logs it then. So the guest runs once (writing no ctrl page) before
 * logging starts, and the code page is mapped already (and afterwards
 * only write-protected). */
static inline int warm_up(struct tvm *t)
{
	memset(gpa_to_hva(&t->mem, CTRL_GPA, CTRL_SIZE), 0, CTRL_SIZE);
	if (run_iterations(t, 1))
		return -1;
	memset(gpa_to_hva(&t->mem, COUNTER_GPA, 4), 0, 4);
	return 0;
}

/* ---- the dirty log ---- */

/* Checks that the dirty pages are exactly the expected ones. */
static inline void check_dirty_set(const char *what, const struct bitmap *got,
				   const struct bitmap *want)
{
	char line[512];
	size_t len = 0;

	for (uint64_t p = 0; p < got->nbits && len < sizeof(line) - 40; p++)
		if (bitmap_test(got, p) != bitmap_test(want, p))
			len += (size_t)snprintf(line + len, sizeof(line) - len, " %s%#llx",
						bitmap_test(got, p) ? "+" : "-",
						(unsigned long long)p);
	if (len)
		unit_fail(__FILE__, __LINE__, "%s: dirty pages differ (+ unexpected, - missing):%s",
			  what, line);
}

static inline int sync_into(struct dirty_log *d, struct bitmap *b)
{
	char err[256];
	int rc;

	bitmap_clear_all(b);
	rc = dirty_sync(d, b, err, sizeof(err));
	if (rc)
		unit_fail(__FILE__, __LINE__, "dirty_sync: %s", err);
	return rc;
}

#endif
