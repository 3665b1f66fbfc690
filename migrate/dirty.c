/* Dirty page tracking: KVM's per-slot dirty logs or its per-vCPU dirty
 * rings, and the VMM-side bitmap, behind a strategy table; see dirty.h. */
#include "dirty.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "vmm/util.h"

#define MANUAL_FLAGS (KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET)

static uint64_t region_pages(const struct mem_region *r)
{
	return r->size >> GUEST_PAGE_SHIFT;
}

static uint64_t region_first_page(const struct mem_region *r)
{
	return r->offset >> GUEST_PAGE_SHIFT;
}

/* Re-registers every slot with flags (KVM_MR_FLAGS_ONLY in the kernel). */
static int set_slot_flags(struct dirty_log *d, uint32_t flags, char *err, size_t errlen)
{
	for (unsigned i = 0; i < d->mem->nregions; i++) {
		const struct mem_region *r = &d->mem->regions[i];
		struct kvm_userspace_memory_region region = {
			.slot = i,
			.flags = flags,
			.guest_phys_addr = r->gpa,
			.memory_size = r->size,
			.userspace_addr = (uintptr_t)r->hva,
		};

		if (ioctl(d->vm_fd, KVM_SET_USER_MEMORY_REGION, &region) < 0)
			return errf(-errno, err, errlen,
				    "KVM_SET_USER_MEMORY_REGION (slot %u, %s dirty logging): %s", i,
				    flags ? "enabling" : "disabling", strerror(errno));
	}
	return 0;
}

static int log_start(struct dirty_log *d, char *err, size_t errlen)
{
	int rc = set_slot_flags(d, KVM_MEM_LOG_DIRTY_PAGES, err, errlen);

	if (!rc)
		d->started = true;
	return rc;
}

static int log_stop(struct dirty_log *d, char *err, size_t errlen)
{
	int rc = set_slot_flags(d, 0, err, errlen);

	if (!rc)
		d->started = false;
	return rc;
}

/* KVM_GET_DIRTY_LOG of every slot (which in get-log mode also clears and
 * re-protects), then the VMM-side bitmap. */
static int log_sync(struct dirty_log *d, struct bitmap *out, char *err, size_t errlen)
{
	if (out->nbits != guest_mem_pages(d->mem))
		return errf(-EINVAL, err, errlen, "dirty bitmap has %llu bits, RAM %llu pages",
			    (unsigned long long)out->nbits,
			    (unsigned long long)guest_mem_pages(d->mem));
	for (unsigned i = 0; i < d->mem->nregions; i++) {
		const struct mem_region *r = &d->mem->regions[i];
		struct kvm_dirty_log log = { .slot = i, .dirty_bitmap = d->slot_bits };

		if (ioctl(d->vm_fd, KVM_GET_DIRTY_LOG, &log) < 0)
			return errf(-errno, err, errlen, "KVM_GET_DIRTY_LOG (slot %u): %s", i,
				    strerror(errno));
		if (bitmap_or_words_at(out, region_first_page(r), d->slot_bits, region_pages(r)))
			return errf(-EINVAL, err, errlen, "slot %u lies outside RAM", i);
	}
	if (d->mem->dirty)
		bitmap_take_atomic(out, d->mem->dirty);
	return 0;
}

static int check_range(struct dirty_log *d, uint64_t first, uint64_t n, char *err,
		       size_t errlen)
{
	uint64_t total = guest_mem_pages(d->mem);

	if (first > total || n > total - first)
		return errf(-EINVAL, err, errlen, "pages %llu+%llu lie outside RAM (%llu pages)",
			    (unsigned long long)first, (unsigned long long)n,
			    (unsigned long long)total);
	return 0;
}

/* KVM_CLEAR_DIRTY_LOG wants first_page and num_pages to be multiples of 64
 * (num_pages may instead end the slot). The range is widened to that, but
 * the mask has only [s0, s1) set: KVM clears just the bits set in it. */
