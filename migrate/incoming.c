/* The destination side of live migration (`vmm run --incoming URI`): waits
 * for one source, accepts as many connections as its HELLO announces,
 * checks and loads the whole stream into a VM that has not run, and only
 * then lets vm_run() start the vCPUs. Connection 0 is read here (HELLO,
 * RAM, the state, END, COMMIT); connections 1..N-1 carry RAM only and are
 * read by their own threads (receiver.c), which must all have reached their
 * END before the first state section is loaded.
 *
 * The commit protocol (docs/migration.md): after END, and only once every
 * page of RAM and every state section the VM needs has arrived and loaded,
 * this side says READY and waits (bounded) for the source's COMMIT. The
 * guest runs here only after COMMIT, and RUNNING tells the source so.
 * Anything wrong before COMMIT ends with one line and a non-zero exit: a
 * partial guest, or one the source may still resume, never runs. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "migrate/failpoint.h"
#include "migrate/migration.h"
#include "migrate/ram.h"
#include "migrate/receiver.h"
#include "migrate/state.h"
#include "migrate/stream.h"
#include "migrate/trace.h"
#include "migrate/transport.h"
#include "vmm/devices.h"
#include "vmm/util.h"
#include "vmm/vcpu.h"
#include "vmm/vm.h"

#define JOIN_TIMEOUT_MS 30000 /* for connections 1..N-1 to arrive and JOIN */
#define COMMIT_TIMEOUT_MS 30000 /* from READY to the source's COMMIT */
#define MAX_CONNECTIONS 16

struct receiver {
	struct vm *vm;
	struct recv_shared rx;
	struct recv_lane *lanes[MAX_CONNECTIONS]; /* by connection index */
	unsigned nlanes;      /* lanes open */
	unsigned connections; /* HELLO's */
	bool lanes_done;
	int listen_fd;
	/* State sections loaded so far: each exactly once before READY. */
	bool got_vm, got_uart;
	unsigned syncs;                 /* SYNC records on connection 0 */
	bool *got_vcpu;                 /* [ncpus] */
	bool got_virtio[VIRTIO_MMIO_MAX_DEVICES];
};

