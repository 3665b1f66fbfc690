/* The source's compression, one lane's side: whether a batch is compressed
 * (--compress, auto's decision and its link probes), compressing it on the
 * lane's thread, or handing it to the workers of compress_pool.h and
 * sending it once they are done (see sender.h). */
#include "migrate/sender.h"

#include <errno.h>
#include <string.h>

#include "vmm/util.h"

#define LINK_PROBE_AFTER 24          /* data records without a link figure (1 at first), then */
#define LINK_PROBE_RECORDS 12        /* a raw burst this long (the buffers fill first) */

bool sender_want_compress(struct send_lane *l)
{
	switch (l->rs->m->opt.compress) {
	case COMPRESS_ZSTD: return true;
	case COMPRESS_NONE: return false;
	case COMPRESS_AUTO: break;
	}
	if (l->probe_left)
		return false;
	/* Compressing may leave the socket idle, and then it shows no rate:
	 * a burst of raw records measures it (at worst they fill it). */
	if (l->autoc.on && l->since_link >= (l->autoc.have_link ? LINK_PROBE_AFTER : 1)) {
		l->probe_left = LINK_PROBE_RECORDS;
		l->probe_ns = now_ns();
		l->probe_bytes = 0;
		l->probe_busy = false;
		l->since_link = 0;
		return false;
	}
	return ram_auto_should_compress(&l->autoc);
}

/* The end of a raw burst: if the socket never filled, raw records went
 * out as fast as they were made, and that rate is the one to compare
 * compressing with (when the link is timed by its socket, not TCP). */
void sender_probe_done(struct send_lane *l, size_t raw)
{
	if (!l->probe_left)
		return;
	l->probe_bytes += raw;
	/* Over TCP the burst only keeps the socket busy, so that the
	 * kernel's delivery rate is the link's (note_link). */
	if (--l->probe_left || l->probe_busy || !l->link_timed)
		return;
	ram_auto_note_link(&l->autoc, l->probe_bytes, now_ns() - l->probe_ns);
	l->since_link = 0;
}

static void count_zstd(struct send_lane *l, unsigned npages, size_t raw, size_t len)
{
	atomic_fetch_add_explicit(&l->st.pages_zstd, npages, memory_order_relaxed);
	atomic_fetch_add_explicit(&l->st.raw_bytes_compressed, raw, memory_order_relaxed);
	atomic_fetch_add_explicit(&l->st.zstd_bytes, (uint64_t)len, memory_order_relaxed);
}

/* One zstd frame of the waiting data pages, compressed from a copy. Never
 * from guest memory itself: zstd reads its input more than once (a match
 * is found on one read, the bytes it refers to were emitted on another),
 * so a byte the guest changes in between can make the frame decode wrong
 * bytes into a page the guest did not touch, which is then never sent
 * again. A copy can only tear the page being written, which is dirty and
 * goes again. Returns the frame size, or <= 0 to send RAW. */
ssize_t sender_compress_here(struct send_lane *l, struct stream_ram_enc *e, size_t raw)
{
	uint64_t t0 = now_ns();
	ssize_t len;

	for (unsigned i = 0; i < l->nd; i++)
		memcpy(l->staging + ((size_t)i << GUEST_PAGE_SHIFT), l->data_src[i], GUEST_PAGE_SIZE);
	len = ram_auto_compress(&l->autoc, &l->zc, l->staging, raw, e->data, e->room);
	l->t_compress += now_ns() - t0;
	if (len > 0 && (size_t)len < raw) {
		count_zstd(l, l->nd, raw, (size_t)len);
		return len;
	}
	return 0;
}

int sender_compress_submit(struct send_lane *l, unsigned slot)
{
	struct lane_job *j = &l->jobs[slot];
	int rc = stream_ram_begin(&j->e, l->bufs[slot], SEND_BUF_SIZE, STREAM_RAM_ZSTD,
				  GUEST_PAGE_SIZE, l->data_r, l->ndr);

	if (rc)
		return sender_lane_fail(l, rc, "encoding RAM: %s", stream_strerror(rc));
	memcpy(j->r, l->data_r, l->ndr * sizeof(j->r[0]));
	j->nr = l->ndr;
	memcpy(j->z.src, l->data_src, l->nd * sizeof(j->z.src[0]));
	j->z.npages = l->nd;
	j->z.dst = j->e.data;
	j->z.cap = j->e.room;
	j->pending = true;
	zpool_submit(l->rs->zpool, &j->z);
	return 0;
}

/* A finished batch goes out: its frame, or RAW when the frame did not
 * shrink it. The workers run at once, so auto's compression rate is the
 * pool's: a batch's time over the number of workers. */
static int send_job(struct send_lane *l, unsigned slot)
{
	struct lane_job *j = &l->jobs[slot];
	size_t raw = (size_t)j->z.npages << GUEST_PAGE_SHIFT;
	ssize_t len = j->z.len;

	j->pending = false;
	l->t_compress += j->z.ns;
	if (len >= 0 || len == -ENOSPC)
		ram_auto_note_compress(&l->autoc, raw, len >= 0 ? (uint64_t)len : raw,
				       j->z.ns / l->rs->zpool->nthreads);
	if (len > 0 && (size_t)len < raw) {
		count_zstd(l, j->z.npages, raw, (size_t)len);
		return sender_queue_record(l, slot, stream_ram_finish(&j->e, (size_t)len));
	}
	return sender_send_raw(l, slot, j->r, j->nr, j->z.src, j->z.npages);
}

int sender_compress_reap(struct send_lane *l, bool wait)
{
	/* Oldest first: next_buf is the buffer to be reused next. */
	for (unsigned k = 0; k < SEND_LANE_BUFS; k++) {
		unsigned slot = (l->next_buf + k) % SEND_LANE_BUFS;
		struct lane_job *j = &l->jobs[slot];
		int rc;

		if (!j->pending)
			continue;
		if (wait)
			zpool_wait(l->rs->zpool, &j->z);
		else if (!zjob_done(&j->z))
			continue;
		if ((rc = send_job(l, slot)))
			return rc;
	}
	return 0;
}

int sender_compress_wait_slot(struct send_lane *l, unsigned slot)
{
	if (!l->jobs[slot].pending)
		return 0;
	zpool_wait(l->rs->zpool, &l->jobs[slot].z);
	return send_job(l, slot);
}

void sender_compress_abandon(struct send_lane *l)
{
	for (unsigned slot = 0; slot < SEND_LANE_BUFS; slot++) {
		if (l->jobs[slot].pending)
			zpool_wait(l->rs->zpool, &l->jobs[slot].z);
		l->jobs[slot].pending = false;
	}
}
