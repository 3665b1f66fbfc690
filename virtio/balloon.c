/* virtio-balloon device; see balloon.h and docs/balloon.md. */
#include "virtio/balloon.h"

#include <endian.h>
#include <errno.h>
#include <linux/virtio_balloon.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "migrate/state.h"
#include "virtio/mmio.h"
#include "vmm/util.h"
#include "vmm/vm.h"

#define BALLOON_QUEUES 5
#define BALLOON_QUEUE_MAX 128 /* the reporting queue needs at least 32 */
#define BALLOON_MAX_BUFS 64
#define BALLOON_CONFIG_SIZE 20 /* the spec's 16 bytes, then drop_cache */
#define STAT_ENTRY_SIZE 10 /* le16 tag, le64 value, packed */

static const char *const stat_names[] = VIRTIO_BALLOON_S_NAMES;

int balloon_parse_options(const char *s, struct balloon_options *opts, char *err, size_t errlen)
{
	char *copy = strdup(s ? s : ""), *save = NULL, *tok;
	int rc = 0;

	memset(opts, 0, sizeof(*opts));
	opts->enabled = true;
	if (!copy)
		return -ENOMEM;
	for (tok = strtok_r(copy, ",", &save); tok && !rc; tok = strtok_r(NULL, ",", &save)) {
		uint64_t v;

		if (!strncmp(tok, "stats=", 6)) {
			if (parse_uint(tok + 6, 0, 3600, &v)) {
				snprintf(err, errlen, "--balloon: stats=%s is not 0 to 3600 seconds", tok + 6);
				rc = -EINVAL;
			}
			opts->stats_interval_s = (unsigned)v;
		} else if (!strcmp(tok, "deflate-on-oom")) {
			opts->deflate_on_oom = true;
		} else if (!strcmp(tok, "free-page-hint")) {
			opts->free_page_hint = true;
		} else if (!strcmp(tok, "free-page-reporting")) {
			opts->free_page_reporting = true;
		} else {
			snprintf(err, errlen, "--balloon: unknown option '%s'", tok);
			rc = -EINVAL;
		}
	}
	free(copy);
	return rc;
}

static struct balloon *to_balloon(struct virtio_dev *dev)
{
	return (struct balloon *)dev; /* dev is the first member */
}

static uint64_t balloon_features(struct virtio_dev *dev)
{
	struct balloon *b = to_balloon(dev);
	uint64_t f = 1ULL << VIRTIO_BALLOON_F_PAGE_POISON;

	if (b->opts.stats_interval_s)
		f |= 1ULL << VIRTIO_BALLOON_F_STATS_VQ;
	if (b->opts.deflate_on_oom)
		f |= 1ULL << VIRTIO_BALLOON_F_DEFLATE_ON_OOM;
	/* Offered with hinting: drop-cache only acts when a round asks for it;
	 * free ranges change what a round sends, not what it means. */
	if (b->opts.free_page_hint)
		f |= 1ULL << VIRTIO_BALLOON_F_FREE_PAGE_HINT | 1ULL << BALLOON_F_DROP_CACHE |
		     1ULL << BALLOON_F_FREE_RANGES;
	if (b->opts.free_page_reporting)
		f |= 1ULL << VIRTIO_BALLOON_F_REPORTING;
	return f;
}

static void balloon_config_read(struct virtio_dev *dev, uint32_t offset, uint8_t *data, uint32_t len)
{
	struct balloon *b = to_balloon(dev);
	uint32_t cfg[5] = { htole32(b->num_pages), htole32(b->actual), htole32(b->hint_cmd_id),
			    htole32(b->poison_val), htole32(b->drop_cache) };

	memcpy(data, (uint8_t *)cfg + offset, len);
}

static void balloon_config_write(struct virtio_dev *dev, uint32_t offset, const uint8_t *data,
				 uint32_t len)
{
	struct balloon *b = to_balloon(dev);
	uint32_t cfg[5] = { htole32(b->num_pages), htole32(b->actual), htole32(b->hint_cmd_id),
			    htole32(b->poison_val), htole32(b->drop_cache) };

	memcpy((uint8_t *)cfg + offset, data, len);
	/* The driver owns actual and poison_val; num_pages, the cmd id and
	 * drop_cache are ours. */
	b->actual = le32toh(cfg[1]);
	b->poison_val = le32toh(cfg[3]);
}

