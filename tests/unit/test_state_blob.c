/* Unit tests for the state blob format of migrate/state.c: the item walker
 * and the MSR item check, with hand-made blobs (every rejection), and the
 * state_writer/state_reader byte buffers. No KVM: the KVM side is in
 * tests/kvm/test_migrate_state.c. */
#include <errno.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdlib.h>

#include "migrate/state.h"
#include "unit.h"

/* A blob under construction. */
struct blob {
	uint8_t b[16384];
	size_t len;
};

static void put(struct blob *bl, const void *p, size_t n)
{
	if (bl->len + n <= sizeof(bl->b)) {
		memcpy(bl->b + bl->len, p, n);
		bl->len += n;
	}
}

static void put_le16(struct blob *bl, uint16_t v)
{
	uint8_t b[2] = { (uint8_t)v, (uint8_t)(v >> 8) };

	put(bl, b, 2);
}

static void put_le32(struct blob *bl, uint32_t v)
{
	uint8_t b[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24) };

	put(bl, b, 4);
}

static void put_le64(struct blob *bl, uint64_t v)
{
	put_le32(bl, (uint32_t)v);
	put_le32(bl, (uint32_t)(v >> 32));
}

/* An item of len bytes of fill. */
static void item(struct blob *bl, uint16_t tag, uint16_t reserved, uint32_t len, uint8_t fill)
{
	put_le16(bl, tag);
	put_le16(bl, reserved);
	put_le32(bl, len);
	for (uint32_t i = 0; i < len; i++)
		put(bl, &fill, 1);
}

/* A test format: A (4 bytes, mandatory), B (2 bytes, optional), V
 * (variable, optional), and a mandatory group of X (1 byte) or Y (3). */
static const struct state_item_spec spec[] = {
	{ 10, 0, 4, true, "A" },
	{ 11, 0, 2, false, "B" },
	{ 12, 0, 0, false, "V" },
	{ 20, 7, 1, true, "X" },
	{ 21, 7, 3, true, "Y" },
};
#define NSPEC 5

static int parse(const struct blob *bl, struct state_item *items, char *err)
{
	return state_parse_items(bl->b, bl->len, spec, NSPEC, items, err, 256);
}

static void test_parse_ok(void)
{
	struct state_item items[NSPEC];
	struct blob bl = { .len = 0 };
	char err[256] = "";

	item(&bl, 21, 0, 3, 0x33); /* order does not matter */
	item(&bl, 12, 0, 5, 0x55);
	item(&bl, 10, 0, 4, 0xaa);
	REQUIRE(parse(&bl, items, err) == 0);
	CHECK(items[0].present);
	CHECK_EQ(items[0].len, 4);
	CHECK(items[0].data == bl.b + 8 + 3 + 8 + 5 + 8);
	CHECK_EQ(items[0].data[3], 0xaa);
	CHECK(!items[1].present);
	CHECK(items[2].present);
	CHECK_EQ(items[2].len, 5);
	CHECK(!items[3].present);
	CHECK(items[4].present);
	CHECK_EQ(items[4].data[0], 0x33);
	/* A zero-length variable item is fine. */
	bl.len = 0;
	item(&bl, 10, 0, 4, 0);
	item(&bl, 20, 0, 1, 0);
	item(&bl, 12, 0, 0, 0);
	CHECK_EQ(parse(&bl, items, err), 0);
	CHECK(items[2].present);
	CHECK_EQ(items[2].len, 0);
}

