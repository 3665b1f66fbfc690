/*
 * vqgarbage: a hostile virtio driver, run inside the test guest.
 *
 *   vqgarbage BASE_HEX MODE
 *
 * BASE is the physical address of a virtio-mmio (version 2) register window
 * whose kernel driver has been unbound (echo virtioN > .../unbind). The
 * program maps the window through /dev/mem, brings the device up like a
 * driver would (VERSION_1 only), sets up queue 0 in pages of its own
 * (mmap + mlock, physical addresses from /proc/self/pagemap), puts garbage
 * into it according to MODE, kicks, and waits for the device to set
 * DEVICE_NEEDS_RESET:
 *
 *   loop      a descriptor chain that loops (0 -> 1 -> 0 ...)
 *   random    the ring pages filled with pseudo-random bytes (fixed seed),
 *             with a valid available-index increase, kicked several times
 *   oob       one descriptor far outside guest RAM (0x7fffffff0000, 4 KiB)
 *   badring   a descriptor table outside guest RAM: QueueReady=1 must be
 *             refused (NEEDS_RESET set, QueueReady reads back 0)
 *   indirect  an indirect descriptor whose table holds another indirect one
 *
 * It prints "vqgarbage: mode=M status=0x.. needs_reset=N queue_ready=N",
 * resets the device (Status=0) and exits 0 if NEEDS_RESET was set, 1 if
 * not, 2 for usage or setup errors.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
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


#define MAGIC 0x74726976u
#define S_ACKNOWLEDGE 0x01u
#define S_DRIVER 0x02u
#define S_DRIVER_OK 0x04u
#define S_FEATURES_OK 0x08u
#define S_NEEDS_RESET 0x40u

#define F_NEXT 1u
#define F_WRITE 2u
#define F_INDIRECT 4u

#define PAGE 4096u
#define QSIZE_WANT 16u
#define WAIT_MS 3000 /* nested emulation is slow; we stop as soon as it is set */

struct desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
} __attribute__((packed));

static volatile uint32_t *regs;
static const char *mode = "?";

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

