/* virtio-blk without KVM: blk_req_parse() on hand-built chains (every
 * layout and range rule, both answers and the slices it hands out),
 * --disk parsing, and a device set up with blk_open() whose late read
 * completions must mark guest memory dirty. */
#include <errno.h>
#include <fcntl.h>
#include <linux/virtio_blk.h>
#include <linux/virtio_ring.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/unit/unit.h"
#include "virtio/blk.h"
#include "virtio/blk_req.h"
#include "vmm/config.h"
#include "vmm/vm.h"

#define CAP 1000 /* sectors */
#define MAXB 8

/* A chain over one local "guest memory" buffer; gpa = offset + 0x100000. */
struct chain {
	uint8_t mem[16384];
	size_t used;
	struct virtq_buf bufs[MAXB];
	unsigned n;
};

#define GPA_BASE 0x100000ULL

static uint8_t *add(struct chain *c, uint32_t len, bool writes)
{
	uint8_t *p = c->mem + c->used;

	c->bufs[c->n++] = (struct virtq_buf){
		.hva = len ? p : NULL, .gpa = GPA_BASE + c->used, .len = len, .device_writes = writes,
	};
	c->used += len;
	return p;
}

static void put_hdr(uint8_t *p, uint32_t type, uint64_t sector)
{
	memset(p, 0, BLK_HDR_SIZE);
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(type >> (8 * i));
	for (int i = 0; i < 8; i++)
		p[8 + i] = (uint8_t)(sector >> (8 * i));
}

static void put_seg(uint8_t *p, uint64_t sector, uint32_t num, uint32_t flags)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(sector >> (8 * i));
	for (int i = 0; i < 4; i++) {
		p[8 + i] = (uint8_t)(num >> (8 * i));
		p[12 + i] = (uint8_t)(flags >> (8 * i));
	}
}

static const struct blk_limits lim_rw = {
	.capacity = CAP, .discard = true, .write_zeroes = true,
	.max_discard_sectors = 64, .max_write_zeroes_sectors = 64,
};

static enum blk_op parse(struct chain *c, const struct blk_limits *lim, struct blk_req *req,
			 struct iovec *iov, uint64_t *gpa)
{
	return blk_req_parse(c->bufs, c->n, lim, req, iov, gpa, MAXB);
}

/* hdr | data (readable for OUT, writable for IN) | status */
static void simple(struct chain *c, uint32_t type, uint64_t sector, uint32_t len)
{
	memset(c, 0, sizeof(*c));
	put_hdr(add(c, BLK_HDR_SIZE, false), type, sector);
	add(c, len, type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_GET_ID);
	add(c, 1, true);
}

