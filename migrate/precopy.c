/* Pre-copy on the source: the bulk pass and the iterations over the dirty
 * pages, skipping the pages the guest reports free (hint rounds), with
 * auto-converge when iterations stop shrinking; then stop-and-copy of the
 * rest and the vCPU, VM and device state, and the commit (READY, COMMIT,
 * RUNNING). The RAM itself goes through the lanes of sender.c. See
 * source.h and docs/migration.md for the ordering rules. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "migrate/bitmap.h"
#include "migrate/ram.h"
#include "migrate/source.h"
#include "migrate/state.h"
#include "migrate/trace.h"
#include "virtio/balloon.h"
#include "vmm/devices.h"
#include "vmm/util.h"
#include "vmm/vcpu.h"
#include "vmm/vm.h"

#define MAX_ITERATIONS 60
#define DROP_CACHE_WAIT_MS 10000
#define THROTTLE_MIN_STEP 10 /* points, when a throttled pass still did not halve the set */
#define THROTTLE_AIM 4       /* a throttled pass should leave a quarter of what it sent */

/* The dirty pages into the send set, and all of them re-protected at
 * once: from here any write to any page reaches the next sync. */
static int sync_dirty(struct sender *s)
{
	char err[200];
	int rc = dirty_sync(&s->dirty, &s->rs.send, err, sizeof(err));

	if (!rc && !s->paused)
		rc = ram_sender_protect(&s->rs, err, sizeof(err));
	return rc ? source_fail(s, rc, "%s", err) : 0;
}

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
	mig_trace("source: hint round %u asked for", s->m->st.hint_rounds);
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
	if (mig_trace_on()) {
		/* How long the guest's round ran: until its own STOP, or ours. */
		json_t *h = balloon_hint_json(s->vm->balloon);

		mig_trace("source: hint round %u took %llu pages out; the round ran %.0f ms, %lld blocks",
			  s->m->st.hint_rounds, (unsigned long long)(skipped - s->hinted_before),
			  json_real_value(json_object_get(h, "elapsed_ms")),
			  (long long)json_integer_value(json_object_get(h, "ranges")));
		json_decref(h);
	}
	s->hinted_before = skipped;
}

/* At the end of pre-copy, on failure and on cancel: DONE gives the guest
 * its hinted blocks back. */
void precopy_hints_end(struct sender *s)
{
	hint_round_stop(s);
	if (s->hint_due)
		balloon_hint_done(s->vm->balloon);
	s->hint_due = false;
}

static int send_state(struct sender *s, const char *name, uint32_t instance,
		      struct state_writer *w)
{
	uint8_t *buf;
	size_t cap = w->len + 256;
	int rc;

	if (w->error)
		return source_fail(s, w->error, "saving %s state: %s", name, strerror(-w->error));
	buf = malloc(cap);
	if (!buf)
		return source_fail(s, -ENOMEM, "out of memory");
	rc = source_send_record(s, buf, stream_encode_state(buf, cap, name, instance, STATE_SECTION_VERSION,
						     ++s->section_id, w->buf, w->len));
	/* The buffer is freed right away: wait for it. */
	if (!rc && (rc = mig_conn_flush(&s->conn, IO_TIMEOUT_MS)))
		rc = source_fail(s, rc, "sending %s state: %s", name, strerror(-rc));
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
	rc = rc ? source_fail(s, rc, "%s", err) : send_state(s, "vm", 0, &w);
	for (unsigned i = 0; !rc && i < s->vm->ncpus; i++) {
		state_writer_free(&w);
		state_writer_init(&w);
		rc = state_save_vcpu(s->vm->kvm.fd, s->vm->vcpus[i].fd, &w, err, sizeof(err));
		rc = rc ? source_fail(s, rc, "%s", err) : send_state(s, "vcpu", i, &w);
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
		rc = rc ? source_fail(s, rc, "saving %s%u state", dev->ops->name, dev->instance)
			: send_state(s, dev->ops->name, dev->instance, &w);
	}
	state_writer_free(&w);
	return rc;
}

