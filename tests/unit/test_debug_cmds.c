/* debug-vcpus: the JSON made from a vCPU's KVM state (no KVM needed), and
 * the command on a zeroed VM without vCPUs. */
#include <jansson.h>
#include <string.h>

#include "tests/unit/unit.h"
#include "vmm/control.h"
#include "vmm/debug_cmds.h"
#include "vmm/vm.h"

static void set_reg(struct kvm_lapic_state *l, unsigned off, uint32_t v)
{
	memcpy(&l->regs[off], &v, sizeof(v));
}

static const char *str(json_t *o, const char *path1, const char *path2)
{
	json_t *v = json_object_get(o, path1);

	if (path2)
		v = json_object_get(v, path2);
	return json_string_value(v);
}

static long long num(json_t *o, const char *path1, const char *path2)
{
	json_t *v = json_object_get(o, path1);

	if (path2)
		v = json_object_get(v, path2);
	return json_is_integer(v) ? (long long)json_integer_value(v) : -12345;
}

/* A guest halted in the kernel, its TSC-deadline timer armed 2 ms ahead,
 * vector 0x30 pending in the IRR and 0xec in service. */
static void make_state(struct debug_vcpu_state *st)
{
	memset(st, 0, sizeof(*st));
	st->regs.rip = 0xffffffff81e0f1c2ULL;
	st->regs.rflags = 0x246;
	st->sregs.cs.selector = 0x10;
	st->sregs.cr0 = 0x80050033;
	st->sregs.efer = 0xd01;
	st->mp.mp_state = KVM_MP_STATE_HALTED;
	set_reg(&st->lapic, 0xf0, 0x1ff);        /* SVR: enabled */
	set_reg(&st->lapic, 0x320, 0x400ec);     /* LVTT: TSC deadline, vector 0xec */
	set_reg(&st->lapic, 0x380, 0);           /* TMICT */
	set_reg(&st->lapic, 0x3e0, 0xb);         /* divide by 1 */
	set_reg(&st->lapic, 0x200 + 1 * 0x10, 1u << 16); /* IRR: vector 0x30 */
	set_reg(&st->lapic, 0x100 + 7 * 0x10, 1u << 12); /* ISR: vector 0xec */
	st->events.exception.pending = 1;
	st->events.exception.nr = 14;
	st->events.nmi.masked = 1;
	st->tsc = 1000000000;
	st->tsc_deadline = 1000000000 + 2 * 2000000ULL; /* 2 ms at 2 GHz */
	st->tsc_khz = 2000000;
	st->nmsrs = 5;
	st->async_pf_en = 0x12345b;
}

static void test_vcpu_json(void)
{
	struct debug_vcpu_state st;
	json_t *o, *irr, *isr;

	make_state(&st);
	o = debug_vcpu_json(3, &st);
	REQUIRE(o);
	CHECK_EQ(num(o, "id", NULL), 3);
	CHECK_STREQ(str(o, "mp_state", NULL), "halted");
	CHECK_STREQ(str(o, "rip", NULL), "0xffffffff81e0f1c2");
	CHECK(json_is_true(json_object_get(o, "interrupts_enabled")));
	CHECK_EQ(num(o, "cpl", NULL), 0);
	CHECK_STREQ(str(o, "efer", NULL), "0xd01");
	CHECK_STREQ(str(o, "lapic", "timer_mode"), "tsc-deadline");
	CHECK_EQ(num(o, "lapic", "timer_vector"), 0xec);
	CHECK(json_is_false(json_object_get(json_object_get(o, "lapic"), "timer_masked")));
	CHECK(json_is_true(json_object_get(json_object_get(o, "lapic"), "enabled")));
	CHECK_STREQ(str(o, "lapic", "tdcr"), "0xb");
	irr = json_object_get(json_object_get(o, "lapic"), "irr");
	isr = json_object_get(json_object_get(o, "lapic"), "isr");
	REQUIRE(json_array_size(irr) == 1 && json_array_size(isr) == 1);
	CHECK_EQ(json_integer_value(json_array_get(irr, 0)), 0x30);
	CHECK_EQ(json_integer_value(json_array_get(isr, 0)), 0xec);
	CHECK(json_is_true(json_object_get(json_object_get(json_object_get(o, "events"),
							   "exception"), "pending")));
	CHECK_EQ(num(json_object_get(o, "events"), "exception", "nr"), 14);
	CHECK(json_is_true(json_object_get(json_object_get(json_object_get(o, "events"), "nmi"),
					   "masked")));
	CHECK_EQ(num(o, "timer", "tsc"), 1000000000);
	CHECK_EQ(num(o, "timer", "tsc_deadline"), 1004000000);
	CHECK(json_real_value(json_object_get(json_object_get(o, "timer"), "deadline_in_ms")) ==
	      2.0);
	CHECK_STREQ(str(o, "timer", "async_pf_en"), "0x12345b");
	json_decref(o);
}

