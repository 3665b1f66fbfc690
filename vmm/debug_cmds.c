/* debug-vcpus: each vCPU's state for telling a frozen guest's cause apart;
 * see debug_cmds.h. Nothing here changes guest state: the vCPUs are held
 * for the few ioctls a read takes and then run on as before. */
#include "debug_cmds.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include "migrate/migration.h"
#include "util.h"
#include "vcpu.h"
#include "vm.h"

#define MSR_IA32_TSC            0x10
#define MSR_IA32_TSC_DEADLINE   0x6e0
#define MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01
#define MSR_KVM_ASYNC_PF_EN     0x4b564d02
#define MSR_KVM_ASYNC_PF_INT    0x4b564d06

#define APIC_ID    0x20
#define APIC_TPR   0x80
#define APIC_PPR   0xa0
#define APIC_SVR   0xf0
#define APIC_ISR   0x100
#define APIC_IRR   0x200
#define APIC_ESR   0x280
#define APIC_LVTT  0x320
#define APIC_LVT0  0x350
#define APIC_LVT1  0x360
#define APIC_TMICT 0x380
#define APIC_TMCCT 0x390
#define APIC_TDCR  0x3e0

#define LVT_MASKED (1u << 16)
#define SVR_ENABLED (1u << 8)
#define RFLAGS_IF (1u << 9)

/* How long a read may wait for the vCPUs to leave KVM_RUN: a vCPU that
 * does not within this is itself the finding (stuck inside KVM). */
#define DEBUG_PAUSE_MS 2000

int debug_vcpu_read(int fd, struct debug_vcpu_state *st, char *err, size_t errlen)
{
	static const uint32_t msr_index[] = { MSR_IA32_TSC, MSR_IA32_TSC_DEADLINE,
					      MSR_KVM_SYSTEM_TIME_NEW, MSR_KVM_ASYNC_PF_EN,
					      MSR_KVM_ASYNC_PF_INT };
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e[ARRAY_SIZE(msr_index)];
	} msrs = { .hdr.nmsrs = ARRAY_SIZE(msr_index) };
	int got;

	memset(st, 0, sizeof(*st));
	if (ioctl(fd, KVM_GET_REGS, &st->regs) < 0)
		return errf(-errno, err, errlen, "KVM_GET_REGS: %s", strerror(errno));
	if (ioctl(fd, KVM_GET_SREGS, &st->sregs) < 0)
		return errf(-errno, err, errlen, "KVM_GET_SREGS: %s", strerror(errno));
	if (ioctl(fd, KVM_GET_LAPIC, &st->lapic) < 0)
		return errf(-errno, err, errlen, "KVM_GET_LAPIC: %s", strerror(errno));
	if (ioctl(fd, KVM_GET_VCPU_EVENTS, &st->events) < 0)
		return errf(-errno, err, errlen, "KVM_GET_VCPU_EVENTS: %s", strerror(errno));
	if (ioctl(fd, KVM_GET_MP_STATE, &st->mp) < 0)
		return errf(-errno, err, errlen, "KVM_GET_MP_STATE: %s", strerror(errno));
	for (unsigned i = 0; i < ARRAY_SIZE(msr_index); i++)
		msrs.e[i].index = msr_index[i];
	/* KVM_GET_MSRS stops at the first MSR it cannot read: the ones after
	 * it are reported as missing (nmsrs), not as zero. */
	got = ioctl(fd, KVM_GET_MSRS, &msrs);
	st->nmsrs = got > 0 ? (unsigned)got : 0;
	st->tsc = msrs.e[0].data;
	st->tsc_deadline = msrs.e[1].data;
	st->kvmclock = msrs.e[2].data;
	st->async_pf_en = msrs.e[3].data;
	st->async_pf_int = msrs.e[4].data;
	st->tsc_khz = ioctl(fd, KVM_GET_TSC_KHZ);
	return 0;
}

static uint32_t lapic_reg(const struct kvm_lapic_state *l, unsigned off)
{
	uint32_t v;

	memcpy(&v, &l->regs[off], sizeof(v));
	return v;
}

