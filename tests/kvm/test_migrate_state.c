/* KVM self-test for migrate/dirty.c and migrate/state.c, in the style of
 * the Linux KVM selftests: each test builds its own tiny VM (tvm.h; in-kernel
 * irqchip and PIT as vm.c makes them, 2 MiB of RAM, one vCPU) running a
 * real-mode loop, and checks what KVM reports. Needs real KVM:
 *
 *	make build/kvmtests/test_migrate_state
 *	scripts/testhost build/kvmtests/test_migrate_state
 *
 * The guest (at 0x1000, CS=0x100) does, forever:
 *	counter++ (dword at 0xf00); esi++;
 *	for (i = 0; i < ctrl.count; i++) ctrl.seg:(ctrl.off + i * 4096) = esi;
 *	out 0x10, al (= low byte of counter)
 * so each KVM_RUN returns after one iteration, and the host picks which
 * pages it writes through the ctrl words at 0xf04 (seg), 0xf06 (off) and
 * 0xf08 (count). */
#include <errno.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "../unit/unit.h"
#include "migrate/bitmap.h"
#include "migrate/dirty.h"
#include "migrate/state.h"
#include "tvm.h"
#include "vmm/mem.h"

#define MEM_SIZE (2u << 20)
#define NPAGES (MEM_SIZE / 4096)
#define MSR_IA32_TSC 0x10
#define MSR_STAR 0xc0000081
/* Hyper-V MSRs in KVM's list that are clocks (reads only; writes ignored). */
#define HV_X64_MSR_VP_RUNTIME 0x40000010
#define HV_X64_MSR_TIME_REF_COUNT 0x40000020
/* struct kvm_xsave: XMM registers at 160 (legacy area), XSTATE_BV at 512. */
#define XSAVE_XMM_OFFSET 160
#define XSAVE_XSTATE_BV_OFFSET 512
#define XFEATURE_MASK_SSE 2

static const uint8_t guest_code[] = {
	0x66, 0xff, 0x06, 0x00, 0x0f, /* incl 0xf00 */
	0x66, 0x46,                   /* inc %esi */
	0x8b, 0x1e, 0x04, 0x0f,       /* mov 0xf04,%bx */
	0x8b, 0x3e, 0x06, 0x0f,       /* mov 0xf06,%di */
	0x8b, 0x0e, 0x08, 0x0f,       /* mov 0xf08,%cx */
	0xe3, 0x0c,                   /* jcxz done */
	0x8e, 0xc3,                   /* wr: mov %bx,%es */
	0x26, 0x66, 0x89, 0x35,       /* mov %esi,%es:(%di) */
	0x81, 0xc7, 0x00, 0x10,       /* add $0x1000,%di */
	0xe2, 0xf4,                   /* loop wr */
	0x66, 0xa1, 0x00, 0x0f,       /* done: mov 0xf00,%eax */
	0xe6, 0x10,                   /* out %al,$0x10 */
	0xeb, 0xd7,                   /* jmp 0 */
};

static uint8_t *gpa(struct tvm *t, uint64_t addr)
{
	return gpa_to_hva(&t->mem, addr, 1);
}

static void set_ctrl(struct tvm *t, uint16_t seg, uint16_t off, uint16_t count)
{
	memcpy(gpa(t, CTRL_GPA), &seg, 2);
	memcpy(gpa(t, CTRL_GPA + 2), &off, 2);
	memcpy(gpa(t, CTRL_GPA + 4), &count, 2);
}

/* Memory: two slots (two regions at offsets 0 and 1 MiB, guest physical
 * 0 and 1 MiB) or one of 2 MiB. copy_from: RAM contents to start with. */