/* A deadline already passed reads as negative; one-shot and a user-mode
 * vCPU with interrupts off are told apart. */
static void test_vcpu_json_past_deadline(void)
{
	struct debug_vcpu_state st;
	json_t *o;

	make_state(&st);
	st.tsc_deadline = st.tsc - 4000000; /* 2 ms ago */
	st.regs.rflags = 0x2;
	st.sregs.cs.selector = 0x33;
	st.mp.mp_state = KVM_MP_STATE_RUNNABLE;
	set_reg(&st.lapic, 0x320, 0x100ec); /* one-shot, masked */
	o = debug_vcpu_json(0, &st);
	REQUIRE(o);
	CHECK(json_real_value(json_object_get(json_object_get(o, "timer"), "deadline_in_ms")) ==
	      -2.0);
	CHECK_STREQ(str(o, "mp_state", NULL), "runnable");
	CHECK(json_is_false(json_object_get(o, "interrupts_enabled")));
	CHECK_EQ(num(o, "cpl", NULL), 3);
	CHECK_STREQ(str(o, "lapic", "timer_mode"), "one-shot");
	CHECK(json_is_true(json_object_get(json_object_get(o, "lapic"), "timer_masked")));
	json_decref(o);
}

/* MSRs KVM did not return are left out, not shown as zero. */
static void test_vcpu_json_missing_msrs(void)
{
	struct debug_vcpu_state st;
	json_t *o, *t;

	make_state(&st);
	st.nmsrs = 1;
	o = debug_vcpu_json(0, &st);
	REQUIRE(o);
	t = json_object_get(o, "timer");
	CHECK(json_object_get(t, "tsc") != NULL);
	CHECK(json_object_get(t, "tsc_deadline") == NULL);
	CHECK(json_object_get(t, "deadline_in_ms") == NULL);
	CHECK(json_object_get(t, "async_pf_en") == NULL);
	json_decref(o);
}

/* The command through the control socket's parser, on a VM with no vCPUs:
 * it answers, reports no pause holds and leaves none behind. */
static void test_command_no_vcpus(void)
{
	static struct vm vm;
	static const char req[] = "{\"cmd\":\"debug-vcpus\"}";
	struct control_deferred deferred;
	json_t *reply;

	memset(&vm, 0, sizeof(vm));
	reply = control_handle_line(&vm, req, strlen(req), &deferred);
	REQUIRE(reply);
	CHECK(json_is_true(json_object_get(reply, "ok")));
	CHECK_EQ(json_array_size(json_object_get(reply, "vcpus")), 0);
	CHECK_EQ(json_array_size(json_object_get(reply, "paused_by")), 0);
	CHECK(json_is_false(json_object_get(reply, "migration_running")));
	CHECK_EQ(vm.pause_owners, 0);
	json_decref(reply);
}

int main(int argc, char **argv)
{
	unit_init(argc, argv);
	RUN(test_vcpu_json);
	RUN(test_vcpu_json_past_deadline);
	RUN(test_vcpu_json_missing_msrs);
	RUN(test_command_no_vcpus);
	return unit_done();
}