static int clear_in_slot(struct dirty_log *d, unsigned slot, uint64_t s0, uint64_t s1,
			 char *err, size_t errlen)
{
	uint64_t slot_pages = region_pages(&d->mem->regions[slot]);
	uint64_t a0 = s0 & ~63ULL, a1 = (s1 + 63) & ~63ULL;
	struct bitmap mask;
	struct kvm_clear_dirty_log log;

	if (a1 > slot_pages)
		a1 = slot_pages;
	mask = (struct bitmap){ .words = d->clear_bits, .nbits = a1 - a0 };
	bitmap_clear_all(&mask);
	bitmap_set_range(&mask, s0 - a0, s1 - s0);
	log = (struct kvm_clear_dirty_log){
		.slot = slot, .num_pages = (uint32_t)(a1 - a0), .first_page = a0,
		.dirty_bitmap = d->clear_bits,
	};
	if (a1 - a0 > UINT32_MAX)
		return errf(-E2BIG, err, errlen, "clearing %llu pages at once",
			    (unsigned long long)(a1 - a0));
	if (ioctl(d->vm_fd, KVM_CLEAR_DIRTY_LOG, &log) < 0)
		return errf(-errno, err, errlen, "KVM_CLEAR_DIRTY_LOG (slot %u, pages %llu+%llu): %s",
			    slot, (unsigned long long)a0, (unsigned long long)(a1 - a0),
			    strerror(errno));
	return 0;
}

static int clearlog_clear(struct dirty_log *d, uint64_t first, uint64_t n, char *err,
			  size_t errlen)
{
	int rc = check_range(d, first, n, err, errlen);

	for (unsigned i = 0; !rc && n && i < d->mem->nregions; i++) {
		const struct mem_region *r = &d->mem->regions[i];
		uint64_t rfirst = region_first_page(r), rend = rfirst + region_pages(r);
		uint64_t lo = first > rfirst ? first : rfirst;
		uint64_t hi = first + n < rend ? first + n : rend;

		if (lo < hi)
			rc = clear_in_slot(d, i, lo - rfirst, hi - rfirst, err, errlen);
	}
	return rc;
}

static int getlog_clear(struct dirty_log *d, uint64_t first, uint64_t n, char *err,
			size_t errlen)
{
	/* KVM_GET_DIRTY_LOG already cleared and re-protected at sync. */
	return check_range(d, first, n, err, errlen);
}

/* Dirty-ring mode: every vCPU's ring, then the reset, then the VMM-side
 * bitmap, all under every ring's lock. The reset comes before the pass
 * that reads the pages (KVM's API asks for that: a write after it logs the
 * page again, one before it is in what the pass reads). The VMM-side
 * bitmap comes last and under the locks: it holds what vCPU threads
 * harvested on a full ring, and each of them resets before it lets go of
 * its ring's lock, so no page is taken here before it was re-protected
 * (see vmm/vcpu.c, handle_dirty_ring_full). A vCPU that runs may still
 * hold pages in its processor's log (Intel PML) that KVM pushes only at
 * its next exit: they reach a later sync, and the last one, with every
 * vCPU paused, has them all. */
static int ring_sync(struct dirty_log *d, struct bitmap *out, char *err, size_t errlen)
{
	int rc;

	if (out->nbits != guest_mem_pages(d->mem))
		return errf(-EINVAL, err, errlen, "dirty bitmap has %llu bits, RAM %llu pages",
			    (unsigned long long)out->nbits,
			    (unsigned long long)guest_mem_pages(d->mem));
	dirty_rings_lock(d->rings);
	for (unsigned i = 0; i < d->rings->n; i++)
		dirty_ring_harvest(&d->rings->ring[i], d->mem, (_Atomic uint64_t *)out->words);
	rc = dirty_ring_reset(d->vm_fd);
	if (rc >= 0 && d->mem->dirty)
		bitmap_take_atomic(out, d->mem->dirty);
	dirty_rings_unlock(d->rings);
	if (rc < 0)
		return errf(rc, err, errlen, "KVM_RESET_DIRTY_RINGS: %s", strerror(-rc));
	return 0;
}

/* What the rings still hold is of no use once logging is off (the next
 * start reports every page anyway): they are emptied, so that a later
 * migration starts with rings that have room. */
static int ring_stop(struct dirty_log *d, char *err, size_t errlen)
{
	int rc = log_stop(d, err, errlen), reset;

	dirty_rings_lock(d->rings);
	for (unsigned i = 0; i < d->rings->n; i++)
		dirty_ring_harvest(&d->rings->ring[i], d->mem, NULL);
	reset = dirty_ring_reset(d->vm_fd);
	dirty_rings_unlock(d->rings);
	if (!rc && reset < 0)
		rc = errf(reset, err, errlen, "KVM_RESET_DIRTY_RINGS: %s", strerror(-reset));
	return rc;
}

