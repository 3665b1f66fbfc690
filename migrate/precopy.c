/* The source side of live migration: a thread that connects to the
 * destination, sends RAM in a bulk pass and then in iterations over the
 * dirty pages, skipping the pages the guest reports as free, and finishes
 * with stop-and-copy of the remaining pages and the vCPU, VM and device
 * state. See docs/migration.md for the ordering rules. */
#include "migrate/migration.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "migrate/bitmap.h"
#include "migrate/dirty.h"
#include "migrate/ram.h"
#include "migrate/state.h"
#include "migrate/stream.h"
#include "migrate/transport.h"
#include "virtio/balloon.h"
#include "vmm/devices.h"
#include "vmm/util.h"
#include "vmm/vcpu.h"
#include "vmm/vm.h"

#define CHUNK_PAGES 256 /* 1 MiB: fewer ioctls and records per MiB */
#define NBUFS 16
#define BUF_SIZE (STREAM_HDR_SIZE + STREAM_RAM_HDR_SIZE + \
		  CHUNK_PAGES * STREAM_RAM_RANGE_SIZE + CHUNK_PAGES * GUEST_PAGE_SIZE + 4096)
#define MAX_ITERATIONS 60
#define IO_TIMEOUT_MS 30000
#define PAGEMAP_PRESENT (1ULL << 63)
#define PAGEMAP_SWAPPED (1ULL << 62)
#define DROP_CACHE_WAIT_MS 10000

/* Everything the sending thread owns. */
struct sender {
	struct migration *m;
	struct vm *vm;
	struct mig_conn conn;
	bool conn_open;
	struct dirty_log dirty;
	bool dirty_on;
	struct bitmap send;             /* pages still to send in this pass */
	_Atomic uint64_t *hinted;       /* hinted pages not yet applied */
	_Atomic bool hints_pending;
	uint64_t npages;
	int pagemap_fd;
	uint8_t *bufs[NBUFS];
	unsigned next_buf;
	uint8_t *staging;               /* data pages gathered for zstd */
	struct ram_compressor zc;
	bool zc_on;
	struct ram_auto autoc;
	bool hinting;
	bool paused;
	uint32_t section_id;
	uint32_t state_count;
	uint64_t ram_pages;
	double pages_per_s;             /* measured over the last pass */
	_Atomic unsigned throttle_pct;
	_Atomic bool throttle_stop;
	pthread_t throttler;
	bool throttler_started;
	uint64_t deadline_ns;
};

static void set_phase(struct migration *m, enum migrate_phase phase)
{
	pthread_mutex_lock(&m->lock);
	m->phase = phase;
	pthread_mutex_unlock(&m->lock);
}

