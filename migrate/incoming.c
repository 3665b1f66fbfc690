/* The destination side of live migration (`vmm run --incoming URI`): waits
 * for one source, checks and loads the whole stream into a VM that has not
 * run, and only then lets vm_run() start the vCPUs. Anything wrong ends
 * with one line and a non-zero exit: a partial guest never runs. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "migrate/migration.h"
#include "migrate/ram.h"
#include "migrate/state.h"
#include "migrate/stream.h"
#include "migrate/transport.h"
#include "vmm/devices.h"
#include "vmm/util.h"
#include "vmm/vcpu.h"
#include "vmm/vm.h"

#define RECV_BUF (STREAM_HDR_SIZE + STREAM_MAX_PAYLOAD + 4096)
#define RECV_TIMEOUT_MS 60000

struct receiver {
	struct vm *vm;
	struct mig_conn conn;
	bool conn_open;
	struct stream_seq seq;
	struct stream_layout layout;
	struct stream_region regions[2];
	struct ram_decompressor zd;
	uint8_t *buf, *scratch;
	size_t have;
	char err[320];
};

static int refuse(struct receiver *r, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int refuse(struct receiver *r, int rc, const char *fmt, ...)
{
	va_list ap;

	if (!r->err[0]) {
		va_start(ap, fmt);
		vsnprintf(r->err, sizeof(r->err), fmt, ap);
		va_end(ap);
	}
	return rc < 0 ? rc : -EIO;
}

static int send_now(struct receiver *r, const uint8_t *buf, ssize_t len)
{
	int rc;

	if (!r->conn_open)
		return -ENOTCONN;
	if (len < 0)
		return refuse(r, (int)len, "encoding a reply: %s", stream_strerror((int)len));
	rc = mig_conn_send(&r->conn, buf, (size_t)len);
	if (!rc)
		rc = mig_conn_flush(&r->conn, RECV_TIMEOUT_MS);
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

static int load_ram(struct receiver *r, const struct stream_record *rec)
{
	const struct stream_ram *ram = &rec->ram;
	const uint8_t *data = ram->data;
	int rc = stream_check_ram_ranges(rec, &r->layout);

	if (rc)
		return refuse(r, rc, "bad RAM record: %s", stream_strerror(rc));
	if (ram->encoding == STREAM_RAM_ZSTD) {
		ssize_t n = ram_decompress(&r->zd, ram->data, ram->data_len, r->scratch, ram->raw_len);

		if (n < 0)
			return refuse(r, (int)n, "bad compressed RAM: %s", ram_strerror((int)n));
		data = r->scratch;
	}
	for (unsigned i = 0; i < ram->nr_ranges; i++) {
		struct stream_range range = stream_ram_range(rec, i);
		size_t len = (size_t)range.pages << GUEST_PAGE_SHIFT;
		uint8_t *dst = gpa_to_hva(&r->vm->mem, range.gpa, len);

		if (!dst)
			return refuse(r, -EINVAL, "RAM range outside guest memory");
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
	return 0;
}

static int load_state(struct receiver *r, const struct stream_state *st)
{
	struct state_reader rd;
	struct virtio_dev *dev;
	char err[256] = "";
	int rc = -EINVAL;

	state_reader_init(&rd, st->data, st->data_len);
	if (st->name_len == 2 && !memcmp(st->name, "vm", 2) && st->instance == 0) {
		rc = state_load_vm(r->vm->fd, st->data, st->data_len, err, sizeof(err));
	} else if (st->name_len == 4 && !memcmp(st->name, "vcpu", 4) && st->instance < r->vm->ncpus) {
		rc = state_load_vcpu(r->vm->vcpus[st->instance].fd, st->data, st->data_len, err,
				     sizeof(err));
	} else if (st->name_len == 4 && !memcmp(st->name, "uart", 4) && st->instance == 0) {
		rc = uart_load(&r->vm->uart, &rd);
	} else if ((dev = vm_virtio_find(r->vm, st->name, st->name_len, st->instance))) {
		rc = virtio_load(dev, &rd);
	} else {
		return refuse(r, -EINVAL, "unknown state section '%.*s' %u", st->name_len, st->name,
			      st->instance);
	}
	if (rc)
		return refuse(r, rc, "bad state section '%.*s' %u%s%s", st->name_len, st->name,
			      st->instance, err[0] ? ": " : "", err);
	return 0;
}

/* Handles one record; returns 1 after END, 0 to go on, or an error. */
static int handle(struct receiver *r, const struct stream_record *rec)
{
	int rc = stream_seq_next(&r->seq, rec);

	if (rec->type == STREAM_ERROR)
		return refuse(r, -EPROTO, "the source gave up: %.*s", rec->error.reason_len,
			      rec->error.reason);
	if (rc)
		return refuse(r, rc, "records out of order: %s", stream_strerror(rc));
	switch (rec->type) {
	case STREAM_HELLO:
		rc = check_hello(r, &rec->hello);
		return rc ? rc : ack(r, STREAM_PHASE_SETUP);
	case STREAM_RAM: return load_ram(r, rec);
	case STREAM_ITER: return 0;
	case STREAM_PRECOPY_DONE: return ack(r, STREAM_PHASE_PRECOPY_DONE);
	case STREAM_STATE: return load_state(r, &rec->state);
	case STREAM_END: return 1;
	}
	return refuse(r, -EPROTO, "unexpected record type %u from the source", rec->type);
}

