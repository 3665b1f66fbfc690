/* The source side of live migration: a thread that connects to the
 * destination (one connection, or --connections N), sends RAM in a bulk
 * pass and then in iterations over the dirty pages, skipping the pages the
 * guest reports as free, and finishes with stop-and-copy of the remaining
 * pages and the vCPU, VM and device state. This file is the coordinator:
 * setup, dirty-log syncs, hint rounds, convergence, state; the RAM itself
 * goes through the lanes of sender.c, one per connection. See
 * docs/migration.md for the ordering rules. */
#include "migrate/migration.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "migrate/bitmap.h"
#include "migrate/dirty.h"
#include "migrate/failpoint.h"
#include "migrate/ram.h"
#include "migrate/sender.h"
#include "migrate/state.h"
#include "migrate/stream.h"
#include "migrate/trace.h"
#include "migrate/transport.h"
#include "virtio/balloon.h"
#include "vmm/devices.h"
#include "vmm/util.h"
#include "vmm/vcpu.h"
#include "vmm/vm.h"

#define MAX_ITERATIONS 60
#define IO_TIMEOUT_MS mig_timeout_ms(SEND_IO_TIMEOUT_MS)
#define DROP_CACHE_WAIT_MS 10000
#define THROTTLE_STEP 20
#define THROTTLE_MAX 99 /* as QEMU's default: the guest always gets some time */

