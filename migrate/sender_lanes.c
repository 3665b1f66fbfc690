/* The source's RAM path, the lanes' life: threads, connections, passes
 * started and waited for, hints, figures, and the destination's replies
 * (see sender.h; one lane's pass is in sender.c). */
#include "migrate/sender.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "migrate/trace.h"
#include "vmm/util.h"
#include "vmm/vm.h"

#define PUBLISH_NS 100000000ULL /* figures for `vmm migrate` while a pass runs */

int reply_next(struct mig_conn *c, struct reply_buf *rb, struct stream_record *rec,
	       size_t *used, int timeout_ms)
{
	for (;;) {
		ssize_t n;
		int rc = stream_decode(rb->buf, rb->have, rec, used);

		if (rc)
			return rc;
		if (rb->have == sizeof(rb->buf))
			return -EPROTO;
		n = mig_conn_recv(c, rb->buf + rb->have, sizeof(rb->buf) - rb->have, timeout_ms);
		if (n <= 0)
			return n ? (int)n : -ECONNRESET;
		rb->have += (size_t)n;
	}
}

void reply_consume(struct reply_buf *rb, size_t used)
{
	memmove(rb->buf, rb->buf + used, rb->have - used);
	rb->have -= used;
}

static void *lane_thread(void *arg)
{
	struct send_lane *l = arg;
	struct ram_sender *rs = l->rs;
	unsigned seen = 0;
	char name[16];

	snprintf(name, sizeof(name), "migrate-%u", l->index);
	pthread_setname_np(pthread_self(), name);
	pthread_mutex_lock(&rs->lock);
	for (;;) {
		struct send_pass pass;
		int rc;

		while (rs->gen == seen && !rs->quit)
			pthread_cond_wait(&rs->cond, &rs->lock);
		if (rs->quit)
			break;
		seen = rs->gen;
		pass = rs->pass;
		pthread_mutex_unlock(&rs->lock);
		rc = sender_lane_pass(l, &pass);
		pthread_mutex_lock(&rs->lock);
		/* The lane that failed says why; the others only stopped. */
		if (rc && (!rs->error || rs->error == -ESHUTDOWN))
			rs->error = rc;
		if (--rs->running == 0)
			pthread_cond_broadcast(&rs->cond);
	}
	pthread_mutex_unlock(&rs->lock);
	return NULL;
}

static int lane_init(struct ram_sender *rs, struct send_lane *l, unsigned index)
{
	struct migration *m = rs->m;

	l->rs = rs;
	l->index = index;
	l->conn = &l->own;
	l->reply = &l->own_reply;
	for (unsigned i = 0; i < SEND_LANE_BUFS; i++)
		if (!(l->bufs[i] = ram_buf_alloc(SEND_BUF_SIZE)))
			return -ENOMEM;
	l->staging = ram_buf_alloc(SEND_CHUNK_PAGES * GUEST_PAGE_SIZE);
	if (!l->staging)
		return -ENOMEM;
	if (m->opt.compress != COMPRESS_NONE) {
		if (ram_compressor_init(&l->zc, RAM_ZSTD_LEVEL_DEFAULT))
			return -ENOMEM;
		l->zc_on = true;
		/* The record's checksum already covers the frame on the wire. */
		ram_compressor_set_checksum(&l->zc, false);
		ram_auto_init(&l->autoc);
	}
	if (rs->zpool && !(l->jobs = calloc(SEND_LANE_BUFS, sizeof(*l->jobs))))
		return -ENOMEM;
	return 0;
}