static int receive(struct receiver *r)
{
	for (;;) {
		struct stream_record rec;
		size_t used = 0;
		ssize_t n;
		int rc = stream_decode(r->buf, r->have, &rec, &used);

		if (rc < 0)
			return refuse(r, rc, "bad migration stream: %s", stream_strerror(rc));
		if (rc > 0) {
			rc = handle(r, &rec);
			memmove(r->buf, r->buf + used, r->have - used);
			r->have -= used;
			if (rc)
				return rc;
			continue;
		}
		n = mig_conn_recv(&r->conn, r->buf + r->have, RECV_BUF - r->have, RECV_TIMEOUT_MS);
		if (n == 0)
			return refuse(r, -ECONNRESET, "the migration stream ended early (source gone?)");
		if (n < 0)
			return refuse(r, (int)n, "receiving the migration stream: %s", strerror((int)-n));
		r->have += (size_t)n;
	}
}

static int accept_source(struct receiver *r, const char *uri)
{
	struct transport_addr addr;
	char err[256];
	int lfd, fd, rc;

	if (transport_parse_uri(uri, &addr, err, sizeof(err)))
		return refuse(r, -EINVAL, "--incoming: %s", err);
	lfd = transport_listen(&addr, err, sizeof(err));
	if (lfd < 0)
		return refuse(r, lfd, "--incoming: %s", err);
	/* Waits for the source as long as it takes; a signal ends vmm. */
	fd = transport_accept(lfd, -1, err, sizeof(err));
	close(lfd);
	if (fd < 0)
		return refuse(r, fd, "--incoming: %s", err);
	rc = mig_conn_init(&r->conn, fd, 16);
	if (rc) {
		close(fd);
		return refuse(r, rc, "io_uring: %s", strerror(-rc));
	}
	r->conn_open = true;
	return 0;
}

int migrate_incoming(struct vm *vm, const char *uri)
{
	struct receiver *r = calloc(1, sizeof(*r));
	int rc;

	if (!r || !(r->buf = malloc(RECV_BUF)) || !(r->scratch = malloc(STREAM_RAM_MAX_BYTES)) ||
	    ram_decompressor_init(&r->zd))
		die("incoming migration: out of memory");
	r->vm = vm;
	stream_seq_init(&r->seq);
	for (unsigned i = 0; i < vm->mem.nregions; i++)
		r->regions[i] = (struct stream_region){ vm->mem.regions[i].gpa, vm->mem.regions[i].size };
	r->layout = (struct stream_layout){ GUEST_PAGE_SIZE, vm->mem.nregions, r->regions };
	rc = accept_source(r, uri);
	if (!rc)
		rc = receive(r);
	if (rc == 1)
		rc = ack(r, STREAM_PHASE_COMPLETE);
	if (rc && r->conn_open) {
		uint8_t buf[512];
		ssize_t len = stream_encode_error(buf, sizeof(buf), 1, r->err);

		if (len > 0 && !mig_conn_send(&r->conn, buf, (size_t)len))
			mig_conn_flush(&r->conn, 1000);
	}
	if (rc)
		log_err("incoming migration failed: %s", r->err);
	if (r->conn_open)
		mig_conn_close(&r->conn);
	ram_decompressor_free(&r->zd);
	free(r->scratch);
	free(r->buf);
	free(r);
	if (!rc)
		vm_virtio_resume(vm);
	return rc ? -1 : 0;
}
