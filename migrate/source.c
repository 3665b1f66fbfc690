/* The source side of live migration, its life: the control socket starts
 * a thread (migrate_start) that connects to the destination (one
 * connection, or --connections N), sends HELLO, runs pre-copy and the
 * commit (precopy.c), and ends the migration in one final phase: completed
 * (the guest runs at the destination, and this vmm exits), failed or
 * cancelled (before COMMIT: the guest runs here again), or unknown (COMMIT
 * sent, RUNNING never seen: the guest stays paused until the operator
 * decides). See source.h and docs/migration.md. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "migrate/source.h"
#include "migrate/trace.h"
#include "vmm/devices.h"
#include "vmm/util.h"
#include "vmm/vm.h"

void source_set_phase(struct migration *m, enum migrate_phase phase)
{
	pthread_mutex_lock(&m->lock);
	m->phase = phase;
	pthread_mutex_unlock(&m->lock);
}

int source_fail(struct sender *s, int rc, const char *fmt, ...)
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

int source_check_abort(struct sender *s)
{
	if (atomic_load(&s->m->cancel))
		return source_fail(s, -ECANCELED, "cancelled");
	if (s->deadline_ns && now_ns() > s->deadline_ns)
		return source_fail(s, -ETIMEDOUT, "timed out after %u s", s->m->opt.timeout_s);
	if (atomic_load(&s->vm->stop_reason) != VM_STOP_NONE)
		return source_fail(s, -ECANCELED, "the VM is stopping");
	return 0;
}

/* A fault injected at point with the action "reset": every connection goes
 * down as a reset link would take it, and the migration fails. */
int source_inject(struct sender *s, const char *point)
{
	if (!failpoint(s->m->opt.fault, point))
		return 0;
	ram_sender_shutdown(&s->rs);
	return source_fail(s, -ECONNRESET, "fault injected at %s", point);
}

int source_send_record(struct sender *s, const uint8_t *buf, ssize_t len)
{
	int rc;

	if (len < 0)
		return source_fail(s, (int)len, "encoding a record: %s", stream_strerror((int)len));
	rc = mig_conn_send(&s->conn, buf, (size_t)len);
	if (rc)
		return source_fail(s, rc, "sending: %s", strerror(-rc));
	return 0;
}

/* The next record from the destination on connection 0, from what came
 * with an earlier one or from the socket: its type, with rec pointing into
 * s->reply until reply_consume(); or an error (failed). */
static int next_reply(struct sender *s, struct stream_record *rec, size_t *used, int timeout_ms)
{
	int rc = reply_next(&s->conn, &s->reply, rec, used, timeout_ms);

	if (rc <= -1001)
		return source_fail(s, rc, "bad reply from the destination: %s", stream_strerror(rc));
	if (rc == -EPROTO)
		return source_fail(s, rc, "reply from the destination too long");
	if (rc < 0)
		return source_fail(s, rc, "destination: %s",
			    rc == -ECONNRESET ? "connection closed" : strerror(-rc));
	return rc;
}