static int balloon_activate(struct virtio_dev *dev)
{
	struct balloon *b = to_balloon(dev);
	int q = 2;

	/* Linux numbers only the queues it uses: absent ones leave no hole. */
	b->q_inflate = 0;
	b->q_deflate = 1;
	b->q_stats = virtio_has_feature(dev, VIRTIO_BALLOON_F_STATS_VQ) ? q++ : -1;
	b->q_hint = virtio_has_feature(dev, VIRTIO_BALLOON_F_FREE_PAGE_HINT) ? q++ : -1;
	b->q_report = virtio_has_feature(dev, VIRTIO_BALLOON_F_REPORTING) ? q++ : -1;
	dev->tick_ms = b->q_stats >= 0 ? (int)b->opts.stats_interval_s * 1000 : 0;
	virtio_wake(dev);
	return 0;
}

/* While a round runs the device polls the hint queue, kicks off: the guest
 * hands over a block per 4 MiB in a loop that does not yield its vCPU, and
 * an exit per block made a round over 8 GiB stall a one-vCPU guest for
 * seconds (docs/BENCHMARKS.md, "Live migration between two hosts"). */
static void hint_poll(struct balloon *b, bool on)
{
	if (b->q_hint >= 0)
		virtio_poll(&b->dev, (unsigned)b->q_hint, on);
}

/* A round is over (STOPPED): wakes balloon_hint_wait and hint_fd's watcher.
 * dev->lock held. */
static void hint_ended(struct balloon *b)
{
	uint64_t one = 1;

	hint_poll(b, false);
	pthread_cond_broadcast(&b->hint_cond);
	(void)!write(b->hint_fd, &one, sizeof(one));
}

static void balloon_reset(struct virtio_dev *dev)
{
	struct balloon *b = to_balloon(dev);

	b->q_inflate = b->q_deflate = b->q_stats = b->q_hint = b->q_report = -1;
	b->stats_held = false;
	b->actual = 0;
	b->poison_val = 0;
	b->drop_cache = 0;
	dev->tick_ms = 0;
	if (b->hint_state != HINT_IDLE) {
		b->hint_state = HINT_STOPPED;
		hint_ended(b);
	}
}

/* [gpa, gpa+len) must lie in RAM (the callers checked it with gpa_to_hva). */
static void mark_discarded(struct balloon *b, uint64_t gpa, uint64_t len, bool on)
{
	uint64_t first = guest_mem_offset(&b->dev.vm->mem, gpa) >> GUEST_PAGE_SHIFT;

	for (uint64_t p = first; p < first + (len >> GUEST_PAGE_SHIFT); p++) {
		if (on)
			b->discarded[p / 64] |= 1ULL << (p % 64);
		else
			b->discarded[p / 64] &= ~(1ULL << (p % 64));
	}
}

/* Gives [gpa, gpa+len) back to the host; the guest will read zeros. */
static int discard(struct balloon *b, uint64_t gpa, uint64_t len)
{
	void *hva = gpa_to_hva(&b->dev.vm->mem, gpa, len);

	if (!hva || (gpa | len) & (GUEST_PAGE_SIZE - 1))
		return -EINVAL;
	if (madvise(hva, len, MADV_DONTNEED))
		return -errno;
	mark_discarded(b, gpa, len, true);
	return 0;
}

static void handle_pfns(struct balloon *b, const struct virtq_buf *buf, bool inflate)
{
	const uint8_t *p = buf->hva;

	for (uint32_t off = 0; p && off + 4 <= buf->len; off += 4) {
		uint32_t pfn;
		uint64_t gpa;

		memcpy(&pfn, p + off, 4);
		gpa = (uint64_t)le32toh(pfn) << VIRTIO_BALLOON_PFN_SHIFT;
		if (!gpa_to_hva(&b->dev.vm->mem, gpa, GUEST_PAGE_SIZE)) {
			b->bad_pfns++;
			continue;
		}
		if (inflate) {
			if (discard(b, gpa, GUEST_PAGE_SIZE) == 0)
				b->inflated_pages++;
		} else {
			mark_discarded(b, gpa, GUEST_PAGE_SIZE, false);
			b->deflated_pages++;
		}
	}
}