void precopy_stop_throttle(struct sender *s)
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

	/* A cancel that came first wins; one that comes later is refused
	 * (migrate_cancel), under the same lock. */
	pthread_mutex_lock(&s->m->lock);
	if (!atomic_load(&s->m->cancel)) {
		s->committed = true;
		s->m->phase = MIGRATE_COMMITTED;
	}
	pthread_mutex_unlock(&s->m->lock);
	if (!s->committed)
		return source_fail(s, -ECANCELED, "cancelled");
	rc = source_send_record(s, buf, stream_encode_commit(buf, sizeof(buf), s->session));
	if (!rc && (rc = mig_conn_flush(&s->conn, IO_TIMEOUT_MS)))
		rc = source_fail(s, rc, "sending COMMIT: %s", strerror(-rc));
	mig_trace("source: COMMIT sent");
	if (!rc)
		rc = source_inject(s, "source-commit");
	if (!rc)
		rc = source_expect_ack(s, STREAM_PHASE_RUNNING);
	if (!rc) {
		/* The guest runs at the destination from here: what the
		 * source does afterwards is cleanup, not migration time. */
		STAT_SET(s, s->m->st.end_ns = now_ns());
	}
	mig_trace("source: RUNNING, process CPU %.0f ms, this thread's %.0f ms", mig_trace_cpu_ms(),
		  mig_trace_thread_cpu_ms());
	return rc;
}

static int stop_and_copy(struct sender *s)
{
	const struct send_pass last = { .precopy_done = true, .end = true };
	uint8_t buf[64];
	int rc;

	source_set_phase(s->m, MIGRATE_STOP_COPY);
	precopy_stop_throttle(s);
	/* While the guest still runs here, so it takes its blocks back now. */
	precopy_hints_end(s);
	STAT_SET(s, s->m->st.paused_ns = now_ns());
	rc = vm_pause(s->vm, VM_PAUSE_MIGRATION, 5000);
	if (rc)
		return source_fail(s, rc, "cannot pause the vCPUs: %s", strerror(-rc));
	mig_trace("source: paused");
	s->paused = true;
	/* Devices answer their requests in flight here, before the last sync. */
	rc = vm_virtio_pause(s->vm);
	if (rc)
		return source_fail(s, rc, "cannot pause the devices: %s", strerror(-rc));
	rc = source_inject(s, "source-stop-copy");
	if (!rc)
		rc = sync_dirty(s);
	if (!rc)
		rc = ram_sender_pass(&s->rs, &last);
	mig_trace("source: last pass sent");
	if (!rc)
		rc = save_all_state(s);
	mig_trace("source: state sent");
	if (!rc)
		rc = source_send_record(s, buf, stream_encode_end(buf, sizeof(buf), s->rs.lanes[0].ram_pages,
							   s->state_count));
	if (!rc && (rc = mig_conn_flush(&s->conn, IO_TIMEOUT_MS)))
		rc = source_fail(s, rc, "sending: %s", strerror(-rc));
	if (!rc)
		rc = source_inject(s, "source-end");
	if (!rc)
		rc = source_expect_ack(s, STREAM_PHASE_PRECOPY_DONE);
	mig_trace("source: PRECOPY_DONE acknowledged");
	if (!rc)
		rc = source_expect_ack(s, STREAM_PHASE_READY);
	mig_trace("source: READY");
	return rc ? rc : commit(s);
}

/* After a pass that read pages since pages0 was taken, at t0: the pages
 * it read (what it had to send, for auto-converge). */
static uint64_t note_pass(struct sender *s, uint64_t dirty, uint64_t pages0, uint64_t t0,
			  uint64_t bytes0)
{
	uint64_t elapsed = now_ns() - t0, bytes = ram_sender_bytes(&s->rs);
	uint64_t pages = ram_sender_read_pages(&s->rs) - pages0;

	if (!elapsed)
		return pages;
	/* Pages per second through the whole path (read, zero check,
	 * compress, send, applied at the destination): zero pages cost no
	 * bandwidth but do cost time. Pages skipped (hinted, untouched) do
	 * not count: they cost next to nothing. Counting them made an 8 GiB
	 * guest's bulk pass look 100 times faster than it was, so a guest
	 * that dirtied 128 MiB during it went straight to a stop-and-copy
	 * that took 1.4 s (docs/BENCHMARKS.md). */
	if (pages)
		s->pages_per_s = (double)pages * 1e9 / (double)elapsed;
	pthread_mutex_lock(&s->m->lock);
	s->m->st.dirty_pages_per_s = (double)dirty * 1e9 / (double)elapsed;
	if (bytes > bytes0)
		s->m->st.bandwidth_bps = (double)(bytes - bytes0) * 1e9 / (double)elapsed;
	pthread_mutex_unlock(&s->m->lock);
	return pages;
}

