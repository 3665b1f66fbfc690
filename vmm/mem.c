/* Guest RAM layout and the checked GPA-to-host-pointer translation. */
#include "mem.h"

#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/mman.h>

void guest_mem_layout(struct guest_mem *mem, uint8_t *base, uint64_t size)
{
	uint64_t low = size < MMIO_HOLE_START ? size : MMIO_HOLE_START;

	mem->base = base;
	mem->size = size;
	mem->nregions = 1;
	mem->dirty = NULL;
	mem->regions[0] = (struct mem_region){ .gpa = 0, .size = low, .offset = 0, .hva = base };
	if (size > low) {
		mem->nregions = 2;
		mem->regions[1] = (struct mem_region){
			.gpa = MMIO_HOLE_END, .size = size - low, .offset = low,
			.hva = base ? base + low : NULL,
		};
	}
}

int guest_mem_alloc(struct guest_mem *mem, uint64_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (p == MAP_FAILED)
		return -errno;
	guest_mem_layout(mem, p, size);
	return 0;
}

void guest_mem_free(struct guest_mem *mem)
{
	if (mem->base)
		munmap(mem->base, mem->size);
	mem->base = NULL;
	free((void *)mem->dirty);
	mem->dirty = NULL;
}

uint64_t guest_mem_pages(const struct guest_mem *mem)
{
	return (mem->size + GUEST_PAGE_SIZE - 1) >> GUEST_PAGE_SHIFT;
}

int guest_mem_dirty_alloc(struct guest_mem *mem)
{
	mem->dirty = calloc((guest_mem_pages(mem) + 63) / 64, sizeof(uint64_t));
	return mem->dirty ? 0 : -ENOMEM;
}

/* Offset of gpa inside the mapping, or UINT64_MAX outside RAM. */
uint64_t guest_mem_offset(const struct guest_mem *mem, uint64_t gpa)
{
	for (unsigned i = 0; i < mem->nregions; i++) {
		const struct mem_region *r = &mem->regions[i];

		if (gpa >= r->gpa && gpa - r->gpa < r->size)
			return r->offset + (gpa - r->gpa);
	}
	return UINT64_MAX;
}

void guest_mem_mark_dirty(struct guest_mem *mem, uint64_t gpa, uint64_t len)
{
	uint64_t first, last, end;

	if (!mem->dirty || !len || __builtin_add_overflow(gpa, len - 1, &end))
		return;
	first = guest_mem_offset(mem, gpa);
	last = guest_mem_offset(mem, end);
	if (first == UINT64_MAX || last == UINT64_MAX)
		return;
	for (uint64_t p = first >> GUEST_PAGE_SHIFT; p <= last >> GUEST_PAGE_SHIFT; p++)
		atomic_fetch_or(&mem->dirty[p / 64], 1ULL << (p % 64));
}

bool guest_mem_test_dirty(const struct guest_mem *mem, uint64_t gpa)
{
	uint64_t off = guest_mem_offset(mem, gpa), p;

	if (!mem->dirty || off == UINT64_MAX)
		return false;
	p = off >> GUEST_PAGE_SHIFT;
	return atomic_load(&mem->dirty[p / 64]) & (1ULL << (p % 64));
}

void *gpa_to_hva(const struct guest_mem *mem, uint64_t gpa, uint64_t len)
{
	uint64_t end;

	if (!len)
		len = 1;
	if (__builtin_add_overflow(gpa, len, &end))
		return NULL;
	for (unsigned i = 0; i < mem->nregions; i++) {
		const struct mem_region *r = &mem->regions[i];

		if (gpa >= r->gpa && end <= r->gpa + r->size)
			return r->hva ? r->hva + (gpa - r->gpa) : NULL;
	}
	return NULL;
}

uint64_t guest_mem_low_end(const struct guest_mem *mem)
{
	return mem->regions[0].size;
}