static int tvm_create(struct tvm *t, bool two_slots, const struct tvm *copy_from)
{
	struct kvm_pit_config pit = { .flags = 0 };

	if (tvm_create_vm(t) || tvm_setup_vm(t) ||
	    TEST_IOCTL(t->fd, KVM_CREATE_PIT2, &pit) < 0 ||
	    tvm_add_ram(t, MEM_SIZE, two_slots ? MEM_SIZE / 2 : 0))
		return -1;
	if (copy_from)
		memcpy(t->mem.base, copy_from->mem.base, MEM_SIZE);
	else
		memcpy(gpa(t, CODE_GPA), guest_code, sizeof(guest_code));
	return tvm_create_vcpu(t);
}

/* What vcpu.c does before saving: KVM_RUN with immediate_exit, so KVM
 * finishes the OUT it exited for (and advances RIP past it). */
static int complete_pending_io(struct tvm *t)
{
	int rc;

	t->run->immediate_exit = 1;
	rc = ioctl(t->vcpu_fd, KVM_RUN, 0);
	t->run->immediate_exit = 0;
	if (rc == 0 || errno != EINTR) {
		unit_fail(__FILE__, __LINE__, "KVM_RUN with immediate_exit: rc %d, %s", rc,
			  strerror(errno));
		return -1;
	}
	return 0;
}

/* ---- dirty log ---- */

/* Checks that the dirty pages are exactly the listed ones. */
static void check_dirty_list(const char *what, const struct bitmap *got, const uint64_t *want,
			     unsigned nwant)
{
	struct bitmap exp;

	if (bitmap_alloc(&exp, got->nbits))
		return;
	for (unsigned i = 0; i < nwant; i++)
		bitmap_set(&exp, want[i]);
	check_dirty_set(what, got, &exp);
	bitmap_free(&exp);
}