/* Everything the coordinating thread owns. */
struct sender {
	struct migration *m;
	struct vm *vm;
	struct mig_conn conn;           /* connection 0: control records, and lane 0's RAM */
	bool conn_open;
	struct reply_buf reply;         /* the destination's records on connection 0 */
	struct dirty_log dirty;
	bool dirty_on;
	struct ram_sender rs;           /* the lanes, and the send bitmap */
	bool hinting;                   /* a hint round runs */
	bool hint_due;                  /* a round ran: DONE is due */
	uint64_t hinted_before;         /* pages hinted out before this round */
	bool paused;
	bool committed;                 /* COMMIT is (being) sent: never resume from here */
	uint64_t session;
	uint32_t section_id;
	uint32_t state_count;
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

/* A fault injected at point with the action "reset": every connection goes
 * down as a reset link would take it, and the migration fails. */
static int inject(struct sender *s, const char *point)
{
	if (!failpoint(s->m->opt.fault, point))
		return 0;
	ram_sender_shutdown(&s->rs);
	return fail(s, -ECONNRESET, "fault injected at %s", point);
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

/* The dirty pages into the send set, and all of them re-protected at
 * once: from here any write to any page reaches the next sync. */
static int sync_dirty(struct sender *s)
{
	char err[200];
	int rc = dirty_sync(&s->dirty, &s->rs.send, err, sizeof(err));

	if (!rc && !s->paused)
		rc = ram_sender_protect(&s->rs, err, sizeof(err));
	return rc ? fail(s, rc, "%s", err) : 0;
}

/* Writes to the figures `vmm migrate` reads, under their lock. */
#define STAT_SET(s, stmt)                        \
	do {                                     \
		pthread_mutex_lock(&(s)->m->lock);   \
		stmt;                            \
		pthread_mutex_unlock(&(s)->m->lock); \
	} while (0)

/* Auto-converge: while throttle_pct is set, this thread holds the vCPUs for
 * that share of every 50 ms, and counts the time it held them (the guest
 * is stopped then too, though no downtime figure shows it). It runs beside
 * the sender, which must not slow down with them. */
static void *throttle_thread(void *arg)
{
	struct sender *s = arg;

	while (!atomic_load(&s->throttle_stop)) {
		unsigned pct = atomic_load(&s->throttle_pct);
		struct timespec on = { .tv_nsec = (long)pct * 500000L };
		struct timespec off = { .tv_nsec = (long)(100 - pct) * 500000L };

		if (pct && vm_pause(s->vm, VM_PAUSE_THROTTLE, 1000) == 0) {
			uint64_t t0 = now_ns();

			nanosleep(&on, NULL);
			vm_resume(s->vm, VM_PAUSE_THROTTLE);
			STAT_SET(s, s->m->st.throttled_ns += now_ns() - t0);
		}
		nanosleep(&off, NULL);
	}
	return NULL;
}

/* Runs on the balloon's device thread for each hinted free block. Only
 * the whole pages of [gpa, gpa + len) count, and only inside one RAM
 * region. */
static void on_hint(void *opaque, uint64_t gpa, uint64_t len)
{
	struct sender *s = opaque;
	uint64_t first, last;

	if (!len || !gpa_to_hva(&s->vm->mem, gpa, len))
		return;
	first = (guest_mem_offset(&s->vm->mem, gpa) + GUEST_PAGE_SIZE - 1) >> GUEST_PAGE_SHIFT;
	last = (guest_mem_offset(&s->vm->mem, gpa) + len) >> GUEST_PAGE_SHIFT;
	if (last > first)
		ram_sender_hint(&s->rs, first, last - first);
}

/* Hinting only pays off when skipped pages are harmless: with page
 * poisoning the guest expects its poison pattern in free pages. A round
 * starts only while dirty logging is on and never spans a sync: a hint
 * may only remove a page from the send set if any later write to it is
 * sure to show up in the next sync. */
static void hint_round_start(struct sender *s)
{
	struct balloon *b = s->vm->balloon;
	uint64_t t0 = now_ns();
	bool drop;

	if (!s->m->opt.skip_free || !b || b->poison_val || s->hinting || !s->dirty_on)
		return;
	/* Only the first round asks the guest to drop its caches: what it
	 * caches during pre-copy is small, and dropping again costs it. */
	drop = s->m->opt.drop_guest_cache && !s->m->st.hint_rounds &&
	       !balloon_drop_cache_unavailable(b);
	if (balloon_hint_start(b, drop, on_hint, s) != 0)
		return;
	s->hinting = true;
	s->hint_due = true;
	STAT_SET(s, s->m->st.hint_rounds++);
	if (!drop)
		return;
	/* The guest drops its caches before it hints. Let its round finish
	 * first (bounded), or the bulk pass sends the page cache before the
	 * hints for it arrive; a guest too slow for the bound only costs that. */
	for (int ms = 0; ms < DROP_CACHE_WAIT_MS && !atomic_load(&s->m->cancel); ms += 100)
		if (balloon_hint_wait(b, 100) == 0)
			break;
	STAT_SET(s, s->m->st.guest_cache_dropped = true;
		 s->m->st.drop_cache_wait_ns = now_ns() - t0);
}

/* Before each sync: STOP. The guest keeps the blocks it hinted (they stay
 * unwritten), and the next round reports only blocks freed since. */
static void hint_round_stop(struct sender *s)
{
	uint64_t skipped;

	if (!s->hinting)
		return;
	balloon_hint_stop(s->vm->balloon);
	s->hinting = false;
	skipped = atomic_load(&s->rs.skipped_hinted);
	mig_trace("source: hint round %u took %llu pages out", s->m->st.hint_rounds,
		  (unsigned long long)(skipped - s->hinted_before));
	s->hinted_before = skipped;
}

/* At the end of pre-copy, on failure and on cancel: DONE gives the guest
 * its hinted blocks back. */
static void hint_rounds_end(struct sender *s)
{
	hint_round_stop(s);
	if (s->hint_due)
		balloon_hint_done(s->vm->balloon);
	s->hint_due = false;
}

/* The next record from the destination on connection 0, from what came
 * with an earlier one or from the socket: its type, with rec pointing into
 * s->reply until reply_consume(); or an error (failed). */
static int next_reply(struct sender *s, struct stream_record *rec, size_t *used, int timeout_ms)
{
	int rc = reply_next(&s->conn, &s->reply, rec, used, timeout_ms);

	if (rc <= -1001)
		return fail(s, rc, "bad reply from the destination: %s", stream_strerror(rc));
	if (rc == -EPROTO)
		return fail(s, rc, "reply from the destination too long");
	if (rc < 0)
		return fail(s, rc, "destination: %s",
			    rc == -ECONNRESET ? "connection closed" : strerror(-rc));
	return rc;
}

static int expect_ack(struct sender *s, enum stream_phase phase)
{
	struct stream_record rec;
	size_t used;
	int rc = next_reply(s, &rec, &used, IO_TIMEOUT_MS);

	if (rc == -ETIMEDOUT) {
		pthread_mutex_lock(&s->m->lock);
		snprintf(s->m->error, sizeof(s->m->error),
			 "the destination did not answer within %.1f s", IO_TIMEOUT_MS / 1000.0);
		pthread_mutex_unlock(&s->m->lock);
	}

	if (rc < 0)
		return rc;
	if (rec.type == STREAM_ERROR)
		rc = fail(s, -EPROTO, "destination refused: %.*s", rec.error.reason_len,
			  rec.error.reason);
	else if (rec.type != STREAM_ACK || rec.ack.phase != phase)
		rc = fail(s, -EPROTO, "unexpected reply from the destination (type %u)", rec.type);
	else if (rec.ack.status)
		rc = fail(s, -EPROTO, "destination refused: %.*s", rec.ack.reason_len,
			  rec.ack.reason);
	else
		rc = 0;
	reply_consume(&s->reply, used);
	return rc;
}

/* After sending failed: the destination usually said why before it closed
 * the connection; its reason replaces "Broken pipe". */
static void peer_reason(struct sender *s)
{
	struct stream_record rec;
	size_t used;

	if (!s->conn_open || next_reply(s, &rec, &used, 300) != STREAM_ERROR)
		return;
	pthread_mutex_lock(&s->m->lock);
	snprintf(s->m->error, sizeof(s->m->error), "destination refused: %.*s",
		 rec.error.reason_len, rec.error.reason);
	pthread_mutex_unlock(&s->m->lock);
}

/* Connection i (1..N-1): connected, and JOINed to this migration. */
static int connect_lane(struct sender *s, const struct transport_addr *addr, unsigned i,
			uint64_t session)
{
	struct stream_join j = { .session = session, .index = (uint16_t)i,
				 .connections = (uint16_t)s->rs.nlanes };
	struct mig_conn *c = &s->rs.lanes[i].own;
	uint8_t buf[64];
	char err[256];
	ssize_t len;
	int fd, rc;

	fd = transport_connect(addr, 10000, err, sizeof(err));
	if (fd < 0)
		return fail(s, fd, "connection %u: %s", i, err);
	rc = ram_sender_lane_open(&s->rs, i, fd);
	if (rc) {
		close(fd);
		return fail(s, rc, "io_uring: %s", strerror(-rc));
	}
	len = stream_encode_join(buf, sizeof(buf), &j);
	rc = len < 0 ? (int)len : mig_conn_send(c, buf, (size_t)len);
	if (!rc)
		rc = mig_conn_flush(c, IO_TIMEOUT_MS);
	return rc ? fail(s, rc, "connection %u: sending: %s", i, strerror(-rc)) : 0;
}

static uint64_t new_session(void)
{
	uint64_t v;

	if (getrandom(&v, sizeof(v), 0) != sizeof(v))
		v = now_ns() ^ ((uint64_t)getpid() << 32);
	return v;
}

static int setup(struct sender *s)
{
	struct transport_addr addr;
	struct stream_hello hello = { 0 };
	char err[256], devices[STREAM_MAX_DEVICES_LEN + 1];
	uint8_t buf[512];
	int fd, rc;

	mig_trace("source: initialised");
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
	hello.connections = (uint16_t)s->rs.nlanes;
	hello.stripe_shift = SEND_STRIPE_SHIFT;
	hello.session = s->session = new_session();
	hello.devices = devices;
	hello.devices_len = (uint16_t)strlen(devices);
	mig_trace("source: connected");
	rc = send_record(s, buf, stream_encode_hello(buf, sizeof(buf), &hello));
	if (!rc && (rc = mig_conn_flush(&s->conn, IO_TIMEOUT_MS)))
		rc = fail(s, rc, "sending: %s", strerror(-rc));
	if (!rc)
		rc = expect_ack(s, STREAM_PHASE_SETUP);
	/* The other connections only once the destination took the HELLO. */
	for (unsigned i = 1; !rc && i < s->rs.nlanes; i++)
		rc = connect_lane(s, &addr, i, hello.session);
	if (!rc)
		rc = expect_ack(s, STREAM_PHASE_CONNECTED);
	if (rc)
		return rc;
	mig_trace("source: %u connections joined", s->rs.nlanes);
	if ((rc = inject(s, "source-setup")))
		return rc;
	rc = dirty_init(&s->dirty, s->vm->fd, &s->vm->mem, (enum dirty_mode)s->m->opt.dirty_mode,
			err, sizeof(err));
	if (!rc) {
		s->dirty_on = true;
		rc = dirty_start(&s->dirty, err, sizeof(err));
	}
	if (rc)
		return fail(s, rc, "%s", err);
	STAT_SET(s, s->m->dirty_log = dirty_mode_name(&s->dirty));
	rc = ram_sender_start(&s->rs);
	mig_trace("source: dirty logging on");
	return rc ? fail(s, rc, "cannot start the sending threads") : 0;
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
	/* The buffer is freed right away: wait for it. */
	if (!rc && (rc = mig_conn_flush(&s->conn, IO_TIMEOUT_MS)))
		rc = fail(s, rc, "sending %s state: %s", name, strerror(-rc));
	free(buf);
	s->state_count++;
	return rc;
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

/* READY came: everything is at the destination and loaded. From the
 * moment COMMIT may leave, the source never resumes on its own: the
 * destination runs the guest as soon as COMMIT arrives, and only its
 * RUNNING says that happened. Without RUNNING the outcome is unknown and
 * the guest stays paused here (docs/migration.md, "The commit protocol"). */
static int commit(struct sender *s)
{
	uint8_t buf[64];
	int rc;

	s->committed = true;
	set_phase(s->m, MIGRATE_COMMITTED);
	rc = send_record(s, buf, stream_encode_commit(buf, sizeof(buf), s->session));
	if (!rc && (rc = mig_conn_flush(&s->conn, IO_TIMEOUT_MS)))
		rc = fail(s, rc, "sending COMMIT: %s", strerror(-rc));
	mig_trace("source: COMMIT sent");
	if (!rc)
		rc = inject(s, "source-commit");
	if (!rc)
		rc = expect_ack(s, STREAM_PHASE_RUNNING);
	if (!rc) {
		/* The guest runs at the destination from here: what the
		 * source does afterwards is cleanup, not migration time. */
		STAT_SET(s, s->m->st.end_ns = now_ns());
	}
	mig_trace("source: RUNNING, process CPU %.0f ms", mig_trace_cpu_ms());
	return rc;
}

static int stop_and_copy(struct sender *s)
{
	const struct send_pass last = { .precopy_done = true, .end = true };
	uint8_t buf[64];
	int rc;

	set_phase(s->m, MIGRATE_STOP_COPY);
	stop_throttle(s);
	/* While the guest still runs here, so it takes its blocks back now. */
	hint_rounds_end(s);
	STAT_SET(s, s->m->st.paused_ns = now_ns());
	rc = vm_pause(s->vm, VM_PAUSE_MIGRATION, 5000);
	if (rc)
		return fail(s, rc, "cannot pause the vCPUs: %s", strerror(-rc));
	mig_trace("source: paused");
	s->paused = true;
	/* Devices answer their requests in flight here, before the last sync. */
	rc = vm_virtio_pause(s->vm);
	if (rc)
		return fail(s, rc, "cannot pause the devices: %s", strerror(-rc));
	rc = inject(s, "source-stop-copy");
	if (!rc)
		rc = sync_dirty(s);
	if (!rc)
		rc = ram_sender_pass(&s->rs, &last);
	mig_trace("source: last pass sent");
	if (!rc)
		rc = save_all_state(s);
	mig_trace("source: state sent");
	if (!rc)
		rc = send_record(s, buf, stream_encode_end(buf, sizeof(buf), s->rs.lanes[0].ram_pages,
							   s->state_count));
	if (!rc && (rc = mig_conn_flush(&s->conn, IO_TIMEOUT_MS)))
		rc = fail(s, rc, "sending: %s", strerror(-rc));
	if (!rc)
		rc = inject(s, "source-end");
	if (!rc)
		rc = expect_ack(s, STREAM_PHASE_PRECOPY_DONE);
	mig_trace("source: PRECOPY_DONE acknowledged");
	if (!rc)
		rc = expect_ack(s, STREAM_PHASE_READY);
	mig_trace("source: READY");
	return rc ? rc : commit(s);
}

/* After a pass that sent pages - pages0 pages since t0. */
static void note_pass(struct sender *s, uint64_t dirty, uint64_t pages0, uint64_t t0,
		      uint64_t bytes0)
{
	uint64_t elapsed = now_ns() - t0, bytes = ram_sender_bytes(&s->rs);
	uint64_t pages = ram_sender_pages(&s->rs) - pages0;

	if (!elapsed)
		return;
	/* Pages per second through the whole path (read, zero check,
	 * compress, send, applied at the destination): zero pages cost no
	 * bandwidth but do cost time. Pages skipped (hinted, untouched) do
	 * not count: they cost next to nothing. */
	if (pages)
		s->pages_per_s = (double)pages * 1e9 / (double)elapsed;
	pthread_mutex_lock(&s->m->lock);
	s->m->st.dirty_pages_per_s = (double)dirty * 1e9 / (double)elapsed;
	if (bytes > bytes0)
		s->m->st.bandwidth_bps = (double)(bytes - bytes0) * 1e9 / (double)elapsed;
	pthread_mutex_unlock(&s->m->lock);
}

static int precopy(struct sender *s)
{
	struct send_pass pass = { .bulk = true, .iter = true, .iteration = 0 };
	uint64_t prev = UINT64_MAX, t0, pages0;
	unsigned stuck = 0, iterations = 0, throttle = 0;
	int rc;

	set_phase(s->m, MIGRATE_BULK);
	rc = sync_dirty(s); /* with INITIALLY_SET: every page */
	if (rc)
		return rc;
	mig_trace("source: first sync and protect done");
	hint_round_start(s);
	mig_trace("source: bulk pass starts");
	t0 = now_ns();
	rc = ram_sender_pass(&s->rs, &pass);
	if (rc)
		return rc;
	mig_trace("source: bulk pass done");
	note_pass(s, 0, 0, t0, 0);
	set_phase(s->m, MIGRATE_ITERATE);
	for (;;) {
		uint64_t bytes0 = ram_sender_bytes(&s->rs), dirty;
		double est_ms;

		t0 = now_ns();
		pages0 = ram_sender_pages(&s->rs);
		/* No hint spans a sync: the round stops before it. */
		hint_round_stop(s);
		rc = check_abort(s);
		if (!rc)
			rc = sync_dirty(s);
		if (rc)
			return rc;
		/* Between passes, whether or not another pass follows. */
		if (!iterations && (rc = inject(s, "source-iterate")))
			return rc;
		dirty = bitmap_count(&s->rs.send);
		mig_trace("source: sync: %llu dirty pages", (unsigned long long)dirty);
		est_ms = s->pages_per_s > 0 ? (double)dirty * 1000.0 / s->pages_per_s : 1e9;
		STAT_SET(s, s->m->st.remaining_pages = dirty);
		if (est_ms <= s->m->opt.downtime_ms || iterations >= MAX_ITERATIONS)
			return stop_and_copy(s);
		/* Auto-converge: iterations that stop shrinking throttle the
		 * vCPUs, never all the way (99% at most: the guest always runs). */
		if (dirty * 10 >= prev * 9 && ++stuck >= 2 && throttle < THROTTLE_MAX) {
			throttle = throttle + THROTTLE_STEP < THROTTLE_MAX ? throttle + THROTTLE_STEP
									   : THROTTLE_MAX;
			STAT_SET(s, s->m->st.throttle_pct = throttle);
			atomic_store(&s->throttle_pct, throttle);
			if (!s->throttler_started)
				s->throttler_started =
					thread_create(&s->throttler, throttle_thread, s) == 0;
			stuck = 0;
		}
		prev = dirty;
		iterations++;
		STAT_SET(s, s->m->st.iterations = iterations);

		/* A new round after the sync, for the pages freed since. */
		hint_round_start(s);
		pass = (struct send_pass){ .iter = true, .iteration = iterations };
		rc = ram_sender_pass(&s->rs, &pass);
		if (rc)
			return rc;
		note_pass(s, dirty, pages0, t0, bytes0);
	}
}

static int sender_init(struct sender *s, struct migration *m)
{
	int rc;

	memset(s, 0, sizeof(*s));
	s->m = m;
	s->vm = m->vm;
	rc = ram_sender_init(&s->rs, m, &s->dirty, &s->conn, &s->reply, m->opt.connections);
	if (rc == -ENOMEM)
		return fail(s, rc, "out of memory");
	if (rc)
		return fail(s, rc, "cannot open /proc/self/pagemap: %s", strerror(-rc));
	if (m->opt.timeout_s)
		s->deadline_ns = now_ns() + (uint64_t)m->opt.timeout_s * 1000000000ULL;
	return 0;
}

static void sender_cleanup(struct sender *s, bool ok)
{
	char err[200];

	stop_throttle(s);
	/* No hint callback may run once the lanes and the log are gone. */
	hint_rounds_end(s);
	ram_sender_stop(&s->rs, !ok);
	if (s->dirty_on) {
		dirty_stop(&s->dirty, err, sizeof(err));
		dirty_destroy(&s->dirty);
	}
	/* Before COMMIT the destination never runs the guest: resuming is
	 * safe. After it, only the operator may decide (unknown outcome). */
	if (!ok && s->paused && !s->committed) {
		vm_virtio_resume(s->vm);
		vm_resume(s->vm, VM_PAUSE_MIGRATION);
	}
	if (s->conn_open) {
		if (!ok && !s->committed) {
			uint8_t buf[512];
			ssize_t len = stream_encode_error(buf, sizeof(buf), 1, s->m->error);

			if (len > 0 && !mig_conn_send(&s->conn, buf, (size_t)len))
				mig_conn_flush(&s->conn, 1000);
		}
		mig_conn_close(&s->conn);
	}
	ram_sender_publish(&s->rs);
	ram_sender_free(&s->rs);
}

static void *migrate_thread(void *arg)
{
	struct migration *m = arg;
	struct sender s;
	int rc;

	pthread_setname_np(pthread_self(), "migrate");
	set_phase(m, MIGRATE_SETUP);
	mig_trace("source: migration starts, process CPU %.0f ms", mig_trace_cpu_ms());
	rc = sender_init(&s, m);
	if (!rc)
		rc = setup(&s);
	STAT_SET(&s, m->st.setup_ns = now_ns());
	if (!rc)
		rc = precopy(&s);
	if (rc && rc != -ECANCELED && rc != -ETIMEDOUT && !s.committed)
		peer_reason(&s);
	sender_cleanup(&s, rc == 0);
	pthread_mutex_lock(&m->lock);
	if (rc || !m->st.end_ns)
		m->st.end_ns = now_ns();
	if (rc && s.committed) {
		char why[sizeof(m->error)];

		snprintf(why, sizeof(why), "%s", m->error);
		snprintf(m->error, sizeof(m->error),
			 "outcome unknown: COMMIT was sent but the destination never said RUNNING (%.150s);"
			 " the guest stays paused here", why);
	}
	m->phase = rc == 0		? MIGRATE_COMPLETED
		   : s.committed	? MIGRATE_UNKNOWN
		   : rc == -ECANCELED ? MIGRATE_CANCELLED
				      : MIGRATE_FAILED;
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

	if (m && m->phase == MIGRATE_UNKNOWN) {
		snprintf(err, errlen, "the outcome of the last migration is unknown and the guest is "
				      "paused here; see `vmm resume --force`");
		return -EBUSY;
	}
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
	rc = thread_create(&m->thread, migrate_thread, m);
	if (rc) {
		vm->migration = NULL;
		free(m);
		snprintf(err, errlen, "cannot start the migration thread");
		return -rc;
	}
	m->thread_started = true;
	return 0;
}

static enum migrate_phase phase_of(struct migration *m)
{
	enum migrate_phase p;

	if (!m)
		return MIGRATE_IDLE;
	pthread_mutex_lock(&m->lock);
	p = m->phase;
	pthread_mutex_unlock(&m->lock);
	return p;
}

int migrate_cancel(struct vm *vm)
{
	enum migrate_phase p = phase_of(vm->migration);

	if (!vm->migration || p >= MIGRATE_COMPLETED)
		return -ENOENT;
	if (p == MIGRATE_COMMITTED)
		return -EBUSY;
	atomic_store(&vm->migration->cancel, true);
	return 0;
}

bool migrate_running(struct vm *vm)
{
	enum migrate_phase p = phase_of(vm->migration);

	return p > MIGRATE_IDLE && p < MIGRATE_COMPLETED;
}

bool migrate_outcome_unknown(struct vm *vm)
{
	return phase_of(vm->migration) == MIGRATE_UNKNOWN;
}

int migrate_force_resume(struct vm *vm)
{
	struct migration *m = vm->migration;

	if (phase_of(m) != MIGRATE_UNKNOWN)
		return -ENOENT;
	/* The thread is done: it left the guest and its devices paused. */
	pthread_join(m->thread, NULL);
	m->thread_started = false;
	vm_virtio_resume(vm);
	vm_resume(vm, VM_PAUSE_MIGRATION);
	pthread_mutex_lock(&m->lock);
	m->phase = MIGRATE_FAILED;
	snprintf(m->error, sizeof(m->error),
		 "the operator resumed the guest here after an unknown outcome");
	pthread_mutex_unlock(&m->lock);
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