int ram_sender_init(struct ram_sender *rs, struct migration *m, struct dirty_log *dirty,
		    struct mig_conn *conn0, struct reply_buf *reply0, unsigned nlanes)
{
	memset(rs, 0, sizeof(*rs));
	rs->m = m;
	rs->vm = m->vm;
	rs->dirty = dirty;
	rs->nlanes = nlanes;
	rs->skip_free = m->opt.skip_free;
	rs->pagemap_fd = -1;
	rs->npages = guest_mem_pages(&m->vm->mem);
	if (m->opt.timeout_s)
		rs->deadline_ns = m->st.start_ns + (uint64_t)m->opt.timeout_s * 1000000000ULL;
	pthread_mutex_init(&rs->lock, NULL);
	pthread_cond_init(&rs->cond, NULL);
	rs->sync_init = true;
	rs->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (rs->pagemap_fd < 0)
		return -errno;
	if (bitmap_alloc(&rs->send, rs->npages) || bitmap_alloc(&rs->hinted, rs->npages))
		return -ENOMEM;
	if (m->opt.compress != COMPRESS_NONE && m->opt.compress_threads) {
		int rc;

		if (!(rs->zpool = calloc(1, sizeof(*rs->zpool))))
			return -ENOMEM;
		/* The record's checksum already covers the frame on the wire. */
		rc = zpool_init(rs->zpool, m->opt.compress_threads, GUEST_PAGE_SIZE,
				RAM_ZSTD_LEVEL_DEFAULT, false);
		if (rc) {
			free(rs->zpool);
			rs->zpool = NULL;
			return rc;
		}
	}
	rs->lanes = calloc(nlanes, sizeof(*rs->lanes));
	if (!rs->lanes)
		return -ENOMEM;
	for (unsigned i = 0; i < nlanes; i++)
		if (lane_init(rs, &rs->lanes[i], i))
			return -ENOMEM;
	rs->lanes[0].conn = conn0;
	rs->lanes[0].reply = reply0;
	return 0;
}

int ram_sender_start(struct ram_sender *rs)
{
	for (unsigned i = 0; i < rs->nlanes; i++) {
		struct send_lane *l = &rs->lanes[i];
		int rc = thread_create(&l->thread, lane_thread, l);

		if (rc)
			return -rc;
		l->thread_started = true;
	}
	return 0;
}

uint64_t ram_sender_bytes(struct ram_sender *rs)
{
	uint64_t n = 0;

	for (unsigned i = 0; rs->lanes && i < rs->nlanes; i++)
		n += atomic_load_explicit(&rs->lanes[i].st.bytes_sent, memory_order_relaxed);
	return n;
}

uint64_t ram_sender_read_pages(const struct ram_sender *rs)
{
	uint64_t n = 0;

	for (unsigned i = 0; rs->lanes && i < rs->nlanes; i++)
		n += rs->lanes[i].pages_read;
	return n;
}

void ram_sender_publish(struct ram_sender *rs)
{
	struct migrate_stats *st = &rs->m->st;
	struct lane_stats sum = { 0 };

	if (!rs->lanes)
		return;
#define ADD(f) sum.f += atomic_load_explicit(&l->st.f, memory_order_relaxed)
	for (unsigned i = 0; i < rs->nlanes; i++) {
		struct send_lane *l = &rs->lanes[i];

		ADD(pages_raw);
		ADD(pages_zstd);
		ADD(pages_zero);
		ADD(skipped_reported);
		ADD(skipped_untouched);
		ADD(raw_bytes_compressed);
		ADD(zstd_bytes);
		ADD(bytes_sent);
	}
#undef ADD
	pthread_mutex_lock(&rs->m->lock);
	st->pages_raw = sum.pages_raw;
	st->pages_zstd = sum.pages_zstd;
	st->pages_zero = sum.pages_zero;
	st->skipped_reported = sum.skipped_reported;
	st->skipped_untouched = sum.skipped_untouched;
	st->raw_bytes_compressed = sum.raw_bytes_compressed;
	st->zstd_bytes = sum.zstd_bytes;
	st->bytes_wire = sum.bytes_sent;
	st->skipped_hinted = atomic_load(&rs->skipped_hinted);
	pthread_mutex_unlock(&rs->m->lock);
}

int ram_sender_pass(struct ram_sender *rs, const struct send_pass *p)
{
	int rc;

	pthread_mutex_lock(&rs->lock);
	rs->pass = *p;
	rs->error = 0;
	rs->running = rs->nlanes;
	rs->gen++;
	pthread_cond_broadcast(&rs->cond);
	while (rs->running) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += (long)PUBLISH_NS;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		if (pthread_cond_timedwait(&rs->cond, &rs->lock, &ts) == ETIMEDOUT) {
			pthread_mutex_unlock(&rs->lock);
			ram_sender_publish(rs);
			pthread_mutex_lock(&rs->lock);
		}
	}
	rc = rs->error;
	pthread_mutex_unlock(&rs->lock);
	ram_sender_publish(rs);
	return rc;
}

