/* Guest RAM layout and the checked GPA-to-host-pointer translation. */
#include "mem.h"

#include <errno.h>
#include <stddef.h>
#include <sys/mman.h>

void guest_mem_layout(struct guest_mem *mem, uint8_t *base, uint64_t size)
{
	uint64_t low = size < MMIO_HOLE_START ? size : MMIO_HOLE_START;

	mem->base = base;
	mem->size = size;
	mem->nregions = 1;
	mem->regions[0] = (struct mem_region){ .gpa = 0, .size = low, .hva = base };
	if (size > low) {
		mem->nregions = 2;
		mem->regions[1] = (struct mem_region){
			.gpa = MMIO_HOLE_END, .size = size - low, .hva = base ? base + low : NULL,
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
