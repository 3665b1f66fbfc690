/* virtio-blk on io_uring; see blk.h and docs/blk.md.
 *
 * One queue. The device thread pops a chain into a free slot, parses it
 * (blk_req.c) and submits one SQE whose user_data is the slot index; the
 * ring's eventfd wakes the device thread when completions arrive, and each
 * completion writes the status byte and the used-ring entry of its own
 * slot, so requests finish in whatever order the host completes them.
 * Short transfers are resubmitted for the rest. With --disk ...,direct a
 * transfer the host refuses as misaligned (EINVAL) is redone through a
 * second, buffered descriptor of the same file.
 *
 * Guest memory the device writes (read data, GET_ID, status bytes, and the
 * used ring through virtq_push) is marked in the VMM-side dirty bitmap once
 * the write is done, so live migration sends it again. The kernel writes
 * read data on its own, so every completion of a READ marks its buffers
 * when it is reaped, whatever then becomes of the request.
 *
 * Slots belong to a generation: a device reset starts a new one and waits
 * (bounded) for the old requests, and whatever of them completes later is
 * dropped without touching the reset queue (its read data still marked).
 * ops->pause waits for every request in flight and answers it, so nothing
 * is in flight while the device's state is saved; a pause that times out
 * fails, and the caller resumes the device, which reaps what came late.
 * Requests the driver made available but the device has not popped simply
 * stay in the available ring. */
#include "virtio/blk.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <liburing.h>
#include <linux/falloc.h>
#include <linux/virtio_blk.h>
#include <linux/virtio_ring.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "virtio/blk_req.h"
#include "virtio/mmio.h"
#include "vmm/util.h"
#include "vmm/vm.h"

/* A 512-entry queue lets a request carry 510 data buffers: Linux then
 * sends a 1 MiB transfer of scattered pages as one request, not three. At
 * most BLK_SLOTS requests are in flight; the rest wait in the ring. */
#define BLK_QUEUE_MAX 512
#define BLK_SEG_MAX (BLK_QUEUE_MAX - 2)   /* data buffers per request */
#define BLK_MAX_BUFS (BLK_SEG_MAX + 2)    /* plus header and status */
#define BLK_SLOTS 128
#define BLK_SIZE_MAX (1u << 20)           /* bytes per data buffer */
#define BLK_MAX_DISCARD_SECTORS (1u << 22) /* 2 GiB per range */
#define BLK_DISCARD_ALIGN 8               /* sectors: 4 KiB */
#define BLK_CONFIG_SIZE 60                /* up to write_zeroes_may_unmap + padding */
#define BLK_DRAIN_MS 10000

struct blk_slot {
	struct blk_req req;
	uint16_t head;
	uint32_t gen;
	uint64_t offset;   /* file offset of the next byte to transfer */
	uint64_t done;     /* data bytes transferred */
	unsigned first;    /* first iov entry not completely transferred */
	bool buffered;     /* redone on the buffered descriptor */
	struct iovec iov[BLK_MAX_BUFS];
	uint64_t gpa[BLK_MAX_BUFS];
};

struct blk {
	struct virtio_dev dev;
	struct blk_options opts;
	int fd;          /* the image; O_DIRECT with opts.direct */
	int fd_buffered; /* the image through the page cache (== fd without direct) */
	uint64_t size;   /* bytes */
	bool can_punch;  /* the file system punches holes: DISCARD, WRITE_ZEROES */
	struct blk_limits lim;
	struct io_uring ring;
	bool ring_ok;
	int efd;
	struct blk_slot *slots;
	uint16_t free[BLK_SLOTS];
	unsigned nfree;
	unsigned inflight; /* slots submitted to the ring */
	uint32_t gen;
	bool pushed;       /* used entries added since the last interrupt */
	int drain_ms;      /* how long pause, reset and destroy wait for requests */
	bool logged_error;
	struct virtq_buf bufs[BLK_MAX_BUFS];
};