static void test_parse_rejects(void)
{
	struct state_item items[NSPEC];
	struct blob bl;
	char err[256];

	/* Empty: the mandatory items are missing. */
	bl.len = 0;
	CHECK_EQ(parse(&bl, items, err), -EBADMSG);
	CHECK_STREQ(err, "missing item A");

	/* Unknown tag (0 is not special: it is just unknown). */
	bl.len = 0;
	item(&bl, 10, 0, 4, 0);
	item(&bl, 99, 0, 1, 0);
	CHECK_EQ(parse(&bl, items, err), -EBADMSG);
	CHECK_STREQ(err, "unknown item tag 99 at byte 12");
	bl.len = 0;
	item(&bl, 0, 0, 0, 0);
	CHECK_EQ(parse(&bl, items, err), -EBADMSG);
	CHECK_CONTAINS(err, "unknown item tag 0");

	/* Reserved field not zero. */
	bl.len = 0;
	item(&bl, 10, 0x100, 4, 0);
	CHECK_EQ(parse(&bl, items, err), -EBADMSG);
	CHECK_STREQ(err, "item A: reserved field is 0x100, not 0");

	/* Duplicate. */
	bl.len = 0;
	item(&bl, 10, 0, 4, 0);
	item(&bl, 20, 0, 1, 0);
	item(&bl, 10, 0, 4, 0);
	CHECK_EQ(parse(&bl, items, err), -EBADMSG);
	CHECK_STREQ(err, "duplicate item A");

	/* Wrong length for a fixed-size item, shorter and longer. */
	bl.len = 0;
	item(&bl, 10, 0, 3, 0);
	CHECK_EQ(parse(&bl, items, err), -EBADMSG);
	CHECK_STREQ(err, "item A: length 3, expected 4");
	bl.len = 0;
	item(&bl, 10, 0, 4, 0);
	item(&bl, 11, 0, 4, 0);
	CHECK_EQ(parse(&bl, items, err), -EBADMSG);
	CHECK_STREQ(err, "item B: length 4, expected 2");

	/* Length past the end of the blob (truncated data), also one that
	 * would overflow a 32-bit position. */
	bl.len = 0;
	item(&bl, 10, 0, 4, 0);
	item(&bl, 12, 0, 10, 0);
	bl.len -= 1;
	CHECK_EQ(parse(&bl, items, err), -EBADMSG);
	CHECK_STREQ(err, "item V: length 10 runs past the end of the blob (9 bytes left)");
	bl.len = 0;
	item(&bl, 12, 0, 0, 0);
	bl.b[4] = bl.b[5] = bl.b[6] = bl.b[7] = 0xff;
	CHECK_EQ(parse(&bl, items, err), -EBADMSG);
	CHECK_CONTAINS(err, "length 4294967295 runs past the end");

	/* Trailing bytes: fewer than an item header after the last item. */
	for (unsigned extra = 1; extra < 8; extra++) {
		bl.len = 0;
		item(&bl, 10, 0, 4, 0);
		item(&bl, 20, 0, 1, 0);
		for (unsigned i = 0; i < extra; i++)
			put(&bl, "", 1);
		CHECK_EQ(parse(&bl, items, err), -EBADMSG);
		CHECK_CONTAINS(err, "trailing bytes after the last item");
	}

	/* Missing mandatory item, missing group, both of a group. */
	bl.len = 0;
	item(&bl, 20, 0, 1, 0);
	CHECK_EQ(parse(&bl, items, err), -EBADMSG);
	CHECK_STREQ(err, "missing item A");
	bl.len = 0;
	item(&bl, 10, 0, 4, 0);
	CHECK_EQ(parse(&bl, items, err), -EBADMSG);
	CHECK_STREQ(err, "missing item X (or its alternative)");
	bl.len = 0;
	item(&bl, 10, 0, 4, 0);
	item(&bl, 21, 0, 3, 0);
	item(&bl, 20, 0, 1, 0);
	CHECK_EQ(parse(&bl, items, err), -EBADMSG);
	CHECK_STREQ(err, "items X and Y are alternatives; both are present");
}

/* A whole vCPU blob of zeroed structs, with the given tags left out. */
static void vcpu_blob(struct blob *bl, uint16_t skip1, uint16_t skip2)
{
	bl->len = 0;
	for (unsigned i = 0; i < state_vcpu_nitems; i++) {
		const struct state_item_spec *s = &state_vcpu_items[i];

		if (s->tag == skip1 || s->tag == skip2)
			continue;
		if (s->tag == STATE_VCPU_MSRS) {
			put_le16(bl, s->tag);
			put_le16(bl, 0);
			put_le32(bl, 8 + 16);
			put_le32(bl, 1);
			put_le32(bl, 0);
			put_le32(bl, 0x10);
			put_le32(bl, 0);
			put_le64(bl, 12345);
			continue;
		}
		item(bl, s->tag, 0, s->size, 0);
	}
}