const struct dirty_ops dirty_ops_clear_log = {
	.name = "clear-log",
	.start = log_start,
	.sync = log_sync,
	.clear = clearlog_clear,
	.stop = log_stop,
};

const struct dirty_ops dirty_ops_get_log = {
	.name = "get-log",
	.start = log_start,
	.sync = log_sync,
	.clear = getlog_clear,
	.stop = log_stop,
};

/* clear: the reset at sync re-protected already, as in get-log. */
const struct dirty_ops dirty_ops_dirty_ring = {
	.name = "dirty-ring",
	.start = log_start,
	.sync = ring_sync,
	.clear = getlog_clear,
	.stop = ring_stop,
};

/* Enables PROTECT2 with INITIALLY_SET; 0, -EOPNOTSUPP or -errno. */
static int enable_manual_protect(int vm_fd, char *err, size_t errlen)
{
	struct kvm_enable_cap cap = {
		.cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
		.args[0] = MANUAL_FLAGS,
	};
	int r = ioctl(vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);

	if (r < 0 || ((unsigned)r & MANUAL_FLAGS) != MANUAL_FLAGS)
		return errf(-EOPNOTSUPP, err, errlen,
			    "KVM lacks KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 with INITIALLY_SET "
			    "(KVM_CHECK_EXTENSION says %d)", r);
	if (ioctl(vm_fd, KVM_ENABLE_CAP, &cap) < 0)
		return errf(-errno, err, errlen, "KVM_ENABLE_CAP(MANUAL_DIRTY_LOG_PROTECT2): %s",
			    strerror(errno));
	return 0;
}

int dirty_mode_check(enum dirty_mode mode, bool ring, char *err, size_t errlen)
{
	if (ring && (mode == DIRTY_MODE_CLEAR_LOG || mode == DIRTY_MODE_GET_LOG))
		return errf(-EINVAL, err, errlen,
			    "--dirty-log %s: the VM runs with a dirty ring (vmm run --dirty-ring), "
			    "and KVM keeps no dirty bitmaps then: use dirty-ring or auto",
			    mode == DIRTY_MODE_CLEAR_LOG ? "clear-log" : "get-log");
	if (!ring && mode == DIRTY_MODE_DIRTY_RING)
		return errf(-EINVAL, err, errlen,
			    "--dirty-log dirty-ring: the VM runs without a dirty ring "
			    "(KVM takes one only at start-up: vmm run --dirty-ring N)");
	return 0;
}

int dirty_init(struct dirty_log *d, int vm_fd, struct guest_mem *mem, struct dirty_rings *rings,
	       enum dirty_mode mode, char *err, size_t errlen)
{
	bool ring = rings && rings->n;
	uint64_t words = 0;
	int rc;

	memset(d, 0, sizeof(*d));
	d->vm_fd = vm_fd;
	d->mem = mem;
	rc = dirty_mode_check(mode, ring, err, errlen);
	if (rc)
		return rc;
	for (unsigned i = 0; i < mem->nregions; i++) {
		if (mem->regions[i].size % GUEST_PAGE_SIZE || mem->regions[i].offset % GUEST_PAGE_SIZE)
			return errf(-EINVAL, err, errlen, "slot %u is not page-aligned", i);
		if (bitmap_words(region_pages(&mem->regions[i])) > words)
			words = bitmap_words(region_pages(&mem->regions[i]));
	}
	/* A VM with a ring has no other mode: KVM_GET_DIRTY_LOG and
	 * KVM_CLEAR_DIRTY_LOG fail (ENXIO) once it is on. */
	if (ring) {
		d->rings = rings;
		d->ops = &dirty_ops_dirty_ring;
		return 0;
	}
	d->slot_bits = calloc(words ? words : 1, sizeof(uint64_t));
	d->clear_bits = calloc(words ? words : 1, sizeof(uint64_t));
	if (!d->slot_bits || !d->clear_bits) {
		dirty_destroy(d);
		return errf(-ENOMEM, err, errlen, "out of memory for the dirty log");
	}
	d->ops = &dirty_ops_get_log;
	if (mode == DIRTY_MODE_GET_LOG)
		return 0;
	rc = enable_manual_protect(vm_fd, err, errlen);
	if (rc == -EOPNOTSUPP && mode == DIRTY_MODE_AUTO) {
		if (err && errlen)
			err[0] = '\0';
		return 0;
	}
	if (rc) {
		dirty_destroy(d);
		return rc;
	}
	d->ops = &dirty_ops_clear_log;
	return 0;
}