static struct blk *to_blk(struct virtio_dev *dev)
{
	return (struct blk *)dev; /* dev is the first member */
}

struct virtio_dev *blk_dev(struct blk *b)
{
	return &b->dev;
}

void blk_set_drain_timeout(struct blk *b, int ms)
{
	b->drain_ms = ms;
}

static uint64_t blk_features(struct virtio_dev *dev)
{
	struct blk *b = to_blk(dev);
	uint64_t f = 1ULL << VIRTIO_BLK_F_SIZE_MAX | 1ULL << VIRTIO_BLK_F_SEG_MAX |
		     1ULL << VIRTIO_BLK_F_BLK_SIZE | 1ULL << VIRTIO_BLK_F_FLUSH |
		     1ULL << VIRTIO_RING_F_INDIRECT_DESC;

	if (b->opts.ro)
		f |= 1ULL << VIRTIO_BLK_F_RO;
	else if (b->can_punch)
		f |= 1ULL << VIRTIO_BLK_F_DISCARD | 1ULL << VIRTIO_BLK_F_WRITE_ZEROES;
	return f;
}

static void put_le32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, 4);
}

static void blk_config_read(struct virtio_dev *dev, uint32_t offset, uint8_t *data, uint32_t len)
{
	struct blk *b = to_blk(dev);
	uint8_t cfg[BLK_CONFIG_SIZE] = { 0 };
	uint64_t cap = htole64(b->lim.capacity);

	memcpy(cfg, &cap, 8);
	put_le32(cfg + 8, BLK_SIZE_MAX);
	put_le32(cfg + 12, BLK_SEG_MAX);
	put_le32(cfg + 20, BLK_SECTOR_SIZE);          /* blk_size */
	cfg[34] = 1;                                  /* num_queues, le16 */
	put_le32(cfg + 36, BLK_MAX_DISCARD_SECTORS);  /* max_discard_sectors */
	put_le32(cfg + 40, 1);                        /* max_discard_seg */
	put_le32(cfg + 44, BLK_DISCARD_ALIGN);        /* discard_sector_alignment */
	put_le32(cfg + 48, BLK_MAX_DISCARD_SECTORS);  /* max_write_zeroes_sectors */
	put_le32(cfg + 52, 1);                        /* max_write_zeroes_seg */
	cfg[56] = 1;                                  /* write_zeroes_may_unmap */
	memcpy(data, cfg + offset, len);
}

static void blk_config_write(struct virtio_dev *dev, uint32_t offset, const uint8_t *data,
			     uint32_t len)
{
	/* Nothing is writable: CONFIG_WCE is not offered. */
	(void)dev;
	(void)offset;
	(void)data;
	(void)len;
}

static void free_slot(struct blk *b, unsigned idx)
{
	b->free[b->nfree++] = (uint16_t)idx;
}

/* Answers the request in slot idx: status byte, used entry. */
static void finish(struct blk *b, unsigned idx, uint8_t status, uint64_t data_written)
{
	struct blk_slot *s = &b->slots[idx];

	if (s->req.status_hva) {
		*s->req.status_hva = status;
		guest_mem_mark_dirty(&b->dev.vm->mem, s->req.status_gpa, 1);
	}
	/* A broken or reset queue refuses the push: the driver is gone. */
	(void)virtq_push(&b->dev.queues[0], s->head, blk_req_written(&s->req, data_written));
	b->pushed = true;
	free_slot(b, idx);
}

/* A READ's completion: the kernel has already written into the guest's
 * buffers, res bytes from s->first on (or, for a failure, any part of
 * them), so they are marked before anything is decided about the request.
 * A late completion (its request from before a device reset, or reaped
 * after a drain gave up) is then never a write migration misses. */
static void mark_read(struct blk *b, const struct blk_slot *s, int res)
{
	uint64_t left = res > 0 ? (uint64_t)res : UINT64_MAX;

	for (unsigned i = s->first; i < s->req.niov && left; i++) {
		uint64_t take = s->iov[i].iov_len < left ? s->iov[i].iov_len : left;

		guest_mem_mark_dirty(&b->dev.vm->mem, s->gpa[i], take);
		left -= take;
	}
}