static int refuse(struct receiver *r, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int refuse(struct receiver *r, int rc, const char *fmt, ...)
{
	char msg[320];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return recv_fail(&r->rx, rc, "%s", msg);
}

static int send_now(struct receiver *r, const uint8_t *buf, ssize_t len)
{
	struct mig_conn *c;
	int rc;

	if (!r->lanes[0] || !r->lanes[0]->conn_open)
		return -ENOTCONN;
	c = &r->lanes[0]->conn;
	if (len < 0)
		return refuse(r, (int)len, "encoding a reply: %s", stream_strerror((int)len));
	rc = mig_conn_send(c, buf, (size_t)len);
	if (!rc)
		rc = mig_conn_flush(c, RECV_TIMEOUT_MS);
	return rc ? refuse(r, rc, "replying to the source: %s", strerror(-rc)) : 0;
}

static int ack(struct receiver *r, enum stream_phase phase)
{
	uint8_t buf[64];

	return send_now(r, buf, stream_encode_ack(buf, sizeof(buf), phase, 0, NULL));
}

static int check_hello(struct receiver *r, const struct stream_hello *got)
{
	char devices[STREAM_MAX_DEVICES_LEN + 1];
	struct stream_hello want = {
		.flags = STREAM_HELLO_ZSTD, .page_size = GUEST_PAGE_SIZE,
		.nr_vcpus = r->vm->ncpus, .ram_size = r->vm->mem.size, .devices = devices,
	};
	int rc;

	if (vm_device_set(r->vm, devices, sizeof(devices)) < 0)
		return refuse(r, -ENOSPC, "too many devices for the migration stream");
	want.devices_len = (uint16_t)strlen(devices);
	rc = stream_check_hello(got, &want);
	if (!rc)
		return 0;
	if (got->ram_size != want.ram_size)
		return refuse(r, rc, "incompatible source: guest memory %llu MiB here, %llu MiB there",
			      (unsigned long long)(want.ram_size >> 20),
			      (unsigned long long)(got->ram_size >> 20));
	if (got->nr_vcpus != want.nr_vcpus)
		return refuse(r, rc, "incompatible source: %u vCPUs here, %u there", want.nr_vcpus,
			      got->nr_vcpus);
	return refuse(r, rc, "incompatible source: devices '%s' here, '%.*s' there (%s)", devices,
		      got->devices_len, got->devices, stream_strerror(rc));
}

/* Which "loaded" flag a section sets, or NULL for an unknown section. */
static bool *section_flag(struct receiver *r, const struct stream_state *st,
			  struct virtio_dev **dev)
{
	*dev = NULL;
	if (st->name_len == 2 && !memcmp(st->name, "vm", 2) && st->instance == 0)
		return &r->got_vm;
	if (st->name_len == 4 && !memcmp(st->name, "vcpu", 4) && st->instance < r->vm->ncpus)
		return &r->got_vcpu[st->instance];
	if (st->name_len == 4 && !memcmp(st->name, "uart", 4) && st->instance == 0)
		return &r->got_uart;
	*dev = vm_virtio_find(r->vm, st->name, st->name_len, st->instance);
	for (unsigned i = 0; *dev && i < r->vm->nvirtio; i++)
		if (r->vm->virtio[i] == *dev)
			return &r->got_virtio[i];
	return NULL;
}

static int load_state(struct receiver *r, const struct stream_state *st)
{
	struct state_reader rd;
	struct virtio_dev *dev;
	bool *loaded = section_flag(r, st, &dev);
	char err[256] = "";
	int rc = -EINVAL;

	if (!loaded)
		return refuse(r, -EINVAL, "unknown state section '%.*s' %u", st->name_len, st->name,
			      st->instance);
	if (*loaded)
		return refuse(r, -EINVAL, "state section '%.*s' %u sent twice", st->name_len,
			      st->name, st->instance);
	*loaded = true;
	state_reader_init(&rd, st->data, st->data_len);
	if (dev)
		rc = virtio_load(dev, &rd);
	else if (loaded == &r->got_vm)
		rc = state_load_vm(r->vm->fd, st->data, st->data_len, err, sizeof(err));
	else if (loaded == &r->got_uart)
		rc = uart_load(&r->vm->uart, &rd);
	else
		rc = state_load_vcpu(r->vm->vcpus[st->instance].fd, st->data, st->data_len, err,
				     sizeof(err));
	if (rc)
		return refuse(r, rc, "bad state section '%.*s' %u%s%s", st->name_len, st->name,
			      st->instance, err[0] ? ": " : "", err);
	return 0;
}

static int check_connections(struct receiver *r, const struct stream_hello *got)
{
	if (got->connections > MAX_CONNECTIONS)
		return refuse(r, -EINVAL, "the source asks for %u connections; at most %u here",
			      got->connections, MAX_CONNECTIONS);
	r->connections = got->connections;
	r->rx.nlanes = got->connections;
	return 0;
}

/* A new lane on fd; its index is its order of arrival until its JOIN says. */
static struct recv_lane *open_lane(struct receiver *r, int fd)
{
	struct recv_lane *l = calloc(1, sizeof(*l));
	int rc = l ? recv_lane_init(&r->rx, l, r->nlanes, fd) : -ENOMEM;

	if (rc) {
		free(l);
		close(fd);
		refuse(r, rc, "connection %u: %s", r->nlanes, strerror(-rc));
		return NULL;
	}
	return l;
}

static void close_lane(struct recv_lane *l)
{
	recv_lane_free(l);
	free(l);
}

/* Reads a new connection's JOIN: 0 once it joined as r->lanes[index]. */
static int join(struct receiver *r, struct recv_lane *l, int timeout_ms)
{
	struct stream_record rec;
	int rc;

	stream_seq_init_join(&l->seq, &r->lanes[0]->seq);
	rc = recv_lane_next(l, &rec, timeout_ms);
	if (rc < 0)
		return rc;
	if (rec.type == STREAM_ERROR)
		return refuse(r, -EPROTO, "the source gave up: %.*s", rec.error.reason_len,
			      rec.error.reason);
	rc = stream_seq_next(&l->seq, &rec);
	if (rc)
		return refuse(r, rc, "a migration connection did not join: %s", stream_strerror(rc));
	if (r->lanes[rec.join.index])
		return refuse(r, -EINVAL, "connection %u joined twice", rec.join.index);
	l->index = rec.join.index;
	r->lanes[l->index] = l;
	r->nlanes++;
	return 0;
}

/* Connections 1..N-1: each must arrive, and JOIN this migration, within
 * JOIN_TIMEOUT_MS in all. */
static int accept_joins(struct receiver *r)
{
	uint64_t deadline = now_ns() + JOIN_TIMEOUT_MS * 1000000ULL;
	char err[256];

	while (r->nlanes < r->connections) {
		uint64_t now = now_ns();
		int left = now < deadline ? (int)((deadline - now) / 1000000ULL) + 1 : 0;
		struct recv_lane *l;
		int fd, rc;

		fd = left ? transport_accept(r->listen_fd, left, err, sizeof(err)) : -ETIMEDOUT;
		if (fd == -ETIMEDOUT)
			return refuse(r, fd, "only %u of the %u migration connections arrived within %d s",
				      r->nlanes, r->connections, JOIN_TIMEOUT_MS / 1000);
		if (fd < 0)
			return refuse(r, fd, "--incoming: %s", err);
		l = open_lane(r, fd);
		if (!l)
			return -ENOMEM;
		rc = join(r, l, left);
		if (rc) {
			close_lane(l);
			return rc;
		}
	}
	return 0;
}

/* The receiving threads of connections 1..N-1, after every one joined. */
static int start_lanes(struct receiver *r)
{
	for (unsigned i = 1; i < r->connections; i++) {
		int rc = recv_lane_start(r->lanes[i]);

		if (rc)
			return rc;
	}
	return 0;
}

/* Every other connection has delivered all its RAM (its END). */
static int wait_lanes(struct receiver *r)
{
	int rc = 0;

	for (unsigned i = 1; i < r->connections && !r->lanes_done; i++) {
		int lrc = recv_lane_join(r->lanes[i]);

		if (lrc && !rc)
			rc = lrc;
	}
	r->lanes_done = true;
	return rc;
}

/* Before READY: every page of RAM and every state section this VM needs
 * arrived. A stream that ends early (a source that sent END right after
 * PRECOPY_DONE, or lost a section) must not start a guest with missing
 * memory or reset vCPUs. */
static int check_complete(struct receiver *r)
{
	uint64_t missing = recv_missing_pages(&r->rx);

	if (missing)
		return refuse(r, -EPROTO, "incomplete stream: %llu pages of guest memory never arrived",
			      (unsigned long long)missing);
	if (!r->got_vm)
		return refuse(r, -EPROTO, "incomplete stream: no VM state");
	for (unsigned i = 0; i < r->vm->ncpus; i++)
		if (!r->got_vcpu[i])
			return refuse(r, -EPROTO, "incomplete stream: no state for vCPU %u", i);
	if (!r->got_uart)
		return refuse(r, -EPROTO, "incomplete stream: no UART state");
	for (unsigned i = 0; i < r->vm->nvirtio; i++)
		if (!r->got_virtio[i])
			return refuse(r, -EPROTO, "incomplete stream: no state for device %s%u",
				      r->vm->virtio[i]->ops->name, r->vm->virtio[i]->instance);
	return 0;
}

/* A fault injected at point with the action "reset": the connections go
 * down as a reset link would take them. */
static int inject(struct receiver *r, const char *point)
{
	if (!failpoint(getenv("VMM_MIGRATE_FAULT"), point))
		return 0;
	for (unsigned i = 0; i < MAX_CONNECTIONS; i++)
		if (r->lanes[i] && r->lanes[i]->conn_open)
			mig_conn_close(&r->lanes[i]->conn), r->lanes[i]->conn_open = false;
	return refuse(r, -ECONNRESET, "fault injected at %s", point);
}

static int setup(struct receiver *r, const struct stream_hello *hello)
{
	int rc = check_hello(r, hello);

	if (!rc)
		rc = check_connections(r, hello);
	if (!rc)
		rc = ack(r, STREAM_PHASE_SETUP);
	mig_trace("destination: HELLO acknowledged");
	if (!rc)
		rc = accept_joins(r);
	if (!rc)
		rc = ack(r, STREAM_PHASE_CONNECTED);
	if (!rc)
		rc = start_lanes(r);
	close(r->listen_fd);
	r->listen_fd = -1;
	return rc;
}

/* Handles one record of connection 0; returns 1 after END, 0 to go on, or
 * an error. */
static int handle(struct receiver *r, const struct stream_record *rec)
{
	int rc = stream_seq_next(&r->lanes[0]->seq, rec);

	if (rec->type == STREAM_ERROR)
		return refuse(r, -EPROTO, "the source gave up: %.*s", rec->error.reason_len,
			      rec->error.reason);
	if (rc)
		return refuse(r, rc, "records out of order: %s", stream_strerror(rc));
	switch (rec->type) {
	case STREAM_HELLO:
		mig_trace("destination: HELLO");
		rc = setup(r, &rec->hello);
		mig_trace("destination: %u connections joined", r->connections);
		return rc ? rc : inject(r, "dest-setup");
	case STREAM_RAM:
		if (!r->lanes[0]->records_ram++ && (rc = inject(r, "dest-bulk")))
			return rc;
		return recv_load_ram(r->lanes[0], rec);
	case STREAM_ITER:
		mig_trace("destination: ITER %u", rec->iteration);
		return 0;
	case STREAM_SYNC:
		/* The first SYNC ends the bulk pass: between passes. */
		if (!r->syncs++ && (rc = inject(r, "dest-iterate")))
			return rc;
		return ack(r, STREAM_PHASE_SYNCED);
	case STREAM_PRECOPY_DONE:
		mig_trace("destination: PRECOPY_DONE");
		rc = inject(r, "dest-stop-copy");
		return rc ? rc : ack(r, STREAM_PHASE_PRECOPY_DONE);
	case STREAM_STATE:
		/* State goes in only once all RAM is there. */
		if (!r->lanes_done)
			recv_lane_trace(r->lanes[0], "first STATE");
		rc = wait_lanes(r);
		return rc ? rc : load_state(r, &rec->state);
	case STREAM_END:
		rc = wait_lanes(r);
		mig_trace("destination: END");
		if (!rc)
			rc = inject(r, "dest-end");
		return rc ? rc : 1;
	}
	return refuse(r, -EPROTO, "unexpected record type %u from the source", rec->type);
}

/* A stop signal (SIGINT, SIGTERM, SIGHUP) waits on vmm's signalfd: the
 * migration ends before READY, so the source keeps its guest, and
 * vm_run() reads the signal for the exit status. */
static int stop_requested(struct receiver *r)
{
	struct pollfd p = { .fd = r->vm->signal_fd, .events = POLLIN };

	if (r->vm->signal_fd < 0 || poll(&p, 1, 0) != 1)
		return 0;
	return refuse(r, -EINTR, "stopped by a signal: the guest stays with the source");
}

static int receive(struct receiver *r)
{
	for (;;) {
		struct stream_record rec;
		int rc = recv_lane_next(r->lanes[0], &rec, mig_timeout_ms(RECV_TIMEOUT_MS));

		if (rc < 0)
			return rc;
		if ((rc = stop_requested(r)))
			return rc;
		rc = handle(r, &rec);
		if (rc)
			return rc > 0 ? 0 : rc;
	}
}

/* Everything is here and loaded: READY, then the source's COMMIT within a
 * bound. Without it the guest must not run here: the source may resume it. */
static int commit(struct receiver *r)
{
	struct stream_record rec;
	int timeout = mig_timeout_ms(COMMIT_TIMEOUT_MS), rc = check_complete(r);

	if (!rc)
		rc = stop_requested(r);
	if (!rc)
		rc = ack(r, STREAM_PHASE_READY);
	mig_trace("destination: READY sent");
	if (!rc)
		rc = inject(r, "dest-ready");
	if (rc)
		return rc;
	rc = recv_lane_next(r->lanes[0], &rec, timeout);
	if (rc == -ETIMEDOUT) {
		pthread_mutex_lock(&r->rx.lock);
		snprintf(r->rx.err, sizeof(r->rx.err),
			 "no COMMIT from the source within %.1f s of READY: the guest does not run here",
			 timeout / 1000.0);
		pthread_mutex_unlock(&r->rx.lock);
	}
	if (rc < 0)
		return rc;
	if (rec.type == STREAM_ERROR)
		return refuse(r, -EPROTO, "the source gave up: %.*s", rec.error.reason_len,
			      rec.error.reason);
	rc = stream_seq_next(&r->lanes[0]->seq, &rec);
	if (rc)
		return refuse(r, rc, "expected COMMIT: %s", stream_strerror(rc));
	mig_trace("destination: COMMIT");
	return inject(r, "dest-commit");
}

static int first_connection(struct receiver *r, int fd);

static int accept_source(struct receiver *r, const char *uri)
{
	struct transport_addr addr;
	char err[256];
	int fd;

	if (transport_parse_uri(uri, &addr, err, sizeof(err)))
		return refuse(r, -EINVAL, "--incoming: %s", err);
	r->listen_fd = transport_listen(&addr, err, sizeof(err));
	if (r->listen_fd < 0)
		return refuse(r, r->listen_fd, "--incoming: %s", err);
	/* Waits for the source as long as it takes; a signal ends vmm. */
	fd = transport_accept_or_stop(r->listen_fd, -1, r->vm->signal_fd, err, sizeof(err));
	if (fd < 0)
		return refuse(r, fd, "--incoming: %s", err);
	mig_trace("destination: accepted, process CPU %.0f ms", mig_trace_cpu_ms());
	return first_connection(r, fd);
}

/* The source's connection 0, on fd. */
static int first_connection(struct receiver *r, int fd)
{
	r->lanes[0] = open_lane(r, fd);
	if (!r->lanes[0])
		return -ENOMEM;
	mig_trace("destination: connection 0 ready");
	r->nlanes = 1;
	stream_seq_init(&r->lanes[0]->seq);
	return 0;
}

/* Stops every lane (they look at the abort flag twice a second). */
static void stop_lanes(struct receiver *r)
{
	atomic_store(&r->rx.abort, true);
	for (unsigned i = 1; i < MAX_CONNECTIONS; i++)
		if (r->lanes[i])
			recv_lane_join(r->lanes[i]);
}

static void free_receiver(struct receiver *r)
{
	recv_shared_free(&r->rx);
	free(r->got_vcpu);
	free(r);
}

/* From uri, or from fd (connected already) when uri is NULL. */
static int incoming(struct vm *vm, const char *uri, int fd)
{
	struct receiver *r = calloc(1, sizeof(*r));
	int rc;

	if (!r)
		die("incoming migration: out of memory");
	r->vm = vm;
	r->listen_fd = -1;
	r->got_vcpu = calloc(vm->ncpus, sizeof(*r->got_vcpu));
	if (!r->got_vcpu || recv_shared_init(&r->rx, vm))
		die("incoming migration: out of memory");
	recv_ram_begin(vm);
	rc = uri ? accept_source(r, uri) : first_connection(r, fd);
	if (!rc)
		rc = receive(r);
	if (!rc)
		rc = commit(r);
	if (rc) {
		stop_lanes(r);
		if (r->lanes[0] && r->lanes[0]->conn_open) {
			uint8_t buf[512];
			ssize_t len = stream_encode_error(buf, sizeof(buf), 1, r->rx.err);

			if (len > 0 && !mig_conn_send(&r->lanes[0]->conn, buf, (size_t)len))
				mig_conn_flush(&r->lanes[0]->conn, 1000);
		}
		log_err("incoming migration failed: %s", r->rx.err);
	}
	/* Connection 0 stays open for RUNNING, once the vCPUs run. */
	for (unsigned i = rc ? 0 : 1; i < MAX_CONNECTIONS; i++)
		if (r->lanes[i])
			close_lane(r->lanes[i]), r->lanes[i] = NULL;
	if (r->listen_fd >= 0)
		close(r->listen_fd);
	r->listen_fd = -1;
	recv_ram_end(vm);
	if (rc) {
		free_receiver(r);
		return -1;
	}
	vm->incoming = r;
	vm_virtio_resume(vm);
	return 0;
}

int migrate_incoming(struct vm *vm, const char *uri)
{
	return incoming(vm, uri, -1);
}

int migrate_incoming_fd(struct vm *vm, int fd)
{
	return incoming(vm, NULL, fd);
}

void migrate_incoming_running(struct vm *vm)
{
	struct receiver *r = vm->incoming;

	if (!r)
		return;
	/* Committed: the guest is this side's, whatever happens to the answer.
	 * A source that misses it keeps its copy paused (an unknown outcome). */
	if (ack(r, STREAM_PHASE_RUNNING))
		log_err("incoming migration: RUNNING did not reach the source (%s); the guest runs "
			"here, the source keeps its copy paused", r->rx.err);
	mig_trace("destination: RUNNING sent, process CPU %.0f ms", mig_trace_cpu_ms());
	close_lane(r->lanes[0]);
	free_receiver(r);
	vm->incoming = NULL;
}
