/* The migration device-set descriptor (vmm/devices.c) over devices set up
 * without KVM: source and destination compare it byte for byte at HELLO,
 * so it must name everything that decides what the guest negotiated. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/unit/unit.h"
#include "virtio/balloon.h"
#include "virtio/blk.h"
#include "vmm/devices.h"
#include "vmm/vm.h"

/* The device set of a VM whose only virtio device is a balloon with opts,
 * into buf; vm_device_set's result. */
static int balloon_set(const char *opts, char *buf, size_t size)
{
	static struct vm vm;
	struct balloon_options o;
	struct balloon b;
	char err[256] = "";
	int rc;

	memset(&vm, 0, sizeof(vm));
	guest_mem_layout(&vm.mem, NULL, 64ULL << 20);
	snprintf(buf, size, "?");
	if (balloon_parse_options(opts, &o, err, sizeof(err)) ||
	    balloon_init(&vm, &b, &o, err, sizeof(err)))
		return -1;
	vm.virtio[vm.nvirtio++] = &b.dev;
	rc = vm_device_set(&vm, buf, size);
	balloon_destroy(&b);
	return rc;
}

/* Each option that changes the features offered is named; the statistics
 * interval only sets how often the host asks, so only "stats" is. */
static void test_balloon_options_in_set(void)
{
	char set[256];

	CHECK(balloon_set("", set, sizeof(set)) > 0);
	CHECK_STREQ(set, "uart,balloon");
	balloon_set("stats=1", set, sizeof(set));
	CHECK_STREQ(set, "uart,balloon:stats");
	balloon_set("stats=5", set, sizeof(set));
	CHECK_STREQ(set, "uart,balloon:stats");
	balloon_set("deflate-on-oom", set, sizeof(set));
	CHECK_STREQ(set, "uart,balloon:deflate-on-oom");
	balloon_set("free-page-reporting,free-page-hint", set, sizeof(set));
	CHECK_STREQ(set, "uart,balloon:free-page-hint:free-page-reporting");
	balloon_set("stats=1,deflate-on-oom,free-page-hint,free-page-reporting", set, sizeof(set));
	CHECK_STREQ(set, "uart,balloon:stats:deflate-on-oom:free-page-hint:free-page-reporting");
}

/* A disk names its size, discard support and id; with a balloon before it. */
static void test_disk_after_balloon(void)
{
	static struct vm vm;
	struct balloon_options o = { .enabled = true, .free_page_hint = true };
	struct blk_options d = { .id = "data" };
	char tmpl[] = "/tmp/vmm-test-devices.XXXXXX", set[256], err[256] = "";
	struct balloon b;
	struct blk *disk;
	int fd = mkstemp(tmpl);

	REQUIRE(fd >= 0);
	REQUIRE(ftruncate(fd, 1 << 20) == 0);
	close(fd);
	snprintf(d.path, sizeof(d.path), "%s", tmpl);
	memset(&vm, 0, sizeof(vm));
	guest_mem_layout(&vm.mem, NULL, 64ULL << 20);
	REQUIRE(balloon_init(&vm, &b, &o, err, sizeof(err)) == 0);
	disk = blk_open(&vm, &d, 0, err, sizeof(err));
	unlink(tmpl);
	REQUIRE(disk != NULL);
	vm.virtio[vm.nvirtio++] = &b.dev;
	vm.virtio[vm.nvirtio++] = blk_dev(disk);
	CHECK(vm_device_set(&vm, set, sizeof(set)) > 0);
	/* discard only where the file system punches holes */
	if (strcmp(set, "uart,balloon:free-page-hint,blk0:1048576:discard:id=data") &&
	    strcmp(set, "uart,balloon:free-page-hint,blk0:1048576:id=data"))
		unit_fail(__FILE__, __LINE__, "device set '%s'", set);
	blk_destroy(disk);
	balloon_destroy(&b);
}

/* Too small a buffer is -ENOSPC, never a truncated set that might match. */
static void test_set_too_long(void)
{
	char set[24];

	CHECK_EQ(balloon_set("stats=1,deflate-on-oom", set, sizeof(set)), -ENOSPC);
}

int main(int argc, char **argv)
{
	unit_init(argc, argv);
	RUN(test_balloon_options_in_set);
	RUN(test_disk_after_balloon);
	RUN(test_set_too_long);
	return unit_done();
}