static void test_dirty_clear_log(void)
{
	/* Phase 1: slot 0, pages 0x20-0x27; phase 2: slot 1, 0x102-0x105. */
	static const uint64_t phase1[] = { 0, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27 };
	static const uint64_t phase1_half[] = { 0, 0x24, 0x25, 0x26, 0x27 };
	static const uint64_t phase2[] = { 0, 0x102, 0x103, 0x104, 0x105, 0x1f0, 0x30 };
	struct dirty_log d;
	struct bitmap b;
	struct tvm t;
	char err[256];
	int rc;

	REQUIRE(tvm_create(&t, true, NULL) == 0 && tvm_set_regs(&t, TVM_REAL_MODE) == 0);
	REQUIRE(warm_up(&t) == 0);
	rc = dirty_init(&d, t.fd, &t.mem, NULL, DIRTY_MODE_CLEAR_LOG, err, sizeof(err));
	if (rc == -EOPNOTSUPP) {
		printf("SKIP: %s\n", err);
		tvm_destroy(&t);
		return;
	}
	REQUIRE(rc == 0);
	CHECK_STREQ(dirty_mode_name(&d), "clear-log");
	REQUIRE(bitmap_alloc(&b, guest_mem_pages(&t.mem)) == 0);
	CHECK_EQ(dirty_sync(&d, &b, err, sizeof(err)), -EINVAL); /* not started */
	REQUIRE(dirty_start(&d, err, sizeof(err)) == 0);

	/* INITIALLY_SET: every page starts dirty, and reading does not clear. */
	REQUIRE(sync_into(&d, &b) == 0);
	CHECK_EQ(bitmap_count(&b), NPAGES);
	REQUIRE(sync_into(&d, &b) == 0);
	CHECK_EQ(bitmap_count(&b), NPAGES);
	REQUIRE(dirty_clear(&d, 0, NPAGES, err, sizeof(err)) == 0);
	REQUIRE(sync_into(&d, &b) == 0);
	CHECK_EQ(bitmap_count(&b), 0);

	set_ctrl(&t, 0x2000, 0, 8);
	REQUIRE(run_iterations(&t, 20) == 0);
	REQUIRE(sync_into(&d, &b) == 0);
	check_dirty_list("phase 1", &b, phase1, 9);
	CHECK_EQ(counter(&t), 20);
	/* Clearing 4 pages inside a 64-page chunk clears just those. */
	REQUIRE(dirty_clear(&d, 0x20, 4, err, sizeof(err)) == 0);
	REQUIRE(sync_into(&d, &b) == 0);
	check_dirty_list("phase 1 after a partial clear", &b, phase1_half, 5);
	CHECK_EQ(dirty_clear(&d, NPAGES - 1, 2, err, sizeof(err)), -EINVAL);
	CHECK_CONTAINS(err, "outside RAM");
	/* A mask over all of RAM (both slots): only its set pages are cleared. */
	{
		static const uint64_t left[] = { 0, 0x24, 0x26, 0x27 };
		struct bitmap mask;

		REQUIRE(bitmap_alloc(&mask, NPAGES) == 0);
		bitmap_set(&mask, 0x25);
		bitmap_set(&mask, NPAGES - 1); /* slot 1, not dirty: no harm */
		REQUIRE(dirty_clear_mask(&d, 0, NPAGES, mask.words, err, sizeof(err)) == 0);
		REQUIRE(sync_into(&d, &b) == 0);
		check_dirty_list("phase 1 after a mask clear", &b, left, 4);
		CHECK_EQ(dirty_clear_mask(&d, 1, 64, mask.words, err, sizeof(err)), -EINVAL);
		CHECK_CONTAINS(err, "aligned");
		CHECK_EQ(dirty_clear_mask(&d, 0, 65, mask.words, err, sizeof(err)), -EINVAL);
		CHECK_EQ(dirty_clear_mask(&d, NPAGES - 64, 128, mask.words, err, sizeof(err)),
			 -EINVAL);
		bitmap_free(&mask);
	}

	/* A clear that spans both slots, then writes in slot 1 (through
	 * segment 0xffff) and two VMM-side writes, one per slot. */
	REQUIRE(dirty_clear(&d, 0, NPAGES, err, sizeof(err)) == 0);
	set_ctrl(&t, 0xffff, 0x2010, 4);
	REQUIRE(run_iterations(&t, 20) == 0);
	guest_mem_mark_dirty(&t.mem, 0x1f0000, 1);
	guest_mem_mark_dirty(&t.mem, 0x30fff, 1);
	CHECK(guest_mem_test_dirty(&t.mem, 0x1f0000));
	REQUIRE(sync_into(&d, &b) == 0);
	check_dirty_list("phase 2", &b, phase2, 7);
	CHECK(!guest_mem_test_dirty(&t.mem, 0x1f0000)); /* taken by the sync */
	CHECK(!guest_mem_test_dirty(&t.mem, 0x30000));

	REQUIRE(dirty_stop(&d, err, sizeof(err)) == 0);
	{
		struct kvm_dirty_log log = { .slot = 0, .dirty_bitmap = b.words };

		CHECK(ioctl(t.fd, KVM_GET_DIRTY_LOG, &log) < 0 && errno == ENOENT);
	}
	CHECK_EQ(dirty_sync(&d, &b, err, sizeof(err)), -EINVAL);
	/* Logging can be started again. */
	REQUIRE(dirty_start(&d, err, sizeof(err)) == 0);
	REQUIRE(sync_into(&d, &b) == 0);
	CHECK_EQ(bitmap_count(&b), NPAGES);
	CHECK_EQ(dirty_stop(&d, err, sizeof(err)), 0);
	bitmap_free(&b);
	dirty_destroy(&d);
	tvm_destroy(&t);
}

