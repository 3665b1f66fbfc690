/* virtio-balloon (device id 5): inflate/deflate, statistics, deflate on
 * OOM, free page hinting, free page reporting, page poison, and our own
 * drop-cache extension. See docs/balloon.md for the queue numbering, the
 * hint state machine and the extension's feature bit and config field. */
#ifndef VIRTIO_BALLOON_H
#define VIRTIO_BALLOON_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "virtio/device.h"

struct balloon_options {
	bool enabled;
	unsigned stats_interval_s; /* 0: no statistics queue */
	bool deflate_on_oom;
	bool free_page_hint;
	bool free_page_reporting;
};

/* Parses "stats=SECONDS,deflate-on-oom,free-page-hint,free-page-reporting"
 * (any subset, any order; "" for none). 0 or -EINVAL with a reason in err. */
int balloon_parse_options(const char *s, struct balloon_options *opts, char *err, size_t errlen);

#define BALLOON_NSTATS 16

/* Not in the virtio spec: this project's extension, which a guest kernel
 * with guest-kernel/patches accepts. With it, a hint round can ask the guest
 * to drop its clean caches first. Bit 23 is the last device-specific bit
 * below the transport's; upstream allocates balloon bits from 0 up. */
#define BALLOON_F_DROP_CACHE 23
/* Also ours: a hint round reports every run of free pages, down to single
 * pages, as buffers of any length, instead of allocated 4 MiB blocks. The
 * device side needs nothing new: a hinted buffer is a hinted buffer. */
#define BALLOON_F_FREE_RANGES 22
/* The drop_cache config field (le32 at offset 16): /proc/sys/vm/drop_caches bits. */
#define BALLOON_DROP_PAGECACHE 1u
#define BALLOON_DROP_SLAB 2u

enum balloon_hint_state {
	HINT_IDLE,      /* cmd id is DONE (or never set): the guest owns its pages */
	HINT_REQUESTED, /* new cmd id written, waiting for the guest to start */
	HINT_RUNNING,   /* the guest is sending free blocks */
	HINT_STOPPED,   /* the guest sent STOP, or the host wrote STOP */
};

/* Called on the device thread for every hinted free block during a round. */
typedef void (*balloon_hint_fn)(void *opaque, uint64_t gpa, uint64_t len);

struct balloon {
	struct virtio_dev dev;
	struct balloon_options opts;
	/* Config space, host view. */
	uint32_t num_pages;
	uint32_t actual;
	uint32_t hint_cmd_id;
	uint32_t poison_val;
	uint32_t drop_cache; /* set only during a hint round that asked for it */
	/* Queue roles: negotiated features decide the numbering; -1 = absent. */
	int q_inflate, q_deflate, q_stats, q_hint, q_report;
	/* Statistics. */
	bool stats_held;
	uint16_t stats_head;
	unsigned nstats;
	struct { uint16_t tag; uint64_t val; } stats[BALLOON_NSTATS];
	uint64_t stats_updated_ns;
	/* Free page hinting. */
	enum balloon_hint_state hint_state;
	uint32_t hint_next_id;
	uint64_t hint_ranges, hint_bytes, hint_started_ns, hint_stopped_ns;
	pthread_cond_t hint_cond;
	int hint_fd; /* eventfd: written whenever a round ends (STOPPED) */
	balloon_hint_fn hint_fn;
	void *hint_opaque;
	/* Pages discarded with MADV_DONTNEED (inflate, reporting), one bit each. */
	uint64_t *discarded;
	uint64_t inflated_pages, deflated_pages, reported_ranges, reported_bytes;
	uint64_t bad_pfns;
};

/* The device without its virtio-mmio window and thread (see
 * virtio_dev_init): what balloon_create attaches. 0 or -errno. */
int balloon_init(struct vm *vm, struct balloon *b, const struct balloon_options *opts, char *err,
		 size_t errlen);
/* Creates the device as virtio-mmio device number index. 0 or -errno. */
int balloon_create(struct vm *vm, struct balloon *b, const struct balloon_options *opts,
		   unsigned index, char *err, size_t errlen);
void balloon_destroy(struct balloon *b);

/* Control-side API; each takes the device lock. */
/* Sets the balloon's size (bytes taken from the guest). 0 or -EINVAL. */
int balloon_set_size(struct balloon *b, uint64_t bytes);
json_t *balloon_stats_json(struct balloon *b);
/* Why a hint round cannot drop the guest's caches, or NULL when it can:
 * the driver must have accepted free page hinting and BALLOON_F_DROP_CACHE. */
const char *balloon_drop_cache_unavailable(struct balloon *b);
/* Starts a hint round. With drop_cache, where available, the guest drops its
 * clean page cache and reclaimable slab before it hints, so that memory is
 * hinted too; elsewhere the flag is ignored. 0, -ENOTSUP (hinting not
 * negotiated) or -EBUSY. */
int balloon_hint_start(struct balloon *b, bool drop_cache, balloon_hint_fn fn, void *opaque);
/* Waits until the guest finished the round (STOPPED) or timeout_ms passed.
 * 0 or -ETIMEDOUT. */
int balloon_hint_wait(struct balloon *b, int timeout_ms);
/* An eventfd that becomes readable when a round ends, for an event loop
 * that waits for it without blocking (balloon_hint_running reads it). */
int balloon_hint_fd(struct balloon *b);
/* Whether the round is still going (requested or running); drains hint_fd. */
bool balloon_hint_running(struct balloon *b);
/* Ends the round: writes DONE (the guest takes its pages back) and clears
 * the drop_cache request. */
void balloon_hint_done(struct balloon *b);
/* Ends the round without giving the hinted blocks back (cmd id STOP): the
 * guest keeps them until balloon_hint_done(), and a later round reports
 * only blocks freed since. No hint callback runs after this returns. */
void balloon_hint_stop(struct balloon *b);
/* Round figures, for the hint command's reply. */
json_t *balloon_hint_json(struct balloon *b);

#endif
