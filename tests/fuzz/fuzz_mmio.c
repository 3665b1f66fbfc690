/* libFuzzer target for the virtio-mmio transport as the guest drives it
 * (virtio_mmio_io in virtio/mmio.c), with the balloon behind it, so that
 * guest-built rings reach the device's queue handlers (virtio/balloon.c
 * over virtio/queue.c). No KVM and no device thread: the kick, interrupt
 * and wake eventfds are real, and kicks are handled between operations
 * as the device thread's handle_kick() would.
 *
 * Input:
 *   byte 0     balloon options: bit 0 stats, 1 deflate-on-oom,
 *              2 free-page-hint, 3 free-page-reporting
 *   byte 1     number of operations n (at most 64)
 *   n × 7      operations {u8 kind, le16 offset, le32 value}
 *   rest       guest memory from address 0 (16 pages)
 * kind bits 0-3 mod 6: 0 register or config write and 1 read (offset
 * mod the window, size 1, 2, 4 or 8 from kind bits 4-5), 2 a 32-bit store into
 * guest memory (offset × 4), 3 the device's tick, 4 a host command (set
 * the balloon's size to value pages, or start, stop or end a hint round),
 * 5 the device reset the driver asks for with status 0.
 *
 * Invariants, after every operation: a ready queue lies in guest memory
 * (its layout cannot change while ready); FEATURES_OK is only set with a
 * subset of the offer that includes VERSION_1; the interrupt status holds
 * only the used and config bits; the hint callback only ever sees blocks
 * inside guest memory. And no sanitizer report, and no hang. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "virtio/balloon.h"
#include "virtio/mmio.h"
#include "vmm/vm.h"
#include "tests/fuzz/fuzz.h"

#define RAM_PAGES 16
#define MAX_OPS   64
#define OP_SIZE   7

static struct vm vm;
static int kick_fd[VIRTIO_MAX_QUEUES], irq_fd, wake_fd;

static void setup_once(void)
{
	static bool made;

	if (made)
		return;
	if (guest_mem_alloc(&vm.mem, RAM_PAGES * GUEST_PAGE_SIZE) || guest_mem_dirty_alloc(&vm.mem))
		abort();
	vm.fd = -1;
	for (unsigned q = 0; q < VIRTIO_MAX_QUEUES; q++)
		kick_fd[q] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	irq_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (irq_fd < 0 || wake_fd < 0 || kick_fd[VIRTIO_MAX_QUEUES - 1] < 0)
		abort();
	made = true;
}

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static bool fired(int fd)
{
	uint64_t v;

	return read(fd, &v, sizeof(v)) == sizeof(v);
}

static void hint_block(void *opaque, uint64_t gpa, uint64_t len)
{
	(void)opaque;
	ENSURE(len > 0 && gpa_to_hva(&vm.mem, gpa, len) != NULL);
}

/* What the device thread does with the kicks that came (handle_kick). */
static void handle_kicks(struct virtio_dev *dev)
{
	for (unsigned q = 0; q < dev->nqueues; q++) {
		if (!fired(kick_fd[q]))
			continue;
		pthread_mutex_lock(&dev->lock);
		if ((dev->status & VIRTIO_STATUS_DRIVER_OK) && dev->queues[q].ready &&
		    !dev->queues[q].broken && !dev->paused)
			dev->ops->queue_notify(dev, q);
		pthread_mutex_unlock(&dev->lock);
	}
	(void)fired(irq_fd);
	(void)fired(wake_fd);
}

static void check(struct virtio_dev *dev)
{
	uint64_t offered = dev->ops->features(dev) | 1ULL << VIRTIO_F_VERSION_1;

	if (dev->status & VIRTIO_STATUS_FEATURES_OK)
		ENSURE(!(dev->driver_features & ~offered) &&
		       virtio_has_feature(dev, VIRTIO_F_VERSION_1));
	ENSURE(!(atomic_load(&dev->interrupt_status) &
		 ~(uint32_t)(VIRTIO_INT_USED | VIRTIO_INT_CONFIG)));
	for (unsigned q = 0; q < dev->nqueues; q++)
		ENSURE(!dev->queues[q].ready || virtq_validate(&dev->queues[q], NULL) == 0);
}

static void host_command(struct balloon *b, uint32_t v)
{
	switch (v & 3) {
	case 0: (void)balloon_set_size(b, (uint64_t)(v >> 2) << 12); break;
	case 1: (void)balloon_hint_start(b, v & 4, hint_block, NULL); break;
	case 2: balloon_hint_stop(b); break;
	default: balloon_hint_done(b); break;
	}
}

static void run_op(struct balloon *b, const uint8_t *op)
{
	struct virtio_dev *dev = &b->dev;
	uint32_t len = 1u << ((op[0] >> 4) & 3), v = rd32(op + 3);
	uint64_t off = rd16(op + 1) % VIRTIO_MMIO_SIZE;
	uint8_t buf[8] = { 0 };
	uint8_t *p;

	switch ((op[0] & 15) % 6) {
	case 0:
		memcpy(buf, &v, 4);
		virtio_mmio_io(dev, off, buf, len, true);
		break;
	case 1:
		virtio_mmio_io(dev, off, buf, len, false);
		break;
	case 2:
		p = gpa_to_hva(&vm.mem, (uint64_t)rd16(op + 1) * 4 % (RAM_PAGES * GUEST_PAGE_SIZE), 4);
		memcpy(p, &v, 4);
		break;
	case 3:
		pthread_mutex_lock(&dev->lock);
		dev->ops->tick(dev);
		pthread_mutex_unlock(&dev->lock);
		break;
	case 4:
		host_command(b, v);
		break;
	default:
		memset(buf, 0, sizeof(buf));
		virtio_mmio_io(dev, 0x70, buf, 4, true); /* REG_STATUS = 0 */
		break;
	}
	handle_kicks(dev);
	check(dev);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct balloon_options o = { .enabled = true };
	struct balloon b;
	size_t nops, mem_bytes, ram = RAM_PAGES * GUEST_PAGE_SIZE;
	char err[256];

	if (size < 2)
		return 0;
	setup_once();
	nops = data[1] % (MAX_OPS + 1);
	if (size < 2 + nops * OP_SIZE)
		return 0;
	memset(vm.mem.base, 0, ram);
	mem_bytes = size - 2 - nops * OP_SIZE;
	memcpy(vm.mem.base, data + 2 + nops * OP_SIZE, mem_bytes < ram ? mem_bytes : ram);
	for (unsigned q = 0; q < VIRTIO_MAX_QUEUES; q++)
		(void)fired(kick_fd[q]);

	o.stats_interval_s = data[0] & 1 ? 5 : 0;
	o.deflate_on_oom = data[0] & 2;
	o.free_page_hint = data[0] & 4;
	o.free_page_reporting = data[0] & 8;
	if (balloon_init(&vm, &b, &o, err, sizeof(err)))
		abort();
	for (unsigned q = 0; q < b.dev.nqueues; q++)
		b.dev.kick_fd[q] = kick_fd[q];
	b.dev.irq_fd = irq_fd;
	b.dev.wake_fd = wake_fd;

	for (size_t i = 0; i < nops; i++)
		run_op(&b, data + 2 + i * OP_SIZE);

	/* The eventfds are kept for the next run. */
	for (unsigned q = 0; q < b.dev.nqueues; q++)
		b.dev.kick_fd[q] = -1;
	b.dev.irq_fd = b.dev.wake_fd = -1;
	balloon_destroy(&b);
	return 0;
}