static void test_dirty_get_log(void)
{
	static const uint64_t phase1[] = { 0, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27 };
	static const uint64_t phase2[] = { 0, 0x102, 0x103, 0x104, 0x105, 0x80 };
	struct dirty_log d;
	struct bitmap b;
	struct tvm t;
	char err[256];

	REQUIRE(tvm_create(&t, true, NULL) == 0 && tvm_set_regs(&t, TVM_REAL_MODE) == 0);
	REQUIRE(warm_up(&t) == 0);
	REQUIRE(dirty_init(&d, t.fd, &t.mem, NULL, DIRTY_MODE_GET_LOG, err, sizeof(err)) == 0);
	CHECK_STREQ(dirty_mode_name(&d), "get-log");
	REQUIRE(bitmap_alloc(&b, guest_mem_pages(&t.mem)) == 0);
	REQUIRE(dirty_start(&d, err, sizeof(err)) == 0);
	/* The first sync reports every page in every mode: the bulk pass of a
	 * migration sends what it reports (KVM's own first log is empty). */
	REQUIRE(sync_into(&d, &b) == 0);
	CHECK_EQ(bitmap_count(&b), NPAGES);
	REQUIRE(sync_into(&d, &b) == 0);
	CHECK_EQ(bitmap_count(&b), 0);

	set_ctrl(&t, 0x2000, 0, 8);
	REQUIRE(run_iterations(&t, 20) == 0);
	REQUIRE(sync_into(&d, &b) == 0);
	check_dirty_list("phase 1", &b, phase1, 9);
	/* Reading cleared it. */
	REQUIRE(sync_into(&d, &b) == 0);
	CHECK_EQ(bitmap_count(&b), 0);
	CHECK_EQ(dirty_clear(&d, 0, NPAGES, err, sizeof(err)), 0);

	set_ctrl(&t, 0xffff, 0x2010, 4);
	REQUIRE(run_iterations(&t, 20) == 0);
	guest_mem_mark_dirty(&t.mem, 0x80000, 4096);
	REQUIRE(sync_into(&d, &b) == 0);
	check_dirty_list("phase 2", &b, phase2, 6);
	CHECK_EQ(dirty_stop(&d, err, sizeof(err)), 0);
	bitmap_free(&b);
	dirty_destroy(&d);
	tvm_destroy(&t);
}

static void test_dirty_auto(void)
{
	struct dirty_log d;
	struct tvm t;
	char err[256];

	REQUIRE(tvm_create(&t, false, NULL) == 0);
	REQUIRE(dirty_init(&d, t.fd, &t.mem, NULL, DIRTY_MODE_AUTO, err, sizeof(err)) == 0);
	printf("INFO: auto dirty-log mode here: %s\n", dirty_mode_name(&d));
	dirty_destroy(&d);
	tvm_destroy(&t);
}

/* ---- state ---- */

static const struct state_item *find_item(const struct state_item *items,
					  const struct state_item_spec *spec, unsigned n,
					  uint16_t tag)
{
	for (unsigned i = 0; i < n; i++)
		if (spec[i].tag == tag)
			return items[i].present ? &items[i] : NULL;
	return NULL;
}

static uint64_t msr_value(const struct state_item *m, uint32_t index, bool *found)
{
	uint32_t n;

	memcpy(&n, m->data, 4);
	for (uint32_t i = 0; i < n; i++) {
		uint32_t idx;
		uint64_t v;

		memcpy(&idx, m->data + 8 + i * 16, 4);
		memcpy(&v, m->data + 8 + i * 16 + 8, 8);
		if (idx == index) {
			*found = true;
			return v;
		}
	}
	*found = false;
	return 0;
}