static void test_read_write(void)
{
	static struct chain c;
	struct blk_req req;
	struct iovec iov[MAXB];
	uint64_t gpa[MAXB];

	simple(&c, VIRTIO_BLK_T_IN, 7, 4096);
	CHECK_EQ(parse(&c, &lim_rw, &req, iov, gpa), BLK_OP_READ);
	CHECK_EQ(req.sector, 7);
	CHECK_EQ(req.niov, 1);
	CHECK_EQ(req.len, 4096);
	CHECK(iov[0].iov_base == c.mem + 16 && iov[0].iov_len == 4096);
	CHECK_EQ(gpa[0], GPA_BASE + 16);
	CHECK(req.status_hva == c.mem + 16 + 4096);
	CHECK_EQ(req.status_gpa, GPA_BASE + 16 + 4096);
	CHECK_EQ(blk_req_written(&req, 4096), 4097);

	/* Two readable data buffers; a zero-length descriptor in between is skipped. */
	memset(&c, 0, sizeof(c));
	put_hdr(add(&c, BLK_HDR_SIZE, false), VIRTIO_BLK_T_OUT, CAP - 3);
	add(&c, 512, false);
	add(&c, 0, false);
	add(&c, 1024, false);
	add(&c, 1, true);
	CHECK_EQ(parse(&c, &lim_rw, &req, iov, gpa), BLK_OP_WRITE);
	CHECK_EQ(req.niov, 2);
	CHECK_EQ(req.len, 1536);
	CHECK_EQ(iov[1].iov_len, 1024);
	CHECK_EQ(blk_req_written(&req, 0), 1);

	/* Any framing: header and data in one buffer, data and status in one. */
	memset(&c, 0, sizeof(c));
	put_hdr(add(&c, BLK_HDR_SIZE + 1024, false), VIRTIO_BLK_T_OUT, 0);
	add(&c, 1, true);
	CHECK_EQ(parse(&c, &lim_rw, &req, iov, gpa), BLK_OP_WRITE);
	CHECK(req.niov == 1 && iov[0].iov_base == c.mem + 16 && iov[0].iov_len == 1024);
	CHECK_EQ(gpa[0], GPA_BASE + 16);
	memset(&c, 0, sizeof(c));
	put_hdr(add(&c, 8, false), VIRTIO_BLK_T_IN, 0); /* the header split in two */
	memmove(add(&c, 8, false), c.mem + 8, 8);
	add(&c, 513, true);
	CHECK_EQ(parse(&c, &lim_rw, &req, iov, gpa), BLK_OP_READ);
	CHECK(req.niov == 1 && iov[0].iov_len == 512 && req.status_hva == c.mem + 16 + 512);

	/* Zero-length transfer inside the disk: answered at once. */
	simple(&c, VIRTIO_BLK_T_IN, 3, 0);
	CHECK_EQ(parse(&c, &lim_rw, &req, iov, gpa), BLK_OP_NONE);
	CHECK_EQ(req.status, VIRTIO_BLK_S_OK);
}

static void test_ranges(void)
{
	static struct chain c;
	struct blk_req req;
	struct iovec iov[MAXB];
	uint64_t gpa[MAXB];

	simple(&c, VIRTIO_BLK_T_IN, CAP - 1, 512); /* the last sector */
	CHECK_EQ(parse(&c, &lim_rw, &req, iov, gpa), BLK_OP_READ);
	simple(&c, VIRTIO_BLK_T_IN, CAP - 1, 1024); /* one past the end */
	CHECK_EQ(parse(&c, &lim_rw, &req, iov, gpa), BLK_OP_NONE);
	CHECK_EQ(req.status, VIRTIO_BLK_S_IOERR);
	simple(&c, VIRTIO_BLK_T_OUT, CAP, 512);
	CHECK_EQ(parse(&c, &lim_rw, &req, iov, gpa), BLK_OP_NONE);
	CHECK_EQ(req.status, VIRTIO_BLK_S_IOERR);
	/* sector + length overflowing 64 bits, and sector * 512 overflowing. */
	simple(&c, VIRTIO_BLK_T_IN, UINT64_MAX, 512);
	CHECK_EQ(parse(&c, &lim_rw, &req, iov, gpa), BLK_OP_NONE);
	CHECK_EQ(req.status, VIRTIO_BLK_S_IOERR);
	simple(&c, VIRTIO_BLK_T_OUT, 1ULL << 55, 512);
	CHECK_EQ(parse(&c, &lim_rw, &req, iov, gpa), BLK_OP_NONE);
	CHECK_EQ(req.status, VIRTIO_BLK_S_IOERR);
	simple(&c, VIRTIO_BLK_T_IN, CAP + 1, 0); /* even with no data */
	CHECK_EQ(parse(&c, &lim_rw, &req, iov, gpa), BLK_OP_NONE);
	CHECK_EQ(req.status, VIRTIO_BLK_S_IOERR);
	/* Not a multiple of 512. */
	simple(&c, VIRTIO_BLK_T_IN, 0, 100);
	CHECK_EQ(parse(&c, &lim_rw, &req, iov, gpa), BLK_OP_NONE);
	CHECK_EQ(req.status, VIRTIO_BLK_S_IOERR);
}

