/* Guest RAM: one anonymous mapping, split around the 32-bit MMIO hole into at
 * most two KVM memory slots. gpa_to_hva() is the one checked way to turn a
 * guest physical address into a host pointer; nothing else adds offsets to
 * guest addresses. */
#ifndef VMM_MEM_H
#define VMM_MEM_H

#include <stdint.h>

/* [MMIO_HOLE_START, 4 GiB) holds device MMIO, the IOAPIC and the LAPIC. */
#define MMIO_HOLE_START 0xC0000000ULL
#define MMIO_HOLE_END   0x100000000ULL

struct mem_region {
	uint64_t gpa;
	uint64_t size;
	uint8_t *hva;
};

struct guest_mem {
	uint8_t *base;     /* the one mapping; NULL for layout-only use in tests */
	uint64_t size;     /* total RAM bytes */
	unsigned nregions;
	struct mem_region regions[2];
};

/* Computes the region layout for size bytes of RAM; base may be NULL. */
void guest_mem_layout(struct guest_mem *mem, uint8_t *base, uint64_t size);
/* Maps size bytes of anonymous memory and lays it out. 0 or -errno. */
int guest_mem_alloc(struct guest_mem *mem, uint64_t size);
void guest_mem_free(struct guest_mem *mem);
/* Host pointer for [gpa, gpa+len), which must lie inside one region;
 * NULL on overflow or when out of range. len 0 is checked as len 1. */
void *gpa_to_hva(const struct guest_mem *mem, uint64_t gpa, uint64_t len);
/* End of RAM below the hole (the highest low-memory address + 1). */
uint64_t guest_mem_low_end(const struct guest_mem *mem);

#endif