void dirty_destroy(struct dirty_log *d)
{
	free(d->slot_bits);
	free(d->clear_bits);
	d->slot_bits = d->clear_bits = NULL;
}

int dirty_mode_parse(const char *s, enum dirty_mode *out)
{
	if (!strcmp(s, "auto"))
		*out = DIRTY_MODE_AUTO;
	else if (!strcmp(s, "clear-log"))
		*out = DIRTY_MODE_CLEAR_LOG;
	else if (!strcmp(s, "get-log"))
		*out = DIRTY_MODE_GET_LOG;
	else if (!strcmp(s, "dirty-ring"))
		*out = DIRTY_MODE_DIRTY_RING;
	else
		return -EINVAL;
	return 0;
}

int dirty_start(struct dirty_log *d, char *err, size_t errlen)
{
	int rc;

	if (d->started)
		return errf(-EALREADY, err, errlen, "dirty logging is already on");
	rc = d->ops->start(d, err, errlen);
	if (!rc)
		d->report_all = true;
	return rc;
}

int dirty_sync(struct dirty_log *d, struct bitmap *out, char *err, size_t errlen)
{
	int rc;

	if (!d->started)
		return errf(-EINVAL, err, errlen, "dirty logging is off");
	/* The strategy's sync runs anyway: in get-log mode it is what clears
	 * and re-protects. */
	rc = d->ops->sync(d, out, err, errlen);
	if (!rc && d->report_all) {
		bitmap_set_all(out);
		d->report_all = false;
	}
	return rc;
}

int dirty_clear(struct dirty_log *d, uint64_t first_page, uint64_t npages, char *err,
		size_t errlen)
{
	if (!d->started)
		return errf(-EINVAL, err, errlen, "dirty logging is off");
	return d->ops->clear(d, first_page, npages, err, errlen);
}

/* Slot boundaries are multiples of 64 pages (RAM comes in whole MiB), so
 * a 64-aligned piece of the mapping is 64-aligned inside its slot too. */
int dirty_clear_mask(struct dirty_log *d, uint64_t first, uint64_t n, const uint64_t *mask,
		     char *err, size_t errlen)
{
	int rc;

	if (!d->started)
		return errf(-EINVAL, err, errlen, "dirty logging is off");
	rc = check_range(d, first, n, err, errlen);
	if (!rc && (first % 64 || (n % 64 && first + n != guest_mem_pages(d->mem))))
		rc = errf(-EINVAL, err, errlen, "pages %llu+%llu are not 64-page aligned",
			  (unsigned long long)first, (unsigned long long)n);
	/* get-log: KVM_GET_DIRTY_LOG cleared and re-protected at sync;
	 * dirty-ring: KVM_RESET_DIRTY_RINGS did, and KVM_CLEAR_DIRTY_LOG
	 * would fail (ENXIO) with a ring. */
	if (rc || d->ops != &dirty_ops_clear_log)
		return rc;
	for (unsigned i = 0; i < d->mem->nregions && n; i++) {
		const struct mem_region *r = &d->mem->regions[i];
		uint64_t rfirst = region_first_page(r), rend = rfirst + region_pages(r);
		uint64_t lo = first > rfirst ? first : rfirst;
		uint64_t hi = first + n < rend ? first + n : rend;
		struct kvm_clear_dirty_log log;

		if (lo >= hi)
			continue;
		if (rfirst % 64)
			return errf(-EINVAL, err, errlen, "slot %u is not 64-page aligned", i);
		log = (struct kvm_clear_dirty_log){
			.slot = i, .first_page = lo - rfirst, .num_pages = (uint32_t)(hi - lo),
			.dirty_bitmap = (void *)(mask + (lo - first) / 64),
		};
		if (hi - lo > UINT32_MAX)
			return errf(-E2BIG, err, errlen, "clearing %llu pages at once",
				    (unsigned long long)(hi - lo));
		if (ioctl(d->vm_fd, KVM_CLEAR_DIRTY_LOG, &log) < 0)
			return errf(-errno, err, errlen,
				    "KVM_CLEAR_DIRTY_LOG (slot %u, pages %llu+%llu): %s", i,
				    (unsigned long long)(lo - rfirst), (unsigned long long)(hi - lo),
				    strerror(errno));
	}
	return 0;
}

int dirty_stop(struct dirty_log *d, char *err, size_t errlen)
{
	if (!d->started)
		return 0;
	return d->ops->stop(d, err, errlen);
}