static void test_bad_layouts(void)
{
	static struct chain c;
	struct blk_req req;
	struct iovec iov[MAXB];
	uint64_t gpa[MAXB];

	/* No writable byte: nowhere to answer. */
	memset(&c, 0, sizeof(c));
	put_hdr(add(&c, BLK_HDR_SIZE, false), VIRTIO_BLK_T_OUT, 0);
	add(&c, 512, false);
	CHECK_EQ(parse(&c, &lim_rw, &req, iov, gpa), BLK_OP_NONE);
	CHECK(req.status_hva == NULL);
	CHECK_EQ(blk_req_written(&req, 0), 0);
	/* Short header. */
	memset(&c, 0, sizeof(c));
	add(&c, 8, false);
	add(&c, 1, true);
	CHECK_EQ(parse(&c, &lim_rw, &req, iov, gpa), BLK_OP_NONE);
	CHECK_EQ(req.status, VIRTIO_BLK_S_IOERR);
	CHECK(req.status_hva == c.mem + 8);
	/* A read with readable data, a write with writable data. */
	memset(&c, 0, sizeof(c));
	put_hdr(add(&c, BLK_HDR_SIZE, false), VIRTIO_BLK_T_IN, 0);
	add(&c, 512, false);
	add(&c, 513, true);
	CHECK_EQ(parse(&c, &lim_rw, &req, iov, gpa), BLK_OP_NONE);
	CHECK_EQ(req.status, VIRTIO_BLK_S_IOERR);
	memset(&c, 0, sizeof(c));
	put_hdr(add(&c, BLK_HDR_SIZE, false), VIRTIO_BLK_T_OUT, 0);
	add(&c, 512, false);
	add(&c, 513, true);
	CHECK_EQ(parse(&c, &lim_rw, &req, iov, gpa), BLK_OP_NONE);
	CHECK_EQ(req.status, VIRTIO_BLK_S_IOERR);
	/* Flush with data. */
	simple(&c, VIRTIO_BLK_T_FLUSH, 0, 512);
	CHECK_EQ(parse(&c, &lim_rw, &req, iov, gpa), BLK_OP_NONE);
	CHECK_EQ(req.status, VIRTIO_BLK_S_IOERR);
	/* More data buffers than the caller has room for. */
	memset(&c, 0, sizeof(c));
	put_hdr(add(&c, BLK_HDR_SIZE, false), VIRTIO_BLK_T_IN, 0);
	add(&c, 512, true);
	add(&c, 512, true);
	add(&c, 1, true);
	CHECK_EQ(blk_req_parse(c.bufs, c.n, &lim_rw, &req, iov, gpa, 1), BLK_OP_NONE);
	CHECK_EQ(req.status, VIRTIO_BLK_S_IOERR);
	CHECK_EQ(blk_req_parse(c.bufs, c.n, &lim_rw, &req, iov, gpa, 2), BLK_OP_READ);
	/* Unknown and never-offered types. */
	simple(&c, 99, 0, 0);
	CHECK_EQ(parse(&c, &lim_rw, &req, iov, gpa), BLK_OP_NONE);
	CHECK_EQ(req.status, VIRTIO_BLK_S_UNSUPP);
	simple(&c, VIRTIO_BLK_T_SCSI_CMD, 0, 0);
	CHECK_EQ(parse(&c, &lim_rw, &req, iov, gpa), BLK_OP_NONE);
	CHECK_EQ(req.status, VIRTIO_BLK_S_UNSUPP);
	simple(&c, VIRTIO_BLK_T_SECURE_ERASE, 0, 0);
	CHECK_EQ(parse(&c, &lim_rw, &req, iov, gpa), BLK_OP_NONE);
	CHECK_EQ(req.status, VIRTIO_BLK_S_UNSUPP);
}

static void test_read_only(void)
{
	static struct chain c;
	struct blk_limits ro = { .capacity = CAP, .ro = true };
	struct blk_req req;
	struct iovec iov[MAXB];
	uint64_t gpa[MAXB];

	simple(&c, VIRTIO_BLK_T_OUT, 0, 512);
	CHECK_EQ(parse(&c, &ro, &req, iov, gpa), BLK_OP_NONE);
	CHECK_EQ(req.status, VIRTIO_BLK_S_IOERR);
	simple(&c, VIRTIO_BLK_T_IN, 0, 512);
	CHECK_EQ(parse(&c, &ro, &req, iov, gpa), BLK_OP_READ);
	simple(&c, VIRTIO_BLK_T_FLUSH, 0, 0);
	CHECK_EQ(parse(&c, &ro, &req, iov, gpa), BLK_OP_NONE);
	CHECK_EQ(req.status, VIRTIO_BLK_S_OK);
	simple(&c, VIRTIO_BLK_T_FLUSH, 0, 0);
	CHECK_EQ(parse(&c, &lim_rw, &req, iov, gpa), BLK_OP_FLUSH);
}