/* Advances the slot's iov past n transferred bytes. */
static void consume(struct blk_slot *s, uint64_t n)
{
	while (n && s->first < s->req.niov) {
		struct iovec *v = &s->iov[s->first];
		uint64_t take = v->iov_len < n ? v->iov_len : n;

		v->iov_base = (uint8_t *)v->iov_base + take;
		v->iov_len -= take;
		s->gpa[s->first] += take;
		n -= take;
		if (!v->iov_len)
			s->first++;
	}
}

static struct io_uring_sqe *get_sqe(struct blk *b)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&b->ring);

	if (!sqe) {
		io_uring_submit(&b->ring);
		sqe = io_uring_get_sqe(&b->ring);
	}
	return sqe;
}

/* Queues the (rest of the) request in slot idx; it is in flight after. */
static int submit(struct blk *b, unsigned idx)
{
	struct blk_slot *s = &b->slots[idx];
	struct io_uring_sqe *sqe = get_sqe(b);
	int fd = s->buffered ? b->fd_buffered : b->fd;
	uint64_t len = s->req.nsectors << BLK_SECTOR_SHIFT;

	if (!sqe)
		return -EBUSY;
	switch (s->req.op) {
	case BLK_OP_READ:
		io_uring_prep_readv(sqe, fd, s->iov + s->first, s->req.niov - s->first, s->offset);
		break;
	case BLK_OP_WRITE:
		io_uring_prep_writev(sqe, fd, s->iov + s->first, s->req.niov - s->first, s->offset);
		break;
	case BLK_OP_FLUSH:
		io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
		break;
	case BLK_OP_DISCARD:
	case BLK_OP_WRITE_ZEROES:
		/* A hole reads as zeros, so one operation serves both (the
		 * device says write-zeroes may unmap). */
		io_uring_prep_fallocate(sqe, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
					s->req.sector << BLK_SECTOR_SHIFT, len);
		break;
	default:
		return -EINVAL;
	}
	io_uring_sqe_set_data64(sqe, idx);
	return 0;
}

static const char *op_name(enum blk_op op)
{
	static const char *const names[] = { "none", "read", "write", "flush", "get-id", "discard",
					     "write-zeroes" };

	return (unsigned)op < ARRAY_SIZE(names) ? names[op] : "?";
}

static void host_error(struct blk *b, const struct blk_slot *s, int res)
{
	/* The first one only: a failing disk would flood the log. */
	if (b->logged_error)
		return;
	b->logged_error = true;
	log_err("blk%u: %s at sector %" PRIu64 " failed: %s; the guest gets IOERR (further errors "
		"of this disk are not logged)", b->dev.instance, op_name(s->req.op), s->req.sector,
		res ? strerror(-res) : "end of file");
}

/* One completion of slot idx with result res. */
static void complete(struct blk *b, unsigned idx, int res)
{
	struct blk_slot *s = &b->slots[idx];
	bool data = s->req.op == BLK_OP_READ || s->req.op == BLK_OP_WRITE;
	uint8_t status = VIRTIO_BLK_S_OK;

	b->inflight--;
	if (s->req.op == BLK_OP_READ)
		mark_read(b, s, res);
	if (s->gen != b->gen) { /* from before a reset: the queue is gone */
		free_slot(b, idx);
		return;
	}
	if (res == -EAGAIN || res == -EINTR || (res == -EINVAL && data && !s->buffered &&
						  b->fd != b->fd_buffered)) {
		s->buffered |= res == -EINVAL;
		goto again;
	}
	if (data && res > 0) {
		consume(s, (uint64_t)res);
		s->done += (uint64_t)res;
		s->offset += (uint64_t)res;
		if (s->done < s->req.len)
			goto again;
	} else if (res < 0 && !(s->req.op == BLK_OP_DISCARD && res == -EOPNOTSUPP)) {
		/* A discard is only a hint; anything else failed. */
		status = VIRTIO_BLK_S_IOERR;
	} else if (data) { /* 0 bytes: the image got shorter under us */
		status = VIRTIO_BLK_S_IOERR;
	}
	if (status != VIRTIO_BLK_S_OK)
		host_error(b, s, res);
	finish(b, idx, status, status == VIRTIO_BLK_S_OK && s->req.op == BLK_OP_READ ? s->req.len : 0);
	return;
again:
	if (submit(b, idx)) {
		finish(b, idx, VIRTIO_BLK_S_IOERR, 0);
		return;
	}
	b->inflight++;
}

