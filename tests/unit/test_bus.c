/* bus_register and bus_dispatch: range bookkeeping and lookup. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "tests/unit/unit.h"
#include "vmm/bus.h"

/* What a handler saw on its last call. */
struct dev {
	unsigned calls;
	uint64_t offset;
	uint32_t len;
	bool is_write;
	uint8_t written[8];
	uint8_t fill; /* reads return this byte */
};

static void dev_handler(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
	struct dev *d = opaque;

	d->calls++;
	d->offset = offset;
	d->len = len;
	d->is_write = is_write;
	if (is_write)
		memcpy(d->written, data, len < sizeof(d->written) ? len : sizeof(d->written));
	else
		memset(data, d->fill, len);
}

static void test_register_dispatch(void)
{
	struct bus bus = { 0 };
	struct dev a = { .fill = 0xaa }, b = { .fill = 0xbb };
	uint8_t data[4] = { 1, 2, 3, 4 };

	CHECK_EQ(bus_register(&bus, 0x3f8, 8, dev_handler, &a), 0);
	CHECK_EQ(bus_register(&bus, 0x60, 1, dev_handler, &b), 0);
	CHECK_EQ(bus.n, 2);

	CHECK_EQ(bus_dispatch(&bus, 0x3fd, data, 1, false), 0);
	CHECK_EQ(a.calls, 1);
	CHECK_EQ(a.offset, 5); /* relative to the base */
	CHECK_EQ(a.len, 1);
	CHECK(!a.is_write);
	CHECK_EQ(data[0], 0xaa);
	CHECK_EQ(data[1], 2);
	CHECK_EQ(b.calls, 0);

	data[0] = 0x42;
	CHECK_EQ(bus_dispatch(&bus, 0x3f8, data, 2, true), 0);
	CHECK_EQ(a.calls, 2);
	CHECK_EQ(a.offset, 0);
	CHECK_EQ(a.len, 2);
	CHECK(a.is_write);
	CHECK_EQ(a.written[0], 0x42);
	CHECK_EQ(a.written[1], 2);

	/* The last byte of a range is claimed, the byte after it is not. */
	CHECK_EQ(bus_dispatch(&bus, 0x3ff, data, 1, false), 0);
	CHECK_EQ(a.offset, 7);
	CHECK_EQ(a.calls, 3);
	CHECK_EQ(bus_dispatch(&bus, 0x400, data, 1, false), -ENOENT);
	CHECK_EQ(bus_dispatch(&bus, 0x3f7, data, 1, false), -ENOENT);
	CHECK_EQ(a.calls, 3);

	CHECK_EQ(bus_dispatch(&bus, 0x60, data, 1, true), 0);
	CHECK_EQ(b.calls, 1);
	CHECK_EQ(b.offset, 0);
	CHECK(b.is_write);
}

static void test_unclaimed(void)
{
	struct bus bus = { 0 };
	struct dev a = { 0 };
	uint8_t data[8];

	memset(data, 0x11, sizeof(data));
	CHECK_EQ(bus_dispatch(&bus, 0x80, data, 4, false), -ENOENT); /* empty bus */
	CHECK_EQ(data[0], 0xff);
	CHECK_EQ(data[3], 0xff);
	CHECK_EQ(data[4], 0x11); /* only len bytes */

	CHECK_EQ(bus_register(&bus, 0x1000, 0x10, dev_handler, &a), 0);
	memset(data, 0, sizeof(data));
	CHECK_EQ(bus_dispatch(&bus, 0x2000, data, 8, false), -ENOENT);
	for (unsigned i = 0; i < 8; i++)
		CHECK_EQ(data[i], 0xff);
	/* An unclaimed write leaves the data alone. */
	memset(data, 0x22, sizeof(data));
	CHECK_EQ(bus_dispatch(&bus, 0x0, data, 4, true), -ENOENT);
	CHECK_EQ(data[0], 0x22);
	CHECK_EQ(a.calls, 0);
}

