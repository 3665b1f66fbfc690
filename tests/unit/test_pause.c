/* Who holds a VM paused (vmm/vm.c) and how far auto-converge throttles
 * (migrate/precopy.c), without KVM: a VM with no vCPUs pauses at once. */
#include "migrate/source.h"
#include "unit.h"
#include "vmm/vm.h"

static void test_pause_owners(void)
{
	struct vm vm;

	memset(&vm, 0, sizeof(vm));
	pthread_mutex_init(&vm.pause_lock, NULL);
	pthread_cond_init(&vm.pause_cond, NULL);
	CHECK_EQ(vm_pause(&vm, VM_PAUSE_USER, 100), 0);
	/* Auto-converge pauses and resumes around the user's pause... */
	CHECK_EQ(vm_pause(&vm, VM_PAUSE_THROTTLE, 100), 0);
	vm_resume(&vm, VM_PAUSE_THROTTLE);
	/* ...and the guest stays paused: the user holds it (with one flag,
	 * the throttle's resume ran the guest). */
	CHECK(vm_paused_by(&vm, VM_PAUSE_USER));
	CHECK(!vm_paused_by(&vm, VM_PAUSE_THROTTLE));
	CHECK_EQ(vm.pause_owners, VM_PAUSE_USER);
	/* A migration's hold and release leave the user's alone too. */
	CHECK_EQ(vm_pause(&vm, VM_PAUSE_MIGRATION, 100), 0);
	vm_resume(&vm, VM_PAUSE_MIGRATION);
	CHECK_EQ(vm.pause_owners, VM_PAUSE_USER);
	vm_resume(&vm, VM_PAUSE_USER);
	CHECK_EQ(vm.pause_owners, 0);
	CHECK(!vm_paused_by(&vm, VM_PAUSE_USER | VM_PAUSE_MIGRATION | VM_PAUSE_THROTTLE));
}

/* 20, 40, 60, 80, then 99, never 100: a guest throttled 100% is stopped
 * during pre-copy without that counting as downtime (it went 80 -> 100). */
static void test_throttle_steps(void)
{
	static const unsigned want[] = { 20, 40, 60, 80, 99, 99 };
	unsigned pct = 0;

	for (unsigned i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		pct = precopy_throttle_step(pct);
		CHECK_EQ(pct, want[i]);
	}
}

int main(int argc, char **argv)
{
	unit_init(argc, argv);
	RUN(test_pause_owners);
	RUN(test_throttle_steps);
	return unit_done();
}