static void handle_stats(struct balloon *b, const struct virtq_buf *bufs,
			 const struct virtq_chain *chain)
{
	uint8_t raw[BALLOON_NSTATS * STAT_ENTRY_SIZE];
	uint32_t n = 0;

	for (unsigned i = 0; i < chain->nbufs && !bufs[i].device_writes; i++) {
		uint32_t take = bufs[i].len < sizeof(raw) - n ? bufs[i].len : (uint32_t)sizeof(raw) - n;

		if (bufs[i].hva)
			memcpy(raw + n, bufs[i].hva, take);
		n += take;
	}
	b->nstats = 0;
	for (uint32_t off = 0; off + STAT_ENTRY_SIZE <= n; off += STAT_ENTRY_SIZE) {
		uint16_t tag;
		uint64_t val;

		memcpy(&tag, raw + off, 2);
		memcpy(&val, raw + off + 2, 8);
		b->stats[b->nstats].tag = le16toh(tag);
		b->stats[b->nstats].val = le64toh(val);
		b->nstats++;
	}
	b->stats_updated_ns = now_ns();
	/* Hold the buffer: giving it back is how we ask for the next update. */
	b->stats_held = true;
	b->stats_head = chain->head;
}

static void handle_hint(struct balloon *b, const struct virtq_buf *bufs,
			const struct virtq_chain *chain)
{
	for (unsigned i = 0; i < chain->nbufs; i++) {
		const struct virtq_buf *buf = &bufs[i];
		uint32_t id;

		if (!buf->device_writes) {
			/* A command id: the guest starts (our id) or ends (STOP) a round. */
			if (buf->len < 4 || !buf->hva)
				continue;
			memcpy(&id, buf->hva, 4);
			id = le32toh(id);
			if (id == b->hint_cmd_id && b->hint_state == HINT_REQUESTED) {
				b->hint_state = HINT_RUNNING;
				hint_poll(b, true);
			} else if (id == VIRTIO_BALLOON_CMD_ID_STOP && b->hint_state == HINT_RUNNING) {
				b->hint_state = HINT_STOPPED;
				b->hint_stopped_ns = now_ns();
				hint_ended(b);
			}
			continue;
		}
		/* A free block; stale ones (no round running) are ignored. */
		if (b->hint_state != HINT_RUNNING || !buf->len)
			continue;
		b->hint_ranges++;
		b->hint_bytes += buf->len;
		if (b->hint_fn)
			b->hint_fn(b->hint_opaque, buf->gpa, buf->len);
	}
}

static void handle_report(struct balloon *b, const struct virtq_buf *bufs,
			  const struct virtq_chain *chain)
{
	bool poisoned = virtio_has_feature(&b->dev, VIRTIO_BALLOON_F_PAGE_POISON) && b->poison_val;

	for (unsigned i = 0; i < chain->nbufs; i++) {
		b->reported_ranges++;
		b->reported_bytes += bufs[i].len;
		/* Discarded pages read back as zeros, not as the guest's poison. */
		if (!poisoned)
			(void)discard(b, bufs[i].gpa, bufs[i].len);
	}
}

static void balloon_queue_notify(struct virtio_dev *dev, unsigned q)
{
	struct balloon *b = to_balloon(dev);
	struct virtq *vq = &dev->queues[q];
	struct virtq_buf bufs[BALLOON_MAX_BUFS];
	struct virtq_chain chain;
	const char *why;
	bool used = false;
	int rc;

	while ((rc = virtq_pop(vq, bufs, BALLOON_MAX_BUFS, &chain, &why)) == 1) {
		if ((int)q == b->q_stats) {
			if (b->stats_held) /* a second buffer: give the older one back */
				virtq_push(vq, b->stats_head, 0);
			handle_stats(b, bufs, &chain);
			continue;
		}
		for (unsigned i = 0; (int)q <= b->q_deflate && i < chain.nbufs; i++)
			handle_pfns(b, &bufs[i], (int)q == b->q_inflate);
		if ((int)q == b->q_hint)
			handle_hint(b, bufs, &chain);
		if ((int)q == b->q_report)
			handle_report(b, bufs, &chain);
		virtq_push(vq, chain.head, 0);
		used = true;
	}
	if (rc < 0)
		virtio_queue_broken(dev, q, why);
	if (used)
		virtio_notify_used(dev, vq);
}

static void balloon_tick(struct virtio_dev *dev)
{
	struct balloon *b = to_balloon(dev);

	if (b->q_stats < 0 || !b->stats_held || !(dev->status & VIRTIO_STATUS_DRIVER_OK))
		return;
	b->stats_held = false;
	virtq_push(&dev->queues[b->q_stats], b->stats_head, 0);
	virtio_notify_used(dev, &dev->queues[b->q_stats]);
}

