/* virtio-blk request parsing and validation; see blk_req.h.
 *
 * Guest memory is read once: the header and the discard segment are
 * copied out before they are checked, so a driver changing them behind
 * our back changes nothing. Data buffers are only sliced here (pointers
 * and lengths, already bounds-checked by virtq_pop()); the I/O happens in
 * blk.c. */
#include "virtio/blk_req.h"

#include <endian.h>
#include <linux/virtio_blk.h>
#include <string.h>

/* One side (readable or writable) of a chain as a byte stream. */
struct side {
	const struct virtq_buf *bufs;
	unsigned nbufs;
	bool writable;
};

/* Copies [off, off+len) of the side into dst. The caller checked the
 * side holds that many bytes. */
static void gather(const struct side *s, uint64_t off, uint8_t *dst, uint64_t len)
{
	for (unsigned i = 0; i < s->nbufs && len; i++) {
		const struct virtq_buf *b = &s->bufs[i];
		uint64_t take;

		if (b->device_writes != s->writable || !b->len)
			continue;
		if (off >= b->len) {
			off -= b->len;
			continue;
		}
		take = b->len - off < len ? b->len - off : len;
		memcpy(dst, (const uint8_t *)b->hva + off, take);
		dst += take;
		len -= take;
		off = 0;
	}
}

/* Slices [off, off+len) of the side into iov/gpa. Returns the number of
 * entries, or -1 if more than max would be needed. */
static int slice(const struct side *s, uint64_t off, uint64_t len, struct iovec *iov,
		 uint64_t *gpa, unsigned max)
{
	unsigned n = 0;

	for (unsigned i = 0; i < s->nbufs && len; i++) {
		const struct virtq_buf *b = &s->bufs[i];
		uint64_t take;

		if (b->device_writes != s->writable || !b->len)
			continue;
		if (off >= b->len) {
			off -= b->len;
			continue;
		}
		if (n == max)
			return -1;
		take = b->len - off < len ? b->len - off : len;
		iov[n] = (struct iovec){ (uint8_t *)b->hva + off, take };
		gpa[n] = b->gpa + off;
		n++;
		len -= take;
		off = 0;
	}
	return (int)n;
}

/* Points req at the last writable byte of the chain, if there is one. */
static void find_status(const struct virtq_buf *bufs, unsigned nbufs, struct blk_req *req)
{
	for (unsigned i = nbufs; i-- > 0;) {
		if (bufs[i].device_writes && bufs[i].len) {
			req->status_hva = (uint8_t *)bufs[i].hva + bufs[i].len - 1;
			req->status_gpa = bufs[i].gpa + bufs[i].len - 1;
			return;
		}
	}
}

static enum blk_op answer(struct blk_req *req, uint8_t status)
{
	req->op = BLK_OP_NONE;
	req->status = status;
	req->niov = 0;
	req->len = 0;
	return BLK_OP_NONE;
}

/* Whether [sector, sector + n) lies on the disk. */
static bool in_range(const struct blk_limits *lim, uint64_t sector, uint64_t n)
{
	return sector <= lim->capacity && n <= lim->capacity - sector;
}

/* IN, OUT and GET_ID: the data is one side minus the header or the status. */
static enum blk_op parse_data(const struct side *data, uint64_t off, uint64_t len,
			      const struct blk_limits *lim, struct blk_req *req, struct iovec *iov,
			      uint64_t *gpa, unsigned max_iov, enum blk_op op)
{
	int n;

	if (op != BLK_OP_GET_ID) {
		if (len % BLK_SECTOR_SIZE || !in_range(lim, req->sector, len >> BLK_SECTOR_SHIFT))
			return answer(req, VIRTIO_BLK_S_IOERR);
		if (!len) /* a zero-length transfer inside the disk: done */
			return answer(req, VIRTIO_BLK_S_OK);
	}
	n = slice(data, off, len, iov, gpa, max_iov);
	if (n < 0)
		return answer(req, VIRTIO_BLK_S_IOERR);
	req->niov = (unsigned)n;
	req->len = len;
	req->op = op;
	return op;
}

