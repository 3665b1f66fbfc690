/* The source's RAM path, one lane's pass: buffers, stripes, records and
 * compression (see sender.h; the lanes' threads and their life are in
 * sender_lanes.c). */
#include "migrate/sender.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

#include "migrate/failpoint.h"
#include "migrate/tcp_rate.h"
#include "migrate/trace.h"
#include "virtio/balloon.h"
#include "vmm/util.h"
#include "vmm/vm.h"

#define PAGEMAP_PRESENT (1ULL << 63)
#define PAGEMAP_SWAPPED (1ULL << 62)
#define LINK_SAMPLE_BYTES (2u << 20) /* busy time summed until this much went out */

int sender_lane_fail(struct send_lane *l, int rc, const char *fmt, ...)
{
	struct migration *m = l->rs->m;
	char msg[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&m->lock);
	if (!m->error[0]) {
		if (l->rs->nlanes > 1)
			snprintf(m->error, sizeof(m->error), "connection %u: %s", l->index, msg);
		else
			snprintf(m->error, sizeof(m->error), "%s", msg);
	}
	pthread_mutex_unlock(&m->lock);
	atomic_store(&l->rs->abort, true);
	return rc < 0 ? rc : -EIO;
}

static int lane_check_abort(struct send_lane *l)
{
	struct ram_sender *rs = l->rs;

	if (atomic_load(&rs->abort))
		return -ESHUTDOWN; /* another lane failed and said why */
	if (atomic_load(&rs->m->cancel))
		return sender_lane_fail(l, -ECANCELED, "cancelled");
	if (rs->deadline_ns && now_ns() > rs->deadline_ns)
		return sender_lane_fail(l, -ETIMEDOUT, "timed out after %u s", rs->m->opt.timeout_s);
	if (atomic_load(&rs->vm->stop_reason) != VM_STOP_NONE)
		return sender_lane_fail(l, -ECANCELED, "the VM is stopping");
	return 0;
}

static void note_sent(struct send_lane *l)
{
	atomic_store_explicit(&l->st.bytes_sent, l->conn->bytes_sent, memory_order_relaxed);
}

/* --compress auto needs the link's rate. Without TCP's figure, the socket
 * shows it only while it is busy: an interval between two buffer waits counts if bytes
 * queued before it were still unsent at its end, so the socket never ran
 * dry in between. */
static void note_link(struct send_lane *l)
{
	uint64_t t = now_ns(), sent = l->conn->bytes_sent;
	double bps;

	if (!l->zc_on || l->rs->m->opt.compress != COMPRESS_AUTO)
		return;
	/* Over TCP, the kernel's delivery rate is the link's (tcp_rate.c);
	 * a sample the sender limited says nothing and is left out. */
	if (!l->link_timed) {
		int rc = tcp_delivery_rate(l->conn->fd, &bps);

		if (mig_trace_on() && t - l->trace_link_ns > 500000000ULL) {
			l->trace_link_ns = t;
			mig_trace("lane %u: TCP delivery rate %s %.1f Mbit/s; auto: link %.1f Mbit/s, "
				  "zstd %.1f MB/s, ratio %.2f, %s", l->index, rc ? "(none)" : "",
				  rc ? 0 : bps * 8 / 1e6, l->autoc.link_bps * 8 / 1e6,
				  l->autoc.compress_bps / 1e6, l->autoc.ratio, l->autoc.on ? "on" : "off");
		}
		if (!rc) {
			ram_auto_note_link(&l->autoc, (uint64_t)bps, 1000000000ULL);
			l->since_link = 0;
		}
		if (rc != -ENOTSUP)
			return;
		l->link_timed = true; /* a unix socket: timed as below */
	}
	if (l->mark_ns && sent > l->mark_sent && sent < l->mark_queued) {
		l->probe_busy = true;
		l->busy_bytes += sent - l->mark_sent;
		l->busy_ns += t - l->mark_ns;
		if (l->busy_bytes >= LINK_SAMPLE_BYTES) {
			ram_auto_note_link(&l->autoc, l->busy_bytes, l->busy_ns);
			l->busy_bytes = l->busy_ns = 0;
			l->since_link = 0;
		}
	}
	l->mark_ns = t;
	l->mark_sent = sent;
	l->mark_queued = l->conn->bytes_queued;
}