/* Every vCPU item of b equals a's, but the TSC, which moved on. */
static void compare_vcpu_blobs(const struct state_writer *a, const struct state_writer *b)
{
	struct state_item ia[16], ib[16];
	const struct state_item_spec *spec = state_vcpu_items;
	unsigned n = state_vcpu_nitems;
	char err[256];

	REQUIRE(state_parse_items(a->buf, a->len, spec, n, ia, err, sizeof(err)) == 0);
	REQUIRE(state_parse_items(b->buf, b->len, spec, n, ib, err, sizeof(err)) == 0);
	for (unsigned i = 0; i < n; i++) {
		if (ia[i].present != ib[i].present) {
			unit_fail(__FILE__, __LINE__, "item %s in one blob only", spec[i].name);
			continue;
		}
		if (!ia[i].present || spec[i].tag == STATE_VCPU_MSRS)
			continue;
		if (ia[i].len != ib[i].len || memcmp(ia[i].data, ib[i].data, ia[i].len)) {
			size_t off = 0;

			while (off < ia[i].len && ia[i].data[off] == ib[i].data[off])
				off++;
			unit_fail(__FILE__, __LINE__, "item %s differs after load (first at byte %zu)",
				  spec[i].name, off);
		}
	}
	{
		const struct state_item *ma = find_item(ia, spec, n, STATE_VCPU_MSRS);
		const struct state_item *mb = find_item(ib, spec, n, STATE_VCPU_MSRS);
		uint32_t na, nb;

		memcpy(&na, ma->data, 4);
		memcpy(&nb, mb->data, 4);
		CHECK_EQ(na, nb);
		printf("INFO: %u MSRs saved\n", na);
		for (uint32_t i = 0; i < na; i++) {
			uint32_t idx;
			uint64_t va, vb;
			bool found;

			memcpy(&idx, ma->data + 8 + i * 16, 4);
			memcpy(&va, ma->data + 16 + i * 16, 8);
			vb = msr_value(mb, idx, &found);
			if (!found)
				unit_fail(__FILE__, __LINE__, "MSR %#x missing after load", idx);
			else if (idx == MSR_IA32_TSC && (vb < va || vb - va > (100ULL << 30)))
				unit_fail(__FILE__, __LINE__, "TSC went from %#llx to %#llx",
					  (unsigned long long)va, (unsigned long long)vb);
			else if (idx == HV_X64_MSR_VP_RUNTIME || idx == HV_X64_MSR_TIME_REF_COUNT)
				printf("INFO: MSR %#x is a live counter: %#llx, after load %#llx\n",
				       idx, (unsigned long long)va, (unsigned long long)vb);
			else if (idx != MSR_IA32_TSC && va != vb)
				unit_fail(__FILE__, __LINE__, "MSR %#x: %#llx, after load %#llx", idx,
					  (unsigned long long)va, (unsigned long long)vb);
		}
	}
}

static void compare_vm_blobs(const struct state_writer *a, const struct state_writer *b)
{
	struct state_item ia[8], ib[8];
	const struct state_item_spec *spec = state_vm_items;
	unsigned n = state_vm_nitems;
	struct kvm_clock_data ca, cb;
	struct kvm_pit_state2 pa, pb;
	char err[256];

	REQUIRE(state_parse_items(a->buf, a->len, spec, n, ia, err, sizeof(err)) == 0);
	REQUIRE(state_parse_items(b->buf, b->len, spec, n, ib, err, sizeof(err)) == 0);
	for (unsigned i = 0; i < n; i++) {
		if (spec[i].tag == STATE_VM_CLOCK || spec[i].tag == STATE_VM_PIT2)
			continue;
		if (memcmp(ia[i].data, ib[i].data, ia[i].len))
			unit_fail(__FILE__, __LINE__, "item %s differs after load", spec[i].name);
	}
	memcpy(&ca, find_item(ia, spec, n, STATE_VM_CLOCK)->data, sizeof(ca));
	memcpy(&cb, find_item(ib, spec, n, STATE_VM_CLOCK)->data, sizeof(cb));
	printf("INFO: kvmclock %llu ns at save (flags %#x), %llu ns after load (flags %#x)\n",
	       (unsigned long long)ca.clock, ca.flags, (unsigned long long)cb.clock, cb.flags);
	CHECK(cb.clock >= ca.clock && cb.clock - ca.clock < 10ULL * 1000 * 1000 * 1000);
	memcpy(&pa, find_item(ia, spec, n, STATE_VM_PIT2)->data, sizeof(pa));
	memcpy(&pb, find_item(ib, spec, n, STATE_VM_PIT2)->data, sizeof(pb));
	CHECK_EQ(pa.flags, pb.flags);
	for (unsigned i = 0; i < 3; i++) {
		/* count_load_time is the host's clock: it differs. */
		pa.channels[i].count_load_time = pb.channels[i].count_load_time = 0;
		CHECK(memcmp(&pa.channels[i], &pb.channels[i], sizeof(pa.channels[i])) == 0);
	}
}