static void test_vcpu_spec(void)
{
	struct state_item items[16];
	struct blob *bl = calloc(1, sizeof(*bl));
	char err[256];

	REQUIRE(bl);
	REQUIRE(state_vcpu_nitems <= 16);
	/* XSAVE and FPU are alternatives; the FPU-only blob is fine. */
	vcpu_blob(bl, STATE_VCPU_XSAVE, 0);
	CHECK_EQ(state_parse_items(bl->b, bl->len, state_vcpu_items, state_vcpu_nitems, items,
				   err, sizeof(err)), 0);
	vcpu_blob(bl, STATE_VCPU_FPU, STATE_VCPU_XCRS); /* XCRS and TSC_KHZ are optional */
	CHECK_EQ(state_parse_items(bl->b, bl->len, state_vcpu_items, state_vcpu_nitems, items,
				   err, sizeof(err)), 0);
	vcpu_blob(bl, 0, 0);
	CHECK_EQ(state_parse_items(bl->b, bl->len, state_vcpu_items, state_vcpu_nitems, items,
				   err, sizeof(err)), -EBADMSG);
	CHECK_STREQ(err, "items XSAVE and FPU are alternatives; both are present");
	vcpu_blob(bl, STATE_VCPU_XSAVE, STATE_VCPU_FPU);
	CHECK_EQ(state_parse_items(bl->b, bl->len, state_vcpu_items, state_vcpu_nitems, items,
				   err, sizeof(err)), -EBADMSG);
	CHECK_STREQ(err, "missing item XSAVE (or its alternative)");
	vcpu_blob(bl, STATE_VCPU_FPU, STATE_VCPU_LAPIC);
	CHECK_EQ(state_parse_items(bl->b, bl->len, state_vcpu_items, state_vcpu_nitems, items,
				   err, sizeof(err)), -EBADMSG);
	CHECK_STREQ(err, "missing item LAPIC");
	/* The loaders refuse a bad blob before any ioctl (fd -1 is never
	 * used): a bad MSR item, a cut blob. */
	vcpu_blob(bl, STATE_VCPU_FPU, 0);
	CHECK_EQ(state_load_vcpu(-1, bl->b, bl->len - 1, err, sizeof(err)), -EBADMSG);
	CHECK_CONTAINS(err, "TSC_KHZ");
	for (size_t off = 0; off + 8 <= bl->len;) { /* MSRS padding */
		uint32_t len = (uint32_t)bl->b[off + 4] | (uint32_t)bl->b[off + 5] << 8;

		if (bl->b[off] == STATE_VCPU_MSRS)
			bl->b[off + 8 + 4] = 1;
		off += 8 + len;
	}
	CHECK_EQ(state_load_vcpu(-1, bl->b, bl->len, err, sizeof(err)), -EBADMSG);
	CHECK_STREQ(err, "item MSRS: padding is not 0");
	CHECK_EQ(state_load_vm(-1, bl->b, bl->len, err, sizeof(err)), -EBADMSG);
	CHECK_STREQ(err, "item CLOCK: length 144, expected 48"); /* REGS's tag is CLOCK's */
	free(bl);
}

static void test_vm_spec(void)
{
	struct state_item items[8];
	struct blob *bl = calloc(1, sizeof(*bl));
	char err[256];

	REQUIRE(bl);
	for (unsigned i = 0; i < state_vm_nitems; i++)
		item(bl, state_vm_items[i].tag, 0, state_vm_items[i].size, 0);
	CHECK_EQ(state_parse_items(bl->b, bl->len, state_vm_items, state_vm_nitems, items, err,
				   sizeof(err)), 0);
	/* Every item's chip_id is 0 here: the slave PIC's is wrong, which
	 * is found before any ioctl. */
	CHECK_EQ(state_load_vm(-1, bl->b, bl->len, err, sizeof(err)), -EBADMSG);
	CHECK_STREQ(err, "item PIC slave holds chip 0");
	bl->len = 0;
	for (unsigned i = 1; i < state_vm_nitems; i++)
		item(bl, state_vm_items[i].tag, 0, state_vm_items[i].size, 0);
	CHECK_EQ(state_load_vm(-1, bl->b, bl->len, err, sizeof(err)), -EBADMSG);
	CHECK_STREQ(err, "missing item CLOCK");
	free(bl);
}

/* An MSR item of n entries; the indices are 0x100 + i. */
static void msr_item(struct blob *bl, uint32_t n)
{
	bl->len = 0;
	put_le32(bl, n);
	put_le32(bl, 0);
	for (uint32_t i = 0; i < n; i++) {
		put_le32(bl, 0x100 + i);
		put_le32(bl, 0);
		put_le64(bl, i);
	}
}