/* Device state for migration; the transport saves the queues. Roles follow
 * from the features, so they are derived again on load. */
static int balloon_save(struct virtio_dev *dev, struct state_writer *w)
{
	struct balloon *b = to_balloon(dev);
	uint64_t words = (guest_mem_pages(&dev->vm->mem) + 63) / 64;

	state_put_le32(w, b->num_pages);
	state_put_le32(w, b->actual);
	state_put_le32(w, b->hint_cmd_id);
	state_put_le32(w, b->poison_val);
	state_put_le32(w, b->hint_next_id);
	state_put_le16(w, b->stats_held);
	state_put_le16(w, b->stats_head);
	state_put_le64(w, words);
	for (uint64_t i = 0; i < words; i++)
		state_put_le64(w, b->discarded[i]);
	return w->error;
}

static int balloon_load(struct virtio_dev *dev, struct state_reader *r)
{
	struct balloon *b = to_balloon(dev);
	uint64_t pages = guest_mem_pages(&dev->vm->mem), words, want = (pages + 63) / 64;
	uint16_t held, head;

	/* Only what the device can hold: a target balloon_set_size() took,
	 * a next command id past STOP and DONE, a flag for the held buffer,
	 * no page past the end of RAM marked. */
	if (state_get_le32(r, &b->num_pages) || state_get_le32(r, &b->actual) ||
	    state_get_le32(r, &b->hint_cmd_id) || state_get_le32(r, &b->poison_val) ||
	    state_get_le32(r, &b->hint_next_id) || state_get_le16(r, &held) ||
	    state_get_le16(r, &head) || state_get_le64(r, &words) || words != want ||
	    b->hint_next_id < 2 || held > 1 ||
	    b->num_pages > dev->vm->mem.size >> VIRTIO_BALLOON_PFN_SHIFT)
		return -EINVAL;
	for (uint64_t i = 0; i < words; i++)
		if (state_get_le64(r, &b->discarded[i]))
			return -EINVAL;
	if (pages % 64 && b->discarded[words - 1] >> (pages % 64))
		return -EINVAL; /* pages past the end of RAM */
	b->hint_state = HINT_IDLE;
	b->drop_cache = 0; /* only set within a round, and rounds end before a save */
	b->stats_held = held;
	b->stats_head = head;
	if (dev->status & VIRTIO_STATUS_DRIVER_OK)
		balloon_activate(dev);
	/* No round runs here yet: the guest kicks its hint queue again, even
	 * if the source saved while it polled (its rounds end before a save). */
	if (b->q_hint >= 0)
		(void)virtq_set_kicks(&dev->queues[b->q_hint], true);
	return 0;
}

/* The options that decide the features offered, so that a destination
 * with other --balloon options is refused at HELLO instead of failing to
 * load the negotiated features after all RAM was sent. The statistics
 * interval is not among them: it only sets how often the host asks. */
static void balloon_describe(struct virtio_dev *dev, char *buf, size_t size)
{
	const struct balloon_options *o = &to_balloon(dev)->opts;

	snprintf(buf, size, "balloon%s%s%s%s", o->stats_interval_s ? ":stats" : "",
		 o->deflate_on_oom ? ":deflate-on-oom" : "",
		 o->free_page_hint ? ":free-page-hint" : "",
		 o->free_page_reporting ? ":free-page-reporting" : "");
}

static const struct virtio_dev_ops balloon_ops = {
	.name = "balloon",
	.device_id = 5,
	.features = balloon_features,
	.config_size = BALLOON_CONFIG_SIZE,
	.config_read = balloon_config_read,
	.config_write = balloon_config_write,
	.activate = balloon_activate,
	.reset = balloon_reset,
	.queue_notify = balloon_queue_notify,
	.tick = balloon_tick,
	.describe = balloon_describe,
	.save = balloon_save,
	.load = balloon_load,
};

