/* vCPU and VM state as item blobs, and the byte buffers; see state.h and
 * docs/migration-state.md. */
#include "state.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

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

#define MSR_ENTRY_SIZE 16
#define MSR_HDR_SIZE 8

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

const struct state_item_spec state_vm_items[] = {
	{ STATE_VM_CLOCK, 0, sizeof(struct kvm_clock_data), true, "CLOCK" },
	{ STATE_VM_PIC_MASTER, 0, sizeof(struct kvm_irqchip), true, "PIC_MASTER" },
	{ STATE_VM_PIC_SLAVE, 0, sizeof(struct kvm_irqchip), true, "PIC_SLAVE" },
	{ STATE_VM_IOAPIC, 0, sizeof(struct kvm_irqchip), true, "IOAPIC" },
	{ STATE_VM_PIT2, 0, sizeof(struct kvm_pit_state2), true, "PIT2" },
};
const unsigned state_vm_nitems = sizeof(state_vm_items) / sizeof(state_vm_items[0]);

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

	if (len < MSR_HDR_SIZE)
		return errf(-EBADMSG, err, errlen, "item MSRS: %zu bytes, too short", len);
	count = get_le32(data);
	if (get_le32(data + 4))
		return errf(-EBADMSG, err, errlen, "item MSRS: padding is not 0");
	if (count > STATE_MAX_MSRS)
		return errf(-EBADMSG, err, errlen, "item MSRS: %u MSRs, at most %u", count,
			    STATE_MAX_MSRS);
	if (len != MSR_HDR_SIZE + (size_t)count * MSR_ENTRY_SIZE)
		return errf(-EBADMSG, err, errlen, "item MSRS: length %zu, expected %zu for %u MSRs",
			    len, MSR_HDR_SIZE + (size_t)count * MSR_ENTRY_SIZE, count);
	for (uint32_t i = 0; i < count; i++) {
		const uint8_t *e = data + MSR_HDR_SIZE + (size_t)i * MSR_ENTRY_SIZE;

		if (get_le32(e + 4))
			return errf(-EBADMSG, err, errlen, "item MSRS: entry %u padding is not 0", i);
		/* Quadratic, but count is small and bounded. */
		for (uint32_t j = 0; j < i; j++)
			if (get_le32(data + MSR_HDR_SIZE + (size_t)j * MSR_ENTRY_SIZE) ==
			    get_le32(e))
				return errf(-EBADMSG, err, errlen, "item MSRS: MSR %#x appears twice",
					    get_le32(e));
	}
	return 0;
}

/* ---- KVM: vCPU ---- */

/* A vCPU ioctl whose struct becomes one item. */
static int save_ioctl_item(int fd, unsigned long req, const char *name, struct state_writer *w,
			   uint16_t tag, void *buf, size_t size, char *err, size_t errlen)
{
	if (ioctl(fd, req, buf) < 0)
		return errf(-errno, err, errlen, "%s: %s", name, strerror(errno));
	if (state_put_item(w, tag, buf, size))
		return errf(w->error, err, errlen, "saving %s: %s", name, strerror(-w->error));
	return 0;
}

