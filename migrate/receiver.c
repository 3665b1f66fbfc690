/* The destination's RAM path: lanes, in-place record decoding and page
 * writes (see receiver.h). */
#include "migrate/receiver.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "migrate/failpoint.h"
#include "migrate/trace.h"
#include "vmm/util.h"
#include "vmm/vm.h"

#define RECV_SLICE_MS 500        /* how often a waiting lane looks at the others */
#define RECV_COMPACT (1u << 20) /* undecoded bytes move to the front past this offset */
#define RECV_AHEAD 8192          /* read past the record in hand: the next header and head */
/* The longest head of a RAM record: header, RAM header, ranges. */
#define RAM_HEAD_MAX (STREAM_HDR_SIZE + STREAM_RAM_HDR_SIZE + \
		      STREAM_RAM_MAX_RANGES * STREAM_RAM_RANGE_SIZE)

int recv_shared_init(struct recv_shared *rx, struct vm *vm)
{
	memset(rx, 0, sizeof(*rx));
	if (bitmap_alloc(&rx->covered, guest_mem_pages(&vm->mem)))
		return -ENOMEM;
	atomic_store(&rx->progress_ns, now_ns());
	rx->vm = vm;
	for (unsigned i = 0; i < vm->mem.nregions; i++)
		rx->regions[i] = (struct stream_region){ vm->mem.regions[i].gpa,
							 vm->mem.regions[i].size };
	rx->layout = (struct stream_layout){ GUEST_PAGE_SIZE, vm->mem.nregions, rx->regions };
	rx->nlanes = 1;
	pthread_mutex_init(&rx->lock, NULL);
	return 0;
}

void recv_shared_free(struct recv_shared *rx)
{
	bitmap_free(&rx->covered);
}

uint64_t recv_missing_pages(const struct recv_shared *rx)
{
	return rx->covered.nbits - bitmap_count(&rx->covered);
}

int recv_fail(struct recv_shared *rx, int rc, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&rx->lock);
	if (!rx->err[0]) {
		va_start(ap, fmt);
		vsnprintf(rx->err, sizeof(rx->err), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&rx->lock);
	atomic_store(&rx->abort, true);
	return rc < 0 ? rc : -EIO;
}

/* "connection 2: " when there are several. */
static const char *where(const struct recv_lane *l, char *buf, size_t len)
{
	if (l->rx->nlanes > 1)
		snprintf(buf, len, "connection %u: ", l->index);
	else
		buf[0] = '\0';
	return buf;
}

int recv_lane_init(struct recv_shared *rx, struct recv_lane *l, unsigned index, int fd)
{
	int rc;

	memset(l, 0, sizeof(*l));
	l->rx = rx;
	l->index = index;
	l->buf = ram_buf_alloc(RECV_BUF_SIZE);
	l->scratch = ram_buf_alloc(STREAM_RAM_MAX_BYTES);
	if (!l->buf || !l->scratch) {
		recv_lane_free(l);
		return -ENOMEM;
	}
	rc = ram_decompressor_init(&l->zd);
	if (rc) {
		recv_lane_free(l);
		return rc;
	}
	l->zd_on = true;
	rc = mig_conn_init(&l->conn, fd, 16);
	if (rc) {
		recv_lane_free(l);
		return rc;
	}
	l->conn_open = true;
	return 0;
}