int balloon_init(struct vm *vm, struct balloon *b, const struct balloon_options *opts, char *err,
		 size_t errlen)
{
	memset(b, 0, sizeof(*b));
	b->opts = *opts;
	b->q_inflate = b->q_deflate = b->q_stats = b->q_hint = b->q_report = -1;
	b->hint_next_id = 2; /* 0 and 1 are STOP and DONE */
	b->hint_cmd_id = VIRTIO_BALLOON_CMD_ID_DONE;
	pthread_cond_init(&b->hint_cond, NULL);
	b->hint_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (b->hint_fd < 0) {
		snprintf(err, errlen, "balloon: eventfd: %s", strerror(errno));
		return -errno;
	}
	b->discarded = calloc((guest_mem_pages(&vm->mem) + 63) / 64, sizeof(uint64_t));
	if (!b->discarded) {
		snprintf(err, errlen, "balloon: out of memory");
		return -ENOMEM;
	}
	return virtio_dev_init(&b->dev, vm, &balloon_ops, BALLOON_QUEUES, BALLOON_QUEUE_MAX, err,
			       errlen);
}

int balloon_create(struct vm *vm, struct balloon *b, const struct balloon_options *opts,
		   unsigned index, char *err, size_t errlen)
{
	int rc = balloon_init(vm, b, opts, err, errlen);

	return rc ? rc : virtio_mmio_attach(&b->dev, index, err, errlen);
}

void balloon_destroy(struct balloon *b)
{
	virtio_mmio_detach(&b->dev);
	free(b->discarded);
	b->discarded = NULL;
	if (b->hint_fd >= 0)
		close(b->hint_fd);
	b->hint_fd = -1;
}

int balloon_set_size(struct balloon *b, uint64_t bytes)
{
	if (bytes > b->dev.vm->mem.size)
		return -EINVAL;
	pthread_mutex_lock(&b->dev.lock);
	b->num_pages = (uint32_t)(bytes >> VIRTIO_BALLOON_PFN_SHIFT);
	virtio_notify_config(&b->dev);
	pthread_mutex_unlock(&b->dev.lock);
	return 0;
}

static const char *drop_cache_unavailable_locked(struct balloon *b)
{
	if (b->q_hint < 0 || !(b->dev.status & VIRTIO_STATUS_DRIVER_OK))
		return "the guest has not enabled free page hinting";
	if (!virtio_has_feature(&b->dev, BALLOON_F_DROP_CACHE))
		return "the guest did not accept the balloon's drop-cache feature "
		       "(a kernel without guest-kernel/patches?)";
	return NULL;
}

json_t *balloon_stats_json(struct balloon *b)
{
	json_t *stats = json_object(), *reply;

	pthread_mutex_lock(&b->dev.lock);
	for (unsigned i = 0; i < b->nstats; i++) {
		char name[32];
		uint16_t tag = b->stats[i].tag;

		/* Unknown tags are kept under their number. */
		if (tag < ARRAY_SIZE(stat_names))
			snprintf(name, sizeof(name), "%s", stat_names[tag]);
		else
			snprintf(name, sizeof(name), "tag-%u", tag);
		json_object_set_new(stats, name, json_integer((json_int_t)b->stats[i].val));
	}
	reply = json_pack("{s:I, s:b, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o}",
			  "hint_cmd_id", (json_int_t)b->hint_cmd_id,
			  "drop_cache_negotiated", virtio_has_feature(&b->dev, BALLOON_F_DROP_CACHE),
			  "free_ranges_negotiated", virtio_has_feature(&b->dev, BALLOON_F_FREE_RANGES),
			  "target_bytes", (json_int_t)b->num_pages << 12,
			  "actual_bytes", (json_int_t)b->actual << 12,
			  "inflated_pages", (json_int_t)b->inflated_pages,
			  "deflated_pages", (json_int_t)b->deflated_pages,
			  "reported_ranges", (json_int_t)b->reported_ranges,
			  "reported_bytes", (json_int_t)b->reported_bytes,
			  "poison_val", (json_int_t)b->poison_val,
			  "stats_age_ms", b->stats_updated_ns
						  ? (json_int_t)((now_ns() - b->stats_updated_ns) / 1000000)
						  : (json_int_t)-1,
			  "stats", stats);
	pthread_mutex_unlock(&b->dev.lock);
	return reply;
}

const char *balloon_drop_cache_unavailable(struct balloon *b)
{
	const char *why;

	pthread_mutex_lock(&b->dev.lock);
	why = drop_cache_unavailable_locked(b);
	pthread_mutex_unlock(&b->dev.lock);
	return why;
}

