/* libFuzzer target for the virtio STATE section loaders: virtio_load()
 * (virtio/mmio.c: transport registers and queues) and the balloon's own
 * hook behind it (virtio/balloon.c); virtio-blk has no hook, so a disk
 * loads the transport alone. The devices are set up without KVM on a VM
 * of 200 pages of guest memory (the balloon's bitmap then has bits past
 * the end of RAM).
 *
 * Input: byte 0 picks the device (bit 0: balloon or disk) and the
 * balloon's options (bits 1-4: stats, deflate-on-oom, free-page-hint,
 * free-page-reporting); the rest is the section's bytes.
 *
 * A load that succeeds must describe a state the source could have been
 * in, as the transport and the device build it:
 * - virtio_save() writes the input back byte for byte (nothing accepted
 *   is dropped or rewritten);
 * - every ready queue lies in guest memory (virtq_validate) and is no
 *   larger than the device's maximum;
 * - the driver's features are a subset of the offer, and FEATURES_OK is
 *   set only with VIRTIO_F_VERSION_1 among them (write_status);
 * - the interrupt status holds only the used-buffer and config bits;
 * - the balloon's target is inside guest memory (balloon_set_size), no
 *   page past the end of RAM is marked discarded, and the next hint
 *   command id is not STOP or DONE. (A held statistics buffer may outlive
 *   DRIVER_OK, the feature and its queue's size: a driver that writes a
 *   status other than 0 gets no reset. virtq_push() refuses its head then.)
 * The loaded device is then driven once (the balloon's tick, a kick of
 * every queue) to catch state that is only dangerous when used. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "migrate/state.h"
#include "virtio/balloon.h"
#include "virtio/blk.h"
#include "vmm/vm.h"
#include "tests/fuzz/fuzz.h"

#define RAM_PAGES 200

static struct vm *fake_vm(void)
{
	static struct vm vm;
	static bool made;

	if (made)
		return &vm;
	if (guest_mem_alloc(&vm.mem, RAM_PAGES * GUEST_PAGE_SIZE))
		abort();
	vm.fd = -1;
	made = true;
	return &vm;
}

/* One disk for every run: io_uring setup is too slow to repeat. */
static struct blk *disk(struct vm *vm)
{
	static struct blk *b;
	struct blk_options o = { .id = "fuzz" };
	char tmpl[] = "/tmp/fuzz-devload.XXXXXX", err[256];
	int fd;

	if (b)
		return b;
	fd = mkstemp(tmpl);
	if (fd < 0 || ftruncate(fd, 1 << 20))
		abort();
	close(fd);
	snprintf(o.path, sizeof(o.path), "%s", tmpl);
	b = blk_open(vm, &o, 0, err, sizeof(err));
	unlink(tmpl);
	if (!b)
		abort();
	return b;
}

static void check_transport(struct virtio_dev *dev)
{
	uint64_t offered = dev->ops->features(dev) | 1ULL << VIRTIO_F_VERSION_1;

	ENSURE(!(dev->driver_features & ~offered));
	ENSURE(!(dev->status & VIRTIO_STATUS_FEATURES_OK) ||
	       virtio_has_feature(dev, VIRTIO_F_VERSION_1));
	ENSURE(!(atomic_load(&dev->interrupt_status) & ~(uint32_t)(VIRTIO_INT_USED |
								  VIRTIO_INT_CONFIG)));
	for (unsigned q = 0; q < dev->nqueues; q++) {
		const struct virtq *vq = &dev->queues[q];

		ENSURE(vq->size <= dev->queue_max);
		ENSURE(!vq->ready || virtq_validate(vq, NULL) == 0);
	}
}

static void check_balloon(struct balloon *b)
{
	struct virtio_dev *dev = &b->dev;
	uint64_t pages = guest_mem_pages(&dev->vm->mem);

	ENSURE(b->num_pages <= pages);
	ENSURE(b->hint_next_id >= 2);
	for (uint64_t p = pages; p < (pages + 63) / 64 * 64; p++)
		ENSURE(!(b->discarded[p / 64] >> (p % 64) & 1));
}

/* Uses the loaded state as the device thread would. */
static void drive(struct virtio_dev *dev)
{
	pthread_mutex_lock(&dev->lock);
	if (dev->ops->tick)
		dev->ops->tick(dev);
	for (unsigned q = 0; q < dev->nqueues; q++)
		if ((dev->status & VIRTIO_STATUS_DRIVER_OK) && dev->queues[q].ready &&
		    !dev->queues[q].broken)
			dev->ops->queue_notify(dev, q);
	pthread_mutex_unlock(&dev->lock);
}

/* Whether the section loaded (and then passed the transport's checks). */
static bool load(struct virtio_dev *dev, const uint8_t *blob, size_t len)
{
	struct state_reader r;
	struct state_writer w;
	int rc;

	state_reader_init(&r, blob, len);
	rc = virtio_load(dev, &r);
	ENSURE(rc == 0 || rc == -EINVAL);
	if (rc)
		return false;
	state_writer_init(&w);
	ENSURE(virtio_save(dev, &w) == 0);
	ENSURE(w.len == len && !memcmp(w.buf, blob, len));
	state_writer_free(&w);
	check_transport(dev);
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vm *vm = fake_vm();
	struct balloon_options o = { .enabled = true };
	struct balloon b;
	char err[256];

	if (size < 1)
		return 0;
	if (data[0] & 1) {
		/* Not driven: its requests would outlive the run. */
		(void)load(blk_dev(disk(vm)), data + 1, size - 1);
		return 0;
	}
	o.stats_interval_s = data[0] & 2 ? 5 : 0;
	o.deflate_on_oom = data[0] & 4;
	o.free_page_hint = data[0] & 8;
	o.free_page_reporting = data[0] & 16;
	if (balloon_init(vm, &b, &o, err, sizeof(err)))
		abort();
	if (load(&b.dev, data + 1, size - 1)) {
		check_balloon(&b);
		drive(&b.dev);
	}
	balloon_destroy(&b);
	return 0;
}