/* A record buffer free to fill: the oldest one, once its record is sent;
 * the newer ones stay in flight. A batch a compression worker still has
 * there goes out first, and finished ones go out on the way. */
static int next_buffer(struct send_lane *l, uint8_t **buf)
{
	unsigned i = l->next_buf;
	uint64_t t0 = now_ns();
	int rc = 0;

	if (l->jobs && !(rc = sender_compress_wait_slot(l, i)))
		rc = sender_compress_reap(l, false);
	if (rc)
		return rc;
	rc = mig_conn_wait_sent(l->conn, l->buf_end[i], SEND_IO_TIMEOUT_MS);
	l->t_wait += now_ns() - t0;
	if (rc)
		return sender_lane_fail(l, rc, "sending: %s", strerror(-rc));
	note_sent(l);
	note_link(l);
	l->next_buf = (i + 1) % SEND_LANE_BUFS;
	*buf = l->bufs[i];
	return 0;
}

/* The buffer next_buffer() gave last. */
static unsigned cur_slot(const struct send_lane *l)
{
	return (l->next_buf + SEND_LANE_BUFS - 1) % SEND_LANE_BUFS;
}

int sender_queue_record(struct send_lane *l, unsigned slot, ssize_t len)
{
	int rc;

	if (len < 0)
		return sender_lane_fail(l, (int)len, "encoding a record: %s", stream_strerror((int)len));
	rc = mig_conn_send(l->conn, l->bufs[slot], (size_t)len);
	if (rc)
		return sender_lane_fail(l, rc, "sending: %s", strerror(-rc));
	l->buf_end[slot] = l->conn->bytes_queued;
	return 0;
}

/* Queues the record just written into the buffer next_buffer() gave. */
static int queue_record(struct send_lane *l, ssize_t len)
{
	return sender_queue_record(l, cur_slot(l), len);
}

static uint64_t page_gpa(const struct guest_mem *mem, uint64_t page)
{
	uint64_t off = page << GUEST_PAGE_SHIFT;

	if (mem->nregions > 1 && off >= mem->regions[1].offset)
		return mem->regions[1].gpa + (off - mem->regions[1].offset);
	return off;
}

static uint8_t *page_hva(const struct ram_sender *rs, uint64_t page)
{
	return rs->vm->mem.base + (page << GUEST_PAGE_SHIFT);
}

/* Whether gpa extends the last range (pages are added in ascending order). */
static bool extends(const struct stream_range *r, unsigned n, uint64_t gpa)
{
	return n && r[n - 1].gpa + ((uint64_t)r[n - 1].pages << GUEST_PAGE_SHIFT) == gpa;
}

/* A RAW record: its head from the buffer, its pages straight from guest
 * memory (one iovec per range: a range lies in one region, so its pages
 * are contiguous there). The record's checksum does not cover the pages
 * (docs/migration-stream.md), and the kernel reads them when it sends
 * them, before the pass ends: a write before that is sent, a write after
 * it dirties a page that was protected at the sync, so it goes again, as
 * with a copy. */
int sender_send_raw(struct send_lane *l, unsigned slot, const struct stream_range *r,
		    unsigned nr, const void *const *src, unsigned npages)
{
	struct iovec *iov = l->iov[slot];
	struct stream_ram_enc e;
	ssize_t len;
	unsigned p = 0;
	int rc = stream_ram_begin(&e, l->bufs[slot], SEND_BUF_SIZE, STREAM_RAM_RAW,
				  GUEST_PAGE_SIZE, r, nr);

	if (rc)
		return sender_lane_fail(l, rc, "encoding RAM: %s", stream_strerror(rc));
	len = stream_ram_finish(&e, (size_t)npages << GUEST_PAGE_SHIFT);
	if (len < 0)
		return sender_lane_fail(l, (int)len, "encoding a record: %s",
					stream_strerror((int)len));
	iov[0] = (struct iovec){ l->bufs[slot], e.hdr_len };
	for (unsigned i = 0; i < nr; i++) {
		iov[1 + i] = (struct iovec){ (void *)src[p], (size_t)r[i].pages << GUEST_PAGE_SHIFT };
		p += r[i].pages;
	}
	atomic_fetch_add_explicit(&l->st.pages_raw, npages, memory_order_relaxed);
	rc = mig_conn_sendv(l->conn, iov, 1 + nr);
	if (rc)
		return sender_lane_fail(l, rc, "sending: %s", strerror(-rc));
	l->buf_end[slot] = l->conn->bytes_queued;
	return 0;
}

