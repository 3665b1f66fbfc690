/* Dirty page tracking for live migration.
 *
 * One whole-RAM view: page n is the page at byte offset n * 4096 of the
 * guest RAM mapping (struct guest_mem), so a region's pages start at
 * region->offset >> 12 whatever its guest physical address. dirty_sync()
 * ORs into a caller's bitmap of guest_mem_pages() bits what KVM logged
 * (slot i = mem->regions[i], as vm.c registers them) plus the VMM-side
 * bitmap of vmm/mem.h (the VMM's own writes, which KVM never sees, and
 * what vCPU threads harvested from full dirty rings), whose words are taken
 * atomically (read and cleared).
 *
 * The mode is a small strategy table (as in the KVM selftests'
 * dirty_log_test.c):
 * - "clear-log": KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 with
 *   KVM_DIRTY_LOG_INITIALLY_SET. KVM_GET_DIRTY_LOG only reads; a page stays
 *   dirty (and writable) until dirty_clear() re-protects it. The first sync
 *   after dirty_start() reports every page dirty (nothing was
 *   write-protected yet, which is what makes start cheap on big guests).
 * - "get-log": the plain mode, for kernels without PROTECT2:
 *   KVM_GET_DIRTY_LOG reads, clears and re-protects in one go, so
 *   dirty_clear() does nothing. Turning logging on write-protects every
 *   page, so KVM's first log holds only the writes since; the first sync
 *   adds every page itself.
 * - "dirty-ring": the only mode of a VM started with `vmm run --dirty-ring`
 *   (KVM has no dirty bitmaps then: KVM_GET_DIRTY_LOG and
 *   KVM_CLEAR_DIRTY_LOG fail). Start and stop set the slots' flag as
 *   get-log does. A sync harvests every vCPU's ring (vmm/dirty_ring.h),
 *   then KVM_RESET_DIRTY_RINGS re-protects the harvested pages, then it
 *   takes the VMM-side bitmap, all under every ring's lock (a vCPU thread
 *   harvests its own ring into that bitmap when the ring is full). Like
 *   get-log, dirty_clear() does nothing: the reset at sync re-protected.
 * In every mode the first sync after dirty_start() reports every page: the
 * bulk pass of a migration relies on it.
 *
 * The pre-copy loop must go sync, then clear the pages to send, then read
 * and send them. Clearing before reading is what makes a write that lands
 * in between safe: it either is in the copy or dirties the page again.
 * The migration clears the whole send set right after each sync with
 * dirty_clear_mask() (one ioctl per slot in clear-log mode, nothing in the
 * others; see migrate/sender.h for why free page hints need that);
 * dirty_clear() clears one range. Both clear exactly the pages asked for:
 * KVM wants 64-page-aligned ranges, and the request is widened to them but
 * the mask handed to KVM_CLEAR_DIRTY_LOG has only the asked-for pages set,
 * so a page the caller did not send is never cleared.
 *
 * Everything returns 0 or -errno, and on failure writes one line naming the
 * first failing step into err. Not thread-safe: one migration thread. */
#ifndef MIGRATE_DIRTY_H
#define MIGRATE_DIRTY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "migrate/bitmap.h"
#include "vmm/dirty_ring.h"
#include "vmm/mem.h"

struct dirty_log;

struct dirty_ops {
	const char *name;
	int (*start)(struct dirty_log *d, char *err, size_t errlen);
	int (*sync)(struct dirty_log *d, struct bitmap *out, char *err, size_t errlen);
	int (*clear)(struct dirty_log *d, uint64_t first_page, uint64_t npages, char *err,
		     size_t errlen);
	int (*stop)(struct dirty_log *d, char *err, size_t errlen);
};

enum dirty_mode {
	DIRTY_MODE_AUTO,       /* dirty-ring on a VM with rings; else clear-log if KVM
				* supports it, else get-log */
	DIRTY_MODE_CLEAR_LOG,  /* clear-log or an error */
	DIRTY_MODE_GET_LOG,
	DIRTY_MODE_DIRTY_RING, /* only on a VM with rings, which has no other mode */
};

struct dirty_log {
	const struct dirty_ops *ops;
	int vm_fd;
	struct guest_mem *mem;
	struct dirty_rings *rings; /* the VM's dirty rings in dirty-ring mode, else NULL */
	uint64_t *slot_bits;  /* KVM_GET_DIRTY_LOG buffer, sized for the largest slot */
	uint64_t *clear_bits; /* KVM_CLEAR_DIRTY_LOG mask buffer, same size */
	bool started;
	bool report_all;      /* the next sync is the first: every page */
};

/* Picks the mode. rings: the VM's dirty rings (vm->rings), or NULL (or
 * none) for a VM without; with rings the mode is dirty-ring, and asking
 * for another is an error (dirty_mode_check). For clear-log it checks
 * KVM_CHECK_EXTENSION on the VM fd and enables the capability
 * (KVM_ENABLE_CAP), which must happen before any slot gets
 * KVM_MEM_LOG_DIRTY_PAGES and cannot be undone. mem should have its
 * VMM-side bitmap (guest_mem_dirty_alloc). */
int dirty_init(struct dirty_log *d, int vm_fd, struct guest_mem *mem, struct dirty_rings *rings,
	       enum dirty_mode mode, char *err, size_t errlen);
void dirty_destroy(struct dirty_log *d);

/* "auto", "clear-log", "get-log" or "dirty-ring" (`vmm migrate
 * --dirty-log`, for tests and for hosts where one mode misbehaves). 0 or
 * -EINVAL. */
int dirty_mode_parse(const char *s, enum dirty_mode *out);
/* Whether mode can work on a VM with (ring) or without dirty rings: 0, or
 * -EINVAL with the reason in err. For refusing a request before it starts. */
int dirty_mode_check(enum dirty_mode mode, bool ring, char *err, size_t errlen);

/* Sets KVM_MEM_LOG_DIRTY_PAGES on every slot. */
int dirty_start(struct dirty_log *d, char *err, size_t errlen);
/* ORs the pages dirtied since the last clear into out (guest_mem_pages
 * bits); the first sync after dirty_start() sets every bit. */
int dirty_sync(struct dirty_log *d, struct bitmap *out, char *err, size_t errlen);
/* Re-protects pages [first_page, first_page + npages) of the mapping before
 * they are sent; the range may span slots but not leave RAM. */
int dirty_clear(struct dirty_log *d, uint64_t first_page, uint64_t npages, char *err,
		size_t errlen);
/* Re-protects the pages of [first_page, first_page + npages) whose bit is
 * set in mask (bit i, in word i / 64, is page first_page + i): one
 * KVM_CLEAR_DIRTY_LOG per slot the range touches, however scattered the
 * pages. first_page must be a multiple of 64 and npages too, unless the
 * range ends RAM; mask has bitmap_words(npages) words. Uses nothing of d
 * but its slot layout, so several threads may call it at once (each with
 * its own mask). */
int dirty_clear_mask(struct dirty_log *d, uint64_t first_page, uint64_t npages,
		     const uint64_t *mask, char *err, size_t errlen);
/* Removes KVM_MEM_LOG_DIRTY_PAGES from every slot. */
int dirty_stop(struct dirty_log *d, char *err, size_t errlen);

static inline const char *dirty_mode_name(const struct dirty_log *d)
{
	return d->ops->name;
}

/* The strategies, for tests and for dirty_init. */
extern const struct dirty_ops dirty_ops_clear_log;
extern const struct dirty_ops dirty_ops_get_log;
extern const struct dirty_ops dirty_ops_dirty_ring;

#endif