/* KVM_GET_MSR_INDEX_LIST (on /dev/kvm): the MSRs KVM says to save. */
static int msr_index_list(int kvm_fd, struct kvm_msr_list **out, char *err, size_t errlen)
{
	struct kvm_msr_list probe = { .nmsrs = 0 }, *list;

	if (ioctl(kvm_fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG)
		return errf(-errno, err, errlen, "KVM_GET_MSR_INDEX_LIST: %s", strerror(errno));
	if (probe.nmsrs > STATE_MAX_MSRS)
		return errf(-E2BIG, err, errlen, "KVM_GET_MSR_INDEX_LIST: %u MSRs", probe.nmsrs);
	list = calloc(1, sizeof(*list) + probe.nmsrs * sizeof(list->indices[0]));
	if (!list)
		return errf(-ENOMEM, err, errlen, "out of memory for the MSR list");
	list->nmsrs = probe.nmsrs;
	if (ioctl(kvm_fd, KVM_GET_MSR_INDEX_LIST, list) < 0) {
		free(list);
		return errf(-errno, err, errlen, "KVM_GET_MSR_INDEX_LIST: %s", strerror(errno));
	}
	*out = list;
	return 0;
}

/* Reads every MSR of the list that KVM_GET_MSRS returns. KVM_GET_MSRS stops
 * at the first MSR it cannot read and returns how many it read, so that
 * one is dropped and the rest read again: a handful of ioctls. */
static int read_msrs(int kvm_fd, int vcpu_fd, struct kvm_msrs **out, char *err, size_t errlen)
{
	struct kvm_msr_list *list = NULL;
	struct kvm_msrs *msrs = NULL;
	uint32_t n;
	int rc = msr_index_list(kvm_fd, &list, err, errlen);

	if (rc)
		return rc;
	msrs = calloc(1, sizeof(*msrs) + list->nmsrs * sizeof(msrs->entries[0]));
	if (!msrs) {
		free(list);
		return errf(-ENOMEM, err, errlen, "out of memory for the MSRs");
	}
	n = list->nmsrs;
	for (uint32_t i = 0; i < n; i++)
		msrs->entries[i].index = list->indices[i];
	free(list);
	for (;;) {
		int got;

		msrs->nmsrs = n;
		got = ioctl(vcpu_fd, KVM_GET_MSRS, msrs);
		if (got < 0) {
			rc = errf(-errno, err, errlen, "KVM_GET_MSRS: %s", strerror(errno));
			free(msrs);
			return rc;
		}
		if ((uint32_t)got >= n)
			break;
		memmove(&msrs->entries[got], &msrs->entries[got + 1],
			(n - (uint32_t)got - 1) * sizeof(msrs->entries[0]));
		n--;
	}
	*out = msrs;
	return 0;
}

static int save_msrs(int kvm_fd, int vcpu_fd, struct state_writer *w, char *err, size_t errlen)
{
	struct kvm_msrs *msrs = NULL;
	int rc = read_msrs(kvm_fd, vcpu_fd, &msrs, err, errlen);

	if (rc)
		return rc;
	state_put_le16(w, STATE_VCPU_MSRS);
	state_put_le16(w, 0);
	state_put_le32(w, MSR_HDR_SIZE + msrs->nmsrs * MSR_ENTRY_SIZE);
	state_put_le32(w, msrs->nmsrs);
	state_put_le32(w, 0);
	for (uint32_t i = 0; i < msrs->nmsrs; i++) {
		state_put_le32(w, msrs->entries[i].index);
		state_put_le32(w, 0);
		state_put_le64(w, msrs->entries[i].data);
	}
	free(msrs);
	if (w->error)
		return errf(w->error, err, errlen, "saving MSRS: %s", strerror(-w->error));
	return 0;
}

int state_save_vcpu(int kvm_fd, int vcpu_fd, struct state_writer *w, char *err, size_t errlen)
{
	union {
		struct kvm_regs regs;
		struct kvm_sregs sregs;
		struct kvm_xsave xsave;
		struct kvm_fpu fpu;
		struct kvm_xcrs xcrs;
		struct kvm_lapic_state lapic;
		struct kvm_vcpu_events events;
		struct kvm_mp_state mp;
		struct kvm_debugregs dregs;
	} *u = calloc(1, sizeof(*u));
	int rc, khz;

	if (!u)
		return errf(-ENOMEM, err, errlen, "out of memory");
	rc = save_ioctl_item(vcpu_fd, KVM_GET_REGS, "KVM_GET_REGS", w, STATE_VCPU_REGS, &u->regs,
			     sizeof(u->regs), err, errlen);
	if (!rc)
		rc = save_ioctl_item(vcpu_fd, KVM_GET_SREGS, "KVM_GET_SREGS", w, STATE_VCPU_SREGS,
				     &u->sregs, sizeof(u->sregs), err, errlen);
	if (!rc && ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE) > 0)
		rc = save_ioctl_item(vcpu_fd, KVM_GET_XSAVE, "KVM_GET_XSAVE", w, STATE_VCPU_XSAVE,
				     &u->xsave, sizeof(u->xsave), err, errlen);
	else if (!rc)
		rc = save_ioctl_item(vcpu_fd, KVM_GET_FPU, "KVM_GET_FPU", w, STATE_VCPU_FPU,
				     &u->fpu, sizeof(u->fpu), err, errlen);
	if (!rc && ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XCRS) > 0)
		rc = save_ioctl_item(vcpu_fd, KVM_GET_XCRS, "KVM_GET_XCRS", w, STATE_VCPU_XCRS,
				     &u->xcrs, sizeof(u->xcrs), err, errlen);
	if (!rc)
		rc = save_msrs(kvm_fd, vcpu_fd, w, err, errlen);
	if (!rc)
		rc = save_ioctl_item(vcpu_fd, KVM_GET_LAPIC, "KVM_GET_LAPIC", w, STATE_VCPU_LAPIC,
				     &u->lapic, sizeof(u->lapic), err, errlen);
	if (!rc)
		rc = save_ioctl_item(vcpu_fd, KVM_GET_VCPU_EVENTS, "KVM_GET_VCPU_EVENTS", w,
				     STATE_VCPU_EVENTS, &u->events, sizeof(u->events), err, errlen);
	if (!rc)
		rc = save_ioctl_item(vcpu_fd, KVM_GET_MP_STATE, "KVM_GET_MP_STATE", w,
				     STATE_VCPU_MP_STATE, &u->mp, sizeof(u->mp), err, errlen);
	if (!rc)
		rc = save_ioctl_item(vcpu_fd, KVM_GET_DEBUGREGS, "KVM_GET_DEBUGREGS", w,
				     STATE_VCPU_DEBUGREGS, &u->dregs, sizeof(u->dregs), err, errlen);
	free(u);
	if (rc)
		return rc;
	khz = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_GET_TSC_KHZ) > 0 ?
		      ioctl(vcpu_fd, KVM_GET_TSC_KHZ) : -1;
	if (khz > 0) {
		uint32_t v = (uint32_t)khz;
		uint8_t b[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16),
				 (uint8_t)(v >> 24) };

		if (state_put_item(w, STATE_VCPU_TSC_KHZ, b, sizeof(b)))
			return errf(w->error, err, errlen, "saving TSC_KHZ: %s",
				    strerror(-w->error));
	}
	return 0;
}