int balloon_hint_start(struct balloon *b, bool drop_cache, balloon_hint_fn fn, void *opaque)
{
	int rc = 0;

	pthread_mutex_lock(&b->dev.lock);
	if (b->q_hint < 0 || !(b->dev.status & VIRTIO_STATUS_DRIVER_OK)) {
		rc = -ENOTSUP;
	} else if (b->hint_state == HINT_REQUESTED || b->hint_state == HINT_RUNNING) {
		rc = -EBUSY;
	} else {
		b->hint_cmd_id = b->hint_next_id++;
		if (b->hint_next_id < 2)
			b->hint_next_id = 2;
		b->hint_state = HINT_REQUESTED;
		b->hint_fn = fn;
		b->hint_opaque = opaque;
		b->hint_ranges = b->hint_bytes = 0;
		b->hint_started_ns = now_ns();
		b->hint_stopped_ns = 0;
		/* One config interrupt carries both: the driver reads the flag
		 * when it sees the new cmd id. */
		b->drop_cache = drop_cache && !drop_cache_unavailable_locked(b)
					? BALLOON_DROP_PAGECACHE | BALLOON_DROP_SLAB
					: 0;
		virtio_notify_config(&b->dev);
	}
	pthread_mutex_unlock(&b->dev.lock);
	return rc;
}

int balloon_hint_wait(struct balloon *b, int timeout_ms)
{
	struct timespec deadline;
	int rc = 0;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += timeout_ms / 1000;
	deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&b->dev.lock);
	while (b->hint_state == HINT_REQUESTED || b->hint_state == HINT_RUNNING) {
		if (pthread_cond_timedwait(&b->hint_cond, &b->dev.lock, &deadline) == ETIMEDOUT) {
			rc = -ETIMEDOUT;
			break;
		}
	}
	pthread_mutex_unlock(&b->dev.lock);
	return rc;
}

int balloon_hint_fd(struct balloon *b)
{
	return b->hint_fd;
}

bool balloon_hint_running(struct balloon *b)
{
	uint64_t v;
	bool running;

	pthread_mutex_lock(&b->dev.lock);
	(void)!read(b->hint_fd, &v, sizeof(v));
	running = b->hint_state == HINT_REQUESTED || b->hint_state == HINT_RUNNING;
	pthread_mutex_unlock(&b->dev.lock);
	return running;
}

void balloon_hint_stop(struct balloon *b)
{
	pthread_mutex_lock(&b->dev.lock);
	b->hint_fn = NULL;
	if (b->hint_state == HINT_REQUESTED || b->hint_state == HINT_RUNNING) {
		b->hint_state = HINT_STOPPED;
		b->hint_stopped_ns = now_ns();
		b->hint_cmd_id = VIRTIO_BALLOON_CMD_ID_STOP;
		hint_ended(b);
		if (b->dev.status & VIRTIO_STATUS_DRIVER_OK)
			virtio_notify_config(&b->dev);
	}
	pthread_mutex_unlock(&b->dev.lock);
}

void balloon_hint_done(struct balloon *b)
{
	pthread_mutex_lock(&b->dev.lock);
	if (!b->hint_stopped_ns)
		b->hint_stopped_ns = now_ns();
	b->hint_state = HINT_IDLE;
	b->hint_fn = NULL;
	b->drop_cache = 0;
	hint_poll(b, false);
	if (b->hint_cmd_id != VIRTIO_BALLOON_CMD_ID_DONE) {
		b->hint_cmd_id = VIRTIO_BALLOON_CMD_ID_DONE;
		if (b->dev.status & VIRTIO_STATUS_DRIVER_OK)
			virtio_notify_config(&b->dev);
	}
	pthread_mutex_unlock(&b->dev.lock);
}

json_t *balloon_hint_json(struct balloon *b)
{
	json_t *reply;

	pthread_mutex_lock(&b->dev.lock);
	reply = json_pack("{s:I, s:I, s:I, s:b, s:f}", "cmd_id", (json_int_t)b->hint_next_id - 1,
			  "ranges", (json_int_t)b->hint_ranges, "bytes", (json_int_t)b->hint_bytes,
			  "drop_cache", b->drop_cache != 0,
			  "elapsed_ms",
			  (double)((b->hint_stopped_ns ? b->hint_stopped_ns : now_ns()) -
				   b->hint_started_ns) / 1e6);
	pthread_mutex_unlock(&b->dev.lock);
	return reply;
}
