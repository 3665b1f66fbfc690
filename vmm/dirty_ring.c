/* KVM's per-vCPU dirty rings: enabling, mapping, harvesting; see
 * dirty_ring.h. */
#include "dirty_ring.h"

#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "util.h"

/* Linux 6.1 headers have it; older ones only the plain capability. */
#ifndef KVM_CAP_DIRTY_LOG_RING_ACQ_REL
#define KVM_CAP_DIRTY_LOG_RING_ACQ_REL 223
#endif

bool dirty_ring_entries_valid(uint64_t n)
{
	return n >= DIRTY_RING_MIN_ENTRIES && n <= DIRTY_RING_MAX_ENTRIES && !(n & (n - 1));
}

/* The ACQ_REL capability is the one that promises the acquire/release
 * protocol we follow anyway; x86 offers both, weakly ordered hosts only it. */
int dirty_ring_enable(int vm_fd, uint32_t entries, char *err, size_t errlen)
{
	static const struct {
		int cap;
		const char *name;
	} caps[] = {
		{ KVM_CAP_DIRTY_LOG_RING_ACQ_REL, "KVM_CAP_DIRTY_LOG_RING_ACQ_REL" },
		{ KVM_CAP_DIRTY_LOG_RING, "KVM_CAP_DIRTY_LOG_RING" },
	};
	uint64_t bytes = (uint64_t)entries * sizeof(struct kvm_dirty_gfn);
	struct kvm_enable_cap cap = { 0 };
	const char *name = NULL;
	int max = 0;

	if (!dirty_ring_entries_valid(entries))
		return errf(-EINVAL, err, errlen,
			    "--dirty-ring %u: not a power of two from %u to %u", entries,
			    DIRTY_RING_MIN_ENTRIES, DIRTY_RING_MAX_ENTRIES);
	for (size_t i = 0; i < ARRAY_SIZE(caps) && max <= 0; i++) {
		max = ioctl(vm_fd, KVM_CHECK_EXTENSION, caps[i].cap);
		cap.cap = (uint32_t)caps[i].cap;
		name = caps[i].name;
	}
	if (max <= 0 || !KVM_DIRTY_LOG_PAGE_OFFSET)
		return errf(-EOPNOTSUPP, err, errlen,
			    "--dirty-ring: KVM lacks KVM_CAP_DIRTY_LOG_RING (Linux 5.11 or later)");
	if (bytes > (uint64_t)max)
		return errf(-E2BIG, err, errlen,
			    "--dirty-ring %u: this host's KVM allows at most %u entries", entries,
			    (unsigned)((uint64_t)max / sizeof(struct kvm_dirty_gfn)));
	cap.args[0] = bytes;
	if (ioctl(vm_fd, KVM_ENABLE_CAP, &cap) < 0) {
		int e = errno;

		/* KVM keeps entries in reserve (64, plus the 512 of Intel's
		 * PML buffer) and refuses a ring that cannot hold them. */
		return errf(-e, err, errlen, "--dirty-ring %u: KVM_ENABLE_CAP(%s, %llu bytes): %s%s",
			    entries, name, (unsigned long long)bytes, strerror(e),
			    e == EINVAL ? " (this host may want a larger ring)" : "");
	}
	return 0;
}

int dirty_ring_init(struct dirty_ring *r, struct kvm_dirty_gfn *gfns, uint32_t entries)
{
	memset(r, 0, sizeof(*r));
	if (!gfns || !entries || (entries & (entries - 1)))
		return -EINVAL;
	r->gfns = gfns;
	r->entries = entries;
	return -pthread_mutex_init(&r->lock, NULL);
}

int dirty_ring_map(struct dirty_ring *r, int vcpu_fd, uint32_t entries, char *err,
		   size_t errlen)
{
	size_t len = (size_t)entries * sizeof(struct kvm_dirty_gfn);
	off_t off = (off_t)KVM_DIRTY_LOG_PAGE_OFFSET * sysconf(_SC_PAGESIZE);
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu_fd, off);
	int rc;

	memset(r, 0, sizeof(*r));
	if (p == MAP_FAILED)
		return errf(-errno, err, errlen, "cannot map the dirty ring: %s", strerror(errno));
	rc = dirty_ring_init(r, p, entries);
	if (rc) {
		munmap(p, len);
		memset(r, 0, sizeof(*r));
		return errf(rc, err, errlen, "dirty ring of %u entries: %s", entries, strerror(-rc));
	}
	r->mapped = true;
	return 0;
}

