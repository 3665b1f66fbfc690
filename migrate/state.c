/* vCPU and VM state as item blobs: the KVM ioctls that save and load them;
 * see state.h and docs/migration-state.md. The pure half (byte buffers,
 * item walker) is state_blob.c. */
#include "state.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "vmm/util.h"

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
	state_put_le32(w, STATE_MSR_HDR_SIZE + msrs->nmsrs * STATE_MSR_ENTRY_SIZE);
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

/* The item passed state_check_msrs(), so the reads below cannot fail. */
static int load_msrs(int vcpu_fd, const struct state_item *it, char *err, size_t errlen)
{
	struct state_reader r;
	struct kvm_msrs *msrs;
	uint32_t n = 0, pad;
	int rc;

	state_reader_init(&r, it->data, it->len);
	state_get_le32(&r, &n);
	state_get_le32(&r, &pad);
	msrs = calloc(1, sizeof(*msrs) + n * sizeof(msrs->entries[0]));
	if (!msrs)
		return errf(-ENOMEM, err, errlen, "out of memory for the MSRs");
	msrs->nmsrs = n;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t data = 0;

		state_get_le32(&r, &msrs->entries[i].index);
		state_get_le32(&r, &pad);
		state_get_le64(&r, &data);
		msrs->entries[i].data = data;
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
	struct state_reader r;
	uint32_t want = 0;
	int have;

	state_reader_init(&r, it->data, it->len);
	state_get_le32(&r, &want); /* the parser checked the item's 4 bytes */
	have = ioctl(vcpu_fd, KVM_GET_TSC_KHZ);

	if (have > 0 && (uint32_t)have == want)
		return 0;
	if (ioctl(vcpu_fd, KVM_SET_TSC_KHZ, (unsigned long)want) < 0)
		return errf(-errno, err, errlen,
			    "the source's TSC runs at %u kHz, this host's at %d kHz, and "
			    "KVM_SET_TSC_KHZ failed: %s", want, have, strerror(errno));
	return 0;
}

#define VCPU_ITEM(tag) state_find_item(items, state_vcpu_items, state_vcpu_nitems, (tag))

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
	struct state_item items[STATE_VCPU_NITEMS];
	void *buf;
	int rc = state_check_vcpu(blob, len, items, err, errlen);

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

int state_save_vm(int vm_fd, struct state_writer *w, char *err, size_t errlen)
{
	struct kvm_clock_data clock;
	struct kvm_irqchip chip;
	struct kvm_pit_state2 pit;
	int rc;

	memset(&clock, 0, sizeof(clock));
	rc = save_ioctl_item(vm_fd, KVM_GET_CLOCK, "KVM_GET_CLOCK", w, STATE_VM_CLOCK, &clock,
			     sizeof(clock), err, errlen);
	for (unsigned i = 0; !rc && i < STATE_NIRQCHIPS; i++) {
		memset(&chip, 0, sizeof(chip));
		chip.chip_id = state_irqchips[i].chip_id;
		if (ioctl(vm_fd, KVM_GET_IRQCHIP, &chip) < 0)
			return errf(-errno, err, errlen, "KVM_GET_IRQCHIP (%s): %s",
				    state_irqchips[i].name, strerror(errno));
		if (state_put_item(w, state_irqchips[i].tag, &chip, sizeof(chip)))
			return errf(w->error, err, errlen, "saving %s: %s", state_irqchips[i].name,
				    strerror(-w->error));
	}
	memset(&pit, 0, sizeof(pit));
	if (!rc)
		rc = save_ioctl_item(vm_fd, KVM_GET_PIT2, "KVM_GET_PIT2", w, STATE_VM_PIT2, &pit,
				     sizeof(pit), err, errlen);
	return rc;
}

#define VM_ITEM(tag) state_find_item(items, state_vm_items, state_vm_nitems, (tag))

int state_load_vm(int vm_fd, const uint8_t *blob, size_t len, char *err, size_t errlen)
{
	struct state_item items[STATE_VM_NITEMS];
	struct kvm_clock_data clock;
	struct kvm_irqchip chip;
	struct kvm_pit_state2 pit;
	int rc = state_check_vm(blob, len, items, err, errlen);

	if (rc)
		return rc;
	for (unsigned i = 0; i < STATE_NIRQCHIPS; i++) {
		memcpy(&chip, VM_ITEM(state_irqchips[i].tag)->data, sizeof(chip));
		if (ioctl(vm_fd, KVM_SET_IRQCHIP, &chip) < 0)
			return errf(-errno, err, errlen, "KVM_SET_IRQCHIP (%s): %s",
				    state_irqchips[i].name, strerror(errno));
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
