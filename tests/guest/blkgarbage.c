/*
 * blkgarbage: malformed virtio-blk requests from a guest driver of our own.
 *
 *   blkgarbage BASE_HEX rw|ro ID
 *
 * BASE is the physical address of a virtio-blk (virtio-mmio v2) window
 * whose kernel driver has been unbound. The program brings the device up
 * with VERSION_1 plus DISCARD and WRITE_ZEROES where offered, sets up
 * queue 0 in locked pages of its own (physical addresses from
 * /proc/self/pagemap) and sends one request per case, waiting for its used
 * entry each time. Well-formed requests must succeed and bad ones must get
 * the expected status byte:
 *
 *   read_ok, write_ok (rw), framed_write + framed_read (header and data in
 *   one descriptor, data and status in one; the data must read back),
 *   get_id (the answer must be ID), past_end, straddle_end, sector_overflow,
 *   odd_length, short_header, read_with_readable_data,
 *   write_with_writable_data, flush_with_data, unknown_type, scsi_type,
 *   flush_ok, no_status (no writable byte: used length 0, nothing written),
 *   read_ok_again; with DISCARD and WRITE_ZEROES (rw): discard_ok,
 *   discard_flags (UNSUPP), discard_past_end, discard_two_ranges,
 *   write_zeroes_ok (the sectors read back as zeros); without them (ro):
 *   discard_unoffered, write_zeroes_unoffered (UNSUPP).
 *
 * One line per case, "blkgarbage: CASE status=S len=L want=W ok|BAD", then
 * "blkgarbage: done bad=N". Exit status 0 if every case was as expected, 1
 * if not, 2 for usage or setup errors.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* The register offsets come from the kernel's uapi header. */
#include <linux/virtio_mmio.h>

#include "lockedpage.h"


#define S_ACKNOWLEDGE 1u
#define S_DRIVER 2u
#define S_DRIVER_OK 4u
#define S_FEATURES_OK 8u
#define S_NEEDS_RESET 0x40u
#define F_NEXT 1u
#define F_WRITE 2u
#define PAGE 4096u
#define QSIZE 16u
#define WAIT_MS 20000

#define T_IN 0u
#define T_OUT 1u
#define T_SCSI 2u
#define T_FLUSH 4u
#define T_GET_ID 8u
#define T_DISCARD 11u
#define T_WRITE_ZEROES 13u
#define F_DISCARD (1u << 13)
#define F_WRITE_ZEROES (1u << 14)
#define S_OK 0
#define S_IOERR 1
#define S_UNSUPP 2
#define NO_ANSWER 0xee /* what the status byte holds before the device answers */

static volatile uint32_t *regs;
static struct page ring, data;
static uint32_t features; /* negotiated, low 32 bits */
static uint16_t avail_idx, used_seen;
static int bad;

static uint32_t rd(unsigned off)
{
	return regs[off / 4];
}