/* The vectors set in a 256-bit LAPIC register (ISR, IRR): 8 words 16 bytes apart. */
static json_t *lapic_vectors(const struct kvm_lapic_state *l, unsigned base)
{
	json_t *a = json_array();

	for (unsigned w = 0; a && w < 8; w++) {
		uint32_t bits = lapic_reg(l, base + w * 0x10);

		for (unsigned b = 0; b < 32; b++)
			if (bits & (1u << b))
				json_array_append_new(a, json_integer(w * 32 + b));
	}
	return a;
}

static json_t *hex(uint64_t v)
{
	char buf[24];

	snprintf(buf, sizeof(buf), "%#llx", (unsigned long long)v);
	return json_string(buf);
}

static const char *mp_state_name(uint32_t s)
{
	static const char *const names[] = {
		"runnable", "uninitialized", "init-received", "halted", "sipi-received",
		"stopped", "check-stop", "operating", "load", "ap-reset-hold", "suspended",
	};

	return s < ARRAY_SIZE(names) ? names[s] : "unknown";
}

static const char *timer_mode_name(uint32_t lvtt)
{
	switch ((lvtt >> 17) & 3) {
	case 0:
		return "one-shot";
	case 1:
		return "periodic";
	case 2:
		return "tsc-deadline";
	default:
		return "reserved";
	}
}

static json_t *lapic_json(const struct kvm_lapic_state *l)
{
	uint32_t lvtt = lapic_reg(l, APIC_LVTT);

	return json_pack("{s:o, s:o, s:o, s:b, s:o, s:o, s:o, s:s, s:b, s:i, s:I, s:I, s:o, s:o, s:o, s:o}",
			 "id", hex(lapic_reg(l, APIC_ID)), "tpr", hex(lapic_reg(l, APIC_TPR)),
			 "ppr", hex(lapic_reg(l, APIC_PPR)),
			 "enabled", (lapic_reg(l, APIC_SVR) & SVR_ENABLED) != 0,
			 "svr", hex(lapic_reg(l, APIC_SVR)), "esr", hex(lapic_reg(l, APIC_ESR)),
			 "lvtt", hex(lvtt), "timer_mode", timer_mode_name(lvtt),
			 "timer_masked", (lvtt & LVT_MASKED) != 0, "timer_vector", (int)(lvtt & 0xff),
			 "tmict", (json_int_t)lapic_reg(l, APIC_TMICT),
			 "tmcct", (json_int_t)lapic_reg(l, APIC_TMCCT),
			 "tdcr", hex(lapic_reg(l, APIC_TDCR)), "lvt0", hex(lapic_reg(l, APIC_LVT0)),
			 "irr", lapic_vectors(l, APIC_IRR), "isr", lapic_vectors(l, APIC_ISR));
}

static json_t *events_json(const struct kvm_vcpu_events *e)
{
	return json_pack("{s:{s:b, s:b, s:i, s:b, s:I}, s:{s:b, s:i, s:b, s:i},"
			 " s:{s:b, s:b, s:b}, s:b, s:o}",
			 "exception", "injected", e->exception.injected != 0,
			 "pending", e->exception.pending != 0, "nr", (int)e->exception.nr,
			 "has_error_code", e->exception.has_error_code != 0,
			 "error_code", (json_int_t)e->exception.error_code,
			 "interrupt", "injected", e->interrupt.injected != 0,
			 "nr", (int)e->interrupt.nr, "soft", e->interrupt.soft != 0,
			 "shadow", (int)e->interrupt.shadow,
			 "nmi", "injected", e->nmi.injected != 0, "pending", e->nmi.pending != 0,
			 "masked", e->nmi.masked != 0,
			 "triple_fault_pending", e->triple_fault.pending != 0,
			 "flags", hex(e->flags));
}

/* The TSC-deadline timer: when it fires relative to the TSC now. A
 * deadline in the past that stays there means the interrupt was lost. */
