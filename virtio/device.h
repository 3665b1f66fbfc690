/* The interface every virtio device implements for the transport, and the
 * hooks live migration will use. A device embeds struct virtio_dev; the
 * transport (mmio.c) owns the register file, the queues' addresses, the
 * notification eventfds and the interrupt, and runs the device's thread. */
#ifndef VIRTIO_DEVICE_H
#define VIRTIO_DEVICE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "virtio/queue.h"

#define VIRTIO_MAX_QUEUES 8

struct virtio_dev;
struct vm;

/* Opaque until the migration stream exists: devices serialise their state
 * through these in save/load. */
struct state_writer;
struct state_reader;

struct virtio_dev_ops {
	const char *name;
	uint32_t device_id;
	/* Features offered to the driver (VIRTIO_F_VERSION_1 is added). */
	uint64_t (*features)(struct virtio_dev *dev);
	uint32_t config_size;
	/* Config space access at offset (already range-checked); dev->lock held. */
	void (*config_read)(struct virtio_dev *dev, uint32_t offset, uint8_t *data, uint32_t len);
	void (*config_write)(struct virtio_dev *dev, uint32_t offset, const uint8_t *data,
			     uint32_t len);
	/* DRIVER_OK: the negotiated features and queues are final. 0 or -errno. */
	int (*activate)(struct virtio_dev *dev);
	/* The driver reset the device (status 0): forget queue contents. */
	void (*reset)(struct virtio_dev *dev);
	/* Queue q was kicked; runs on the device thread with dev->lock held. */
	void (*queue_notify)(struct virtio_dev *dev, unsigned q);
	/* A periodic tick on the device thread (dev->lock held), if tick_ms > 0. */
	void (*tick)(struct virtio_dev *dev);
	/* Optional: dev->io_fd (an eventfd the device's backend signals, e.g.
	 * an io_uring's completion eventfd) became readable; the transport has
	 * read it. Device thread, dev->lock held, never while paused. */
	void (*io_ready)(struct virtio_dev *dev);
	/* Optional: the device's entry in the migration device-set descriptor
	 * (printable ASCII, no commas), written into buf. NULL: ops->name. */
	void (*describe)(struct virtio_dev *dev, char *buf, size_t size);
	/* Migration: quiesce and restart the device thread's work, and
	 * serialise the device's own state (the transport saves its part). */
	int (*pause)(struct virtio_dev *dev);
	int (*resume)(struct virtio_dev *dev);
	int (*save)(struct virtio_dev *dev, struct state_writer *w);
	int (*load)(struct virtio_dev *dev, struct state_reader *r);
};

struct virtio_dev {
	const struct virtio_dev_ops *ops;
	struct vm *vm;
	/* Numbers the devices of one kind (disk 0, 1...): migration state
	 * sections are named ops->name plus instance. */
	unsigned instance;
	pthread_mutex_t lock;
	/* Transport state (virtio-mmio registers). */
	uint64_t base;
	unsigned irq;
	uint32_t status;
	uint32_t device_features_sel;
	uint32_t driver_features_sel;
	uint64_t driver_features;
	uint32_t queue_sel;
	uint32_t config_generation;
	_Atomic uint32_t interrupt_status;
	unsigned nqueues;
	uint16_t queue_max;
	struct virtq queues[VIRTIO_MAX_QUEUES];
	/* Notifications and interrupts. */
	int kick_fd[VIRTIO_MAX_QUEUES]; /* KVM_IOEVENTFD per queue index */
	int irq_fd;                     /* KVM_IRQFD */
	int wake_fd;                    /* wakes the device thread */
	int io_fd;                      /* watched when ops->io_ready is set */
	int tick_ms;
	/* Queues the device thread polls every POLL_MS, kicks off (virtio_poll). */
	_Atomic uint32_t poll_mask;
	pthread_t thread;
	bool thread_started;
	_Atomic bool stopping;
	bool paused; /* no queue work while set (migration); dev->lock */
};

/* Status bits (virtio 1.2, 2.1). */
#define VIRTIO_STATUS_ACKNOWLEDGE 1
#define VIRTIO_STATUS_DRIVER 2
#define VIRTIO_STATUS_DRIVER_OK 4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 64
#define VIRTIO_STATUS_FAILED 128

#define VIRTIO_F_VERSION_1 32
#define VIRTIO_INT_USED 1
#define VIRTIO_INT_CONFIG 2

/* Whether the driver accepted feature bit. */
static inline bool virtio_has_feature(const struct virtio_dev *dev, unsigned bit)
{
	return dev->driver_features & (1ULL << bit);
}

/* Interrupts the driver: a used buffer (unless it asked not to be told). */
void virtio_notify_used(struct virtio_dev *dev, struct virtq *vq);
/* Interrupts the driver: config space changed. Call with dev->lock held. */
void virtio_notify_config(struct virtio_dev *dev);
/* A malformed queue: one log line, DEVICE_NEEDS_RESET, config interrupt.
 * The device stops using the queue; the VMM and guest go on. */
void virtio_queue_broken(struct virtio_dev *dev, unsigned q, const char *why);
/* Stops all queue work of the device (kicks wait) and calls ops->pause;
 * after it returns 0 the device does not touch guest memory. On an error
 * (requests still in flight after the device's drain) the caller must
 * resume the device, which reaps them. */
int virtio_pause(struct virtio_dev *dev);
/* Calls ops->resume and looks at every ready queue again. */
int virtio_resume(struct virtio_dev *dev);
/* The transport's state and the queues, then the device's own (ops->save).
 * The device must be paused. load: 0 or -EINVAL for a blob that does not
 * fit this device (wrong queue count, sizes, addresses outside RAM) or
 * holds a state the device could not be in (unknown flag or interrupt
 * bits, FEATURES_OK without VERSION_1, a used index ahead of the chains
 * taken); tests/fuzz/fuzz_devload.c holds it to that. */
int virtio_save(struct virtio_dev *dev, struct state_writer *w);
int virtio_load(struct virtio_dev *dev, struct state_reader *r);

/* Wakes the device thread so it runs tick() now (e.g. after a control
 * command changed what the device should do). */
void virtio_wake(struct virtio_dev *dev);
/* Polls queue q instead of waiting for its kicks (on), or goes back to
 * kicks (off), as QEMU's balloon does while the guest hints: a busy queue
 * then costs the guest no exit per buffer. The device thread looks at a
 * polled queue every VIRTIO_POLL_MS, and once more after polling ends.
 * Call with dev->lock held. */
#define VIRTIO_POLL_MS 1
void virtio_poll(struct virtio_dev *dev, unsigned q, bool on);

#endif