/* The waiting data pages as one record: zstd (here or on a worker) or RAW. */
static int flush_data(struct send_lane *l)
{
	struct stream_ram_enc e;
	size_t raw = (size_t)l->nd << GUEST_PAGE_SHIFT;
	unsigned nd = l->nd, ndr = l->ndr;
	uint8_t *buf;
	ssize_t len = 0;
	bool zstd;
	int rc;

	if (!nd)
		return 0;
	rc = next_buffer(l, &buf);
	if (rc)
		return rc;
	zstd = l->zc_on && sender_want_compress(l);
	l->since_link++;
	l->ram_pages += nd;
	if (zstd && l->jobs) {
		rc = sender_compress_submit(l, cur_slot(l));
		l->nd = l->ndr = 0;
		return rc ? rc : sender_compress_reap(l, false);
	}
	if (zstd) {
		rc = stream_ram_begin(&e, buf, SEND_BUF_SIZE, STREAM_RAM_ZSTD, GUEST_PAGE_SIZE,
				      l->data_r, ndr);
		if (rc)
			return sender_lane_fail(l, rc, "encoding RAM: %s", stream_strerror(rc));
		len = sender_compress_here(l, &e, raw);
	} else {
		if (l->zc_on)
			ram_auto_note_raw(&l->autoc);
		sender_probe_done(l, raw);
	}
	l->nd = l->ndr = 0;
	if (len > 0)
		return queue_record(l, stream_ram_finish(&e, (size_t)len));
	return sender_send_raw(l, cur_slot(l), l->data_r, ndr, l->data_src, nd);
}

/* One record of the list's ranges (ZERO or SKIP). */
static int flush_nodata(struct send_lane *l, struct nodata_list *nl, enum stream_ram_encoding enc)
{
	uint8_t *buf;
	int rc;

	if (!nl->nr)
		return 0;
	rc = next_buffer(l, &buf);
	if (rc)
		return rc;
	if (enc == STREAM_RAM_ZERO)
		atomic_fetch_add_explicit(&l->st.pages_zero, nl->pages, memory_order_relaxed);
	l->ram_pages += nl->pages;
	rc = queue_record(l, stream_encode_ram(buf, SEND_BUF_SIZE, enc, GUEST_PAGE_SIZE, nl->r,
						    nl->nr, NULL, 0));
	nl->nr = 0;
	nl->pages = 0;
	return rc;
}

/* The page at gpa joins ranges r[0, *n): the last one grows, or a new one
 * starts (the caller made room). */
static void range_add(struct stream_range *r, unsigned *n, uint64_t gpa)
{
	if (extends(r, *n, gpa)) {
		r[*n - 1].pages++;
	} else {
		r[*n].gpa = gpa;
		r[(*n)++].pages = 1;
	}
}

static int add_data(struct send_lane *l, uint64_t page)
{
	int rc;

	if (l->nd == SEND_CHUNK_PAGES && (rc = flush_data(l)))
		return rc;
	l->pages_read++;
	range_add(l->data_r, &l->ndr, page_gpa(&l->rs->vm->mem, page));
	l->data_src[l->nd++] = page_hva(l->rs, page);
	return 0;
}

/* Pages from `page` on that lie in the same RAM region, so that their
 * guest physical addresses are contiguous. */
static uint64_t pages_in_region(const struct guest_mem *mem, uint64_t page)
{
	uint64_t split = mem->nregions > 1 ? mem->regions[1].offset >> GUEST_PAGE_SHIFT : 0;

	return page < split ? split - page : UINT64_MAX;
}

