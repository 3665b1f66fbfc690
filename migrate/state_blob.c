/* The pure half of the state blobs (see state.h and
 * docs/migration-state.md): the byte buffers, the item specs, the item
 * walker and the MSR item check. Nothing here touches KVM, so the
 * unit tests and tests/fuzz/fuzz_state.c link it alone; state.c holds the
 * ioctls that save and load the blobs. */
#include "state.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/util.h"

/* The item bytes are the x86-64 KVM ABI structs. Their layout is part of
 * the kernel's ABI and never changes; these pin the sizes the format
 * documents, so a header that disagrees fails the build, not a migration. */
_Static_assert(sizeof(struct kvm_regs) == 144, "kvm_regs");
_Static_assert(sizeof(struct kvm_sregs) == 312, "kvm_sregs");
_Static_assert(sizeof(struct kvm_xsave) == 4096, "kvm_xsave");
_Static_assert(sizeof(struct kvm_fpu) == 416, "kvm_fpu");
_Static_assert(sizeof(struct kvm_xcrs) == 392, "kvm_xcrs");
_Static_assert(sizeof(struct kvm_lapic_state) == 1024, "kvm_lapic_state");
_Static_assert(sizeof(struct kvm_vcpu_events) == 64, "kvm_vcpu_events");
_Static_assert(sizeof(struct kvm_mp_state) == 4, "kvm_mp_state");
_Static_assert(sizeof(struct kvm_debugregs) == 128, "kvm_debugregs");
_Static_assert(sizeof(struct kvm_clock_data) == 48, "kvm_clock_data");
_Static_assert(sizeof(struct kvm_irqchip) == 520, "kvm_irqchip");
_Static_assert(sizeof(struct kvm_pit_state2) == 112, "kvm_pit_state2");
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "x86-64 KVM ABI is little-endian");