static void wr(unsigned off, uint32_t v)
{
	__sync_synchronize();
	regs[off / 4] = v;
	__sync_synchronize();
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Queue layout in `ring`: descriptors at 0, available at 1024, used at 2048.
 * Request memory in `data`: header at 0, buffers from 64, status at 4095. */
#define DESC(i) (ring.va + 16 * (i))
#define AVAIL (ring.va + 1024)
#define USED (ring.va + 2048)

struct seg {
	uint32_t off, len; /* in the data page */
	int writes;
};

static void put_desc(unsigned i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	memcpy(DESC(i), &addr, 8);
	memcpy(DESC(i) + 8, &len, 4);
	memcpy(DESC(i) + 12, &flags, 2);
	memcpy(DESC(i) + 14, &next, 2);
}

static void put_hdr(uint32_t off, uint32_t type, uint64_t sector)
{
	memset(data.va + off, 0, 16);
	memcpy(data.va + off, &type, 4);
	memcpy(data.va + off + 8, &sector, 8);
}

/* Sends the chain segs[0..n) and waits for its used entry; the status is
 * the byte at status_off. Returns the used length, or -1 on a timeout. */
static int64_t send(const struct seg *segs, unsigned n)
{
	uint16_t slot = avail_idx % QSIZE, head = 0, idx;
	uint32_t len;

	for (unsigned i = 0; i < n; i++)
		put_desc(i, data.pa + segs[i].off, segs[i].len,
			 (uint16_t)((i + 1 < n ? F_NEXT : 0) | (segs[i].writes ? F_WRITE : 0)),
			 (uint16_t)(i + 1));
	memcpy(AVAIL + 4 + 2 * slot, &head, 2);
	__sync_synchronize();
	avail_idx++;
	__atomic_store_n((uint16_t *)(AVAIL + 2), avail_idx, __ATOMIC_RELEASE);
	wr(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
	for (int t = 0; t < WAIT_MS; t++) {
		idx = __atomic_load_n((uint16_t *)(USED + 2), __ATOMIC_ACQUIRE);
		if (idx != used_seen)
			break;
		sleep_ms(1);
	}
	if (idx == used_seen)
		return -1;
	memcpy(&len, USED + 4 + 8 * (used_seen % QSIZE) + 4, 4);
	used_seen++;
	wr(VIRTIO_MMIO_INTERRUPT_ACK, rd(VIRTIO_MMIO_INTERRUPT_STATUS));
	return len;
}

static void check(const char *name, int64_t len, int status, int want, int64_t want_len)
{
	int ok = status == want && (want_len < 0 || len == want_len);

	printf("blkgarbage: %s status=%d len=%lld want=%d%s %s\n", name, status, (long long)len,
	       want, want_len >= 0 ? " (and the length)" : "", ok ? "ok" : "BAD");
	fflush(stdout);
	bad += !ok;
}

#define STATUS_OFF 4095u
/* One request: header (type, sector), one data buffer of len bytes that the
 * device reads (writes = 0) or writes, and the status byte. */
static void simple(const char *name, uint32_t type, uint64_t sector, uint32_t len, int writes,
		   int want, int64_t want_len)
{
	struct seg s[3] = { { 0, 16, 0 }, { 64, len, writes }, { STATUS_OFF, 1, 1 } };
	int64_t got;

	put_hdr(0, type, sector);
	data.va[STATUS_OFF] = NO_ANSWER;
	if (len)
		got = send(s, 3);
	else
		got = send((struct seg[]){ s[0], s[2] }, 2);
	check(name, got, data.va[STATUS_OFF], want, want_len);
}

static int setup(uint64_t base)
{
	int fd = open("/dev/mem", O_RDWR | O_SYNC | O_CLOEXEC);
	if (fd < 0)
		return -1;
	regs = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)base);
	if (regs == MAP_FAILED || rd(VIRTIO_MMIO_MAGIC_VALUE) != 0x74726976 || rd(VIRTIO_MMIO_VERSION) != 2 ||
	    rd(VIRTIO_MMIO_DEVICE_ID) != 2) {
		fprintf(stderr, "blkgarbage: no virtio-blk at 0x%llx\n", (unsigned long long)base);
		return -1;
	}
	if (locked_page_alloc(&ring) || locked_page_alloc(&data)) {
		fprintf(stderr, "blkgarbage: cannot get locked pages: %s\n", strerror(errno));
		return -1;
	}
	wr(VIRTIO_MMIO_STATUS, 0);
	wr(VIRTIO_MMIO_STATUS, S_ACKNOWLEDGE);
	wr(VIRTIO_MMIO_STATUS, S_ACKNOWLEDGE | S_DRIVER);
	wr(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
	features = rd(VIRTIO_MMIO_DEVICE_FEATURES);
	printf("blkgarbage: device features 0x%x, capacity %llu sectors\n", features,
	       (unsigned long long)((uint64_t)rd(VIRTIO_MMIO_CONFIG + 4) << 32 | rd(VIRTIO_MMIO_CONFIG)));
	features &= F_DISCARD | F_WRITE_ZEROES;
	wr(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
	wr(VIRTIO_MMIO_DRIVER_FEATURES, features);
	wr(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
	wr(VIRTIO_MMIO_DRIVER_FEATURES, 1); /* VERSION_1 */
	wr(VIRTIO_MMIO_STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK);
	if (!(rd(VIRTIO_MMIO_STATUS) & S_FEATURES_OK))
		return -1;
	wr(VIRTIO_MMIO_QUEUE_SEL, 0);
	if (rd(VIRTIO_MMIO_QUEUE_NUM_MAX) < QSIZE)
		return -1;
	wr(VIRTIO_MMIO_QUEUE_NUM, QSIZE);
	wr(VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)ring.pa);
	wr(VIRTIO_MMIO_QUEUE_DESC_LOW + 4, (uint32_t)(ring.pa >> 32));
	wr(VIRTIO_MMIO_QUEUE_AVAIL_LOW, (uint32_t)(ring.pa + 1024));
	wr(VIRTIO_MMIO_QUEUE_AVAIL_LOW + 4, (uint32_t)((ring.pa + 1024) >> 32));
	wr(VIRTIO_MMIO_QUEUE_USED_LOW, (uint32_t)(ring.pa + 2048));
	wr(VIRTIO_MMIO_QUEUE_USED_LOW + 4, (uint32_t)((ring.pa + 2048) >> 32));
	wr(VIRTIO_MMIO_QUEUE_READY, 1);
	wr(VIRTIO_MMIO_STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
	return rd(VIRTIO_MMIO_QUEUE_READY) ? 0 : -1;
}

/* Header and data in one readable descriptor, then data and status in one
 * writable descriptor: the device may not assume a layout. */
static void framing(int ro)
{
	uint8_t pattern[512];
	int64_t got;

	for (unsigned i = 0; i < sizeof(pattern); i++)
		pattern[i] = (uint8_t)(i * 7 + 3);
	if (!ro) {
		put_hdr(0, T_OUT, 8);
		memcpy(data.va + 16, pattern, sizeof(pattern));
		data.va[STATUS_OFF] = NO_ANSWER;
		got = send((struct seg[]){ { 0, 16 + 512, 0 }, { STATUS_OFF, 1, 1 } }, 2);
		check("framed_write", got, data.va[STATUS_OFF], S_OK, 1);
	}
	put_hdr(0, T_IN, 8);
	memset(data.va + 1024, 0, 513);
	data.va[1024 + 512] = NO_ANSWER;
	got = send((struct seg[]){ { 0, 16, 0 }, { 1024, 513, 1 } }, 2);
	check("framed_read", got, data.va[1024 + 512], S_OK, 513);
	if (!ro && memcmp(data.va + 1024, pattern, sizeof(pattern))) {
		printf("blkgarbage: framed_read: data differs from framed_write's BAD\n");
		bad++;
	}
}

static void get_id(const char *want)
{
	char id[21] = { 0 };

	memset(data.va + 64, 0xff, 20);
	simple("get_id", T_GET_ID, 0, 20, 1, S_OK, 21);
	memcpy(id, data.va + 64, 20);
	if (strcmp(id, want)) {
		printf("blkgarbage: get_id: '%s', want '%s' BAD\n", id, want);
		bad++;
	}
}

/* One DISCARD or WRITE_ZEROES request with nseg copies of one range. */
static void range(const char *name, uint32_t type, uint64_t sector, uint32_t num,
		  uint32_t flags, unsigned nseg, int want)
{
	int64_t got;

	put_hdr(0, type, 0);
	for (unsigned i = 0; i < nseg; i++) {
		memcpy(data.va + 64 + 16 * i, &sector, 8);
		memcpy(data.va + 72 + 16 * i, &num, 4);
		memcpy(data.va + 76 + 16 * i, &flags, 4);
	}
	data.va[STATUS_OFF] = NO_ANSWER;
	got = send((struct seg[]){ { 0, 16, 0 }, { 64, 16 * nseg, 0 }, { STATUS_OFF, 1, 1 } }, 3);
	check(name, got, data.va[STATUS_OFF], want, 1);
}

/* Discard and write-zeroes, where the device offers them. */
static void ranges(uint64_t cap)
{
	if (!(features & F_DISCARD)) {
		range("discard_unoffered", T_DISCARD, 0, 8, 0, 1, S_UNSUPP);
		range("write_zeroes_unoffered", T_WRITE_ZEROES, 0, 8, 0, 1, S_UNSUPP);
		return;
	}
	range("discard_ok", T_DISCARD, 16, 8, 0, 1, S_OK);
	range("discard_flags", T_DISCARD, 16, 8, 1, 1, S_UNSUPP);
	range("discard_past_end", T_DISCARD, cap - 4, 8, 0, 1, S_IOERR);
	range("discard_two_ranges", T_DISCARD, 16, 8, 0, 2, S_IOERR);
	/* Sector 32: written, zeroed, read back as zeros (the host checks it too). */
	memset(data.va + 64, 0xab, 512);
	simple("write_for_zeroes", T_OUT, 32, 512, 0, S_OK, 1);
	range("write_zeroes_ok", T_WRITE_ZEROES, 32, 8, 1, 1, S_OK);
	memset(data.va + 64, 0xff, 512);
	simple("write_zeroes_read", T_IN, 32, 512, 1, S_OK, 513);
	for (int i = 0; i < 512; i++) {
		if (data.va[64 + i]) {
			printf("blkgarbage: write_zeroes_read: byte %d is 0x%x BAD\n", i, data.va[64 + i]);
			bad++;
			break;
		}
	}
}

int main(int argc, char **argv)
{
	uint64_t base, cap;
	int ro;
	int64_t got;

	if (argc != 4 || (strcmp(argv[2], "rw") && strcmp(argv[2], "ro"))) {
		fprintf(stderr, "usage: blkgarbage BASE_HEX rw|ro ID\n");
		return 2;
	}
	base = strtoull(argv[1], NULL, 16);
	ro = !strcmp(argv[2], "ro");
	if (setup(base)) {
		fprintf(stderr, "blkgarbage: device setup failed (status 0x%x)\n", regs ? rd(VIRTIO_MMIO_STATUS) : 0);
		return 2;
	}
	cap = (uint64_t)rd(VIRTIO_MMIO_CONFIG + 4) << 32 | rd(VIRTIO_MMIO_CONFIG);

	simple("read_ok", T_IN, 0, 512, 1, S_OK, 513);
	simple("write_ok", T_OUT, 0, 512, 0, ro ? S_IOERR : S_OK, 1);
	framing(ro);
	get_id(argv[3]);
	simple("past_end", T_IN, cap, 512, 1, S_IOERR, -1);
	simple("straddle_end", T_IN, cap - 1, 1024, 1, S_IOERR, -1);
	simple("sector_overflow", T_IN, UINT64_MAX, 512, 1, S_IOERR, -1);
	simple("write_sector_overflow", T_OUT, UINT64_MAX >> 8, 512, 0, S_IOERR, -1);
	simple("odd_length", T_IN, 0, 100, 1, S_IOERR, -1);
	simple("read_with_readable_data", T_IN, 0, 512, 0, S_IOERR, -1);
	simple("write_with_writable_data", T_OUT, 0, 512, 1, S_IOERR, -1);
	simple("flush_with_data", T_FLUSH, 0, 512, 1, S_IOERR, -1);
	simple("unknown_type", 0x77, 0, 0, 0, S_UNSUPP, 1);
	simple("scsi_type", T_SCSI, 0, 0, 0, S_UNSUPP, 1);
	simple("flush_ok", T_FLUSH, 0, 0, 0, S_OK, 1);

	/* An 8-byte header. */
	data.va[STATUS_OFF] = NO_ANSWER;
	got = send((struct seg[]){ { 0, 8, 0 }, { STATUS_OFF, 1, 1 } }, 2);
	check("short_header", got, data.va[STATUS_OFF], S_IOERR, 1);
	/* Nothing writable: the device cannot answer, but must hand it back. */
	put_hdr(0, T_OUT, 0);
	data.va[STATUS_OFF] = NO_ANSWER;
	got = send((struct seg[]){ { 0, 16, 0 }, { 64, 512, 0 } }, 2);
	check("no_status", got, data.va[STATUS_OFF], NO_ANSWER, 0);

	ranges(cap);
	simple("read_ok_again", T_IN, 0, 512, 1, S_OK, 513);
	if (locked_page_moved(&ring) || locked_page_moved(&data)) {
		printf("blkgarbage: a page of the queue moved while the device had its address\n");
		bad++;
	}
	printf("blkgarbage: done bad=%d needs_reset=%d\n", bad, !!(rd(VIRTIO_MMIO_STATUS) & S_NEEDS_RESET));
	fflush(stdout);
	wr(VIRTIO_MMIO_STATUS, 0);
	return bad ? 1 : 0;
}