/* The item's bytes into a KVM struct of exactly that size (checked by the
 * parser). Copying also aligns them. */
static int load_ioctl(int fd, unsigned long req, const char *name, const struct state_item *it,
		      void *buf, size_t size, char *err, size_t errlen)
{
	memcpy(buf, it->data, size);
	if (ioctl(fd, req, buf) < 0)
		return errf(-errno, err, errlen, "%s: %s", name, strerror(errno));
	return 0;
}

static int load_msrs(int vcpu_fd, const struct state_item *it, char *err, size_t errlen)
{
	uint32_t n = get_le32(it->data);
	struct kvm_msrs *msrs = calloc(1, sizeof(*msrs) + n * sizeof(msrs->entries[0]));
	int rc;

	if (!msrs)
		return errf(-ENOMEM, err, errlen, "out of memory for the MSRs");
	msrs->nmsrs = n;
	for (uint32_t i = 0; i < n; i++) {
		const uint8_t *e = it->data + MSR_HDR_SIZE + (size_t)i * MSR_ENTRY_SIZE;

		msrs->entries[i].index = get_le32(e);
		msrs->entries[i].data = get_le64(e + 8);
	}
	rc = ioctl(vcpu_fd, KVM_SET_MSRS, msrs);
	if (rc < 0)
		rc = errf(-errno, err, errlen, "KVM_SET_MSRS: %s", strerror(errno));
	else if ((uint32_t)rc < n)
		rc = errf(-EINVAL, err, errlen, "KVM_SET_MSRS: this host refused MSR %#x = %#llx",
			  msrs->entries[rc].index, (unsigned long long)msrs->entries[rc].data);
	else
		rc = 0;
	free(msrs);
	return rc;
}

/* The destination's TSC must tick at the source's rate. */
static int load_tsc_khz(int vcpu_fd, const struct state_item *it, char *err, size_t errlen)
{
	uint32_t want = get_le32(it->data);
	int have = ioctl(vcpu_fd, KVM_GET_TSC_KHZ);

	if (have > 0 && (uint32_t)have == want)
		return 0;
	if (ioctl(vcpu_fd, KVM_SET_TSC_KHZ, (unsigned long)want) < 0)
		return errf(-errno, err, errlen,
			    "the source's TSC runs at %u kHz, this host's at %d kHz, and "
			    "KVM_SET_TSC_KHZ failed: %s", want, have, strerror(errno));
	return 0;
}

static const struct state_item *item(const struct state_item *items, uint16_t tag,
				     const struct state_item_spec *spec, unsigned nspec)
{
	int i = find_spec(spec, nspec, tag);

	return i >= 0 && items[i].present ? &items[i] : NULL;
}

#define VCPU_ITEM(tag) item(items, (tag), state_vcpu_items, state_vcpu_nitems)