static void test_overlap(void)
{
	struct bus bus = { 0 };
	struct dev a = { 0 };

	CHECK_EQ(bus_register(&bus, 0x100, 0x10, dev_handler, &a), 0);
	CHECK_EQ(bus_register(&bus, 0x100, 0x10, dev_handler, &a), -EEXIST); /* same */
	CHECK_EQ(bus_register(&bus, 0xf8, 0x10, dev_handler, &a), -EEXIST);  /* left */
	CHECK_EQ(bus_register(&bus, 0x10f, 1, dev_handler, &a), -EEXIST);    /* last byte */
	CHECK_EQ(bus_register(&bus, 0x108, 0x100, dev_handler, &a), -EEXIST); /* right */
	CHECK_EQ(bus_register(&bus, 0x104, 2, dev_handler, &a), -EEXIST);    /* inside */
	CHECK_EQ(bus_register(&bus, 0x0, 0x1000, dev_handler, &a), -EEXIST); /* around */
	CHECK_EQ(bus.n, 1);
	/* Adjacent ranges on both sides are fine. */
	CHECK_EQ(bus_register(&bus, 0xf0, 0x10, dev_handler, &a), 0);
	CHECK_EQ(bus_register(&bus, 0x110, 0x10, dev_handler, &a), 0);
	CHECK_EQ(bus.n, 3);
	/* Overlaps with a range that is not the first one. */
	CHECK_EQ(bus_register(&bus, 0x11f, 0x10, dev_handler, &a), -EEXIST);
	CHECK_EQ(bus_register(&bus, 0x0, 0xf1, dev_handler, &a), -EEXIST);
	CHECK_EQ(bus_register(&bus, 0x0, UINT64_MAX, dev_handler, &a), -EEXIST);
	CHECK_EQ(bus.n, 3);
	for (unsigned i = 1; i < bus.n; i++)
		CHECK(bus.ranges[i - 1].base + bus.ranges[i - 1].len <= bus.ranges[i].base);
}

static void test_invalid(void)
{
	struct bus bus = { 0 };
	struct dev a = { 0 };

	CHECK_EQ(bus_register(&bus, 0x100, 0, dev_handler, &a), -EINVAL);
	CHECK_EQ(bus_register(&bus, UINT64_MAX - 1, 4, dev_handler, &a), -EINVAL);
	CHECK_EQ(bus_register(&bus, UINT64_MAX, 1, dev_handler, &a), -EINVAL);
	CHECK_EQ(bus_register(&bus, 1, UINT64_MAX, dev_handler, &a), -EINVAL);
	CHECK_EQ(bus_register(&bus, 0x100, 1, NULL, &a), -EINVAL);
	CHECK_EQ(bus.n, 0);
	/* The highest range that does not wrap. */
	CHECK_EQ(bus_register(&bus, UINT64_MAX - 1, 1, dev_handler, &a), 0);
	CHECK_EQ(bus.n, 1);
}

static void test_full(void)
{
	struct bus bus = { 0 };
	struct dev a = { 0 };

	for (unsigned i = 0; i < BUS_MAX_RANGES; i++)
		CHECK_EQ(bus_register(&bus, 0x1000 + i * 0x10, 0x10, dev_handler, &a), 0);
	CHECK_EQ(bus.n, BUS_MAX_RANGES);
	CHECK_EQ(bus_register(&bus, 0x100000, 0x10, dev_handler, &a), -ENOSPC);
	CHECK_EQ(bus.n, BUS_MAX_RANGES);
}

static void test_many_ranges(void)
{
	static struct bus bus;
	static struct dev devs[BUS_MAX_RANGES];
	uint8_t data[1];

	memset(&bus, 0, sizeof(bus));
	memset(devs, 0, sizeof(devs));
	/* Registered in a scrambled order (37 is coprime to 64), with gaps,
	 * and of varied lengths: range k is [k*0x100, k*0x100 + k + 1). */
	for (unsigned i = 0; i < BUS_MAX_RANGES; i++) {
		unsigned k = (i * 37) % BUS_MAX_RANGES;

		devs[k].fill = (uint8_t)k;
		CHECK_EQ(bus_register(&bus, k * 0x100ULL, k + 1, dev_handler, &devs[k]), 0);
	}
	REQUIRE(bus.n == BUS_MAX_RANGES);
	for (unsigned i = 0; i < BUS_MAX_RANGES; i++)
		CHECK_EQ(bus.ranges[i].base, i * 0x100ULL);

	for (unsigned k = 0; k < BUS_MAX_RANGES; k++) {
		uint64_t base = k * 0x100ULL;

		data[0] = 0;
		CHECK_EQ(bus_dispatch(&bus, base, data, 1, false), 0);
		CHECK_EQ(data[0], k);
		CHECK_EQ(bus_dispatch(&bus, base + k, data, 1, false), 0);
		CHECK_EQ(devs[k].offset, k);
		CHECK_EQ(bus_dispatch(&bus, base + k + 1, data, 1, false), -ENOENT);
		CHECK_EQ(data[0], 0xff);
		CHECK_EQ(devs[k].calls, 2);
	}
	CHECK_EQ(bus_dispatch(&bus, BUS_MAX_RANGES * 0x100ULL, data, 1, false), -ENOENT);
	CHECK_EQ(bus_dispatch(&bus, UINT64_MAX, data, 1, false), -ENOENT);
}

int main(int argc, char **argv)
{
	unit_init(argc, argv);
	RUN(test_register_dispatch);
	RUN(test_unclaimed);
	RUN(test_overlap);
	RUN(test_invalid);
	RUN(test_full);
	RUN(test_many_ranges);
	return unit_done();
}
