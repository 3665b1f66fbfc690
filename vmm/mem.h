/* Guest RAM: one anonymous mapping, split around the 32-bit MMIO hole into at
 * most two KVM memory slots. gpa_to_hva() is the one checked way to turn a
 * guest physical address into a host pointer; nothing else adds offsets to
 * guest addresses. */
#ifndef VMM_MEM_H
#define VMM_MEM_H

#include <stdbool.h>
#include <stdint.h>

/* [MMIO_HOLE_START, 4 GiB) holds device MMIO, the IOAPIC and the LAPIC. */
#define MMIO_HOLE_START 0xC0000000ULL
#define MMIO_HOLE_END   0x100000000ULL

#define GUEST_PAGE_SIZE 4096ULL
#define GUEST_PAGE_SHIFT 12

struct mem_region {
	uint64_t gpa;
	uint64_t size;
	uint64_t offset; /* of the region inside the one mapping */
	uint8_t *hva;
};

struct guest_mem {
	uint8_t *base;     /* the one mapping; NULL for layout-only use in tests */
	uint64_t size;     /* total RAM bytes */
	unsigned nregions;
	struct mem_region regions[2];
	/* VMM-side dirty bitmap, one bit per page of the mapping: the VMM's own
	 * writes to guest memory, which KVM's dirty log never sees. */
	_Atomic uint64_t *dirty;
};

/* Computes the region layout for size bytes of RAM; base may be NULL. */
void guest_mem_layout(struct guest_mem *mem, uint8_t *base, uint64_t size);
/* Maps size bytes of anonymous memory and lays it out. 0 or -errno. */
int guest_mem_alloc(struct guest_mem *mem, uint64_t size);
void guest_mem_free(struct guest_mem *mem);
/* Host pointer for [gpa, gpa+len), which must lie inside one region;
 * NULL on overflow or when out of range. len 0 is checked as len 1. */
void *gpa_to_hva(const struct guest_mem *mem, uint64_t gpa, uint64_t len);
/* Allocates the VMM-side dirty bitmap (all clear). 0 or -ENOMEM. */
int guest_mem_dirty_alloc(struct guest_mem *mem);
/* Records a VMM write to [gpa, gpa+len); ignores addresses outside RAM. */
void guest_mem_mark_dirty(struct guest_mem *mem, uint64_t gpa, uint64_t len);
/* Whether the page holding gpa is marked. */
bool guest_mem_test_dirty(const struct guest_mem *mem, uint64_t gpa);
/* Byte offset of gpa inside the one mapping (page n of RAM is offset
 * n * 4096, whatever its gpa), or UINT64_MAX outside RAM. Page bitmaps
 * (dirty, discarded, hinted) are indexed by offset >> 12. */
uint64_t guest_mem_offset(const struct guest_mem *mem, uint64_t gpa);
/* Number of pages of RAM (bits in the dirty bitmap). */
uint64_t guest_mem_pages(const struct guest_mem *mem);

/* End of RAM below the hole (the highest low-memory address + 1). */
uint64_t guest_mem_low_end(const struct guest_mem *mem);

#endif