static uint16_t get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_le64(const uint8_t *p)
{
	return get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

/* ---- Byte buffers ---- */

void state_writer_init(struct state_writer *w)
{
	memset(w, 0, sizeof(*w));
}

void state_writer_free(struct state_writer *w)
{
	free(w->buf);
	memset(w, 0, sizeof(*w));
}

int state_put_bytes(struct state_writer *w, const void *data, size_t len)
{
	if (w->error)
		return w->error;
	if (len > SIZE_MAX / 2 - w->len)
		return w->error = -E2BIG;
	if (w->len + len > w->cap) {
		size_t cap = w->cap ? w->cap : 256;
		uint8_t *p;

		while (cap < w->len + len)
			cap *= 2;
		p = realloc(w->buf, cap);
		if (!p)
			return w->error = -ENOMEM;
		w->buf = p;
		w->cap = cap;
	}
	if (len)
		memcpy(w->buf + w->len, data, len);
	w->len += len;
	return 0;
}

int state_put_le16(struct state_writer *w, uint16_t v)
{
	uint8_t b[2] = { (uint8_t)v, (uint8_t)(v >> 8) };

	return state_put_bytes(w, b, sizeof(b));
}

int state_put_le32(struct state_writer *w, uint32_t v)
{
	uint8_t b[4];

	for (unsigned i = 0; i < 4; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	return state_put_bytes(w, b, sizeof(b));
}

int state_put_le64(struct state_writer *w, uint64_t v)
{
	state_put_le32(w, (uint32_t)v);
	return state_put_le32(w, (uint32_t)(v >> 32));
}

int state_put_item(struct state_writer *w, uint16_t tag, const void *data, size_t len)
{
	if (len > UINT32_MAX)
		return w->error ? w->error : (w->error = -E2BIG);
	state_put_le16(w, tag);
	state_put_le16(w, 0);
	state_put_le32(w, (uint32_t)len);
	return state_put_bytes(w, data, len);
}

void state_reader_init(struct state_reader *r, const void *buf, size_t len)
{
	r->buf = buf;
	r->len = len;
	r->pos = 0;
}

int state_get_bytes(struct state_reader *r, void *out, size_t len)
{
	if (len > r->len - r->pos)
		return -EBADMSG;
	if (len)
		memcpy(out, r->buf + r->pos, len);
	r->pos += len;
	return 0;
}

int state_get_le16(struct state_reader *r, uint16_t *v)
{
	uint8_t b[2];
	int rc = state_get_bytes(r, b, sizeof(b));

	if (!rc)
		*v = get_le16(b);
	return rc;
}

int state_get_le32(struct state_reader *r, uint32_t *v)
{
	uint8_t b[4];
	int rc = state_get_bytes(r, b, sizeof(b));

	if (!rc)
		*v = get_le32(b);
	return rc;
}

int state_get_le64(struct state_reader *r, uint64_t *v)
{
	uint8_t b[8];
	int rc = state_get_bytes(r, b, sizeof(b));

	if (!rc)
		*v = get_le64(b);
	return rc;
}

/* ---- Items ---- */

#define GROUP_FPU 1

const struct state_item_spec state_vcpu_items[] = {
	{ STATE_VCPU_REGS, 0, sizeof(struct kvm_regs), true, "REGS" },
	{ STATE_VCPU_SREGS, 0, sizeof(struct kvm_sregs), true, "SREGS" },
	{ STATE_VCPU_XSAVE, GROUP_FPU, sizeof(struct kvm_xsave), true, "XSAVE" },
	{ STATE_VCPU_FPU, GROUP_FPU, sizeof(struct kvm_fpu), true, "FPU" },
	{ STATE_VCPU_XCRS, 0, sizeof(struct kvm_xcrs), false, "XCRS" },
	{ STATE_VCPU_MSRS, 0, 0, true, "MSRS" },
	{ STATE_VCPU_LAPIC, 0, sizeof(struct kvm_lapic_state), true, "LAPIC" },
	{ STATE_VCPU_EVENTS, 0, sizeof(struct kvm_vcpu_events), true, "VCPU_EVENTS" },
	{ STATE_VCPU_MP_STATE, 0, sizeof(struct kvm_mp_state), true, "MP_STATE" },
	{ STATE_VCPU_DEBUGREGS, 0, sizeof(struct kvm_debugregs), true, "DEBUGREGS" },
	{ STATE_VCPU_TSC_KHZ, 0, 4, false, "TSC_KHZ" },
};
const unsigned state_vcpu_nitems = sizeof(state_vcpu_items) / sizeof(state_vcpu_items[0]);
_Static_assert(sizeof(state_vcpu_items) / sizeof(state_vcpu_items[0]) == STATE_VCPU_NITEMS,
	       "STATE_VCPU_NITEMS");

const struct state_item_spec state_vm_items[] = {
	{ STATE_VM_CLOCK, 0, sizeof(struct kvm_clock_data), true, "CLOCK" },
	{ STATE_VM_PIC_MASTER, 0, sizeof(struct kvm_irqchip), true, "PIC_MASTER" },
	{ STATE_VM_PIC_SLAVE, 0, sizeof(struct kvm_irqchip), true, "PIC_SLAVE" },
	{ STATE_VM_IOAPIC, 0, sizeof(struct kvm_irqchip), true, "IOAPIC" },
	{ STATE_VM_PIT2, 0, sizeof(struct kvm_pit_state2), true, "PIT2" },
};
const unsigned state_vm_nitems = sizeof(state_vm_items) / sizeof(state_vm_items[0]);
_Static_assert(sizeof(state_vm_items) / sizeof(state_vm_items[0]) == STATE_VM_NITEMS,
	       "STATE_VM_NITEMS");

static int find_spec(const struct state_item_spec *spec, unsigned nspec, uint16_t tag)
{
	for (unsigned i = 0; i < nspec; i++)
		if (spec[i].tag == tag)
			return (int)i;
	return -1;
}

/* Whether spec[i] is the first of its group. */
static bool group_leader(const struct state_item_spec *spec, unsigned i)
{
	for (unsigned j = 0; j < i; j++)
		if (spec[j].group == spec[i].group)
			return false;
	return true;
}

/* Mandatory items, and groups of which exactly one must be present. */
static int check_presence(const struct state_item_spec *spec, unsigned nspec,
			  const struct state_item *items, char *err, size_t errlen)
{
	for (unsigned i = 0; i < nspec; i++) {
		int seen = -1;

		if (!spec[i].group) {
			if (spec[i].mandatory && !items[i].present)
				return errf(-EBADMSG, err, errlen, "missing item %s", spec[i].name);
			continue;
		}
		if (!group_leader(spec, i))
			continue;
		for (unsigned j = i; j < nspec; j++) {
			if (spec[j].group != spec[i].group || !items[j].present)
				continue;
			if (seen >= 0)
				return errf(-EBADMSG, err, errlen,
					    "items %s and %s are alternatives; both are present",
					    spec[seen].name, spec[j].name);
			seen = (int)j;
		}
		if (seen < 0 && spec[i].mandatory)
			return errf(-EBADMSG, err, errlen, "missing item %s (or its alternative)",
				    spec[i].name);
	}
	return 0;
}

int state_parse_items(const uint8_t *blob, size_t len, const struct state_item_spec *spec,
		      unsigned nspec, struct state_item *items, char *err, size_t errlen)
{
	size_t pos = 0;

	memset(items, 0, nspec * sizeof(*items));
	while (pos < len) {
		uint16_t tag, reserved;
		uint32_t ilen;
		int i;

		if (len - pos < STATE_ITEM_HDR)
			return errf(-EBADMSG, err, errlen,
				    "%zu trailing bytes after the last item", len - pos);
		tag = get_le16(blob + pos);
		reserved = get_le16(blob + pos + 2);
		ilen = get_le32(blob + pos + 4);
		i = find_spec(spec, nspec, tag);
		if (i < 0)
			return errf(-EBADMSG, err, errlen, "unknown item tag %u at byte %zu", tag,
				    pos);
		if (reserved)
			return errf(-EBADMSG, err, errlen, "item %s: reserved field is %#x, not 0",
				    spec[i].name, reserved);
		if (items[i].present)
			return errf(-EBADMSG, err, errlen, "duplicate item %s", spec[i].name);
		if (spec[i].size && ilen != spec[i].size)
			return errf(-EBADMSG, err, errlen, "item %s: length %u, expected %u",
				    spec[i].name, ilen, spec[i].size);
		pos += STATE_ITEM_HDR;
		if (ilen > len - pos)
			return errf(-EBADMSG, err, errlen,
				    "item %s: length %u runs past the end of the blob (%zu bytes left)",
				    spec[i].name, ilen, len - pos);
		items[i] = (struct state_item){ .data = blob + pos, .len = ilen, .present = true };
		pos += ilen;
	}
	return check_presence(spec, nspec, items, err, errlen);
}

int state_check_msrs(const uint8_t *data, size_t len, char *err, size_t errlen)
{
	uint32_t count;

	if (len < STATE_MSR_HDR_SIZE)
		return errf(-EBADMSG, err, errlen, "item MSRS: %zu bytes, too short", len);
	count = get_le32(data);
	if (get_le32(data + 4))
		return errf(-EBADMSG, err, errlen, "item MSRS: padding is not 0");
	if (count > STATE_MAX_MSRS)
		return errf(-EBADMSG, err, errlen, "item MSRS: %u MSRs, at most %u", count,
			    STATE_MAX_MSRS);
	if (len != STATE_MSR_HDR_SIZE + (size_t)count * STATE_MSR_ENTRY_SIZE)
		return errf(-EBADMSG, err, errlen, "item MSRS: length %zu, expected %zu for %u MSRs",
			    len, STATE_MSR_HDR_SIZE + (size_t)count * STATE_MSR_ENTRY_SIZE, count);
	for (uint32_t i = 0; i < count; i++) {
		const uint8_t *e = data + STATE_MSR_HDR_SIZE + (size_t)i * STATE_MSR_ENTRY_SIZE;

		if (get_le32(e + 4))
			return errf(-EBADMSG, err, errlen, "item MSRS: entry %u padding is not 0", i);
		/* Quadratic, but count is small and bounded. */
		for (uint32_t j = 0; j < i; j++)
			if (get_le32(data + STATE_MSR_HDR_SIZE + (size_t)j * STATE_MSR_ENTRY_SIZE) ==
			    get_le32(e))
				return errf(-EBADMSG, err, errlen, "item MSRS: MSR %#x appears twice",
					    get_le32(e));
	}
	return 0;
}

const struct state_item *state_find_item(const struct state_item *items,
					 const struct state_item_spec *spec, unsigned nspec,
					 uint16_t tag)
{
	int i = find_spec(spec, nspec, tag);

	return i >= 0 && items[i].present ? &items[i] : NULL;
}

int state_check_vcpu(const uint8_t *blob, size_t len, struct state_item *items, char *err,
		     size_t errlen)
{
	const struct state_item *it;
	int rc = state_parse_items(blob, len, state_vcpu_items, state_vcpu_nitems, items, err,
				   errlen);

	if (rc)
		return rc;
	it = state_find_item(items, state_vcpu_items, state_vcpu_nitems, STATE_VCPU_MSRS);
	rc = state_check_msrs(it->data, it->len, err, errlen);
	if (rc)
		return rc;
	/* KVM_SET_TSC_KHZ takes 0 as "the host's rate", which would drop
	 * the source's; the saver writes the item only for a rate KVM gave. */
	it = state_find_item(items, state_vcpu_items, state_vcpu_nitems, STATE_VCPU_TSC_KHZ);
	if (it && !get_le32(it->data))
		return errf(-EBADMSG, err, errlen, "item TSC_KHZ: a rate of 0 kHz");
	return 0;
}

const struct state_irqchip state_irqchips[STATE_NIRQCHIPS] = {
	{ STATE_VM_PIC_MASTER, KVM_IRQCHIP_PIC_MASTER, "PIC master" },
	{ STATE_VM_PIC_SLAVE, KVM_IRQCHIP_PIC_SLAVE, "PIC slave" },
	{ STATE_VM_IOAPIC, KVM_IRQCHIP_IOAPIC, "IOAPIC" },
};

int state_check_vm(const uint8_t *blob, size_t len, struct state_item *items, char *err,
		   size_t errlen)
{
	int rc = state_parse_items(blob, len, state_vm_items, state_vm_nitems, items, err, errlen);

	for (unsigned i = 0; !rc && i < STATE_NIRQCHIPS; i++) {
		const struct state_item *it = state_find_item(items, state_vm_items, state_vm_nitems,
							      state_irqchips[i].tag);
		uint32_t chip = get_le32(it->data + offsetof(struct kvm_irqchip, chip_id));

		if (chip != state_irqchips[i].chip_id)
			rc = errf(-EBADMSG, err, errlen, "item %s holds chip %u",
				  state_irqchips[i].name, chip);
	}
	return rc;
}