void dirty_ring_destroy(struct dirty_ring *r)
{
	if (!r->entries)
		return;
	if (r->mapped)
		munmap(r->gfns, (size_t)r->entries * sizeof(struct kvm_dirty_gfn));
	pthread_mutex_destroy(&r->lock);
	memset(r, 0, sizeof(*r));
}

/* KVM's slot is (address space << 16) | slot id; vmm registers its slots
 * in address space 0 only (no SMM). */
uint64_t dirty_ring_page(const struct guest_mem *mem, uint32_t slot, uint64_t offset)
{
	const struct mem_region *r;
	uint64_t page;

	if (slot >= mem->nregions)
		return UINT64_MAX;
	r = &mem->regions[slot];
	if (offset >= r->size >> GUEST_PAGE_SHIFT)
		return UINT64_MAX;
	page = (r->offset >> GUEST_PAGE_SHIFT) + offset;
	return page < guest_mem_pages(mem) ? page : UINT64_MAX;
}

uint32_t dirty_ring_harvest(struct dirty_ring *r, const struct guest_mem *mem,
			    _Atomic uint64_t *bits)
{
	uint32_t n = 0;

	/* One lap at most: the ring may be refilled behind us while a
	 * running vCPU pushes, and a corrupted ring must not keep us here. */
	while (n < r->entries) {
		struct kvm_dirty_gfn *g = &r->gfns[r->fetch & (r->entries - 1)];
		uint32_t flags = __atomic_load_n(&g->flags, __ATOMIC_ACQUIRE);
		uint64_t page;

		/* 01 only: 00 is free, 1X is harvested and not reset yet. */
		if ((flags & KVM_DIRTY_GFN_F_MASK) != KVM_DIRTY_GFN_F_DIRTY)
			break;
		page = dirty_ring_page(mem, __atomic_load_n(&g->slot, __ATOMIC_RELAXED),
				       __atomic_load_n(&g->offset, __ATOMIC_RELAXED));
		if (page == UINT64_MAX)
			r->ignored++;
		else if (bits)
			atomic_fetch_or(&bits[page / 64], 1ULL << (page % 64));
		/* After the bit is set: KVM may re-protect the page (and a
		 * sync may take the bitmap) only once we let go of the entry. */
		__atomic_store_n(&g->flags, KVM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
		r->fetch++;
		n++;
	}
	r->harvested += n;
	return n;
}

int dirty_ring_reset(int vm_fd)
{
	int rc = ioctl(vm_fd, KVM_RESET_DIRTY_RINGS, 0);

	return rc < 0 ? -errno : rc;
}

/* The harvest and the reset both happen under the ring's lock: a sync that
 * takes the bitmap while holding every ring's lock (dirty_rings_lock) then
 * never sees a page harvested here before its reset re-protected it. Were
 * it to, it could send the page and the reset would come after: a write
 * in between would log nothing (KVM logs a page once until its reset) and
 * be lost. */
int dirty_ring_collect(struct dirty_ring *r, int vm_fd, const struct guest_mem *mem,
		       _Atomic uint64_t *bits, int *reset)
{
	int n, rc;

	pthread_mutex_lock(&r->lock);
	n = (int)dirty_ring_harvest(r, mem, bits);
	rc = dirty_ring_reset(vm_fd);
	pthread_mutex_unlock(&r->lock);
	if (reset)
		*reset = rc > 0 ? rc : 0;
	return rc < 0 ? rc : n;
}

void dirty_rings_lock(struct dirty_rings *rs)
{
	for (unsigned i = 0; i < rs->n; i++)
		pthread_mutex_lock(&rs->ring[i].lock);
}

void dirty_rings_unlock(struct dirty_rings *rs)
{
	for (unsigned i = rs->n; i > 0; i--)
		pthread_mutex_unlock(&rs->ring[i - 1].lock);
}
