/* virtio-blk without KVM: blk_req_parse() on hand-built chains (every
 * layout and range rule, both answers and the slices it hands out), and
 * --disk parsing. */
#include <errno.h>
#include <linux/virtio_blk.h>
#include <stdint.h>
#include <string.h>

#include "tests/unit/unit.h"
#include "virtio/blk.h"
#include "virtio/blk_req.h"
#include "vmm/config.h"

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
	return unit_done();
}
