/* virtio-blk requests (virtio 1.2, 5.2.6): turning one descriptor chain
 * into a checked request. Pure: no KVM, no I/O, so it is unit-tested and
 * fuzzed on its own (tests/unit/test_blk.c, tests/fuzz/fuzz_blk.c).
 *
 * A request is a byte stream split over the chain's buffers however the
 * driver likes (VERSION_1 forbids assuming a layout):
 *
 *   device-readable                      device-writable
 *   +---------------------------+------+ +----------------+--------+
 *   | type le32, rsvd, sector le64 | data | | data (IN, GET_ID) | status |
 *   +---------------------------+------+ +----------------+--------+
 *     16 bytes                   OUT,      all but the last byte  1 byte
 *                                DISCARD,
 *                                WRITE_ZEROES
 *
 * The status is the last writable byte. A chain with no writable byte
 * cannot be answered: it goes back with length 0. Everything else that is
 * wrong (short header, data on the wrong side, a length not a multiple of
 * 512, sectors past the end or overflowing, writes to a read-only disk,
 * bad discard segments) is answered IOERR, unknown or unoffered types and
 * reserved flags UNSUPP. */
#ifndef VIRTIO_BLK_REQ_H
#define VIRTIO_BLK_REQ_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "virtio/queue.h"

#define BLK_SECTOR_SHIFT 9
#define BLK_SECTOR_SIZE 512u
#define BLK_HDR_SIZE 16u
#define BLK_SEGMENT_SIZE 16u /* a DISCARD / WRITE_ZEROES range */
#define BLK_ID_BYTES 20u

/* What the device offers; the parser refuses anything outside it. */
struct blk_limits {
	uint64_t capacity; /* sectors */
	bool ro;
	bool discard;      /* VIRTIO_BLK_F_DISCARD negotiated */
	bool write_zeroes; /* VIRTIO_BLK_F_WRITE_ZEROES negotiated */
	uint32_t max_discard_sectors;
	uint32_t max_write_zeroes_sectors;
};

enum blk_op {
	BLK_OP_NONE,   /* nothing to do: answer req->status now */
	BLK_OP_READ,   /* readv into iov from sector */
	BLK_OP_WRITE,  /* writev from iov to sector */
	BLK_OP_FLUSH,  /* fdatasync */
	BLK_OP_GET_ID, /* copy the id into iov */
	BLK_OP_DISCARD,
	BLK_OP_WRITE_ZEROES,
};

struct blk_req {
	enum blk_op op;
	uint8_t status;     /* VIRTIO_BLK_S_*: the answer when op is NONE */
	uint32_t type;      /* as the driver sent it */
	uint64_t sector;    /* READ, WRITE; the range's first sector for DISCARD, WRITE_ZEROES */
	uint64_t nsectors;  /* DISCARD, WRITE_ZEROES */
	bool unmap;         /* WRITE_ZEROES may deallocate */
	uint8_t *status_hva; /* NULL: no writable byte, answer with length 0 */
	uint64_t status_gpa;
	/* Data buffers, in order, sliced out of the chain. */
	unsigned niov;
	uint64_t len;       /* sum of the iov lengths */
};

/* Parses the chain bufs[0..nbufs) (as virtq_pop() gave it). Data buffers
 * go into iov[] and, with the same index, their guest-physical addresses
 * into gpa[]; both hold max_iov entries (nbufs is always enough). Fills
 * req and returns req->op. */
enum blk_op blk_req_parse(const struct virtq_buf *bufs, unsigned nbufs,
			  const struct blk_limits *lim, struct blk_req *req, struct iovec *iov,
			  uint64_t *gpa, unsigned max_iov);

/* Bytes the device wrote into the chain when it answers req: the data of
 * a READ or GET_ID (data_written) plus the status byte. */
uint32_t blk_req_written(const struct blk_req *req, uint64_t data_written);

#endif