/* Handles every completion the ring holds. */
static void reap(struct blk *b)
{
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;

	io_uring_for_each_cqe(&b->ring, head, cqe) {
		if (cqe->user_data < BLK_SLOTS)
			complete(b, (unsigned)cqe->user_data, cqe->res);
		n++;
	}
	io_uring_cq_advance(&b->ring, n);
	if (io_uring_sq_ready(&b->ring))
		io_uring_submit(&b->ring);
}

static void notify(struct blk *b)
{
	if (b->pushed) {
		b->pushed = false;
		virtio_notify_used(&b->dev, &b->dev.queues[0]);
	}
}

/* GET_ID: the id, zero-padded to 20 bytes (or the buffer's size). */
static void answer_get_id(struct blk *b, unsigned idx)
{
	struct blk_slot *s = &b->slots[idx];
	uint8_t id[BLK_ID_BYTES] = { 0 };
	uint64_t n = s->req.len < sizeof(id) ? s->req.len : sizeof(id), done = 0;

	memcpy(id, b->opts.id, strnlen(b->opts.id, sizeof(id)));
	for (unsigned i = 0; i < s->req.niov && done < n; i++) {
		uint64_t take = s->iov[i].iov_len < n - done ? s->iov[i].iov_len : n - done;

		memcpy(s->iov[i].iov_base, id + done, take);
		guest_mem_mark_dirty(&b->dev.vm->mem, s->gpa[i], take);
		done += take;
	}
	finish(b, idx, VIRTIO_BLK_S_OK, n);
}

/* Pops and starts requests while slots are free. */
static void process_queue(struct blk *b)
{
	struct virtq *vq = &b->dev.queues[0];

	/* From the negotiated features each time: a device that arrived by
	 * migration was never activated here. */
	b->lim.discard = virtio_has_feature(&b->dev, VIRTIO_BLK_F_DISCARD);
	b->lim.write_zeroes = virtio_has_feature(&b->dev, VIRTIO_BLK_F_WRITE_ZEROES);
	while (b->nfree) {
		unsigned idx = b->free[b->nfree - 1];
		struct blk_slot *s = &b->slots[idx];
		struct virtq_chain chain;
		const char *why = NULL;
		int rc = virtq_pop(vq, b->bufs, BLK_MAX_BUFS, &chain, &why);

		if (rc < 0)
			virtio_queue_broken(&b->dev, 0, why);
		if (rc <= 0)
			break;
		b->nfree--;
		s->head = chain.head;
		s->gen = b->gen;
		s->first = 0;
		s->done = 0;
		s->buffered = false;
		switch (blk_req_parse(b->bufs, chain.nbufs, &b->lim, &s->req, s->iov, s->gpa,
				      BLK_MAX_BUFS)) {
		case BLK_OP_NONE:
			finish(b, idx, s->req.status, 0);
			break;
		case BLK_OP_GET_ID:
			answer_get_id(b, idx);
			break;
		default:
			s->offset = s->req.sector << BLK_SECTOR_SHIFT;
			if (submit(b, idx))
				finish(b, idx, VIRTIO_BLK_S_IOERR, 0);
			else
				b->inflight++;
		}
	}
	if (io_uring_sq_ready(&b->ring))
		io_uring_submit(&b->ring);
	/* Fast files complete during the submit: answer them now rather than
	 * after another trip through epoll for the eventfd. */
	if (io_uring_cq_ready(&b->ring))
		reap(b);
}