void recv_lane_free(struct recv_lane *l)
{
	if (l->conn_open)
		mig_conn_close(&l->conn);
	l->conn_open = false;
	if (l->zd_on)
		ram_decompressor_free(&l->zd);
	l->zd_on = false;
	ram_buf_free(l->buf, RECV_BUF_SIZE);
	ram_buf_free(l->scratch, STREAM_RAM_MAX_BYTES);
	l->buf = l->scratch = NULL;
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

/* How much to read next. Little past the record in hand: the pages of a
 * RAW record are received straight into guest memory once its head is
 * here (recv_load_ram), and every byte of them read into the buffer
 * instead is copied once more. So a RAM record is read up to its longest
 * possible head, and anything else to its end, plus RECV_AHEAD for the
 * next header. The undecoded bytes (at most one record's worth) move to
 * the front once they are past the first RECV_COMPACT bytes: every page
 * of the buffer costs a fault the first time it is written, so the buffer
 * is kept to the few MiB in use rather than all of it. */
static size_t make_room(struct recv_lane *l)
{
	size_t need = STREAM_HDR_SIZE, pending = l->have - l->start, want;
	bool ram = false;

	if (pending >= STREAM_HDR_SIZE) { /* the decoder has judged this header */
		need += rd32(l->buf + l->start + 4);
		ram = rd16(l->buf + l->start) == STREAM_RAM;
	}
	if (l->start >= RECV_COMPACT || l->start + need + RECV_AHEAD > RECV_BUF_SIZE) {
		memmove(l->buf, l->buf + l->start, pending);
		l->start = 0;
		l->have = pending;
	}
	if (ram && need > RAM_HEAD_MAX && pending < RAM_HEAD_MAX)
		want = RAM_HEAD_MAX - pending;
	else if (pending < need)
		want = need - pending + RECV_AHEAD;
	else
		want = RECV_AHEAD;
	return want < RECV_BUF_SIZE - l->have ? want : RECV_BUF_SIZE - l->have;
}

/* Some bytes into iov[0, n), looking at the other lanes meanwhile: their
 * count, or an error once no connection brought anything for timeout_ms. */
static ssize_t receive_some(struct recv_lane *l, struct iovec *iov, unsigned n, int timeout_ms)
{
	uint64_t start = now_ns(), limit = (uint64_t)timeout_ms * 1000000ULL;
	char w[32];

	for (;;) {
		uint64_t now = now_ns(), last = atomic_load(&l->rx->progress_ns);
		uint64_t deadline = (last > start ? last : start) + limit;
		int slice = RECV_SLICE_MS;
		ssize_t got;

		if (atomic_load(&l->rx->abort))
			return -ESHUTDOWN;
		if (now >= deadline)
			return recv_fail(l->rx, -ETIMEDOUT, "%snothing from the source for %.1f s",
					 where(l, w, sizeof(w)), timeout_ms / 1000.0);
		if ((uint64_t)slice * 1000000ULL > deadline - now)
			slice = (int)((deadline - now) / 1000000ULL) + 1;
		got = n == 1 ? mig_conn_recv(&l->conn, iov[0].iov_base, iov[0].iov_len, slice)
			     : mig_conn_recvv(&l->conn, iov, n, slice);
		l->t_wait += now_ns() - now;
		if (got > 0) {
			atomic_store(&l->rx->progress_ns, now_ns());
			return got;
		}
		if (got == 0)
			return recv_fail(l->rx, -ECONNRESET,
					 "%sthe migration stream ended early (source gone?)",
					 where(l, w, sizeof(w)));
		if (got != -ETIMEDOUT)
			return recv_fail(l->rx, (int)got, "%sreceiving the migration stream: %s",
					 where(l, w, sizeof(w)), strerror((int)-got));
	}
}

/* Up to len more bytes into the buffer. */
static int receive_more(struct recv_lane *l, size_t len, int timeout_ms)
{
	struct iovec iov = { l->buf + l->have, len };
	ssize_t got = receive_some(l, &iov, 1, timeout_ms);

	if (got < 0)
		return (int)got;
	l->have += (size_t)got;
	return 0;
}

int recv_lane_next(struct recv_lane *l, struct stream_record *rec, int timeout_ms)
{
	char w[32];

	if (l->pending)
		return recv_fail(l->rx, -EPROTO, "%sa RAM record's pages were never received",
				 where(l, w, sizeof(w)));
	l->start += l->used;
	l->used = 0;
	if (l->start == l->have)
		l->start = l->have = 0;
	for (;;) {
		size_t used;
		uint64_t t0 = now_ns();
		int rc = stream_decode(l->buf + l->start, l->have - l->start, rec, &used);

		/* Not all here: a RAW record's pages need only its head. */
		if (!rc)
			rc = stream_decode_ram_head(l->buf + l->start, l->have - l->start, rec,
						    &used);
		l->t_decode += now_ns() - t0;
		if (rc < 0)
			return recv_fail(l->rx, rc, "%sbad migration stream: %s",
					 where(l, w, sizeof(w)), stream_strerror(rc));
		if (rc > 0 && rec->type == STREAM_RAM && !rec->ram.data &&
		    rec->ram.encoding == STREAM_RAM_RAW) {
			l->pending = true;
			l->pend_data = l->buf + l->start + used;
			l->pend_have = l->have - l->start - used;
			used = l->have - l->start;
		}
		if (rc > 0) {
			l->used = used;
			l->bytes += used;
			l->records++;
			return rc;
		}
		rc = receive_more(l, make_room(l), timeout_ms);
		if (rc)
			return rc;
	}
}

/* The pages of a RAW record whose head came alone: those the buffer holds
 * already, then the rest from the socket straight into guest memory. The
 * ranges were checked: each lies inside one region of RAM. */
static int receive_pages(struct recv_lane *l, const struct stream_record *rec)
{
	struct vm *vm = l->rx->vm;
	const uint8_t *src = l->pend_data;
	size_t have = l->pend_have, left = rec->ram.data_len;
	struct iovec *iov = l->iov;
	unsigned n = 0;
	char w[32];

	l->pending = false;
	for (unsigned i = 0; i < rec->ram.nr_ranges; i++) {
		struct stream_range r = stream_ram_range(rec, i);
		size_t len = (size_t)r.pages << GUEST_PAGE_SHIFT, c = have < len ? have : len;
		uint8_t *dst = gpa_to_hva(&vm->mem, r.gpa, len);

		if (!dst)
			return recv_fail(l->rx, -EINVAL, "%sRAM range outside guest memory",
					 where(l, w, sizeof(w)));
		memcpy(dst, src, c);
		src += c;
		have -= c;
		left -= c;
		if (c < len)
			iov[n++] = (struct iovec){ dst + c, len - c };
	}
	while (left) {
		uint64_t t0 = now_ns();
		ssize_t got = receive_some(l, iov, n, mig_timeout_ms(RECV_TIMEOUT_MS));

		l->t_write -= now_ns() - t0; /* counted as waiting */
		if (got < 0)
			return (int)got;
		if ((size_t)got > left)
			return recv_fail(l->rx, -EIO, "%sreceived more than asked", where(l, w, sizeof(w)));
		mig_iov_advance(&iov, &n, (size_t)got);
		left -= (size_t)got;
		l->bytes += (uint64_t)got;
		l->bytes_direct += (uint64_t)got;
	}
	return 0;
}

int recv_load_ram(struct recv_lane *l, const struct stream_record *rec)
{
	const struct stream_ram *ram = &rec->ram;
	const uint8_t *data = ram->data;
	struct vm *vm = l->rx->vm;
	char w[32];
	int rc = stream_check_ram_ranges(rec, &l->rx->layout);
	uint64_t t0 = now_ns();

	if (rc)
		return recv_fail(l->rx, rc, "%sbad RAM record: %s", where(l, w, sizeof(w)),
				 stream_strerror(rc));
	/* Checked above: every range lies inside one region of RAM. */
	for (unsigned i = 0; i < ram->nr_ranges; i++) {
		struct stream_range r = stream_ram_range(rec, i);

		bitmap_atomic_set_range(&l->rx->covered,
					guest_mem_offset(&vm->mem, r.gpa) >> GUEST_PAGE_SHIFT, r.pages);
	}
	if (ram->encoding == STREAM_RAM_SKIP)
		return 0;
	if (ram->encoding == STREAM_RAM_RAW && !ram->data) {
		rc = receive_pages(l, rec);
		l->t_write += now_ns() - t0;
		return rc;
	}
	if (ram->encoding == STREAM_RAM_ZSTD) {
		struct stream_range r = stream_ram_range(rec, 0);
		/* One range: decompressed where the pages go. */
		uint8_t *dst = ram->nr_ranges == 1
				       ? gpa_to_hva(&vm->mem, r.gpa, (size_t)ram->raw_len)
				       : l->scratch;
		ssize_t n;

		if (!dst)
			return recv_fail(l->rx, -EINVAL, "%sRAM range outside guest memory",
					 where(l, w, sizeof(w)));
		n = ram_decompress(&l->zd, ram->data, ram->data_len, dst, (size_t)ram->raw_len);
		if (n < 0)
			return recv_fail(l->rx, (int)n, "%sbad compressed RAM: %s",
					 where(l, w, sizeof(w)), ram_strerror((int)n));
		if (ram->nr_ranges == 1) {
			l->t_write += now_ns() - t0;
			return 0;
		}
		data = l->scratch;
	}
	for (unsigned i = 0; i < ram->nr_ranges; i++) {
		struct stream_range range = stream_ram_range(rec, i);
		size_t len = (size_t)range.pages << GUEST_PAGE_SHIFT;
		uint8_t *dst = gpa_to_hva(&vm->mem, range.gpa, len);

		if (!dst)
			return recv_fail(l->rx, -EINVAL, "%sRAM range outside guest memory",
					 where(l, w, sizeof(w)));
		if (ram->encoding == STREAM_RAM_ZERO) {
			/* Dropping the pages makes them read as zero without touching
			 * them: a fresh destination has nothing to fault in. */
			if (madvise(dst, len, MADV_DONTNEED))
				memset(dst, 0, len);
		} else {
			memcpy(dst, data, len);
			data += len;
		}
	}
	l->t_write += now_ns() - t0;
	return 0;
}

void recv_lane_trace(const struct recv_lane *l, const char *what)
{
	mig_trace("destination: connection %u %s: %llu records, %llu bytes (%llu of them received"
		  " straight into guest memory); waiting %.1f ms, decoding %.1f ms, writing pages"
		  " %.1f ms", l->index, what,
		  (unsigned long long)l->records, (unsigned long long)l->bytes,
		  (unsigned long long)l->bytes_direct,
		  (double)l->t_wait / 1e6, (double)l->t_decode / 1e6, (double)l->t_write / 1e6);
}

int recv_lane_ack(struct recv_lane *l, enum stream_phase phase)
{
	uint8_t buf[64];
	ssize_t len = stream_encode_ack(buf, sizeof(buf), phase, 0, NULL);
	char w[32];
	int rc = len < 0 ? (int)len : mig_conn_send(&l->conn, buf, (size_t)len);

	if (!rc)
		rc = mig_conn_flush(&l->conn, mig_timeout_ms(RECV_TIMEOUT_MS));
	return rc ? recv_fail(l->rx, rc, "%sreplying to the source: %s", where(l, w, sizeof(w)),
			      strerror(-rc))
		  : 0;
}

static void *lane_thread(void *arg)
{
	struct recv_lane *l = arg;
	struct stream_record rec;
	char name[16], w[32];
	int rc;

	snprintf(name, sizeof(name), "incoming-%u", l->index);
	pthread_setname_np(pthread_self(), name);
	for (;;) {
		rc = recv_lane_next(l, &rec, mig_timeout_ms(RECV_TIMEOUT_MS));
		if (rc < 0)
			break;
		if (rec.type == STREAM_ERROR) {
			rc = recv_fail(l->rx, -EPROTO, "the source gave up: %.*s",
				       rec.error.reason_len, rec.error.reason);
			break;
		}
		rc = stream_seq_next(&l->seq, &rec);
		if (rc) {
			rc = recv_fail(l->rx, rc, "%srecords out of order: %s",
				       where(l, w, sizeof(w)), stream_strerror(rc));
			break;
		}
		if (rec.type == STREAM_END) {
			recv_lane_trace(l, "END");
			break;
		}
		if (rec.type == STREAM_SYNC && (rc = recv_lane_ack(l, STREAM_PHASE_SYNCED)))
			break;
		/* The checker lets only RAM, ITER, SYNC and END through. */
		if (rec.type == STREAM_RAM && (rc = recv_load_ram(l, &rec)))
			break;
	}
	l->rc = rc;
	return NULL;
}

int recv_lane_start(struct recv_lane *l)
{
	int rc = thread_create(&l->thread, lane_thread, l);

	if (rc)
		return recv_fail(l->rx, -rc, "cannot start a receiving thread");
	l->thread_started = true;
	return 0;
}

int recv_lane_join(struct recv_lane *l)
{
	if (!l->thread_started)
		return l->rc;
	pthread_join(l->thread, NULL);
	l->thread_started = false;
	return l->rc;
}

void recv_ram_begin(struct vm *vm)
{
	(void)madvise(vm->mem.base, vm->mem.size, MADV_NOHUGEPAGE);
}

void recv_ram_end(struct vm *vm)
{
	/* khugepaged may collapse the received pages later; MADV_HUGEPAGE is
	 * the only way back from MADV_NOHUGEPAGE. */
	(void)madvise(vm->mem.base, vm->mem.size, MADV_HUGEPAGE);
}