/* Some state the guest loop does not touch, so the save carries more than
 * KVM's reset values: an XMM register, an MSR, a debug register, the TPR. */
static int seed_state(struct tvm *t)
{
	struct kvm_xsave *xs = calloc(1, sizeof(*xs));
	struct kvm_debugregs dregs;
	struct kvm_lapic_state lapic;
	uint8_t *x;
	uint64_t bv;
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e[1];
	} msrs = { .hdr.nmsrs = 1, .e[0] = { .index = MSR_STAR, .data = 0x0023001000000000ULL } };

	/* Through XSAVE with the SSE bit in XSTATE_BV: KVM_SET_FPU writes the
	 * legacy area but leaves XSTATE_BV alone, so on a fresh vCPU (SSE in
	 * its init state) the XMM values it sets are dropped at the next
	 * XRSTOR. */
	if (!xs || TEST_IOCTL(t->vcpu_fd, KVM_GET_XSAVE, xs) < 0) {
		free(xs);
		return -1;
	}
	x = (uint8_t *)xs->region;
	for (unsigned i = 0; i < 16; i++)
		x[XSAVE_XMM_OFFSET + 3 * 16 + i] = (uint8_t)(0xa0 + i);
	memcpy(&bv, x + XSAVE_XSTATE_BV_OFFSET, 8);
	bv |= XFEATURE_MASK_SSE;
	memcpy(x + XSAVE_XSTATE_BV_OFFSET, &bv, 8);
	if (TEST_IOCTL(t->vcpu_fd, KVM_SET_XSAVE, xs) < 0 ||
	    TEST_IOCTL(t->vcpu_fd, KVM_GET_DEBUGREGS, &dregs) < 0) {
		free(xs);
		return -1;
	}
	free(xs);
	dregs.db[0] = 0x12345000;
	if (TEST_IOCTL(t->vcpu_fd, KVM_SET_DEBUGREGS, &dregs) < 0 ||
	    TEST_IOCTL(t->vcpu_fd, KVM_SET_MSRS, &msrs) != 1 ||
	    TEST_IOCTL(t->vcpu_fd, KVM_GET_LAPIC, &lapic) < 0)
		return -1;
	lapic.regs[0x80] = 0x20; /* TPR */
	return TEST_IOCTL(t->vcpu_fd, KVM_SET_LAPIC, &lapic) < 0 ? -1 : 0;
}