/* hdr | one segment | status */
static void range(struct chain *c, uint32_t type, uint64_t sector, uint32_t num, uint32_t flags,
		  unsigned nseg)
{
	memset(c, 0, sizeof(*c));
	put_hdr(add(c, BLK_HDR_SIZE, false), type, 0);
	for (unsigned i = 0; i < nseg; i++)
		put_seg(add(c, BLK_SEGMENT_SIZE, false), sector, num, flags);
	add(c, 1, true);
}

static void test_discard_write_zeroes(void)
{
	static struct chain c;
	struct blk_limits off = { .capacity = CAP }, ro = lim_rw;
	struct blk_req req;
	struct iovec iov[MAXB];
	uint64_t gpa[MAXB];

	range(&c, VIRTIO_BLK_T_DISCARD, 8, 16, 0, 1);
	CHECK_EQ(parse(&c, &lim_rw, &req, iov, gpa), BLK_OP_DISCARD);
	CHECK(req.sector == 8 && req.nsectors == 16 && !req.unmap);
	CHECK_EQ(parse(&c, &off, &req, iov, gpa), BLK_OP_NONE); /* not negotiated */
	CHECK_EQ(req.status, VIRTIO_BLK_S_UNSUPP);
	ro.ro = true;
	CHECK_EQ(parse(&c, &ro, &req, iov, gpa), BLK_OP_NONE);
	CHECK_EQ(req.status, VIRTIO_BLK_S_IOERR);
	range(&c, VIRTIO_BLK_T_DISCARD, 8, 16, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP, 1);
	CHECK_EQ(parse(&c, &lim_rw, &req, iov, gpa), BLK_OP_NONE);
	CHECK_EQ(req.status, VIRTIO_BLK_S_UNSUPP);
	range(&c, VIRTIO_BLK_T_WRITE_ZEROES, 8, 16, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP, 1);
	CHECK_EQ(parse(&c, &lim_rw, &req, iov, gpa), BLK_OP_WRITE_ZEROES);
	CHECK(req.unmap);
	range(&c, VIRTIO_BLK_T_WRITE_ZEROES, 8, 16, 2, 1);
	CHECK_EQ(parse(&c, &lim_rw, &req, iov, gpa), BLK_OP_NONE);
	CHECK_EQ(req.status, VIRTIO_BLK_S_UNSUPP);
	range(&c, VIRTIO_BLK_T_DISCARD, 8, 0, 0, 1); /* empty */
	CHECK_EQ(parse(&c, &lim_rw, &req, iov, gpa), BLK_OP_NONE);
	CHECK_EQ(req.status, VIRTIO_BLK_S_IOERR);
	range(&c, VIRTIO_BLK_T_DISCARD, 8, 65, 0, 1); /* over max_discard_sectors */
	CHECK_EQ(parse(&c, &lim_rw, &req, iov, gpa), BLK_OP_NONE);
	CHECK_EQ(req.status, VIRTIO_BLK_S_IOERR);
	range(&c, VIRTIO_BLK_T_DISCARD, CAP - 8, 16, 0, 1); /* past the end */
	CHECK_EQ(parse(&c, &lim_rw, &req, iov, gpa), BLK_OP_NONE);
	CHECK_EQ(req.status, VIRTIO_BLK_S_IOERR);
	range(&c, VIRTIO_BLK_T_DISCARD, UINT64_MAX - 4, 16, 0, 1);
	CHECK_EQ(parse(&c, &lim_rw, &req, iov, gpa), BLK_OP_NONE);
	CHECK_EQ(req.status, VIRTIO_BLK_S_IOERR);
	range(&c, VIRTIO_BLK_T_DISCARD, 8, 16, 0, 2); /* max_discard_seg is 1 */
	CHECK_EQ(parse(&c, &lim_rw, &req, iov, gpa), BLK_OP_NONE);
	CHECK_EQ(req.status, VIRTIO_BLK_S_IOERR);
}

