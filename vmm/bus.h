/* Port-I/O and MMIO dispatch by address range. Every device, whatever its
 * bus, gets the same handler signature. Ranges are registered before the
 * vCPUs start and never change afterwards, so lookups take no lock. */
#ifndef VMM_BUS_H
#define VMM_BUS_H

#include <stdbool.h>
#include <stdint.h>

#define BUS_MAX_RANGES 64

/* offset is relative to the range's base. For reads, fill data[0..len). */
typedef void (*bus_handler)(void *opaque, uint64_t offset, uint8_t *data, uint32_t len,
			    bool is_write);

struct bus_range {
	uint64_t base;
	uint64_t len;
	bus_handler handler;
	void *opaque;
};

struct bus {
	unsigned n;
	struct bus_range ranges[BUS_MAX_RANGES]; /* sorted by base, disjoint */
};

/* 0, -EINVAL (empty or wrapping range), -EEXIST (overlap) or -ENOSPC. */
int bus_register(struct bus *bus, uint64_t base, uint64_t len, bus_handler handler, void *opaque);
/* 0, or -ENOENT when no device claims addr (reads then see all ones). */
int bus_dispatch(const struct bus *bus, uint64_t addr, uint8_t *data, uint32_t len, bool is_write);

#endif