/* Zero and skipped pages of the whole pass share records: a range costs
 * 12 bytes and the receiver at most one madvise, however long it is.
 * Pages [page, page + n) join the list a stretch at a time, not one by
 * one: in the bulk pass most of a mostly free guest is skipped, and a
 * per-page cost there is what the pass took its time for. */
static int add_nodata(struct send_lane *l, struct nodata_list *nl, enum stream_ram_encoding enc,
		      uint64_t page, uint64_t n)
{
	const struct guest_mem *mem = &l->rs->vm->mem;

	while (n) {
		uint64_t gpa = page_gpa(mem, page), k = pages_in_region(mem, page);
		int rc;

		if ((nl->pages == STREAM_RAM_MAX_ZERO_PAGES ||
		     (nl->nr == STREAM_RAM_MAX_RANGES && !extends(nl->r, nl->nr, gpa))) &&
		    (rc = flush_nodata(l, nl, enc)))
			return rc;
		if (k > n)
			k = n;
		if (k > STREAM_RAM_MAX_ZERO_PAGES - nl->pages)
			k = STREAM_RAM_MAX_ZERO_PAGES - nl->pages;
		if (extends(nl->r, nl->nr, gpa)) {
			nl->r[nl->nr - 1].pages += (uint32_t)k;
		} else {
			nl->r[nl->nr].gpa = gpa;
			nl->r[nl->nr++].pages = (uint32_t)k;
		}
		nl->pages += k;
		page += k;
		n -= k;
	}
	return 0;
}

static int add_zero(struct send_lane *l, uint64_t page)
{
	l->pages_read++;
	return add_nodata(l, &l->zero, STREAM_RAM_ZERO, page, 1);
}

/* The bulk pass accounts for every page: what it does not send goes as
 * SKIP, so the destination can tell a complete stream from one that lost
 * RAM (docs/migration-stream.md). */
static int add_skip(struct send_lane *l, uint64_t page, uint64_t n)
{
	return add_nodata(l, &l->skip, STREAM_RAM_SKIP, page, n);
}

static bool page_discarded(const struct ram_sender *rs, uint64_t page)
{
	const struct balloon *b = rs->vm->balloon;

	return b && (b->discarded[page / 64] >> (page % 64)) & 1;
}

/* Residency of pages [lo, hi) into l->pagemap, one read. */
static int read_pagemap(struct send_lane *l, uint64_t lo, uint64_t hi)
{
	size_t len = (size_t)(hi - lo) * sizeof(uint64_t);
	off_t off = (off_t)(((uintptr_t)page_hva(l->rs, lo) >> GUEST_PAGE_SHIFT) * 8);

	if (pread(l->rs->pagemap_fd, l->pagemap, len, off) != (ssize_t)len)
		return sender_lane_fail(l, -EIO, "reading /proc/self/pagemap: %s", strerror(errno));
	return 0;
}

/* Takes the send bits of one stripe; false when there are none. */
/* Takes the send bits of one stripe; false when there are none. In the
 * bulk pass every page the guest did not hint free is taken, whatever the
 * send set says: the first sync puts every page there, and the bulk pass
 * must carry every page, so a dirty log that reports less (as get-log
 * once did) cannot leave the destination with zeroed memory. Such pages
 * are counted (bulk_unlogged, in the trace). */
static bool take_stripe(struct send_lane *l, uint64_t first, uint64_t n, bool bulk)
{
	struct ram_sender *rs = l->rs;
	_Atomic uint64_t *w = (_Atomic uint64_t *)rs->send.words + first / 64;
	_Atomic uint64_t *h = (_Atomic uint64_t *)rs->hinted.words + first / 64;
	uint64_t any = 0;

	for (uint64_t i = 0; i < bitmap_words(n); i++) {
		uint64_t t = bitmap_atomic_take_word(&w[i]);

		if (bulk) {
			uint64_t valid = n - i * 64 >= 64 ? ~0ULL : (1ULL << (n - i * 64)) - 1;
			uint64_t all = valid & ~atomic_load_explicit(&h[i], memory_order_acquire);

			l->bulk_unlogged += (uint64_t)__builtin_popcountll(all & ~t);
			t |= all;
		}
		any |= l->mask[i] = t;
	}
	return any != 0;
}