/* The order follows the KVM selftests' vcpu_load_state() and QEMU, with
 * LAPIC added where it works: sregs first (CR0/CR4/EFER, APIC base), the
 * LAPIC next (KVM_SET_LAPIC uses the APIC base; the TSC-deadline MSR is
 * dropped unless the LAPIC timer is in TSC-deadline mode), then MSRs (the
 * TSC among them), XCRs before XSAVE (XCR0 says which XSAVE components are
 * live), then regs, events (after LAPIC: KVM_SET_LAPIC resets pending
 * event state), MP state, debug registers. */
static int load_vcpu_items(int fd, const struct state_item *items, void *buf, char *err,
			   size_t errlen)
{
	const struct state_item *it;
	struct kvm_vcpu_events *ev = buf;
	int rc = 0;

	if ((it = VCPU_ITEM(STATE_VCPU_TSC_KHZ)))
		rc = load_tsc_khz(fd, it, err, errlen);
	if (!rc)
		rc = load_ioctl(fd, KVM_SET_SREGS, "KVM_SET_SREGS", VCPU_ITEM(STATE_VCPU_SREGS), buf,
				sizeof(struct kvm_sregs), err, errlen);
	if (!rc)
		rc = load_ioctl(fd, KVM_SET_LAPIC, "KVM_SET_LAPIC", VCPU_ITEM(STATE_VCPU_LAPIC), buf,
				sizeof(struct kvm_lapic_state), err, errlen);
	if (!rc)
		rc = load_msrs(fd, VCPU_ITEM(STATE_VCPU_MSRS), err, errlen);
	if (!rc && (it = VCPU_ITEM(STATE_VCPU_XCRS)))
		rc = load_ioctl(fd, KVM_SET_XCRS, "KVM_SET_XCRS", it, buf, sizeof(struct kvm_xcrs),
				err, errlen);
	if (!rc && (it = VCPU_ITEM(STATE_VCPU_XSAVE)))
		rc = load_ioctl(fd, KVM_SET_XSAVE, "KVM_SET_XSAVE", it, buf,
				sizeof(struct kvm_xsave), err, errlen);
	if (!rc && (it = VCPU_ITEM(STATE_VCPU_FPU)))
		rc = load_ioctl(fd, KVM_SET_FPU, "KVM_SET_FPU", it, buf, sizeof(struct kvm_fpu),
				err, errlen);
	if (!rc)
		rc = load_ioctl(fd, KVM_SET_REGS, "KVM_SET_REGS", VCPU_ITEM(STATE_VCPU_REGS), buf,
				sizeof(struct kvm_regs), err, errlen);
	if (!rc) {
		/* KVM_GET_VCPU_EVENTS never reports these two flags, but
		 * KVM_SET_VCPU_EVENTS ignores nmi.pending and sipi_vector
		 * without them: a pending NMI would be lost. */
		memcpy(ev, VCPU_ITEM(STATE_VCPU_EVENTS)->data, sizeof(*ev));
		ev->flags |= KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR;
		if (ioctl(fd, KVM_SET_VCPU_EVENTS, ev) < 0)
			rc = errf(-errno, err, errlen, "KVM_SET_VCPU_EVENTS: %s", strerror(errno));
	}
	if (!rc)
		rc = load_ioctl(fd, KVM_SET_MP_STATE, "KVM_SET_MP_STATE",
				VCPU_ITEM(STATE_VCPU_MP_STATE), buf, sizeof(struct kvm_mp_state),
				err, errlen);
	if (!rc)
		rc = load_ioctl(fd, KVM_SET_DEBUGREGS, "KVM_SET_DEBUGREGS",
				VCPU_ITEM(STATE_VCPU_DEBUGREGS), buf, sizeof(struct kvm_debugregs),
				err, errlen);
	return rc;
}

int state_load_vcpu(int vcpu_fd, const uint8_t *blob, size_t len, char *err, size_t errlen)
{
	struct state_item items[sizeof(state_vcpu_items) / sizeof(state_vcpu_items[0])];
	void *buf;
	int rc = state_parse_items(blob, len, state_vcpu_items, state_vcpu_nitems, items, err,
				   errlen);

	if (!rc) {
		const struct state_item *m = VCPU_ITEM(STATE_VCPU_MSRS);

		rc = state_check_msrs(m->data, m->len, err, errlen);
	}
	if (rc)
		return rc;
	buf = calloc(1, sizeof(struct kvm_xsave)); /* the largest of the structs */
	if (!buf)
		return errf(-ENOMEM, err, errlen, "out of memory");
	rc = load_vcpu_items(vcpu_fd, items, buf, err, errlen);
	free(buf);
	return rc;
}