static void test_get_id(void)
{
	static struct chain c;
	struct blk_req req;
	struct iovec iov[MAXB];
	uint64_t gpa[MAXB];

	simple(&c, VIRTIO_BLK_T_GET_ID, 0, BLK_ID_BYTES);
	CHECK_EQ(parse(&c, &lim_rw, &req, iov, gpa), BLK_OP_GET_ID);
	CHECK(req.niov == 1 && req.len == BLK_ID_BYTES);
	simple(&c, VIRTIO_BLK_T_GET_ID, 0, 7); /* short buffers are fine: the id is cut */
	CHECK_EQ(parse(&c, &lim_rw, &req, iov, gpa), BLK_OP_GET_ID);
	CHECK_EQ(req.len, 7);
}

static int parse_run(struct vm_config *cfg, char *err, const char **args)
{
	char *argv[32];
	int argc = 0;

	while (args[argc] && argc < 31) {
		argv[argc] = (char *)args[argc];
		argc++;
	}
	argv[argc] = NULL;
	return config_parse(cfg, argc, argv, err, 256);
}

static void test_disk_options(void)
{
	struct blk_options o;
	struct vm_config cfg;
	char err[256] = "";

	CHECK_EQ(blk_parse_options("/a/b.img", &o, err, sizeof(err)), 0);
	CHECK(!strcmp(o.path, "/a/b.img") && !o.ro && !o.direct && !o.id[0]);
	CHECK_EQ(blk_parse_options("x.img,ro,direct,id=root-1.a_b", &o, err, sizeof(err)), 0);
	CHECK(!strcmp(o.path, "x.img") && o.ro && o.direct && !strcmp(o.id, "root-1.a_b"));
	CHECK_EQ(blk_parse_options("x.img,id=abcdefghij0123456789", &o, err, sizeof(err)), 0);
	CHECK_EQ(blk_parse_options("x.img,id=abcdefghij0123456789x", &o, err, sizeof(err)), -EINVAL);
	CHECK_CONTAINS(err, "id 'abcdefghij0123456789x'");
	CHECK_EQ(blk_parse_options("x.img,id=a:b", &o, err, sizeof(err)), -EINVAL);
	CHECK_EQ(blk_parse_options("x.img,id=", &o, err, sizeof(err)), -EINVAL);
	CHECK_EQ(blk_parse_options("x.img,rw", &o, err, sizeof(err)), -EINVAL);
	CHECK_CONTAINS(err, "unknown option 'rw'");
	CHECK_EQ(blk_parse_options("", &o, err, sizeof(err)), -EINVAL);
	CHECK_CONTAINS(err, "empty path");
	CHECK_EQ(blk_parse_options(",ro", &o, err, sizeof(err)), -EINVAL);

	CHECK_EQ(parse_run(&cfg, err, (const char *[]){ "run", "--kernel", "k", "--disk", "a.img",
							  "--disk", "b.img,ro", NULL }), 0);
	CHECK_EQ(cfg.ndisks, 2);
	CHECK(!strcmp(cfg.disks[0].path, "a.img") && !cfg.disks[0].ro);
	CHECK(!strcmp(cfg.disks[1].path, "b.img") && cfg.disks[1].ro);
	CHECK_EQ(parse_run(&cfg, err, (const char *[]){ "run", "--kernel", "k", "--disk", "a.img,x",
							  NULL }), -EINVAL);
	CHECK_CONTAINS(err, "--disk: unknown option 'x'");
	CHECK_EQ(parse_run(&cfg, err, (const char *[]){ "run", "--kernel", "k", "--disk", NULL }),
		 -EINVAL);
	CHECK_CONTAINS(err, "--disk needs an argument");
	{
		const char *args[32] = { "run", "--kernel", "k" };
		unsigned n = 3;

		for (unsigned i = 0; i < BLK_MAX_DISKS; i++) {
			args[n++] = "--disk";
			args[n++] = "a.img";
		}
		CHECK_EQ(parse_run(&cfg, err, args), 0);
		CHECK_EQ(cfg.ndisks, BLK_MAX_DISKS);
		args[n++] = "--disk";
		args[n++] = "a.img";
		CHECK_EQ(parse_run(&cfg, err, args), -EINVAL);
		CHECK_CONTAINS(err, "at most 8 disks");
	}
}