static int fail(struct sender *s, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(struct sender *s, int rc, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&s->m->lock);
	if (!s->m->error[0]) {
		va_start(ap, fmt);
		vsnprintf(s->m->error, sizeof(s->m->error), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&s->m->lock);
	return rc < 0 ? rc : -EIO;
}

static int check_abort(struct sender *s)
{
	if (atomic_load(&s->m->cancel))
		return fail(s, -ECANCELED, "cancelled");
	if (s->deadline_ns && now_ns() > s->deadline_ns)
		return fail(s, -ETIMEDOUT, "timed out after %u s", s->m->opt.timeout_s);
	if (atomic_load(&s->vm->stop_reason) != VM_STOP_NONE)
		return fail(s, -ECANCELED, "the VM is stopping");
	return 0;
}

/* A record buffer that is free to fill: the pool is reused in order, and
 * all sends are waited for when it wraps. */
static int next_buffer(struct sender *s, uint8_t **buf)
{
	int rc;

	if (s->next_buf == NBUFS) {
		rc = mig_conn_flush(&s->conn, IO_TIMEOUT_MS);
		if (rc)
			return fail(s, rc, "sending: %s", strerror(-rc));
		s->next_buf = 0;
	}
	*buf = s->bufs[s->next_buf++];
	return 0;
}

static int send_record(struct sender *s, const uint8_t *buf, ssize_t len)
{
	int rc;

	if (len < 0)
		return fail(s, (int)len, "encoding a record: %s", stream_strerror((int)len));
	rc = mig_conn_send(&s->conn, buf, (size_t)len);
	if (rc)
		return fail(s, rc, "sending: %s", strerror(-rc));
	return 0;
}

static uint64_t page_gpa(const struct guest_mem *mem, uint64_t page)
{
	uint64_t off = page << GUEST_PAGE_SHIFT;

	if (mem->nregions > 1 && off >= mem->regions[1].offset)
		return mem->regions[1].gpa + (off - mem->regions[1].offset);
	return off;
}

/* Appends page to ranges, merging with the last range when adjacent. */
static void add_range(struct stream_range *r, unsigned *n, uint64_t gpa)
{
	if (*n && r[*n - 1].gpa + ((uint64_t)r[*n - 1].pages << GUEST_PAGE_SHIFT) == gpa) {
		r[*n - 1].pages++;
		return;
	}
	r[*n].gpa = gpa;
	r[*n].pages = 1;
	(*n)++;
}

static bool want_compress(struct sender *s)
{
	switch (s->m->opt.compress) {
	case COMPRESS_ZSTD: return true;
	case COMPRESS_NONE: return false;
	case COMPRESS_AUTO: break;
	}
	return ram_auto_should_compress(&s->autoc);
}

static int send_data_pages(struct sender *s, const struct stream_range *ranges, unsigned nr,
			   const uint64_t *pages, unsigned npages)
{
	struct stream_ram_enc e;
	uint8_t *buf;
	size_t raw = (size_t)npages << GUEST_PAGE_SHIFT;
	ssize_t len = -1;
	int rc = next_buffer(s, &buf);

	if (rc)
		return rc;
	if (s->zc_on && want_compress(s)) {
		for (unsigned i = 0; i < npages; i++)
			memcpy(s->staging + ((size_t)i << GUEST_PAGE_SHIFT),
			       s->vm->mem.base + (pages[i] << GUEST_PAGE_SHIFT), GUEST_PAGE_SIZE);
		rc = stream_ram_begin(&e, buf, BUF_SIZE, STREAM_RAM_ZSTD, GUEST_PAGE_SIZE, ranges, nr);
		if (rc)
			return fail(s, rc, "encoding RAM: %s", stream_strerror(rc));
		len = ram_auto_compress(&s->autoc, &s->zc, s->staging, raw, e.data,
					e.room < raw ? e.room : raw - 1);
		if (len > 0) {
			s->m->st.pages_zstd += npages;
			s->m->st.raw_bytes_compressed += raw;
			s->m->st.zstd_bytes += (uint64_t)len;
			return send_record(s, buf, stream_ram_finish(&e, (size_t)len));
		}
	} else if (s->zc_on) {
		ram_auto_note_raw(&s->autoc);
	}
	rc = stream_ram_begin(&e, buf, BUF_SIZE, STREAM_RAM_RAW, GUEST_PAGE_SIZE, ranges, nr);
	if (rc)
		return fail(s, rc, "encoding RAM: %s", stream_strerror(rc));
	for (unsigned i = 0; i < npages; i++)
		memcpy(e.data + ((size_t)i << GUEST_PAGE_SHIFT),
		       s->vm->mem.base + (pages[i] << GUEST_PAGE_SHIFT), GUEST_PAGE_SIZE);
	s->m->st.pages_raw += npages;
	return send_record(s, buf, stream_ram_finish(&e, raw));
}

static int send_zero_pages(struct sender *s, const struct stream_range *ranges, unsigned nr,
			   unsigned npages)
{
	uint8_t *buf;
	int rc = next_buffer(s, &buf);

	if (rc)
		return rc;
	s->m->st.pages_zero += npages;
	return send_record(s, buf, stream_encode_ram(buf, BUF_SIZE, STREAM_RAM_ZERO, GUEST_PAGE_SIZE,
						     ranges, nr, NULL, 0));
}

static bool page_discarded(struct sender *s, uint64_t page)
{
	struct balloon *b = s->vm->balloon;

	return b && (b->discarded[page / 64] >> (page % 64)) & 1;
}

/* Re-protects exactly the pages about to be read, in runs. */
static int clear_dirty(struct sender *s, uint64_t first, unsigned n, const bool *take)
{
	char err[200];

	for (unsigned i = 0; i < n;) {
		unsigned j = i;
		int rc;

		if (!take[i]) {
			i++;
			continue;
		}
		while (j < n && take[j])
			j++;
		rc = dirty_clear(&s->dirty, first + i, j - i, err, sizeof(err));
		if (rc)
			return fail(s, rc, "%s", err);
		i = j;
	}
	return 0;
}

/* Sends the pages of one 64-page chunk that are in the send set. In the
 * bulk pass the destination's memory is still zero, so pages that read as
 * zero without ever being touched need not travel at all. */
static int send_chunk(struct sender *s, uint64_t first, bool bulk)
{
	unsigned n = (unsigned)(s->npages - first < CHUNK_PAGES ? s->npages - first : CHUNK_PAGES);
	struct stream_range data_r[CHUNK_PAGES], zero_r[CHUNK_PAGES];
	uint64_t data_p[CHUNK_PAGES], pm[CHUNK_PAGES];
	unsigned nd = 0, ndr = 0, nz = 0, nzr = 0;
	bool take[CHUNK_PAGES] = { false };
	bool skip_free = s->m->opt.skip_free;
	int rc;

	for (unsigned i = 0; i < n; i++) {
		take[i] = bitmap_test(&s->send, first + i);
		if (take[i])
			bitmap_clear(&s->send, first + i);
	}
	rc = clear_dirty(s, first, n, take);
	if (rc)
		return rc;
	/* Residency is read in both modes: without skipping, a page that was
	 * never touched still travels (as ZERO) but need not be read. */
	if (pread(s->pagemap_fd, pm, n * sizeof(pm[0]),
			       (off_t)(((uintptr_t)s->vm->mem.base >> GUEST_PAGE_SHIFT) + first) * 8) !=
				 (ssize_t)(n * sizeof(pm[0])))
		return fail(s, -EIO, "reading /proc/self/pagemap: %s", strerror(errno));
	for (unsigned i = 0; i < n; i++) {
		uint64_t p = first + i, gpa = page_gpa(&s->vm->mem, p);

		if (!take[i])
			continue;
		if (!(pm[i] & (PAGEMAP_PRESENT | PAGEMAP_SWAPPED))) {
			/* Never touched, or discarded by the balloon: it reads as zero. */
			if (bulk && skip_free) {
				if (page_discarded(s, p))
					s->m->st.skipped_reported++;
				else
					s->m->st.skipped_untouched++;
				continue;
			}
			add_range(zero_r, &nzr, gpa);
			nz++;
		} else if (ram_page_is_zero(s->vm->mem.base + (p << GUEST_PAGE_SHIFT), GUEST_PAGE_SIZE)) {
			add_range(zero_r, &nzr, gpa);
			nz++;
		} else {
			add_range(data_r, &ndr, gpa);
			data_p[nd++] = p;
		}
	}
	s->ram_pages += nd + nz;
	if (nd && (rc = send_data_pages(s, data_r, ndr, data_p, nd)))
		return rc;
	if (nz && (rc = send_zero_pages(s, zero_r, nzr, nz)))
		return rc;
	return 0;
}

/* Auto-converge: while throttle_pct is set, this thread holds the vCPUs for
 * that share of every 50 ms. It runs beside the sender, which must not
 * slow down with them. */
static void *throttle_thread(void *arg)
{
	struct sender *s = arg;

	while (!atomic_load(&s->throttle_stop)) {
		unsigned pct = atomic_load(&s->throttle_pct);
		struct timespec on = { .tv_nsec = (long)pct * 500000L };
		struct timespec off = { .tv_nsec = (long)(100 - pct) * 500000L };

		if (pct && vm_pause(s->vm, 1000) == 0) {
			nanosleep(&on, NULL);
			vm_resume(s->vm);
		}
		nanosleep(&off, NULL);
	}
	return NULL;
}

/* Takes the hints that came since the last look: each hinted page not sent
 * yet leaves the send set and is re-protected in KVM's log now, so a write
 * after the guest reuses it shows up in the next sync. */
static int apply_hints(struct sender *s)
{
	uint64_t words = (s->npages + 63) / 64, run = 0, run_len = 0;
	char err[200];
	int rc;

	if (!s->hinted || !atomic_exchange(&s->hints_pending, false))
		return 0;
	for (uint64_t w = 0; w <= words; w++) {
		uint64_t bits = w < words ? bitmap_atomic_take_word(&s->hinted[w]) : 0;

		for (unsigned i = 0; i < 64; i++) {
			uint64_t p = w * 64 + i;
			bool take;

			if (!bits && !run_len)
				break; /* nothing here and no run to close */
			take = (bits >> i) & 1 && p < s->npages && bitmap_test(&s->send, p);
			if (take) {
				bitmap_clear(&s->send, p);
				if (!run_len)
					run = p;
				run_len++;
				continue;
			}
			if (!run_len)
				continue;
			/* One ioctl per run of hinted pages (a hint is a 4 MiB block). */
			rc = dirty_clear(&s->dirty, run, run_len, err, sizeof(err));
			if (rc)
				return fail(s, rc, "%s", err);
			s->m->st.skipped_hinted += run_len;
			run_len = 0;
		}
	}
	return 0;
}

static int send_pass(struct sender *s, bool bulk)
{
	int rc;

	for (uint64_t p = bitmap_find_next_set(&s->send, 0); p < s->npages;
	     p = bitmap_find_next_set(&s->send, (p | (CHUNK_PAGES - 1)) + 1)) {
		rc = apply_hints(s);
		if (rc)
			return rc;
		if (!bitmap_test(&s->send, p)) {
			/* The page was hinted away: look again from here. */
			p = bitmap_find_next_set(&s->send, p);
			if (p >= s->npages)
				break;
		}
		rc = check_abort(s);
		if (!rc)
			rc = send_chunk(s, p & ~(uint64_t)(CHUNK_PAGES - 1), bulk);
		if (rc)
			return rc;
		pthread_mutex_lock(&s->m->lock);
		s->m->st.bytes_wire = s->conn.bytes_sent;
		pthread_mutex_unlock(&s->m->lock);
	}
	rc = mig_conn_flush(&s->conn, IO_TIMEOUT_MS);
	s->next_buf = 0;
	return rc ? fail(s, rc, "sending: %s", strerror(-rc)) : 0;
}

static int sync_dirty(struct sender *s)
{
	char err[200];
	int rc = dirty_sync(&s->dirty, &s->send, err, sizeof(err));

	return rc ? fail(s, rc, "%s", err) : 0;
}

/* Runs on the balloon's device thread for each hinted free block. */
static void on_hint(void *opaque, uint64_t gpa, uint64_t len)
{
	struct sender *s = opaque;
	uint64_t first;

	/* Only whole blocks inside one RAM region count. */
	if (!len || !gpa_to_hva(&s->vm->mem, gpa, len))
		return;
	first = guest_mem_offset(&s->vm->mem, gpa) >> GUEST_PAGE_SHIFT;
	for (uint64_t p = first; p < first + (len >> GUEST_PAGE_SHIFT); p++)
		atomic_fetch_or(&s->hinted[p / 64], 1ULL << (p % 64));
	atomic_store(&s->hints_pending, true);
}

/* Hinting only pays off when skipped pages are harmless: with page
 * poisoning the guest expects its poison pattern in free pages. */
static void start_hinting(struct sender *s)
{
	struct balloon *b = s->vm->balloon;
	uint64_t t0 = now_ns();
	bool drop;

	if (!s->m->opt.skip_free || !b || b->poison_val)
		return;
	drop = s->m->opt.drop_guest_cache && !balloon_drop_cache_unavailable(b);
	s->hinted = calloc((s->npages + 63) / 64, sizeof(*s->hinted));
	if (s->hinted && balloon_hint_start(b, drop, on_hint, s) == 0)
		s->hinting = true;
	if (!s->hinting || !drop)
		return;
	/* The guest drops its caches before it hints. Let its round finish
	 * first (bounded), or the bulk pass sends the page cache before the
	 * hints for it arrive; a guest too slow for the bound only costs that. */
	for (int ms = 0; ms < DROP_CACHE_WAIT_MS && !atomic_load(&s->m->cancel); ms += 100)
		if (balloon_hint_wait(b, 100) == 0)
			break;
	s->m->st.guest_cache_dropped = true;
	s->m->st.drop_cache_wait_ns = now_ns() - t0;
}

/* Before the first sync: the round must end so no hint spans a sync; DONE
 * gives the guest its pages back. */
static void stop_hinting(struct sender *s)
{
	if (!s->hinting)
		return;
	balloon_hint_wait(s->vm->balloon, 200);
	/* The last hints are applied while the guest still holds the pages;
	 * after DONE it may reuse them, and a late hint would be unsafe. */
	if (s->dirty_on)
		apply_hints(s);
	balloon_hint_done(s->vm->balloon);
	free((void *)s->hinted);
	s->hinted = NULL;
	s->hinting = false;
}

static int expect_ack(struct sender *s, enum stream_phase phase)
{
	uint8_t buf[STREAM_HDR_SIZE + 2048];
	struct stream_record rec;
	size_t have = 0, used;
	int rc;

	for (;;) {
		ssize_t n;

		rc = stream_decode(buf, have, &rec, &used);
		if (rc < 0)
			return fail(s, rc, "bad reply from the destination: %s", stream_strerror(rc));
		if (rc > 0)
			break;
		if (have == sizeof(buf))
			return fail(s, -EPROTO, "reply from the destination too long");
		n = mig_conn_recv(&s->conn, buf + have, sizeof(buf) - have, IO_TIMEOUT_MS);
		if (n <= 0)
			return fail(s, n ? (int)n : -ECONNRESET, "destination: %s",
				    n ? strerror((int)-n) : "connection closed");
		have += (size_t)n;
	}
	if (rec.type == STREAM_ERROR)
		return fail(s, -EPROTO, "destination refused: %.*s", rec.error.reason_len,
			    rec.error.reason);
	if (rec.type != STREAM_ACK || rec.ack.phase != phase)
		return fail(s, -EPROTO, "unexpected reply from the destination (type %u)", rec.type);
	if (rec.ack.status)
		return fail(s, -EPROTO, "destination refused: %.*s", rec.ack.reason_len,
			    rec.ack.reason);
	return 0;
}

static int setup(struct sender *s)
{
	struct transport_addr addr;
	struct stream_hello hello = { 0 };
	char err[256], devices[STREAM_MAX_DEVICES_LEN + 1];
	uint8_t buf[512];
	int fd, rc;

	if (transport_parse_uri(s->m->opt.uri, &addr, err, sizeof(err)))
		return fail(s, -EINVAL, "%s", err);
	fd = transport_connect(&addr, 10000, err, sizeof(err));
	if (fd < 0)
		return fail(s, fd, "%s", err);
	rc = mig_conn_init(&s->conn, fd, 64);
	if (rc) {
		close(fd);
		return fail(s, rc, "io_uring: %s", strerror(-rc));
	}
	s->conn_open = true;
	if (vm_device_set(s->vm, devices, sizeof(devices)) < 0)
		return fail(s, -ENOSPC, "too many devices for the migration stream");
	hello.flags = s->m->opt.compress != COMPRESS_NONE ? STREAM_HELLO_ZSTD : 0;
	hello.page_size = GUEST_PAGE_SIZE;
	hello.nr_vcpus = s->vm->ncpus;
	hello.ram_size = s->vm->mem.size;
	hello.devices = devices;
	hello.devices_len = (uint16_t)strlen(devices);
	rc = send_record(s, buf, stream_encode_hello(buf, sizeof(buf), &hello));
	if (!rc)
		rc = mig_conn_flush(&s->conn, IO_TIMEOUT_MS);
	if (!rc)
		rc = expect_ack(s, STREAM_PHASE_SETUP);
	if (rc)
		return rc ? rc : fail(s, rc, "sending: %s", strerror(-rc));
	rc = dirty_init(&s->dirty, s->vm->fd, &s->vm->mem, DIRTY_MODE_AUTO, err, sizeof(err));
	if (!rc) {
		s->dirty_on = true;
		rc = dirty_start(&s->dirty, err, sizeof(err));
	}
	if (rc)
		return fail(s, rc, "%s", err);
	/* Only now, with dirty logging on, may hints remove pages. */
	start_hinting(s);
	return 0;
}

static int send_state(struct sender *s, const char *name, uint32_t instance,
		      struct state_writer *w)
{
	uint8_t *buf;
	size_t cap = w->len + 256;
	int rc;

	if (w->error)
		return fail(s, w->error, "saving %s state: %s", name, strerror(-w->error));
	buf = malloc(cap);
	if (!buf)
		return fail(s, -ENOMEM, "out of memory");
	rc = send_record(s, buf, stream_encode_state(buf, cap, name, instance, STATE_SECTION_VERSION,
						     ++s->section_id, w->buf, w->len));
	if (!rc) /* the buffer is freed right away: wait for it */
		rc = mig_conn_flush(&s->conn, IO_TIMEOUT_MS);
	free(buf);
	s->state_count++;
	return rc > 0 ? -EIO : rc;
}

static int save_all_state(struct sender *s)
{
	struct state_writer w;
	char err[256];
	int rc;

	state_writer_init(&w);
	rc = state_save_vm(s->vm->fd, &w, err, sizeof(err));
	rc = rc ? fail(s, rc, "%s", err) : send_state(s, "vm", 0, &w);
	for (unsigned i = 0; !rc && i < s->vm->ncpus; i++) {
		state_writer_free(&w);
		state_writer_init(&w);
		rc = state_save_vcpu(s->vm->kvm.fd, s->vm->vcpus[i].fd, &w, err, sizeof(err));
		rc = rc ? fail(s, rc, "%s", err) : send_state(s, "vcpu", i, &w);
	}
	if (!rc) {
		state_writer_free(&w);
		state_writer_init(&w);
		uart_save(&s->vm->uart, &w);
		rc = send_state(s, "uart", 0, &w);
	}
	for (unsigned i = 0; !rc && i < s->vm->nvirtio; i++) {
		struct virtio_dev *dev = s->vm->virtio[i];

		state_writer_free(&w);
		state_writer_init(&w);
		rc = virtio_save(dev, &w);
		rc = rc ? fail(s, rc, "saving %s%u state", dev->ops->name, dev->instance)
			: send_state(s, dev->ops->name, dev->instance, &w);
	}
	state_writer_free(&w);
	return rc;
}

static void stop_throttle(struct sender *s)
{
	if (!s->throttler_started)
		return;
	atomic_store(&s->throttle_stop, true);
	pthread_join(s->throttler, NULL);
	s->throttler_started = false;
}

static int stop_and_copy(struct sender *s)
{
	uint8_t buf[64];
	int rc;

	set_phase(s->m, MIGRATE_STOP_COPY);
	stop_throttle(s);
	s->m->st.paused_ns = now_ns();
	rc = vm_pause(s->vm, 5000);
	if (rc)
		return fail(s, rc, "cannot pause the vCPUs: %s", strerror(-rc));
	s->paused = true;
	/* Devices answer their requests in flight here, before the last sync. */
	rc = vm_virtio_pause(s->vm);
	if (rc)
		return fail(s, rc, "cannot pause the devices: %s", strerror(-rc));
	rc = sync_dirty(s);
	if (!rc)
		rc = send_pass(s, false);
	if (!rc)
		rc = send_record(s, buf, stream_encode_precopy_done(buf, sizeof(buf)));
	if (!rc)
		rc = save_all_state(s);
	if (!rc)
		rc = send_record(s, buf, stream_encode_end(buf, sizeof(buf), s->ram_pages, s->state_count));
	if (!rc) {
		rc = mig_conn_flush(&s->conn, IO_TIMEOUT_MS);
		if (rc)
			rc = fail(s, rc, "sending: %s", strerror(-rc));
	}
	if (!rc)
		rc = expect_ack(s, STREAM_PHASE_PRECOPY_DONE);
	if (!rc)
		rc = expect_ack(s, STREAM_PHASE_COMPLETE);
	return rc;
}

static int precopy(struct sender *s)
{
	uint64_t prev = UINT64_MAX;
	unsigned stuck = 0;
	uint8_t buf[64];
	int rc;

	set_phase(s->m, MIGRATE_BULK);
	rc = sync_dirty(s); /* with INITIALLY_SET: every page */
	if (!rc) {
		uint64_t t0 = now_ns(), n = bitmap_count(&s->send);

		rc = send_pass(s, true);
		if (!rc && now_ns() > t0)
			s->pages_per_s = (double)n * 1e9 / (double)(now_ns() - t0);
	}
	stop_hinting(s);
	if (rc)
		return rc;
	set_phase(s->m, MIGRATE_ITERATE);
	for (;;) {
		uint64_t t0 = now_ns(), sent0 = s->conn.bytes_sent, dirty, elapsed;
		double est_ms;

		rc = check_abort(s);
		if (!rc)
			rc = sync_dirty(s);
		if (rc)
			return rc;
		dirty = bitmap_count(&s->send);
		/* Pages per second through the whole path (read, zero check,
		 * compress, send): zero pages cost no bandwidth but do cost time. */
		est_ms = s->pages_per_s > 0 ? (double)dirty * 1000.0 / s->pages_per_s : 1e9;
		pthread_mutex_lock(&s->m->lock);
		s->m->st.remaining_pages = dirty;
		pthread_mutex_unlock(&s->m->lock);
		if (est_ms <= s->m->opt.downtime_ms || s->m->st.iterations >= MAX_ITERATIONS)
			return stop_and_copy(s);
		/* Auto-converge: iterations that stop shrinking throttle the vCPUs. */
		if (dirty * 10 >= prev * 9 && ++stuck >= 2 && s->m->st.throttle_pct < 90) {
			s->m->st.throttle_pct += 20;
			atomic_store(&s->throttle_pct, s->m->st.throttle_pct);
			if (!s->throttler_started)
				s->throttler_started =
					pthread_create(&s->throttler, NULL, throttle_thread, s) == 0;
			stuck = 0;
		}
		prev = dirty;
		s->m->st.iterations++;
		rc = send_record(s, buf, stream_encode_iter(buf, sizeof(buf), s->m->st.iterations));
		if (!rc)
			rc = send_pass(s, false);
		if (rc)
			return rc;
		elapsed = now_ns() - t0;
		if (elapsed && dirty)
			s->pages_per_s = (double)dirty * 1e9 / (double)elapsed;
		if (elapsed) {
			pthread_mutex_lock(&s->m->lock);
			s->m->st.dirty_pages_per_s = (double)dirty * 1e9 / (double)elapsed;
			if (s->conn.bytes_sent > sent0)
				s->m->st.bandwidth_bps =
					(double)(s->conn.bytes_sent - sent0) * 1e9 / (double)elapsed;
			pthread_mutex_unlock(&s->m->lock);
		}
	}
}

static int sender_init(struct sender *s, struct migration *m)
{
	memset(s, 0, sizeof(*s));
	s->m = m;
	s->vm = m->vm;
	s->npages = guest_mem_pages(&m->vm->mem);
	s->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (s->pagemap_fd < 0)
		return fail(s, -errno, "cannot open /proc/self/pagemap: %s", strerror(errno));
	if (bitmap_alloc(&s->send, s->npages))
		return fail(s, -ENOMEM, "out of memory");
	for (unsigned i = 0; i < NBUFS; i++)
		if (!(s->bufs[i] = malloc(BUF_SIZE)))
			return fail(s, -ENOMEM, "out of memory");
	s->staging = malloc(CHUNK_PAGES * GUEST_PAGE_SIZE);
	if (!s->staging)
		return fail(s, -ENOMEM, "out of memory");
	if (m->opt.compress != COMPRESS_NONE) {
		if (ram_compressor_init(&s->zc, 1))
			return fail(s, -ENOMEM, "zstd: cannot create a compression context");
		/* The record's crc32 already covers the frame on the wire. */
		ram_compressor_set_checksum(&s->zc, false);
		s->zc_on = true;
		ram_auto_init(&s->autoc);
	}
	if (m->opt.timeout_s)
		s->deadline_ns = now_ns() + (uint64_t)m->opt.timeout_s * 1000000000ULL;
	return 0;
}

static void sender_cleanup(struct sender *s, bool ok)
{
	char err[200];

	stop_throttle(s);
	stop_hinting(s);
	if (s->dirty_on) {
		dirty_stop(&s->dirty, err, sizeof(err));
		dirty_destroy(&s->dirty);
	}
	if (!ok && s->paused) {
		vm_virtio_resume(s->vm);
		vm_resume(s->vm);
	}
	if (s->conn_open) {
		if (!ok) {
			uint8_t buf[512];
			ssize_t len = stream_encode_error(buf, sizeof(buf), 1, s->m->error);

			if (len > 0 && !mig_conn_send(&s->conn, buf, (size_t)len))
				mig_conn_flush(&s->conn, 1000);
		}
		s->m->st.bytes_wire = s->conn.bytes_sent;
		mig_conn_close(&s->conn);
	}
	if (s->zc_on)
		ram_compressor_free(&s->zc);
	for (unsigned i = 0; i < NBUFS; i++)
		free(s->bufs[i]);
	free(s->staging);
	free((void *)s->hinted);
	bitmap_free(&s->send);
	if (s->pagemap_fd > 0)
		close(s->pagemap_fd);
}

static void *migrate_thread(void *arg)
{
	struct migration *m = arg;
	struct sender s;
	int rc;

	pthread_setname_np(pthread_self(), "migrate");
	set_phase(m, MIGRATE_SETUP);
	rc = sender_init(&s, m);
	if (!rc)
		rc = setup(&s);
	m->st.setup_ns = now_ns();
	if (!rc)
		rc = precopy(&s);
	sender_cleanup(&s, rc == 0);
	pthread_mutex_lock(&m->lock);
	m->st.end_ns = now_ns();
	m->phase = rc == 0 ? MIGRATE_COMPLETED : rc == -ECANCELED ? MIGRATE_CANCELLED : MIGRATE_FAILED;
	if (rc == 0) {
		/* Give `vmm migrate` a moment to read the summary before we exit. */
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 5;
		while (!m->final_seen &&
		       pthread_cond_timedwait(&m->cond, &m->lock, &ts) != ETIMEDOUT)
			;
	}
	pthread_mutex_unlock(&m->lock);
	if (rc == 0)
		vm_request_stop(m->vm, VM_STOP_MIGRATED, 0);
	return NULL;
}

int migrate_start(struct vm *vm, const struct migrate_options *opt, char *err, size_t errlen)
{
	struct migration *m = vm->migration;
	int rc;

	if (m && m->phase != MIGRATE_FAILED && m->phase != MIGRATE_CANCELLED) {
		snprintf(err, errlen, "a migration is already running or done");
		return -EBUSY;
	}
	if (m) {
		pthread_join(m->thread, NULL);
		free(m);
	}
	m = calloc(1, sizeof(*m));
	if (!m) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	m->vm = vm;
	m->opt = *opt;
	pthread_mutex_init(&m->lock, NULL);
	pthread_cond_init(&m->cond, NULL);
	m->st.start_ns = now_ns();
	m->phase = MIGRATE_SETUP;
	vm->migration = m;
	rc = pthread_create(&m->thread, NULL, migrate_thread, m);
	if (rc) {
		vm->migration = NULL;
		free(m);
		snprintf(err, errlen, "cannot start the migration thread");
		return -rc;
	}
	m->thread_started = true;
	return 0;
}

int migrate_cancel(struct vm *vm)
{
	if (!vm->migration)
		return -ENOENT;
	atomic_store(&vm->migration->cancel, true);
	return 0;
}

void migrate_destroy(struct vm *vm)
{
	struct migration *m = vm->migration;

	if (!m)
		return;
	atomic_store(&m->cancel, true);
	pthread_mutex_lock(&m->lock);
	m->final_seen = true;
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);
	if (m->thread_started)
		pthread_join(m->thread, NULL);
	free(m);
	vm->migration = NULL;
}