static void test_state_migrate(void)
{
	struct state_writer wa, wva, wb, wvb;
	struct kvm_regs ra, rb, r_io, r_done;
	struct kvm_fpu fpu;
	struct tvm a, b;
	char err[256];
	int rc;

	state_writer_init(&wa);
	state_writer_init(&wva);
	state_writer_init(&wb);
	state_writer_init(&wvb);
	REQUIRE(tvm_create(&a, false, NULL) == 0 && tvm_set_regs(&a, TVM_REAL_MODE) == 0);
	REQUIRE(seed_state(&a) == 0);
	set_ctrl(&a, 0x2000, 0, 4);
	REQUIRE(run_iterations(&a, 25) == 0);
	/* KVM (before 6.7 or so) takes a host TSC write within a second of
	 * the last one (here: the new vCPU's reset to 0) as an attempt to
	 * synchronise vCPUs and keeps its own offset instead: a guest younger
	 * than a second would see its TSC go back. Let the source age. */
	usleep(1200 * 1000);
	REQUIRE(run_iterations(&a, 25) == 0);
	CHECK_EQ(counter(&a), 50);
	REQUIRE(TEST_IOCTL(a.vcpu_fd, KVM_GET_REGS, &r_io) == 0);
	REQUIRE(complete_pending_io(&a) == 0);
	REQUIRE(TEST_IOCTL(a.vcpu_fd, KVM_GET_REGS, &r_done) == 0);
	printf("INFO: rip at the OUT exit %#llx, after immediate_exit %#llx\n",
	       (unsigned long long)r_io.rip, (unsigned long long)r_done.rip);
	CHECK_EQ(r_done.rip, 0x27); /* past the 2-byte OUT at 0x25 */
	CHECK_EQ(r_done.rsi, 50);

	rc = state_save_vcpu(kvm_fd, a.vcpu_fd, &wa, err, sizeof(err));
	if (rc)
		unit_fail(__FILE__, __LINE__, "state_save_vcpu: %s", err);
	rc = state_save_vm(a.fd, &wva, err, sizeof(err));
	if (rc)
		unit_fail(__FILE__, __LINE__, "state_save_vm: %s", err);
	REQUIRE(!wa.error && !wva.error && wa.len && wva.len);
	printf("INFO: vCPU blob %zu bytes, VM blob %zu bytes\n", wa.len, wva.len);

	/* The second VM: same RAM, loaded state, nothing else set. */
	REQUIRE(tvm_create(&b, false, &a) == 0);
	rc = state_load_vm(b.fd, wva.buf, wva.len, err, sizeof(err));
	if (rc)
		unit_fail(__FILE__, __LINE__, "state_load_vm: %s", err);
	rc = state_load_vcpu(b.vcpu_fd, wa.buf, wa.len, err, sizeof(err));
	if (rc)
		unit_fail(__FILE__, __LINE__, "state_load_vcpu: %s", err);
	REQUIRE(rc == 0);
	REQUIRE(state_save_vcpu(kvm_fd, b.vcpu_fd, &wb, err, sizeof(err)) == 0);
	REQUIRE(state_save_vm(b.fd, &wvb, err, sizeof(err)) == 0);
	compare_vcpu_blobs(&wa, &wb);
	compare_vm_blobs(&wva, &wvb);
	REQUIRE(TEST_IOCTL(b.vcpu_fd, KVM_GET_FPU, &fpu) == 0);
	CHECK_EQ(fpu.xmm[3][15], 0xaf);

	/* Both go on from the same point and agree. */
	for (unsigned i = 1; i <= 5; i++) {
		int va = run_once(&a), vb = run_once(&b);

		CHECK_EQ(va, 50 + i);
		CHECK_EQ(vb, 50 + i);
		REQUIRE(TEST_IOCTL(a.vcpu_fd, KVM_GET_REGS, &ra) == 0);
		REQUIRE(TEST_IOCTL(b.vcpu_fd, KVM_GET_REGS, &rb) == 0);
		CHECK(memcmp(&ra, &rb, sizeof(ra)) == 0);
		CHECK_EQ(rb.rsi, 50 + i);
	}
	CHECK_EQ(counter(&b), 55);
	CHECK(memcmp(a.mem.base, b.mem.base, MEM_SIZE) == 0);

	/* A blob cut short is refused before anything is set. */
	CHECK_EQ(state_load_vcpu(b.vcpu_fd, wa.buf, wa.len - 1, err, sizeof(err)), -EBADMSG);
	CHECK_EQ(state_load_vm(b.fd, wva.buf, 3, err, sizeof(err)), -EBADMSG);
	state_writer_free(&wa);
	state_writer_free(&wva);
	state_writer_free(&wb);
	state_writer_free(&wvb);
	tvm_destroy(&a);
	tvm_destroy(&b);
}

int main(int argc, char **argv)
{
	unit_init(argc, argv);
	if (tvm_open_kvm())
		return 1;
	RUN(test_dirty_clear_log);
	RUN(test_dirty_get_log);
	RUN(test_dirty_auto);
	RUN(test_state_migrate);
	close(kvm_fd);
	return unit_done();
}
