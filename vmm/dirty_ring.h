/* KVM's dirty ring (KVM_CAP_DIRTY_LOG_RING, `vmm run --dirty-ring N`): a
 * feature of the VM and its vCPUs, like kvm_run. The capability is enabled
 * on the VM right after KVM_CREATE_VM (KVM refuses it once a vCPU exists);
 * each vCPU then maps its own ring, an array of struct kvm_dirty_gfn, from
 * its vCPU fd at KVM_DIRTY_LOG_PAGE_OFFSET pages. While a memory slot has
 * KVM_MEM_LOG_DIRTY_PAGES, KVM pushes one entry per page the vCPU dirties
 * (slot, page offset inside the slot), and KVM_GET_DIRTY_LOG and
 * KVM_CLEAR_DIRTY_LOG are unavailable for the life of the VM.
 *
 * An entry's flags go 00 (free) -> 01 (DIRTY, set by KVM) -> 1X (RESET,
 * set by us once harvested) -> 00 (by KVM_RESET_DIRTY_RINGS, which also
 * re-protects the page). Harvesting walks a ring from its fetch index,
 * loading each entry's flags with acquire semantics (slot and offset are
 * only valid after that), takes every DIRTY entry in order, stores RESET
 * with release semantics (KVM reads slot and offset again when it resets)
 * and stops at the first entry that is not DIRTY.
 *
 * Harvested pages go into a bitmap of guest_mem pages (page n is byte
 * n * 4096 of the RAM mapping; slot i is mem->regions[i], as vm.c and
 * migrate/dirty.c register them), set with atomic OR. An entry that names
 * no page of RAM (another address space, an unknown slot, an offset past
 * the slot) is consumed and counted, never written anywhere: a buggy kernel
 * or a corrupted ring must not make vmm write outside the bitmap.
 *
 * Two threads may harvest one ring: its vCPU thread when KVM exits with
 * KVM_EXIT_DIRTY_RING_FULL, and the migration thread at each sync. Each
 * ring has a mutex for that; see dirty_ring_collect() and dirty_rings_lock()
 * for the order the two keep so that no write is lost.
 *
 * The harvest itself is pure (no KVM): unit-tested on rings in memory. */
#ifndef VMM_DIRTY_RING_H
#define VMM_DIRTY_RING_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mem.h"

/* KVM wants at least a page of entries (4096 / 16; on Intel with PML it
 * wants more, and says so with EINVAL) and at most 65536 entries
 * (KVM_DIRTY_RING_MAX_ENTRIES); KVM_CHECK_EXTENSION gives the host's own
 * maximum in bytes. */
#define DIRTY_RING_MIN_ENTRIES 256u
#define DIRTY_RING_MAX_ENTRIES 65536u

struct dirty_ring {
	struct kvm_dirty_gfn *gfns; /* entries of them: mapped from the vCPU fd, or a test's */
	uint32_t entries;           /* a power of two */
	uint32_t fetch;             /* free-running index of the next entry to look at */
	bool mapped;                /* gfns is our mmap of the vCPU fd */
	pthread_mutex_t lock;       /* held across a harvest (and the reset that follows) */
	uint64_t harvested;         /* entries taken, in all */
	uint64_t ignored;           /* of which naming no page of RAM */
};

/* A VM's rings: all that dirty tracking needs to know of its vCPUs. */
struct dirty_rings {
	struct dirty_ring *ring; /* one per vCPU, in vCPU order */
	unsigned n;              /* 0: the VM runs without a ring */
	uint32_t entries;
};

/* Whether n is a ring size vmm accepts before asking KVM: a power of two
 * in [DIRTY_RING_MIN_ENTRIES, DIRTY_RING_MAX_ENTRIES]. */
bool dirty_ring_entries_valid(uint64_t n);

/* Enables rings of `entries` entries on the VM (before any vCPU exists):
 * KVM_CAP_DIRTY_LOG_RING_ACQ_REL if KVM offers it, else
 * KVM_CAP_DIRTY_LOG_RING. 0; -EOPNOTSUPP when KVM has neither; -E2BIG over
 * the host's maximum; or KVM's -errno. One line in err. */
int dirty_ring_enable(int vm_fd, uint32_t entries, char *err, size_t errlen);

/* A ring over gfns (all zero: every entry free), for the VM or for tests. */
int dirty_ring_init(struct dirty_ring *r, struct kvm_dirty_gfn *gfns, uint32_t entries);
/* Maps vCPU vcpu_fd's ring of `entries` entries. 0 or -errno, err set. */
int dirty_ring_map(struct dirty_ring *r, int vcpu_fd, uint32_t entries, char *err,
		   size_t errlen);
/* Unmaps a mapped ring; does nothing to one never initialised (all zero). */
void dirty_ring_destroy(struct dirty_ring *r);

/* Page index in the RAM mapping of (slot, offset) as KVM reports them, or
 * UINT64_MAX if it names no page of RAM. */
uint64_t dirty_ring_page(const struct guest_mem *mem, uint32_t slot, uint64_t offset);

/* Takes every DIRTY entry from r's fetch index on (at most one lap), sets
 * its page's bit in bits (guest_mem_pages(mem) bits; NULL: discards) and
 * marks it RESET. The caller holds r->lock. Returns the entries taken. */
uint32_t dirty_ring_harvest(struct dirty_ring *r, const struct guest_mem *mem,
			    _Atomic uint64_t *bits);

/* KVM_RESET_DIRTY_RINGS: KVM frees every entry marked RESET, in all of the
 * VM's rings, and re-protects their pages. Entries reset, or -errno. */
int dirty_ring_reset(int vm_fd);

/* What a vCPU thread does on KVM_EXIT_DIRTY_RING_FULL: under r->lock,
 * harvests r into bits and resets. Returns the entries harvested, and in
 * *reset what KVM reset (any ring's); -errno if the reset failed. */
int dirty_ring_collect(struct dirty_ring *r, int vm_fd, const struct guest_mem *mem,
		       _Atomic uint64_t *bits, int *reset);

/* Take and release every ring's lock, in vCPU order (a vCPU thread only
 * ever holds its own, so there is no deadlock). */
void dirty_rings_lock(struct dirty_rings *rs);
void dirty_rings_unlock(struct dirty_rings *rs);

#endif