static bool taken(const struct send_lane *l, uint64_t i)
{
	return l->mask[i / 64] >> (i % 64) & 1;
}

/* Whether page p (read into the pagemap from page lo on) is in memory. */
static bool resident(const struct send_lane *l, uint64_t lo, uint64_t p)
{
	return l->pagemap[p - lo] & (PAGEMAP_PRESENT | PAGEMAP_SWAPPED);
}

/* Sends the pages of one stripe that are in the send set. The whole send
 * set was re-protected right after the sync (ram_sender_protect), so a
 * write that lands while a page is read is in the copy or dirties the
 * page again. */
static int send_stripe(struct send_lane *l, uint64_t first, uint64_t n, bool bulk)
{
	struct ram_sender *rs = l->rs;
	bool skip = bulk && rs->skip_free;
	uint64_t lo = first, hi = first + n;
	int rc;

	if ((rc = lane_check_abort(l)))
		return rc;
	if (!take_stripe(l, first, n, bulk))
		/* Only a hint clears bits of the bulk pass: all skipped. */
		return bulk ? add_skip(l, first, n) : 0;
	while (!taken(l, lo - first))
		lo++;
	while (!taken(l, hi - 1 - first))
		hi--;
	if (bulk && lo > first && (rc = add_skip(l, first, lo - first)))
		return rc;
	/* Residency is read in both modes: a page never touched (or
	 * discarded by the balloon) reads as zero and need not be read. */
	if ((rc = read_pagemap(l, lo, hi)))
		return rc;
	for (uint64_t p = lo, q; p < hi; p = q) {
		q = p + 1;
		if (!taken(l, p - first)) {
			/* Hinted free during the bulk pass: the whole run at once. */
			while (q < hi && !taken(l, q - first))
				q++;
			rc = bulk ? add_skip(l, p, q - p) : 0;
		} else if (!resident(l, lo, p)) {
			/* Never touched or discarded, so zero here: in the bulk
			 * pass the destination's memory is still zero too. */
			while (q < hi && taken(l, q - first) && !resident(l, lo, q))
				q++;
			if (skip) {
				uint64_t reported = 0;

				for (uint64_t i = p; i < q; i++)
					reported += page_discarded(rs, i);
				atomic_fetch_add_explicit(&l->st.skipped_reported, reported,
							  memory_order_relaxed);
				atomic_fetch_add_explicit(&l->st.skipped_untouched, q - p - reported,
							  memory_order_relaxed);
				rc = add_skip(l, p, q - p);
			} else {
				rc = add_nodata(l, &l->zero, STREAM_RAM_ZERO, p, q - p);
			}
		} else if (ram_page_is_zero(page_hva(rs, p), GUEST_PAGE_SIZE)) {
			rc = add_zero(l, p);
		} else {
			rc = add_data(l, p);
		}
		if (rc)
			return rc;
	}
	return bulk && hi < first + n ? add_skip(l, hi, first + n - hi) : 0;
}

static unsigned stripe_lane(const struct ram_sender *rs, uint64_t first_page)
{
	return stream_lane_of(page_gpa(&rs->vm->mem, first_page), SEND_STRIPE_SHIFT, rs->nlanes);
}

/* ITER on every connection (so none stays quiet for a whole pass), or
 * PRECOPY_DONE on connection 0. */
static int send_prefix(struct send_lane *l, const struct send_pass *p)
{
	uint8_t *buf;
	int rc;

	if (!p->iter && !(p->precopy_done && !l->index))
		return 0;
	rc = next_buffer(l, &buf);
	if (rc)
		return rc;
	return queue_record(l, p->iter ? stream_encode_iter(buf, SEND_BUF_SIZE, p->iteration)
					    : stream_encode_precopy_done(buf, SEND_BUF_SIZE));
}