static void blk_queue_notify(struct virtio_dev *dev, unsigned q)
{
	struct blk *b = to_blk(dev);

	(void)q;
	process_queue(b);
	notify(b);
}

static void blk_io_ready(struct virtio_dev *dev)
{
	struct blk *b = to_blk(dev);

	reap(b);
	/* Freed slots may let requests in that waited for one. */
	if ((dev->status & VIRTIO_STATUS_DRIVER_OK) && dev->queues[0].ready)
		process_queue(b);
	notify(b);
}

/* Waits until nothing is in flight, at most timeout_ms. 0 or -ETIMEDOUT. */
static int drain(struct blk *b, int timeout_ms)
{
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000ULL;

	while (b->inflight) {
		struct __kernel_timespec ts = { .tv_sec = 0, .tv_nsec = 50000000 };
		struct io_uring_cqe *cqe;

		io_uring_submit(&b->ring);
		(void)io_uring_wait_cqe_timeout(&b->ring, &cqe, &ts);
		reap(b);
		if (b->inflight && now_ns() >= deadline)
			return -ETIMEDOUT;
	}
	return 0;
}

static int blk_activate(struct virtio_dev *dev)
{
	(void)dev;
	return 0;
}

static void blk_reset(struct virtio_dev *dev)
{
	struct blk *b = to_blk(dev);

	/* Requests of the old generation are dropped as they complete. */
	b->gen++;
	b->pushed = false;
	if (drain(b, b->drain_ms))
		log_err("blk%u: requests still in flight %d ms after a device reset", dev->instance,
			b->drain_ms);
}

static int blk_pause(struct virtio_dev *dev)
{
	struct blk *b = to_blk(dev);
	int rc = drain(b, b->drain_ms);

	/* The answers go out now, so the saved used ring holds them. */
	notify(b);
	if (rc)
		log_err("blk%u: %u requests still in flight after %d ms", dev->instance, b->inflight,
			b->drain_ms);
	return rc;
}

static int blk_resume(struct virtio_dev *dev)
{
	/* A pause that timed out left requests behind: take what completed.
	 * The transport kicks the queue after this. */
	reap(to_blk(dev));
	notify(to_blk(dev));
	return 0;
}

static void blk_describe(struct virtio_dev *dev, char *buf, size_t size)
{
	struct blk *b = to_blk(dev);

	/* Everything the guest can see: size, features, id. */
	snprintf(buf, size, "blk%u:%" PRIu64 "%s%s%s%s", dev->instance,
		 b->lim.capacity << BLK_SECTOR_SHIFT, b->opts.ro ? ":ro" : "",
		 b->can_punch ? ":discard" : "", b->opts.id[0] ? ":id=" : "", b->opts.id);
}

static const struct virtio_dev_ops blk_ops = {
	.name = "blk",
	.device_id = 2, /* VIRTIO_ID_BLOCK */
	.features = blk_features,
	.config_size = BLK_CONFIG_SIZE,
	.config_read = blk_config_read,
	.config_write = blk_config_write,
	.activate = blk_activate,
	.reset = blk_reset,
	.queue_notify = blk_queue_notify,
	.io_ready = blk_io_ready,
	.describe = blk_describe,
	.pause = blk_pause,
	.resume = blk_resume,
};

/* Opens the image (twice with direct) and learns its size and whether it
 * can punch holes. 0 or -errno with a reason. */