/* Sets status bits the way Linux does: read, OR, write back. */
static void add_status(uint32_t bits)
{
	wr(VIRTIO_MMIO_STATUS, rd(VIRTIO_MMIO_STATUS) | bits);
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;

	printf("vqgarbage: mode=%s ", mode);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static void fill_random(void *p, size_t len)
{
	uint8_t *b = p;

	for (size_t i = 0; i < len; i++)
		b[i] = (uint8_t)rng();
}

static void set_desc(void *table, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
		     uint16_t next)
{
	struct desc d = { addr, len, flags, next };

	memcpy((uint8_t *)table + i * sizeof(d), &d, sizeof(d));
}

/* Available ring: flags, idx, ring[]. */
static void avail_put(uint8_t *avail, uint16_t slot, uint16_t head)
{
	memcpy(avail + 4 + 2 * slot, &head, 2);
}

static void avail_publish(uint8_t *avail, uint16_t idx)
{
	__sync_synchronize();
	__atomic_store_n((uint16_t *)(avail + 2), idx, __ATOMIC_RELEASE);
	__sync_synchronize();
}

static int wait_needs_reset(int ms)
{
	for (int t = 0; t < ms; t += 10) {
		if (rd(VIRTIO_MMIO_STATUS) & S_NEEDS_RESET)
			return 1;
		sleep_ms(10);
	}
	return (rd(VIRTIO_MMIO_STATUS) & S_NEEDS_RESET) != 0;
}

static void set_addr(unsigned lo, uint64_t a)
{
	wr(lo, (uint32_t)a);
	wr(lo + 4, (uint32_t)(a >> 32));
}

int main(int argc, char **argv)
{
	struct page ring, tbl, tbl2, buf;
	uint8_t *desc, *avail;
	uint64_t base, desc_pa, avail_pa, used_pa;
	uint32_t v, qmax, qsize, status;
	int needs_reset, ready, fd;
	char *end;

	if (argc != 3) {
		fprintf(stderr, "usage: vqgarbage BASE_HEX loop|random|oob|badring|indirect\n");
		return 2;
	}
	mode = argv[2];
	if (strcmp(mode, "loop") && strcmp(mode, "random") && strcmp(mode, "oob") &&
	    strcmp(mode, "badring") && strcmp(mode, "indirect")) {
		fprintf(stderr, "vqgarbage: unknown mode '%s'\n", mode);
		return 2;
	}
	errno = 0;
	base = strtoull(argv[1], &end, 16);
	if (errno || *end || (base & (PAGE - 1))) {
		fprintf(stderr, "vqgarbage: bad base '%s' (a page-aligned hex address)\n", argv[1]);
		return 2;
	}

	fd = open("/dev/mem", O_RDWR | O_SYNC | O_CLOEXEC);
	if (fd < 0) {
		say("open /dev/mem: %s", strerror(errno));
		return 2;
	}
	regs = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)base);
	if (regs == MAP_FAILED) {
		say("mmap /dev/mem at 0x%llx: %s", (unsigned long long)base, strerror(errno));
		return 2;
	}
	if (rd(VIRTIO_MMIO_MAGIC_VALUE) != MAGIC || rd(VIRTIO_MMIO_VERSION) != 2) {
		say("no virtio-mmio v2 device at 0x%llx (magic 0x%x version %u)",
		    (unsigned long long)base, rd(VIRTIO_MMIO_MAGIC_VALUE), rd(VIRTIO_MMIO_VERSION));
		return 2;
	}
	say("device id %u at 0x%llx", rd(VIRTIO_MMIO_DEVICE_ID), (unsigned long long)base);

	if (locked_page_alloc(&ring) || locked_page_alloc(&tbl) || locked_page_alloc(&tbl2) ||
	    locked_page_alloc(&buf)) {
		say("a locked page: %s", strerror(errno));
		return 2;
	}

	/* Bring-up, as a driver would (virtio 1.2, 3.1.1). */
	wr(VIRTIO_MMIO_STATUS, 0);
	if (rd(VIRTIO_MMIO_STATUS) != 0) {
		say("status 0x%x after reset", rd(VIRTIO_MMIO_STATUS));
		return 2;
	}
	add_status(S_ACKNOWLEDGE);
	add_status(S_DRIVER);
	wr(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
	if (!(rd(VIRTIO_MMIO_DEVICE_FEATURES) & 1)) {
		say("device does not offer VERSION_1");
		return 2;
	}
	wr(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
	wr(VIRTIO_MMIO_DRIVER_FEATURES, 0);
	wr(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
	wr(VIRTIO_MMIO_DRIVER_FEATURES, 1); /* bit 32: VERSION_1 */
	add_status(S_FEATURES_OK);
	if (!(rd(VIRTIO_MMIO_STATUS) & S_FEATURES_OK)) {
		say("FEATURES_OK did not stick (status 0x%x)", rd(VIRTIO_MMIO_STATUS));
		return 2;
	}

	wr(VIRTIO_MMIO_QUEUE_SEL, 0);
	if (rd(VIRTIO_MMIO_QUEUE_READY)) {
		say("queue 0 already ready after reset");
		return 2;
	}
	qmax = rd(VIRTIO_MMIO_QUEUE_NUM_MAX);
	if (qmax == 0) {
		say("queue 0 not available");
		return 2;
	}
	qsize = qmax < QSIZE_WANT ? qmax : QSIZE_WANT;
	wr(VIRTIO_MMIO_QUEUE_NUM, qsize);

	/* One page: descriptors at 0, available ring at 1024, used ring at 2048. */
	desc = ring.va;
	avail = ring.va + 1024;
	desc_pa = ring.pa;
	avail_pa = ring.pa + 1024;
	used_pa = ring.pa + 2048;
	if (!strcmp(mode, "badring"))
		desc_pa = 0x10000000000ULL; /* 1 TiB: far outside a small guest's RAM */
	set_addr(VIRTIO_MMIO_QUEUE_DESC_LOW, desc_pa);
	set_addr(VIRTIO_MMIO_QUEUE_AVAIL_LOW, avail_pa);
	set_addr(VIRTIO_MMIO_QUEUE_USED_LOW, used_pa);
	wr(VIRTIO_MMIO_QUEUE_READY, 1);
	ready = (int)rd(VIRTIO_MMIO_QUEUE_READY);
	say("queue 0: size %u (max %u), desc 0x%llx avail 0x%llx used 0x%llx, ready %d", qsize,
	    qmax, (unsigned long long)desc_pa, (unsigned long long)avail_pa,
	    (unsigned long long)used_pa, ready);
	if (strcmp(mode, "badring") && !ready) {
		say("QueueReady=1 refused for a valid ring (status 0x%x)", rd(VIRTIO_MMIO_STATUS));
		return 2;
	}
	if (!strcmp(mode, "badring"))
		say("after QueueReady=1: status 0x%x queue_ready %d", rd(VIRTIO_MMIO_STATUS), ready);
	add_status(S_DRIVER_OK);

	if (!strcmp(mode, "loop")) {
		set_desc(desc, 0, buf.pa, 4, F_NEXT, 1);
		set_desc(desc, 1, buf.pa + 4, 4, F_NEXT, 0);
		avail_put(avail, 0, 0);
		avail_publish(avail, 1);
		wr(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
	} else if (!strcmp(mode, "oob")) {
		set_desc(desc, 0, 0x7fffffff0000ULL, 4096, 0, 0);
		avail_put(avail, 0, 0);
		avail_publish(avail, 1);
		wr(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
	} else if (!strcmp(mode, "indirect")) {
		/* desc0 -> table (INDIRECT entry) -> table2 (a plain buffer). */
		set_desc(tbl2.va, 0, buf.pa, 4, 0, 0);
		set_desc(tbl.va, 0, tbl2.pa, 16, F_INDIRECT, 0);
		set_desc(tbl.va, 1, buf.pa, 4, 0, 0);
		set_desc(desc, 0, tbl.pa, 32, F_INDIRECT, 0);
		avail_put(avail, 0, 0);
		avail_publish(avail, 1);
		wr(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
	} else if (!strcmp(mode, "random")) {
		/* Garbage everywhere but the available index, which moves on by
		 * one per round; kick a few times in case a round is harmless. */
		for (uint16_t idx = 1; idx <= 8 && !(rd(VIRTIO_MMIO_STATUS) & S_NEEDS_RESET); idx++) {
			fill_random(ring.va, 1024 + 4 + 2 * qsize + 2); /* descriptors + avail */
			fill_random(ring.va + 2048, PAGE - 2048);        /* used ring */
			avail_publish(avail, idx);
			for (int k = 0; k < 3; k++)
				wr(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
			wait_needs_reset(idx < 8 ? 300 : 0);
		}
	} else { /* badring: the queue is not ready; kick anyway */
		wr(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
	}

	needs_reset = wait_needs_reset(WAIT_MS);
	status = rd(VIRTIO_MMIO_STATUS);
	ready = (int)rd(VIRTIO_MMIO_QUEUE_READY);
	v = rd(VIRTIO_MMIO_INTERRUPT_STATUS);
	say("status=0x%x needs_reset=%d queue_ready=%d interrupt_status=0x%x", status,
	    needs_reset, ready, v);
	wr(VIRTIO_MMIO_INTERRUPT_ACK, v);
	wr(VIRTIO_MMIO_STATUS, 0);
	if (rd(VIRTIO_MMIO_STATUS) != 0)
		say("status 0x%x after the final reset", rd(VIRTIO_MMIO_STATUS));
	if (locked_page_moved(&ring) || locked_page_moved(&tbl) || locked_page_moved(&tbl2) ||
	    locked_page_moved(&buf)) {
		say("a page moved while the device had its address");
		return 2;
	}
	return needs_reset ? 0 : 1;
}