/* SYNC, and its answer once the destination applied everything before. */
static int sync_lane(struct send_lane *l)
{
	struct stream_record rec;
	uint8_t *buf;
	size_t used;
	uint64_t t0;
	int rc = next_buffer(l, &buf);

	if (!rc)
		rc = queue_record(l, stream_encode_sync(buf, SEND_BUF_SIZE));
	if (!rc && (rc = mig_conn_flush(l->conn, SEND_IO_TIMEOUT_MS)))
		return sender_lane_fail(l, rc, "sending: %s", strerror(-rc));
	if (rc)
		return rc;
	t0 = now_ns();
	rc = reply_next(l->conn, l->reply, &rec, &used, SEND_IO_TIMEOUT_MS);
	l->t_wait += now_ns() - t0;
	if (rc < 0)
		return sender_lane_fail(l, rc, "destination: %s",
				 rc == -ECONNRESET ? "connection closed" : stream_strerror(rc));
	if (rec.type == STREAM_ERROR)
		rc = sender_lane_fail(l, -EPROTO, "destination refused: %.*s", rec.error.reason_len,
			       rec.error.reason);
	else if (rec.type != STREAM_ACK || rec.ack.phase != STREAM_PHASE_SYNCED || rec.ack.status)
		rc = sender_lane_fail(l, -EPROTO, "unexpected reply from the destination (type %u)",
			       rec.type);
	else
		rc = 0;
	reply_consume(l->reply, used);
	return rc;
}

int sender_lane_pass(struct send_lane *l, const struct send_pass *p)
{
	struct ram_sender *rs = l->rs;
	uint64_t t0 = now_ns(), b0 = l->conn->bytes_queued, p0 = l->ram_pages;
	double cpu0 = mig_trace_on() ? mig_trace_thread_cpu_ms() : 0;
	int rc = send_prefix(l, p);

	l->t_compress = l->t_wait = 0;
	for (uint64_t first = 0; !rc && first < rs->npages; first += SEND_STRIPE_PAGES) {
		uint64_t n = rs->npages - first < SEND_STRIPE_PAGES ? rs->npages - first
								       : SEND_STRIPE_PAGES;

		/* Tests put a fault in the middle of the bulk pass. */
		if (p->bulk && !l->index && first == rs->npages / 2 / SEND_STRIPE_PAGES *
							     SEND_STRIPE_PAGES &&
		    failpoint(rs->m->opt.fault, "source-bulk")) {
			ram_sender_shutdown(rs);
			rc = sender_lane_fail(l, -ECONNRESET, "fault injected at source-bulk");
			break;
		}

		if (stripe_lane(rs, first) == l->index)
			rc = send_stripe(l, first, n, p->bulk);
	}
	if (!rc)
		rc = flush_data(l);
	if (!rc && l->jobs)
		rc = sender_compress_reap(l, true);
	if (!rc)
		rc = flush_nodata(l, &l->zero, STREAM_RAM_ZERO);
	if (!rc)
		rc = flush_nodata(l, &l->skip, STREAM_RAM_SKIP);
	if (!rc && p->end && l->index) {
		uint8_t *buf;

		rc = next_buffer(l, &buf);
		if (!rc)
			rc = queue_record(l, stream_encode_end(buf, SEND_BUF_SIZE,
								    l->ram_pages, 0));
	}
	if (!rc && !p->end)
		rc = sync_lane(l);
	if (!rc) {
		uint64_t t1 = now_ns();

		rc = mig_conn_flush(l->conn, SEND_IO_TIMEOUT_MS);
		l->t_wait += now_ns() - t1;
		if (rc)
			rc = sender_lane_fail(l, rc, "sending: %s", strerror(-rc));
	}
	if (rc && l->jobs)
		sender_compress_abandon(l);
	note_sent(l);
	if (p->bulk && l->bulk_unlogged)
		mig_trace("lane %u: %llu pages of the bulk pass were not in the first sync's set",
			  l->index, (unsigned long long)l->bulk_unlogged);
	mig_trace("lane %u pass done in %.1f ms (its CPU %.0f ms): %llu pages, %llu bytes; compress %.1f,"
		  " waiting for the socket and the destination %.1f ms", l->index,
		  (double)(now_ns() - t0) / 1e6,
		  mig_trace_on() ? mig_trace_thread_cpu_ms() - cpu0 : 0,
		  (unsigned long long)(l->ram_pages - p0),
		  (unsigned long long)(l->conn->bytes_queued - b0), (double)l->t_compress / 1e6,
		  (double)l->t_wait / 1e6);
	return rc;
}