/* ---- KVM: VM ---- */

static const struct {
	uint16_t tag;
	uint32_t chip_id;
	const char *name;
} irqchips[] = {
	{ STATE_VM_PIC_MASTER, KVM_IRQCHIP_PIC_MASTER, "PIC master" },
	{ STATE_VM_PIC_SLAVE, KVM_IRQCHIP_PIC_SLAVE, "PIC slave" },
	{ STATE_VM_IOAPIC, KVM_IRQCHIP_IOAPIC, "IOAPIC" },
};

int state_save_vm(int vm_fd, struct state_writer *w, char *err, size_t errlen)
{
	struct kvm_clock_data clock;
	struct kvm_irqchip chip;
	struct kvm_pit_state2 pit;
	int rc;

	memset(&clock, 0, sizeof(clock));
	rc = save_ioctl_item(vm_fd, KVM_GET_CLOCK, "KVM_GET_CLOCK", w, STATE_VM_CLOCK, &clock,
			     sizeof(clock), err, errlen);
	for (unsigned i = 0; !rc && i < sizeof(irqchips) / sizeof(irqchips[0]); i++) {
		memset(&chip, 0, sizeof(chip));
		chip.chip_id = irqchips[i].chip_id;
		if (ioctl(vm_fd, KVM_GET_IRQCHIP, &chip) < 0)
			return errf(-errno, err, errlen, "KVM_GET_IRQCHIP (%s): %s", irqchips[i].name,
				    strerror(errno));
		if (state_put_item(w, irqchips[i].tag, &chip, sizeof(chip)))
			return errf(w->error, err, errlen, "saving %s: %s", irqchips[i].name,
				    strerror(-w->error));
	}
	memset(&pit, 0, sizeof(pit));
	if (!rc)
		rc = save_ioctl_item(vm_fd, KVM_GET_PIT2, "KVM_GET_PIT2", w, STATE_VM_PIT2, &pit,
				     sizeof(pit), err, errlen);
	return rc;
}

#define VM_ITEM(tag) item(items, (tag), state_vm_items, state_vm_nitems)

int state_load_vm(int vm_fd, const uint8_t *blob, size_t len, char *err, size_t errlen)
{
	struct state_item items[sizeof(state_vm_items) / sizeof(state_vm_items[0])];
	struct kvm_clock_data clock;
	struct kvm_irqchip chip;
	struct kvm_pit_state2 pit;
	int rc = state_parse_items(blob, len, state_vm_items, state_vm_nitems, items, err, errlen);

	if (rc)
		return rc;
	for (unsigned i = 0; i < sizeof(irqchips) / sizeof(irqchips[0]); i++) {
		memcpy(&chip, VM_ITEM(irqchips[i].tag)->data, sizeof(chip));
		if (chip.chip_id != irqchips[i].chip_id)
			return errf(-EBADMSG, err, errlen, "item %s holds chip %u",
				    irqchips[i].name, chip.chip_id);
		if (ioctl(vm_fd, KVM_SET_IRQCHIP, &chip) < 0)
			return errf(-errno, err, errlen, "KVM_SET_IRQCHIP (%s): %s",
				    irqchips[i].name, strerror(errno));
	}
	memcpy(&pit, VM_ITEM(STATE_VM_PIT2)->data, sizeof(pit));
	if (ioctl(vm_fd, KVM_SET_PIT2, &pit) < 0)
		return errf(-errno, err, errlen, "KVM_SET_PIT2: %s", strerror(errno));
	/* Only the clock value: TSC_STABLE and HOST_TSC are reports that
	 * kernels before 5.16 refuse as input, and REALTIME would add the
	 * wall-clock time between save and load, which is only right when both
	 * hosts' clocks agree. The guest's kvmclock resumes where it stopped. */
	memcpy(&clock, VM_ITEM(STATE_VM_CLOCK)->data, sizeof(clock));
	clock = (struct kvm_clock_data){ .clock = clock.clock };
	if (ioctl(vm_fd, KVM_SET_CLOCK, &clock) < 0)
		return errf(-errno, err, errlen, "KVM_SET_CLOCK: %s", strerror(errno));
	return 0;
}