/* A disk over a small guest memory, its queue 0 set up by hand, and its
 * image replaced by a pipe: a read stays in flight until the test writes. */
struct late {
	struct vm vm;
	struct blk *b;
	struct virtio_dev *dev;
	int pipe[2];
};

#define Q_DESC 0x1000ULL
#define Q_AVAIL 0x2000ULL
#define Q_USED 0x3000ULL
#define REQ_HDR 0x4000ULL
#define REQ_STATUS 0x5000ULL
#define REQ_DATA 0x10000ULL

static void put_desc(struct late *t, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
		     uint16_t next)
{
	uint8_t *d = gpa_to_hva(&t->vm.mem, Q_DESC + 16 * i, 16);

	memcpy(d, &addr, 8);
	memcpy(d + 8, &len, 4);
	memcpy(d + 12, &flags, 2);
	memcpy(d + 14, &next, 2);
}

static uint16_t used_idx(struct late *t)
{
	uint16_t v;

	memcpy(&v, gpa_to_hva(&t->vm.mem, Q_USED + 2, 2), 2);
	return v;
}

/* Replaces the descriptor open on path (the image) with the pipe's read end. */
static int swap_image_for_pipe(const char *path, int rfd)
{
	char link[64], target[PATH_MAX];

	for (int fd = 3; fd < 1024; fd++) {
		ssize_t n;

		snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
		n = readlink(link, target, sizeof(target) - 1);
		if (n <= 0)
			continue;
		target[n] = '\0';
		if (!strcmp(target, path))
			return dup2(rfd, fd) == fd ? 0 : -1;
	}
	return -1;
}

/* Sets up the disk and makes one 4 KiB READ of sector 0 into REQ_DATA
 * available and taken: it is in flight when this returns 0. */
static int late_setup(struct late *t)
{
	char tmpl[] = "/tmp/vmm-test-blk.XXXXXX", err[256] = "";
	struct blk_options o = { .path = "" };
	uint8_t hdr[16] = { 0 }; /* VIRTIO_BLK_T_IN, sector 0 */
	uint16_t avail[3] = { 0, 1, 0 }; /* flags, idx, ring[0] = head 0 */
	struct virtq *vq;
	int fd = mkstemp(tmpl);

	memset(t, 0, sizeof(*t));
	if (fd < 0 || ftruncate(fd, 65536) || pipe(t->pipe))
		return -1;
	close(fd);
	snprintf(o.path, sizeof(o.path), "%s", tmpl);
	if (guest_mem_alloc(&t->vm.mem, 1 << 20) || guest_mem_dirty_alloc(&t->vm.mem))
		return -1;
	t->b = blk_open(&t->vm, &o, 0, err, sizeof(err));
	if (!t->b || swap_image_for_pipe(tmpl, t->pipe[0])) {
		unlink(tmpl);
		return -1;
	}
	unlink(tmpl);
	blk_set_drain_timeout(t->b, 100);
	t->dev = blk_dev(t->b);
	t->dev->driver_features = 1ULL << VIRTIO_F_VERSION_1;
	t->dev->status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
			 VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK;
	vq = &t->dev->queues[0];
	vq->size = 16;
	vq->desc_gpa = Q_DESC;
	vq->avail_gpa = Q_AVAIL;
	vq->used_gpa = Q_USED;
	vq->ready = true;
	memcpy(gpa_to_hva(&t->vm.mem, REQ_HDR, 16), hdr, 16);
	put_desc(t, 0, REQ_HDR, 16, VRING_DESC_F_NEXT, 1);
	put_desc(t, 1, REQ_DATA, 4096, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 2);
	put_desc(t, 2, REQ_STATUS, 1, VRING_DESC_F_WRITE, 0);
	memcpy(gpa_to_hva(&t->vm.mem, Q_AVAIL, 6), avail, 6);
	*(uint8_t *)gpa_to_hva(&t->vm.mem, REQ_STATUS, 1) = 0xff;
	t->dev->ops->queue_notify(t->dev, 0);
	return 0;
}