static json_t *timer_json(const struct debug_vcpu_state *st)
{
	json_t *t = json_object();

	if (!t)
		return NULL;
	if (st->nmsrs >= 1)
		json_object_set_new(t, "tsc", json_integer((json_int_t)st->tsc));
	if (st->nmsrs >= 2) {
		int64_t delta = (int64_t)(st->tsc_deadline - st->tsc);

		json_object_set_new(t, "tsc_deadline", json_integer((json_int_t)st->tsc_deadline));
		if (st->tsc_deadline && st->tsc_khz > 0)
			json_object_set_new(t, "deadline_in_ms",
					    json_real((double)delta / st->tsc_khz));
	}
	json_object_set_new(t, "tsc_khz", json_integer(st->tsc_khz));
	if (st->nmsrs >= 3)
		json_object_set_new(t, "kvmclock_msr", hex(st->kvmclock));
	if (st->nmsrs >= 4)
		json_object_set_new(t, "async_pf_en", hex(st->async_pf_en));
	if (st->nmsrs >= 5)
		json_object_set_new(t, "async_pf_int", hex(st->async_pf_int));
	return t;
}

json_t *debug_vcpu_json(unsigned id, const struct debug_vcpu_state *st)
{
	const struct kvm_regs *r = &st->regs;
	const struct kvm_sregs *s = &st->sregs;
	json_t *o = json_pack("{s:i, s:s, s:o, s:o, s:o, s:b, s:i, s:o, s:o, s:o, s:o, s:o, s:o}",
			      "id", (int)id, "mp_state", mp_state_name(st->mp.mp_state),
			      "rip", hex(r->rip), "rsp", hex(r->rsp), "rflags", hex(r->rflags),
			      "interrupts_enabled", (r->rflags & RFLAGS_IF) != 0,
			      "cpl", (int)(s->cs.selector & 3), "cr0", hex(s->cr0),
			      "cr2", hex(s->cr2), "cr3", hex(s->cr3), "cr4", hex(s->cr4),
			      "efer", hex(s->efer), "apic_base", hex(s->apic_base));

	if (!o)
		return NULL;
	json_object_set_new(o, "events", events_json(&st->events));
	json_object_set_new(o, "lapic", lapic_json(&st->lapic));
	json_object_set_new(o, "timer", timer_json(st));
	return o;
}

static json_t *pause_owners_json(struct vm *vm)
{
	static const struct { unsigned owner; const char *name; } owners[] = {
		{ VM_PAUSE_USER, "user" },
		{ VM_PAUSE_MIGRATION, "migration" },
		{ VM_PAUSE_THROTTLE, "throttle" },
	};
	json_t *a = json_array();

	for (unsigned i = 0; a && i < ARRAY_SIZE(owners); i++)
		if (vm_paused_by(vm, owners[i].owner))
			json_array_append_new(a, json_string(owners[i].name));
	return a;
}

json_t *debug_cmd_vcpus(struct vm *vm, json_t *req, char *err, size_t errlen)
{
	struct debug_vcpu_state st;
	/* Whose holds there were before this read's own. */
	json_t *owners = pause_owners_json(vm), *cpus = json_array(), *reply;
	uint64_t t0 = now_ns();
	int rc;

	(void)req;
	if (!owners || !cpus) {
		json_decref(owners);
		json_decref(cpus);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	rc = vm_pause(vm, VM_PAUSE_DEBUG, DEBUG_PAUSE_MS);
	if (rc) {
		json_decref(owners);
		json_decref(cpus);
		snprintf(err, errlen, "the vCPUs did not leave KVM_RUN within %d ms: %s",
			 DEBUG_PAUSE_MS, strerror(-rc));
		return NULL;
	}
	for (unsigned i = 0; i < vm->ncpus && !rc; i++) {
		rc = debug_vcpu_read(vm->vcpus[i].fd, &st, err, errlen);
		if (!rc)
			json_array_append_new(cpus, debug_vcpu_json(i, &st));
	}
	vm_resume(vm, VM_PAUSE_DEBUG);
	if (rc) {
		json_decref(owners);
		json_decref(cpus);
		return NULL;
	}
	reply = json_pack("{s:o, s:b, s:f, s:o}", "paused_by", owners,
			  "migration_running", migrate_running(vm),
			  "read_ms", (double)(now_ns() - t0) / 1e6, "vcpus", cpus);
	if (!reply)
		snprintf(err, errlen, "out of memory");
	return reply;
}
