/* libFuzzer target for virtio-blk request parsing (virtio/blk_req.c) behind
 * the virtqueue walker, as the device runs them.
 *
 * The input is a guest memory image copied to guest physical address 0 of
 * a small guest memory; its first bytes describe the queue and the disk:
 *
 *   0  u16 queue size          14 u16 last_avail
 *   2  u32 descriptor GPA      16 u8  flags: 1 read-only, 2 discard, 4 write-zeroes
 *   6  u32 available GPA       17 u8  max iov entries (mod 9)
 *   10 u32 used ring GPA       18 u16 capacity in sectors
 *                              20 u8  guest memory size in 4 KiB pages (mod 16, + 1)
 *
 * Each chain virtq_pop() gives is parsed; the promises of blk_req_parse
 * are checked with __builtin_trap(): the data slices lie inside the
 * chain's buffers on the right side and add up to req.len (the side's
 * bytes less the header or the status), the status is a writable byte,
 * executed ranges lie on the disk, a
 * read-only disk gets no write, and every slice is touched end to end so
 * ASan sees a bad pointer. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "virtio/blk_req.h"
#include "virtio/queue.h"
#include "vmm/mem.h"
#include "tests/fuzz/fuzz.h"

#define HDR_SIZE  21
#define MAX_BUFS  16
#define MAX_IOV   8
#define MAX_POPS  32

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

#define ENSURE(cond)                                                                       \
	do {                                                                               \
		if (!(cond))                                                               \
			__builtin_trap();                                                  \
	} while (0)

/* Whether [p, p+len) lies inside one buffer of the chain on the given side. */
static int inside(const struct virtq_buf *bufs, unsigned n, const uint8_t *p, uint64_t len,
		  int writes)
{
	for (unsigned i = 0; i < n; i++) {
		const uint8_t *b = bufs[i].hva;

		if (bufs[i].len && bufs[i].device_writes == writes && p >= b &&
		    p + len <= b + bufs[i].len)
			return 1;
	}
	return 0;
}

static void check(const struct virtq_buf *bufs, const struct virtq_chain *chain,
		  const struct blk_limits *lim, const struct blk_req *req, const struct iovec *iov,
		  unsigned max_iov)
{
	unsigned n = chain->nbufs;
	volatile uint8_t sink = 0;
	uint64_t sum = 0;
	int writes = req->op == BLK_OP_READ || req->op == BLK_OP_GET_ID;

	if (req->status_hva)
		ENSURE(inside(bufs, n, req->status_hva, 1, 1));
	if (req->op == BLK_OP_NONE) {
		ENSURE(req->niov == 0 && req->status <= 2);
		return;
	}
	ENSURE(req->status_hva != NULL && req->niov <= max_iov);
	for (unsigned i = 0; i < req->niov; i++) {
		const uint8_t *p = iov[i].iov_base;

		ENSURE(iov[i].iov_len > 0 && inside(bufs, n, p, iov[i].iov_len, writes));
		sink ^= p[0];
		sink ^= p[iov[i].iov_len - 1];
		sum += iov[i].iov_len;
	}
	(void)sink;
	ENSURE(sum == req->len);
	/* The data is the stream minus header or status (buffers may alias in
	 * guest memory, so this is about stream positions, not pointers). */
	if (req->op == BLK_OP_READ || req->op == BLK_OP_GET_ID)
		ENSURE(chain->readable == BLK_HDR_SIZE && req->len + 1 == chain->writable);
	if (req->op == BLK_OP_WRITE)
		ENSURE(chain->writable == 1 && req->len + BLK_HDR_SIZE == chain->readable);
	switch (req->op) {
	case BLK_OP_READ:
	case BLK_OP_WRITE:
		ENSURE(req->len % 512 == 0 && req->len > 0);
		ENSURE(req->sector <= lim->capacity &&
		       (req->len >> 9) <= lim->capacity - req->sector);
		ENSURE(req->op == BLK_OP_READ || !lim->ro);
		break;
	case BLK_OP_DISCARD:
	case BLK_OP_WRITE_ZEROES:
		ENSURE(!lim->ro && req->nsectors > 0 && req->sector <= lim->capacity &&
		       req->nsectors <= lim->capacity - req->sector);
		ENSURE(req->op == BLK_OP_DISCARD ? lim->discard : lim->write_zeroes);
		break;
	case BLK_OP_FLUSH:
		ENSURE(!lim->ro);
		break;
	default:
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct guest_mem mem;
	struct virtq vq;
	struct virtq_buf bufs[MAX_BUFS];
	struct virtq_chain chain;
	struct blk_limits lim = { 0 };
	struct blk_req req;
	struct iovec iov[MAX_IOV];
	uint64_t gpa[MAX_IOV];
	const char *why;
	uint64_t mem_size;
	unsigned max_iov;
	uint8_t *ram;

	if (size < HDR_SIZE)
		return 0;
	mem_size = 4096ULL * (1 + data[20] % 16);
	ram = calloc(1, mem_size);
	if (!ram)
		return 0;
	memcpy(ram, data, size < mem_size ? size : mem_size);
	guest_mem_layout(&mem, ram, mem_size);
	if (guest_mem_dirty_alloc(&mem) < 0) {
		free(ram);
		return 0;
	}
	virtq_reset(&vq, &mem);
	vq.size = rd16(data);
	vq.desc_gpa = rd32(data + 2);
	vq.avail_gpa = rd32(data + 6);
	vq.used_gpa = rd32(data + 10);
	vq.last_avail = rd16(data + 14);
	vq.ready = true;
	lim.ro = data[16] & 1;
	lim.discard = data[16] & 2;
	lim.write_zeroes = data[16] & 4;
	lim.capacity = rd16(data + 18);
	lim.max_discard_sectors = lim.max_write_zeroes_sectors = 64;
	max_iov = data[17] % (MAX_IOV + 1);

	for (int i = 0; i < MAX_POPS; i++) {
		if (virtq_pop(&vq, bufs, MAX_BUFS, &chain, &why) != 1)
			break;
		blk_req_parse(bufs, chain.nbufs, &lim, &req, iov, gpa, max_iov);
		check(bufs, &chain, &lim, &req, iov, max_iov);
		(void)virtq_push(&vq, chain.head, blk_req_written(&req, req.len));
	}
	free((void *)mem.dirty);
	free(ram);
	return 0;
}