unsigned precopy_throttle_next(unsigned pct, uint64_t dirtied, uint64_t sent)
{
	double share;
	unsigned next;

	if (!sent || dirtied * 2 <= sent || pct >= PRECOPY_THROTTLE_MAX)
		return pct;
	/* The guest's dirty rate scales with the share of time it runs,
	 * 100 - pct; the share that makes the next pass dirty a quarter of
	 * what it sends: */
	share = (100.0 - pct) * (double)sent / (THROTTLE_AIM * (double)dirtied);
	next = share <= 1.0 ? PRECOPY_THROTTLE_MAX : (unsigned)(100.0 - share + 0.999);
	if (next < pct + THROTTLE_MIN_STEP)
		next = pct + THROTTLE_MIN_STEP;
	return next < PRECOPY_THROTTLE_MAX ? next : PRECOPY_THROTTLE_MAX;
}

int precopy_run(struct sender *s)
{
	struct send_pass pass = { .bulk = true, .iter = true, .iteration = 0 };
	uint64_t t0, pages0, sent;
	unsigned iterations = 0, throttle = 0;
	int rc;

	source_set_phase(s->m, MIGRATE_BULK);
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
	sent = note_pass(s, 0, 0, t0, 0);
	source_set_phase(s->m, MIGRATE_ITERATE);
	for (;;) {
		uint64_t bytes0 = ram_sender_bytes(&s->rs), dirty;
		double est_ms;

		t0 = now_ns();
		pages0 = ram_sender_read_pages(&s->rs);
		/* No hint spans a sync: the round stops before it. */
		hint_round_stop(s);
		rc = source_check_abort(s);
		if (!rc)
			rc = sync_dirty(s);
		if (rc)
			return rc;
		/* Between passes, whether or not another pass follows. */
		if (!iterations && (rc = source_inject(s, "source-iterate")))
			return rc;
		dirty = bitmap_count(&s->rs.send);
		mig_trace("source: sync: %llu dirty pages", (unsigned long long)dirty);
		est_ms = s->pages_per_s > 0 ? (double)dirty * 1000.0 / s->pages_per_s : 1e9;
		STAT_SET(s, s->m->st.remaining_pages = dirty);
		if (est_ms <= s->m->opt.downtime_ms || iterations >= MAX_ITERATIONS)
			return stop_and_copy(s);
		/* Auto-converge: a pass during which the guest dirtied more
		 * than half of what the pass sent throttles the vCPUs, never
		 * all the way (precopy_throttle_next). */
		if (precopy_throttle_next(throttle, dirty, sent) != throttle) {
			throttle = precopy_throttle_next(throttle, dirty, sent);
			mig_trace("source: %llu pages dirtied during a pass that sent %llu: throttle %u%%",
				  (unsigned long long)dirty, (unsigned long long)sent, throttle);
			STAT_SET(s, s->m->st.throttle_pct = throttle);
			atomic_store(&s->throttle_pct, throttle);
			if (!s->throttler_started)
				s->throttler_started =
					thread_create(&s->throttler, throttle_thread, s) == 0;
		}
		iterations++;
		STAT_SET(s, s->m->st.iterations = iterations);

		/* A new round after the sync, for the pages freed since. */
		hint_round_start(s);
		pass = (struct send_pass){ .iter = true, .iteration = iterations };
		rc = ram_sender_pass(&s->rs, &pass);
		if (rc)
			return rc;
		sent = note_pass(s, dirty, pages0, t0, bytes0);
	}
}