static void test_msrs(void)
{
	struct blob *bl = calloc(1, sizeof(*bl));
	char err[256];

	REQUIRE(bl);
	msr_item(bl, 0);
	CHECK_EQ(state_check_msrs(bl->b, bl->len, err, sizeof(err)), 0);
	msr_item(bl, 3);
	CHECK_EQ(state_check_msrs(bl->b, bl->len, err, sizeof(err)), 0);
	CHECK_EQ(state_check_msrs(bl->b, 7, err, sizeof(err)), -EBADMSG);
	CHECK_STREQ(err, "item MSRS: 7 bytes, too short");
	CHECK_EQ(state_check_msrs(bl->b, bl->len - 1, err, sizeof(err)), -EBADMSG);
	CHECK_STREQ(err, "item MSRS: length 55, expected 56 for 3 MSRs");
	put(bl, "", 1);
	CHECK_EQ(state_check_msrs(bl->b, bl->len, err, sizeof(err)), -EBADMSG);
	CHECK_STREQ(err, "item MSRS: length 57, expected 56 for 3 MSRs");
	msr_item(bl, 3);
	bl->b[4] = 1;
	CHECK_EQ(state_check_msrs(bl->b, bl->len, err, sizeof(err)), -EBADMSG);
	CHECK_STREQ(err, "item MSRS: padding is not 0");
	msr_item(bl, 3);
	bl->b[8 + 16 + 4] = 1;
	CHECK_EQ(state_check_msrs(bl->b, bl->len, err, sizeof(err)), -EBADMSG);
	CHECK_STREQ(err, "item MSRS: entry 1 padding is not 0");
	msr_item(bl, 3);
	bl->b[8 + 32] = 0x00; /* entry 2's index 0x102 becomes 0x100 */
	CHECK_EQ(state_check_msrs(bl->b, bl->len, err, sizeof(err)), -EBADMSG);
	CHECK_STREQ(err, "item MSRS: MSR 0x100 appears twice");
	msr_item(bl, 0);
	bl->b[0] = 0x01;
	bl->b[1] = 0x04; /* 1025 */
	CHECK_EQ(state_check_msrs(bl->b, bl->len, err, sizeof(err)), -EBADMSG);
	CHECK_STREQ(err, "item MSRS: 1025 MSRs, at most 1024");
	/* A count whose length would overflow 32 bits is just too many. */
	bl->b[0] = bl->b[1] = bl->b[2] = bl->b[3] = 0xff;
	CHECK_EQ(state_check_msrs(bl->b, bl->len, err, sizeof(err)), -EBADMSG);
	free(bl);
}

/* A VM blob whose irqchip items hold chip ids master, slave, ioapic. */
static void vm_blob(struct blob *bl, uint32_t master, uint32_t slave, uint32_t ioapic)
{
	const uint32_t chip[] = { [STATE_VM_PIC_MASTER] = master, [STATE_VM_PIC_SLAVE] = slave,
				  [STATE_VM_IOAPIC] = ioapic };

	bl->len = 0;
	for (unsigned i = 0; i < state_vm_nitems; i++) {
		const struct state_item_spec *s = &state_vm_items[i];

		if (s->tag < STATE_VM_PIC_MASTER || s->tag > STATE_VM_IOAPIC) {
			item(bl, s->tag, 0, s->size, 0);
			continue;
		}
		put_le16(bl, s->tag);
		put_le16(bl, 0);
		put_le32(bl, s->size);
		put_le32(bl, chip[s->tag]);
		for (uint32_t j = 4; j < s->size; j++)
			put(bl, "", 1);
	}
}

/* Every check runs before the first ioctl (docs/migration-state.md: nothing
 * is written to KVM until the whole blob has passed), the irqchips' chip
 * ids included: with fd -1, a good blob fails at its first ioctl (-EBADF),
 * a bad one with -EBADMSG before it. */
static void test_vm_checked_before_kvm(void)
{
	struct blob *bl = calloc(1, sizeof(*bl));
	char err[256];

	REQUIRE(bl);
	vm_blob(bl, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_IRQCHIP_IOAPIC);
	CHECK_EQ(state_load_vm(-1, bl->b, bl->len, err, sizeof(err)), -EBADF);
	vm_blob(bl, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_IRQCHIP_PIC_MASTER);
	CHECK_EQ(state_load_vm(-1, bl->b, bl->len, err, sizeof(err)), -EBADMSG);
	CHECK_STREQ(err, "item IOAPIC holds chip 0");
	vm_blob(bl, KVM_IRQCHIP_PIC_SLAVE, KVM_IRQCHIP_PIC_SLAVE, KVM_IRQCHIP_IOAPIC);
	CHECK_EQ(state_load_vm(-1, bl->b, bl->len, err, sizeof(err)), -EBADMSG);
	CHECK_STREQ(err, "item PIC master holds chip 1");
	free(bl);
}