int ram_sender_protect(struct ram_sender *rs, char *err, size_t errlen)
{
	return dirty_clear_mask(rs->dirty, 0, rs->npages, rs->send.words, err, errlen);
}

void ram_sender_hint(struct ram_sender *rs, uint64_t first, uint64_t n)
{
	_Atomic uint64_t *words = (_Atomic uint64_t *)rs->send.words;
	uint64_t skipped = 0;

	if (!n || first >= rs->npages || n > rs->npages - first)
		return;
	/* Hinted first: a lane that sees the send bit clear then also sees
	 * the hint (or sends the page, which is harmless). */
	bitmap_atomic_set_range(&rs->hinted, first, n);
	for (uint64_t p = first; p < first + n;) {
		uint64_t w = p / 64, lo = p % 64, cnt = 64 - lo < first + n - p ? 64 - lo : first + n - p;
		uint64_t bits = (cnt == 64 ? ~0ULL : ((1ULL << cnt) - 1)) << lo;
		uint64_t old = atomic_fetch_and(&words[w], ~bits);

		skipped += (uint64_t)__builtin_popcountll(old & bits);
		p += cnt;
	}
	atomic_fetch_add(&rs->skipped_hinted, skipped);
}

static void lane_close(struct send_lane *l, const char *reason)
{
	if (!l->own_open)
		return;
	if (reason) {
		uint8_t buf[512];
		ssize_t len = stream_encode_error(buf, sizeof(buf), 1, reason);

		if (len > 0 && !mig_conn_send(&l->own, buf, (size_t)len))
			mig_conn_flush(&l->own, 1000);
	}
	mig_conn_close(&l->own);
	l->own_open = false;
}

int ram_sender_lane_open(struct ram_sender *rs, unsigned i, int fd)
{
	struct send_lane *l = &rs->lanes[i];
	int rc = mig_conn_init(&l->own, fd, 64);

	if (!rc)
		l->own_open = true;
	return rc;
}

void ram_sender_stop(struct ram_sender *rs, bool failed)
{
	if (!rs->sync_init)
		return;
	pthread_mutex_lock(&rs->lock);
	rs->quit = true;
	pthread_cond_broadcast(&rs->cond);
	pthread_mutex_unlock(&rs->lock);
	for (unsigned i = 0; rs->lanes && i < rs->nlanes; i++) {
		struct send_lane *l = &rs->lanes[i];

		if (l->thread_started)
			pthread_join(l->thread, NULL);
		l->thread_started = false;
		lane_close(l, failed ? rs->m->error : NULL);
	}
}

void ram_sender_free(struct ram_sender *rs)
{
	if (!rs->sync_init)
		return;
	ram_sender_stop(rs, false);
	for (unsigned i = 0; rs->lanes && i < rs->nlanes; i++) {
		struct send_lane *l = &rs->lanes[i];

		if (l->zc_on)
			ram_compressor_free(&l->zc);
		for (unsigned j = 0; j < SEND_LANE_BUFS; j++)
			ram_buf_free(l->bufs[j], SEND_BUF_SIZE);
		ram_buf_free(l->staging, SEND_CHUNK_PAGES * GUEST_PAGE_SIZE);
		free(l->jobs);
	}
	free(rs->lanes);
	/* The lanes waited for their batches at the end of each pass. */
	if (rs->zpool) {
		zpool_free(rs->zpool);
		free(rs->zpool);
	}
	bitmap_free(&rs->send);
	bitmap_free(&rs->hinted);
	if (rs->pagemap_fd >= 0)
		close(rs->pagemap_fd);
	pthread_cond_destroy(&rs->cond);
	pthread_mutex_destroy(&rs->lock);
	rs->sync_init = false;
}

void ram_sender_shutdown(struct ram_sender *rs)
{
	for (unsigned i = 0; i < rs->nlanes; i++)
		if ((i == 0 || rs->lanes[i].own_open) && rs->lanes[i].conn->fd >= 0)
			shutdown(rs->lanes[i].conn->fd, SHUT_RDWR);
}