/* DISCARD and WRITE_ZEROES: exactly one 16-byte range after the header. */
static enum blk_op parse_range(const struct side *rd, uint64_t readable, uint64_t writable,
			       const struct blk_limits *lim, struct blk_req *req, enum blk_op op)
{
	uint8_t seg[BLK_SEGMENT_SIZE];
	uint32_t num, flags, max;
	bool offered = op == BLK_OP_DISCARD ? lim->discard : lim->write_zeroes;

	if (!offered)
		return answer(req, VIRTIO_BLK_S_UNSUPP);
	if (lim->ro || writable != 1 || readable != BLK_HDR_SIZE + BLK_SEGMENT_SIZE)
		return answer(req, VIRTIO_BLK_S_IOERR);
	gather(rd, BLK_HDR_SIZE, seg, sizeof(seg));
	memcpy(&req->sector, seg, 8);
	memcpy(&num, seg + 8, 4);
	memcpy(&flags, seg + 12, 4);
	req->sector = le64toh(req->sector);
	num = le32toh(num);
	flags = le32toh(flags);
	/* Discard takes no flags; write-zeroes only UNMAP (virtio 1.2, 5.2.6.2). */
	if (op == BLK_OP_DISCARD ? flags != 0 : (flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) != 0)
		return answer(req, VIRTIO_BLK_S_UNSUPP);
	max = op == BLK_OP_DISCARD ? lim->max_discard_sectors : lim->max_write_zeroes_sectors;
	if (num == 0 || num > max || !in_range(lim, req->sector, num))
		return answer(req, VIRTIO_BLK_S_IOERR);
	req->nsectors = num;
	req->unmap = flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP;
	req->op = op;
	return op;
}

enum blk_op blk_req_parse(const struct virtq_buf *bufs, unsigned nbufs,
			  const struct blk_limits *lim, struct blk_req *req, struct iovec *iov,
			  uint64_t *gpa, unsigned max_iov)
{
	struct side rd = { bufs, nbufs, false }, wr = { bufs, nbufs, true };
	uint64_t readable = 0, writable = 0;
	uint8_t hdr[BLK_HDR_SIZE];

	memset(req, 0, sizeof(*req));
	for (unsigned i = 0; i < nbufs; i++) {
		if (bufs[i].device_writes)
			writable += bufs[i].len;
		else
			readable += bufs[i].len;
	}
	find_status(bufs, nbufs, req);
	if (!req->status_hva || readable < BLK_HDR_SIZE)
		return answer(req, VIRTIO_BLK_S_IOERR);
	gather(&rd, 0, hdr, sizeof(hdr));
	memcpy(&req->type, hdr, 4);
	memcpy(&req->sector, hdr + 8, 8);
	req->type = le32toh(req->type);
	req->sector = le64toh(req->sector);

	switch (req->type) {
	case VIRTIO_BLK_T_IN:
		if (readable != BLK_HDR_SIZE)
			return answer(req, VIRTIO_BLK_S_IOERR);
		return parse_data(&wr, 0, writable - 1, lim, req, iov, gpa, max_iov, BLK_OP_READ);
	case VIRTIO_BLK_T_OUT:
		if (writable != 1 || lim->ro)
			return answer(req, VIRTIO_BLK_S_IOERR);
		return parse_data(&rd, BLK_HDR_SIZE, readable - BLK_HDR_SIZE, lim, req, iov, gpa,
				  max_iov, BLK_OP_WRITE);
	case VIRTIO_BLK_T_GET_ID:
		if (readable != BLK_HDR_SIZE)
			return answer(req, VIRTIO_BLK_S_IOERR);
		return parse_data(&wr, 0, writable - 1, lim, req, iov, gpa, max_iov, BLK_OP_GET_ID);
	case VIRTIO_BLK_T_FLUSH:
		if (readable != BLK_HDR_SIZE || writable != 1)
			return answer(req, VIRTIO_BLK_S_IOERR);
		/* A read-only disk has nothing to make durable. */
		if (lim->ro)
			return answer(req, VIRTIO_BLK_S_OK);
		req->op = BLK_OP_FLUSH;
		return BLK_OP_FLUSH;
	case VIRTIO_BLK_T_DISCARD:
		return parse_range(&rd, readable, writable, lim, req, BLK_OP_DISCARD);
	case VIRTIO_BLK_T_WRITE_ZEROES:
		return parse_range(&rd, readable, writable, lim, req, BLK_OP_WRITE_ZEROES);
	}
	return answer(req, VIRTIO_BLK_S_UNSUPP);
}

uint32_t blk_req_written(const struct blk_req *req, uint64_t data_written)
{
	if (!req->status_hva)
		return 0;
	/* data_written <= the writable bytes, which virtq_pop() bounds by 4 GiB. */
	return (uint32_t)data_written + 1;
}