/* Sets the TSC_KHZ item of a blob from vcpu_blob() to khz. */
static void set_tsc_khz(struct blob *bl, uint32_t khz)
{
	for (size_t off = 0; off + 8 <= bl->len;) {
		uint32_t len = (uint32_t)bl->b[off + 4] | (uint32_t)bl->b[off + 5] << 8;

		if (bl->b[off] == STATE_VCPU_TSC_KHZ)
			for (unsigned i = 0; i < 4; i++)
				bl->b[off + 8 + i] = (uint8_t)(khz >> (8 * i));
		off += 8 + len;
	}
}

/* The saver writes TSC_KHZ only for a rate KVM reported, and KVM takes a
 * rate of 0 as "the host's": the source's rate would not be kept. */
static void test_vcpu_tsc_khz_zero(void)
{
	struct blob *bl = calloc(1, sizeof(*bl));
	char err[256];

	REQUIRE(bl);
	vcpu_blob(bl, STATE_VCPU_FPU, 0);
	set_tsc_khz(bl, 2500000);
	CHECK_EQ(state_load_vcpu(-1, bl->b, bl->len, err, sizeof(err)), -EBADF);
	set_tsc_khz(bl, 0);
	CHECK_EQ(state_load_vcpu(-1, bl->b, bl->len, err, sizeof(err)), -EBADMSG);
	CHECK_STREQ(err, "item TSC_KHZ: a rate of 0 kHz");
	free(bl);
}

static void test_writer_reader(void)
{
	struct state_writer w;
	struct state_reader r;
	uint8_t big[1000], out[1000];
	uint16_t v16;
	uint32_t v32;
	uint64_t v64;

	state_writer_init(&w);
	CHECK_EQ(state_put_le16(&w, 0x1234), 0);
	CHECK_EQ(state_put_le32(&w, 0x89abcdef), 0);
	CHECK_EQ(state_put_le64(&w, 0x0102030405060708ULL), 0);
	REQUIRE(w.len == 14);
	CHECK_EQ(w.buf[0], 0x34);
	CHECK_EQ(w.buf[2], 0xef);
	CHECK_EQ(w.buf[6], 0x08);
	CHECK_EQ(w.buf[13], 0x01);
	for (unsigned i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)i;
	CHECK_EQ(state_put_item(&w, 7, big, sizeof(big)), 0); /* grows */
	CHECK_EQ(w.len, 14 + 8 + 1000);
	CHECK_EQ(w.error, 0);

	state_reader_init(&r, w.buf, w.len);
	CHECK_EQ(state_get_le16(&r, &v16), 0);
	CHECK_EQ(v16, 0x1234);
	CHECK_EQ(state_get_le32(&r, &v32), 0);
	CHECK_EQ(v32, 0x89abcdef);
	CHECK_EQ(state_get_le64(&r, &v64), 0);
	CHECK_EQ(v64, 0x0102030405060708ULL);
	CHECK_EQ(state_get_le16(&r, &v16), 0);
	CHECK_EQ(v16, 7);
	CHECK_EQ(state_get_le16(&r, &v16), 0);
	CHECK_EQ(v16, 0);
	CHECK_EQ(state_get_le32(&r, &v32), 0);
	CHECK_EQ(v32, 1000);
	CHECK_EQ(state_reader_left(&r), 1000);
	CHECK_EQ(state_get_bytes(&r, out, 1001), -EBADMSG); /* does not move */
	CHECK_EQ(state_reader_left(&r), 1000);
	CHECK_EQ(state_get_bytes(&r, out, 1000), 0);
	CHECK(memcmp(out, big, sizeof(big)) == 0);
	CHECK_EQ(state_get_le16(&r, &v16), -EBADMSG);
	CHECK_EQ(state_get_bytes(&r, out, 0), 0);
	state_writer_free(&w);
	CHECK(w.buf == NULL);

	/* A writer in error stays in error. */
	state_writer_init(&w);
	w.error = -ENOMEM;
	CHECK_EQ(state_put_le32(&w, 1), -ENOMEM);
	CHECK_EQ(w.len, 0);
	state_writer_free(&w);
}

int main(int argc, char **argv)
{
	unit_init(argc, argv);
	RUN(test_parse_ok);
	RUN(test_parse_rejects);
	RUN(test_vcpu_spec);
	RUN(test_vm_spec);
	RUN(test_msrs);
	RUN(test_vm_checked_before_kvm);
	RUN(test_vcpu_tsc_khz_zero);
	RUN(test_writer_reader);
	return unit_done();
}