static int open_image(struct blk *b, char *err, size_t errlen)
{
	const char *path = b->opts.path;
	int flags = (b->opts.ro ? O_RDONLY : O_RDWR) | O_CLOEXEC;
	struct stat st;

	b->fd_buffered = open(path, flags);
	if (b->fd_buffered < 0)
		return errf(-errno, err, errlen, "--disk %s: %s", path, strerror(errno));
	if (fstat(b->fd_buffered, &st) < 0)
		return errf(-errno, err, errlen, "--disk %s: %s", path, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return errf(-EINVAL, err, errlen, "--disk %s: not a regular file (a raw image)", path);
	if ((uint64_t)st.st_size < BLK_SECTOR_SIZE)
		return errf(-EINVAL, err, errlen, "--disk %s: smaller than one 512-byte sector", path);
	b->size = (uint64_t)st.st_size;
	b->fd = b->fd_buffered;
	if (b->opts.direct) {
		b->fd = open(path, flags | O_DIRECT);
		if (b->fd < 0)
			return errf(-errno, err, errlen, "--disk %s,direct: %s (does the file system "
				    "support O_DIRECT?)", path, strerror(errno));
	}
	/* A hole past the end changes nothing; it only tells whether the file
	 * system can punch one. */
	b->can_punch = !b->opts.ro &&
		       fallocate(b->fd_buffered, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				 (off_t)((b->size + 4095) & ~4095ULL), 4096) == 0;
	b->lim.capacity = b->size >> BLK_SECTOR_SHIFT;
	b->lim.ro = b->opts.ro;
	b->lim.max_discard_sectors = BLK_MAX_DISCARD_SECTORS;
	b->lim.max_write_zeroes_sectors = BLK_MAX_DISCARD_SECTORS;
	return 0;
}

static int setup_ring(struct blk *b, char *err, size_t errlen)
{
	int rc = io_uring_queue_init(BLK_SLOTS, &b->ring, 0);

	if (rc)
		return errf(rc, err, errlen, "--disk %s: io_uring: %s", b->opts.path, strerror(-rc));
	b->ring_ok = true;
	b->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (b->efd < 0)
		return errf(-errno, err, errlen, "eventfd: %s", strerror(errno));
	rc = io_uring_register_eventfd(&b->ring, b->efd);
	if (rc)
		return errf(rc, err, errlen, "--disk %s: io_uring eventfd: %s", b->opts.path,
			    strerror(-rc));
	return 0;
}

struct blk *blk_open(struct vm *vm, const struct blk_options *opts, unsigned instance, char *err,
		     size_t errlen)
{
	struct blk *b = calloc(1, sizeof(*b));

	if (!b || !(b->slots = calloc(BLK_SLOTS, sizeof(*b->slots)))) {
		free(b);
		errf(-ENOMEM, err, errlen, "out of memory");
		return NULL;
	}
	b->opts = *opts;
	b->drain_ms = BLK_DRAIN_MS;
	b->fd = b->fd_buffered = b->efd = -1;
	for (unsigned i = 0; i < BLK_SLOTS; i++)
		free_slot(b, BLK_SLOTS - 1 - i);
	b->dev.instance = instance;
	if (open_image(b, err, errlen) || setup_ring(b, err, errlen) ||
	    virtio_dev_init(&b->dev, vm, &blk_ops, 1, BLK_QUEUE_MAX, err, errlen)) {
		blk_destroy(b);
		return NULL;
	}
	b->dev.io_fd = b->efd;
	return b;
}

struct blk *blk_create(struct vm *vm, const struct blk_options *opts, unsigned index,
		       unsigned instance, char *err, size_t errlen)
{
	struct blk *b = blk_open(vm, opts, instance, err, errlen);

	if (b && virtio_mmio_attach(&b->dev, index, err, errlen)) {
		blk_destroy(b);
		return NULL;
	}
	return b;
}

void blk_destroy(struct blk *b)
{
	if (!b)
		return;
	if (b->dev.ops)
		virtio_mmio_detach(&b->dev);
	if (b->ring_ok) {
		b->gen++;
		if (drain(b, b->drain_ms))
			log_err("blk%u: closing with requests in flight", b->dev.instance);
		io_uring_queue_exit(&b->ring);
	}
	if (b->efd >= 0)
		close(b->efd);
	if (b->fd >= 0 && b->fd != b->fd_buffered)
		close(b->fd);
	if (b->fd_buffered >= 0)
		close(b->fd_buffered);
	free(b->slots);
	free(b);
}