int source_expect_ack(struct sender *s, enum stream_phase phase)
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
		rc = source_fail(s, -EPROTO, "destination refused: %.*s", rec.error.reason_len,
			  rec.error.reason);
	else if (rec.type != STREAM_ACK || rec.ack.phase != phase)
		rc = source_fail(s, -EPROTO, "unexpected reply from the destination (type %u)", rec.type);
	else if (rec.ack.status)
		rc = source_fail(s, -EPROTO, "destination refused: %.*s", rec.ack.reason_len,
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
		return source_fail(s, fd, "connection %u: %s", i, err);
	rc = ram_sender_lane_open(&s->rs, i, fd);
	if (rc) {
		close(fd);
		return source_fail(s, rc, "io_uring: %s", strerror(-rc));
	}
	len = stream_encode_join(buf, sizeof(buf), &j);
	rc = len < 0 ? (int)len : mig_conn_send(c, buf, (size_t)len);
	if (!rc)
		rc = mig_conn_flush(c, IO_TIMEOUT_MS);
	return rc ? source_fail(s, rc, "connection %u: sending: %s", i, strerror(-rc)) : 0;
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
		return source_fail(s, -EINVAL, "%s", err);
	fd = transport_connect(&addr, 10000, err, sizeof(err));
	if (fd < 0)
		return source_fail(s, fd, "%s", err);
	mig_trace("source: TCP connected");
	rc = mig_conn_init(&s->conn, fd, 64);
	if (rc) {
		close(fd);
		return source_fail(s, rc, "io_uring: %s", strerror(-rc));
	}
	s->conn_open = true;
	if (vm_device_set(s->vm, devices, sizeof(devices)) < 0)
		return source_fail(s, -ENOSPC, "too many devices for the migration stream");
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
	rc = source_send_record(s, buf, stream_encode_hello(buf, sizeof(buf), &hello));
	if (!rc && (rc = mig_conn_flush(&s->conn, IO_TIMEOUT_MS)))
		rc = source_fail(s, rc, "sending: %s", strerror(-rc));
	mig_trace("source: HELLO sent");
	if (!rc)
		rc = source_expect_ack(s, STREAM_PHASE_SETUP);
	mig_trace("source: HELLO acknowledged");
	/* The other connections only once the destination took the HELLO. */
	for (unsigned i = 1; !rc && i < s->rs.nlanes; i++)
		rc = connect_lane(s, &addr, i, hello.session);
	if (!rc)
		rc = source_expect_ack(s, STREAM_PHASE_CONNECTED);
	if (rc)
		return rc;
	mig_trace("source: %u connections joined", s->rs.nlanes);
	if ((rc = source_inject(s, "source-setup")))
		return rc;
	rc = dirty_init(&s->dirty, s->vm->fd, &s->vm->mem, &s->vm->rings,
			(enum dirty_mode)s->m->opt.dirty_mode, err, sizeof(err));
	if (!rc) {
		s->dirty_on = true;
		rc = dirty_start(&s->dirty, err, sizeof(err));
	}
	if (rc)
		return source_fail(s, rc, "%s", err);
	STAT_SET(s, s->m->dirty_log = dirty_mode_name(&s->dirty));
	rc = ram_sender_start(&s->rs);
	mig_trace("source: dirty logging on");
	return rc ? source_fail(s, rc, "cannot start the sending threads") : 0;
}

static int sender_init(struct sender *s, struct migration *m)
{
	int rc;

	memset(s, 0, sizeof(*s));
	s->m = m;
	s->vm = m->vm;
	rc = ram_sender_init(&s->rs, m, &s->dirty, &s->conn, &s->reply, m->opt.connections);
	if (rc == -ENOMEM)
		return source_fail(s, rc, "out of memory");
	if (rc)
		return source_fail(s, rc, "cannot open /proc/self/pagemap: %s", strerror(-rc));
	if (m->opt.timeout_s)
		s->deadline_ns = now_ns() + (uint64_t)m->opt.timeout_s * 1000000000ULL;
	return 0;
}

static void sender_cleanup(struct sender *s, bool ok)
{
	char err[200];

	precopy_stop_throttle(s);
	/* No hint callback may run once the lanes and the log are gone. */
	precopy_hints_end(s);
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
	source_set_phase(m, MIGRATE_SETUP);
	mig_trace("source: migration starts, process CPU %.0f ms", mig_trace_cpu_ms());
	rc = sender_init(&s, m);
	if (!rc)
		rc = setup(&s);
	STAT_SET(&s, m->st.setup_ns = now_ns());
	if (!rc)
		rc = precopy_run(&s);
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
	/* A dirty-log mode this VM cannot have is refused now, not after
	 * connecting to the destination. */
	rc = dirty_mode_check((enum dirty_mode)opt->dirty_mode, vm->rings.n > 0, err, errlen);
	if (rc)
		return rc;
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
	struct migration *m = vm->migration;
	int rc = 0;

	if (!m)
		return -ENOENT;
	pthread_mutex_lock(&m->lock);
	if (m->phase >= MIGRATE_COMPLETED)
		rc = -ENOENT;
	else if (m->phase == MIGRATE_COMMITTED)
		rc = -EBUSY;
	else
		atomic_store(&m->cancel, true);
	pthread_mutex_unlock(&m->lock);
	return rc;
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