/* The read's data arrives: the pipe is written, and the completion is
 * waited for on the ring's eventfd (which the transport would read). */
static int late_complete(struct late *t)
{
	uint8_t data[4096];
	struct pollfd p = { .fd = t->dev->io_fd, .events = POLLIN };
	uint64_t v;

	memset(data, 0xa5, sizeof(data));
	if (write(t->pipe[1], data, sizeof(data)) != (ssize_t)sizeof(data) || poll(&p, 1, 5000) != 1)
		return -1;
	return read(t->dev->io_fd, &v, sizeof(v)) == sizeof(v) ? 0 : -1;
}

static void late_free(struct late *t)
{
	if (t->b)
		blk_destroy(t->b);
	close(t->pipe[0]);
	close(t->pipe[1]);
	guest_mem_free(&t->vm.mem);
}

/* The driver resets the device while a read is in flight; the reset's drain
 * gives up, the read completes later and is reaped: the request belongs to
 * the old queue and is not answered, but the kernel did write its data
 * into guest memory, so those pages must be marked for migration. */
static void test_late_read_after_reset(void)
{
	static struct late t;
	const uint8_t *data;

	REQUIRE(late_setup(&t) == 0);
	CHECK(!guest_mem_test_dirty(&t.vm.mem, REQ_DATA));
	t.dev->ops->reset(t.dev); /* the drain times out after 100 ms */
	t.dev->status = 0;
	virtq_reset(&t.dev->queues[0], &t.vm.mem);
	REQUIRE(late_complete(&t) == 0);
	t.dev->ops->io_ready(t.dev);
	data = gpa_to_hva(&t.vm.mem, REQ_DATA, 4096);
	CHECK(data[0] == 0xa5 && data[4095] == 0xa5);
	CHECK(guest_mem_test_dirty(&t.vm.mem, REQ_DATA));
	CHECK_EQ(used_idx(&t), 0);
	CHECK_EQ(*(uint8_t *)gpa_to_hva(&t.vm.mem, REQ_STATUS, 1), 0xff);
	late_free(&t);
}

/* A pause whose drain times out fails; the read completes while the device
 * is still paused and is reaped on resume: data, status byte and used ring
 * are all written then, and all marked. */
static void test_late_read_after_pause_timeout(void)
{
	static struct late t;

	REQUIRE(late_setup(&t) == 0);
	CHECK_EQ(virtio_pause(t.dev), -ETIMEDOUT);
	REQUIRE(late_complete(&t) == 0);
	CHECK_EQ(used_idx(&t), 0); /* nothing answered while paused */
	CHECK_EQ(virtio_resume(t.dev), 0);
	CHECK(guest_mem_test_dirty(&t.vm.mem, REQ_DATA));
	CHECK_EQ(*(uint8_t *)gpa_to_hva(&t.vm.mem, REQ_STATUS, 1), VIRTIO_BLK_S_OK);
	CHECK(guest_mem_test_dirty(&t.vm.mem, REQ_STATUS));
	CHECK_EQ(used_idx(&t), 1);
	CHECK(guest_mem_test_dirty(&t.vm.mem, Q_USED));
	late_free(&t);
}

int main(int argc, char **argv)
{
	unit_init(argc, argv);
	RUN(test_read_write);
	RUN(test_ranges);
	RUN(test_bad_layouts);
	RUN(test_read_only);
	RUN(test_discard_write_zeroes);
	RUN(test_get_id);
	RUN(test_disk_options);
	RUN(test_late_read_after_reset);
	RUN(test_late_read_after_pause_timeout);
	return unit_done();
}
