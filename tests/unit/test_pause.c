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

/* Never 100: a guest throttled 100% is stopped during pre-copy without
 * that counting as downtime (the old steps went 80 -> 100). */
static void test_throttle_never_stops_the_guest(void)
{
	unsigned pct = 0;

	for (unsigned i = 0; i < 10; i++) {
		pct = precopy_throttle_next(pct, 1000000, 1000);
		CHECK(pct <= PRECOPY_THROTTLE_MAX);
	}
	CHECK_EQ(pct, PRECOPY_THROTTLE_MAX);
	CHECK_EQ(precopy_throttle_next(95, 100, 100), PRECOPY_THROTTLE_MAX);
	CHECK_EQ(precopy_throttle_next(99, 100, 100), 99);
}

/* The throttle aims at a pass that leaves a quarter of what it sent: a
 * guest that dirtied as much as a pass sent goes to 75% at once (it took
 * two passes per step of 20% before, and 6-9 passes in all), one that
 * dirtied less than half is left alone, and a throttled pass that still
 * did not halve the set adds at least 10 points. */
static void test_throttle_aims_at_a_quarter(void)
{
	CHECK_EQ(precopy_throttle_next(0, 32000, 32000), 75);
	CHECK_EQ(precopy_throttle_next(0, 50, 100), 0);
	CHECK_EQ(precopy_throttle_next(0, 10, 100), 0);
	CHECK_EQ(precopy_throttle_next(30, 50, 100), 30);
	CHECK_EQ(precopy_throttle_next(0, 60, 100), 59);       /* 100 - 100 * 25 / 60 */
	CHECK_EQ(precopy_throttle_next(75, 32000, 32000), 94); /* 100 - 25 / 4 */
	CHECK_EQ(precopy_throttle_next(70, 51, 100), 86);      /* 100 - 30 * 25 / 51 = 85.3 */
	CHECK_EQ(precopy_throttle_next(85, 51, 100), 95);      /* 92.7, but +10 at least */
	CHECK_EQ(precopy_throttle_next(0, 100, 0), 0);         /* nothing sent: no figure */
}

int main(int argc, char **argv)
{
	unit_init(argc, argv);
	RUN(test_pause_owners);
	RUN(test_throttle_never_stops_the_guest);
	RUN(test_throttle_aims_at_a_quarter);
	return unit_done();
}
