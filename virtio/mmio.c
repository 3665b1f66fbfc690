/* virtio-mmio transport and device threads; see mmio.h. */
#include "virtio/mmio.h"

#include <errno.h>
#include <inttypes.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "migrate/state.h"
#include "vmm/util.h"
#include "vmm/vm.h"

enum {
	REG_MAGIC = 0x000, REG_VERSION = 0x004, REG_DEVICE_ID = 0x008, REG_VENDOR_ID = 0x00c,
	REG_DEVICE_FEATURES = 0x010, REG_DEVICE_FEATURES_SEL = 0x014,
	REG_DRIVER_FEATURES = 0x020, REG_DRIVER_FEATURES_SEL = 0x024,
	REG_QUEUE_SEL = 0x030, REG_QUEUE_NUM_MAX = 0x034, REG_QUEUE_NUM = 0x038,
	REG_QUEUE_READY = 0x044, REG_QUEUE_NOTIFY = 0x050,
	REG_INTERRUPT_STATUS = 0x060, REG_INTERRUPT_ACK = 0x064, REG_STATUS = 0x070,
	REG_QUEUE_DESC_LOW = 0x080, REG_QUEUE_DESC_HIGH = 0x084,
	REG_QUEUE_DRIVER_LOW = 0x090, REG_QUEUE_DRIVER_HIGH = 0x094,
	REG_QUEUE_DEVICE_LOW = 0x0a0, REG_QUEUE_DEVICE_HIGH = 0x0a4,
	REG_SHM_SEL = 0x0ac, REG_SHM_LEN_LOW = 0x0b0, REG_SHM_LEN_HIGH = 0x0b4,
	REG_CONFIG_GENERATION = 0x0fc, REG_CONFIG = 0x100,
};

#define VIRTIO_MMIO_MAGIC 0x74726976 /* "virt" */
#define VIRTIO_MMIO_VENDOR 0x00564d4d /* "MMV" */
#define WAKE_TAG 0xffff
#define IO_TAG 0xfffe

unsigned virtio_mmio_irq(unsigned index)
{
	unsigned irq = 5 + index;

	return irq >= 9 ? irq + 1 : irq;
}

static uint64_t offered_features(struct virtio_dev *dev)
{
	return dev->ops->features(dev) | 1ULL << VIRTIO_F_VERSION_1;
}

static void set_high(uint64_t *v, uint32_t hi)
{
	*v = (*v & 0xffffffffULL) | (uint64_t)hi << 32;
}

static void set_low(uint64_t *v, uint32_t lo)
{
	*v = (*v & ~0xffffffffULL) | lo;
}

static void reset_device(struct virtio_dev *dev)
{
	dev->ops->reset(dev);
	atomic_store(&dev->poll_mask, 0); /* the rings are the driver's to set up again */
	dev->status = 0;
	dev->driver_features = 0;
	dev->device_features_sel = dev->driver_features_sel = dev->queue_sel = 0;
	atomic_store(&dev->interrupt_status, 0);
	for (unsigned q = 0; q < dev->nqueues; q++)
		virtq_reset(&dev->queues[q], &dev->vm->mem);
}

/* Makes the device thread look at every ready queue, as after a kick. */
static void kick_ready_queues(struct virtio_dev *dev)
{
	uint64_t one = 1;

	for (unsigned q = 0; q < dev->nqueues; q++)
		if (dev->queues[q].ready)
			(void)!write(dev->kick_fd[q], &one, sizeof(one));
}

/* Whether FEATURES_OK may stand: the driver took a subset of what was
 * offered, VERSION_1 among it (write_status, and virtio_load for a state
 * that says FEATURES_OK). */
static bool features_acceptable(struct virtio_dev *dev)
{
	return !(dev->driver_features & ~offered_features(dev)) &&
	       virtio_has_feature(dev, VIRTIO_F_VERSION_1);
}

static void write_status(struct virtio_dev *dev, uint32_t v)
{
	const char *why;

	if (v == 0) {
		reset_device(dev);
		return;
	}
	if ((v & VIRTIO_STATUS_FEATURES_OK) && !(dev->status & VIRTIO_STATUS_FEATURES_OK) &&
	    !features_acceptable(dev))
		v &= ~(uint32_t)VIRTIO_STATUS_FEATURES_OK;
	if ((v & VIRTIO_STATUS_DRIVER_OK) && !(dev->status & VIRTIO_STATUS_DRIVER_OK)) {
		for (unsigned q = 0; q < dev->nqueues; q++) {
			if (dev->queues[q].ready && virtq_validate(&dev->queues[q], &why)) {
				virtio_queue_broken(dev, q, why);
				dev->queues[q].ready = false;
			}
		}
		dev->status = v | (dev->status & VIRTIO_STATUS_NEEDS_RESET);
		if (dev->ops->activate(dev)) {
			dev->status |= VIRTIO_STATUS_NEEDS_RESET;
			return;
		}
		/* Linux's balloon fills and kicks its stats queue before DRIVER_OK;
		 * kicks are ignored until now, so look at every ready queue once. */
		kick_ready_queues(dev);
		return;
	}
	dev->status = v | (dev->status & VIRTIO_STATUS_NEEDS_RESET);
}

static struct virtq *selected_queue(struct virtio_dev *dev)
{
	return dev->queue_sel < dev->nqueues ? &dev->queues[dev->queue_sel] : NULL;
}

static uint32_t read_reg(struct virtio_dev *dev, uint64_t offset)
{
	struct virtq *vq = selected_queue(dev);

	switch (offset) {
	case REG_MAGIC: return VIRTIO_MMIO_MAGIC;
	case REG_VERSION: return 2;
	case REG_DEVICE_ID: return dev->ops->device_id;
	case REG_VENDOR_ID: return VIRTIO_MMIO_VENDOR;
	case REG_DEVICE_FEATURES:
		return dev->device_features_sel > 1
			       ? 0 : (uint32_t)(offered_features(dev) >> (32 * dev->device_features_sel));
	case REG_QUEUE_NUM_MAX: return vq ? dev->queue_max : 0;
	case REG_QUEUE_READY: return vq ? vq->ready : 0;
	case REG_INTERRUPT_STATUS: return atomic_load(&dev->interrupt_status);
	case REG_STATUS: return dev->status;
	case REG_SHM_LEN_LOW:
	case REG_SHM_LEN_HIGH: return 0xffffffff; /* no shared memory regions */
	case REG_CONFIG_GENERATION: return dev->config_generation;
	}
	return 0;
}

static void write_queue_reg(struct virtio_dev *dev, uint64_t offset, uint32_t v)
{
	struct virtq *vq = selected_queue(dev);
	const char *why;

	/* Queue layout may only change while the queue is off. */
	if (!vq || (vq->ready && offset != REG_QUEUE_READY))
		return;
	switch (offset) {
	case REG_QUEUE_NUM:
		vq->size = v <= dev->queue_max ? (uint16_t)v : 0;
		break;
	case REG_QUEUE_READY:
		if (!v) {
			vq->ready = false;
		} else if (virtq_validate(vq, &why)) {
			virtio_queue_broken(dev, dev->queue_sel, why);
		} else {
			vq->ready = true;
			vq->broken = false;
		}
		break;
	case REG_QUEUE_DESC_LOW: set_low(&vq->desc_gpa, v); break;
	case REG_QUEUE_DESC_HIGH: set_high(&vq->desc_gpa, v); break;
	case REG_QUEUE_DRIVER_LOW: set_low(&vq->avail_gpa, v); break;
	case REG_QUEUE_DRIVER_HIGH: set_high(&vq->avail_gpa, v); break;
	case REG_QUEUE_DEVICE_LOW: set_low(&vq->used_gpa, v); break;
	case REG_QUEUE_DEVICE_HIGH: set_high(&vq->used_gpa, v); break;
	}
}

static void write_reg(struct virtio_dev *dev, uint64_t offset, uint32_t v)
{
	uint64_t one = 1;

	switch (offset) {
	case REG_DEVICE_FEATURES_SEL: dev->device_features_sel = v; break;
	case REG_DRIVER_FEATURES:
		/* Features are fixed once FEATURES_OK is set. */
		if (dev->status & VIRTIO_STATUS_FEATURES_OK || dev->driver_features_sel > 1)
			break;
		if (dev->driver_features_sel)
			set_high(&dev->driver_features, v);
		else
			set_low(&dev->driver_features, v);
		break;
	case REG_DRIVER_FEATURES_SEL: dev->driver_features_sel = v; break;
	case REG_QUEUE_SEL: dev->queue_sel = v; break;
	case REG_QUEUE_NOTIFY:
		/* Normally caught by the ioeventfd; this is the fallback. */
		if (v < dev->nqueues)
			(void)!write(dev->kick_fd[v], &one, sizeof(one));
		break;
	case REG_INTERRUPT_ACK: atomic_fetch_and(&dev->interrupt_status, ~v); break;
	case REG_STATUS: write_status(dev, v); break;
	default: write_queue_reg(dev, offset, v); break;
	}
}

void virtio_mmio_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
	struct virtio_dev *dev = opaque;
	uint32_t v = 0;

	pthread_mutex_lock(&dev->lock);
	if (offset >= REG_CONFIG) {
		uint64_t off = offset - REG_CONFIG;

		if (off + len > dev->ops->config_size) {
			if (!is_write)
				memset(data, 0, len);
		} else if (is_write) {
			dev->ops->config_write(dev, (uint32_t)off, data, len);
		} else {
			dev->ops->config_read(dev, (uint32_t)off, data, len);
		}
	} else if (len != 4 || (offset & 3)) {
		/* The register file only takes aligned 32-bit accesses. */
		if (!is_write)
			memset(data, 0, len);
	} else if (is_write) {
		memcpy(&v, data, 4);
		write_reg(dev, offset, le32toh(v));
	} else {
		v = htole32(read_reg(dev, offset));
		memcpy(data, &v, 4);
	}
	pthread_mutex_unlock(&dev->lock);
}

static void raise_irq(struct virtio_dev *dev, uint32_t why)
{
	uint64_t one = 1;

	atomic_fetch_or(&dev->interrupt_status, why);
	(void)!write(dev->irq_fd, &one, sizeof(one));
}

void virtio_notify_used(struct virtio_dev *dev, struct virtq *vq)
{
	if (!virtq_interrupt_suppressed(vq))
		raise_irq(dev, VIRTIO_INT_USED);
}

void virtio_notify_config(struct virtio_dev *dev)
{
	dev->config_generation++;
	raise_irq(dev, VIRTIO_INT_CONFIG);
}

void virtio_queue_broken(struct virtio_dev *dev, unsigned q, const char *why)
{
	log_err("%s: queue %u is malformed (%s); device needs reset", dev->ops->name, q, why);
	dev->queues[q].broken = true;
	dev->status |= VIRTIO_STATUS_NEEDS_RESET;
	virtio_notify_config(dev);
}

int virtio_pause(struct virtio_dev *dev)
{
	int rc = 0;

	/* Queue work runs under dev->lock, so once we hold it none is running. */
	pthread_mutex_lock(&dev->lock);
	dev->paused = true;
	if (dev->ops->pause)
		rc = dev->ops->pause(dev);
	pthread_mutex_unlock(&dev->lock);
	return rc;
}

int virtio_resume(struct virtio_dev *dev)
{
	int rc = 0;

	pthread_mutex_lock(&dev->lock);
	dev->paused = false;
	if (dev->ops->resume)
		rc = dev->ops->resume(dev);
	/* Kicks that came while paused were dropped: look at the queues now. */
	kick_ready_queues(dev);
	/* KVM injects an irqfd interrupt from a work item, so one raised just
	 * before the pause (the last completions) may not have reached the
	 * saved interrupt controller state. The driver has not acknowledged
	 * it yet: raise it again; an extra one is harmless. */
	if (atomic_load(&dev->interrupt_status))
		raise_irq(dev, 0);
	pthread_mutex_unlock(&dev->lock);
	virtio_wake(dev);
	return rc;
}

void virtio_wake(struct virtio_dev *dev)
{
	uint64_t one = 1;

	(void)!write(dev->wake_fd, &one, sizeof(one));
}

void virtio_poll(struct virtio_dev *dev, unsigned q, bool on)
{
	uint32_t bit = 1u << q;
	uint64_t one = 1;

	if (q >= dev->nqueues || !(atomic_load(&dev->poll_mask) & bit) == !on)
		return;
	if (on) {
		if (virtq_set_kicks(&dev->queues[q], false) == 0)
			atomic_fetch_or(&dev->poll_mask, bit);
		return;
	}
	atomic_fetch_and(&dev->poll_mask, ~bit);
	(void)virtq_set_kicks(&dev->queues[q], true);
	/* Buffers added while kicks were off: one more look. */
	(void)!write(dev->kick_fd[q], &one, sizeof(one));
}

static void handle_queue(struct virtio_dev *dev, unsigned q)
{
	pthread_mutex_lock(&dev->lock);
	if ((dev->status & VIRTIO_STATUS_DRIVER_OK) && dev->queues[q].ready &&
	    !dev->queues[q].broken && !dev->paused)
		dev->ops->queue_notify(dev, q);
	pthread_mutex_unlock(&dev->lock);
}

static void handle_kick(struct virtio_dev *dev, unsigned q)
{
	uint64_t v;

	(void)!read(dev->kick_fd[q], &v, sizeof(v));
	handle_queue(dev, q);
}

static void handle_io(struct virtio_dev *dev)
{
	uint64_t v;

	(void)!read(dev->io_fd, &v, sizeof(v));
	pthread_mutex_lock(&dev->lock);
	/* A paused device answers nothing: ops->pause drained its backend, and
	 * what a drain that timed out left behind is reaped by ops->resume. */
	if (!dev->paused)
		dev->ops->io_ready(dev);
	pthread_mutex_unlock(&dev->lock);
}

static void *device_thread(void *arg)
{
	struct virtio_dev *dev = arg;
	struct epoll_event ev = { .events = EPOLLIN };
	uint64_t next_tick = 0;
	int ep = epoll_create1(EPOLL_CLOEXEC);
	char name[16];

	snprintf(name, sizeof(name), "virtio-%s", dev->ops->name);
	pthread_setname_np(pthread_self(), name);
	for (unsigned q = 0; q < dev->nqueues; q++) {
		ev.data.u32 = q;
		epoll_ctl(ep, EPOLL_CTL_ADD, dev->kick_fd[q], &ev);
	}
	ev.data.u32 = WAKE_TAG;
	epoll_ctl(ep, EPOLL_CTL_ADD, dev->wake_fd, &ev);
	if (dev->ops->io_ready) {
		ev.data.u32 = IO_TAG;
		epoll_ctl(ep, EPOLL_CTL_ADD, dev->io_fd, &ev);
	}
	while (!atomic_load(&dev->stopping)) {
		struct epoll_event evs[VIRTIO_MAX_QUEUES + 2];
		int timeout = -1, n;
		bool tick = false;

		if (dev->tick_ms > 0) {
			uint64_t now = now_ns();

			if (!next_tick || now >= next_tick) {
				tick = true;
				next_tick = now + (uint64_t)dev->tick_ms * 1000000ULL;
			}
			timeout = (int)((next_tick - now) / 1000000ULL) + 1;
		}
		if (atomic_load(&dev->poll_mask) && (timeout < 0 || timeout > VIRTIO_POLL_MS))
			timeout = VIRTIO_POLL_MS;
		if (tick && dev->ops->tick) {
			pthread_mutex_lock(&dev->lock);
			if (!dev->paused)
				dev->ops->tick(dev);
			pthread_mutex_unlock(&dev->lock);
		}
		n = epoll_wait(ep, evs, VIRTIO_MAX_QUEUES + 2, timeout);
		for (int i = 0; i < n; i++) {
			uint64_t v;

			if (evs[i].data.u32 == IO_TAG) {
				handle_io(dev);
				continue;
			}
			if (evs[i].data.u32 != WAKE_TAG) {
				handle_kick(dev, evs[i].data.u32);
				continue;
			}
			(void)!read(dev->wake_fd, &v, sizeof(v));
			next_tick = 0; /* a wake-up runs tick() at once */
		}
		for (uint32_t m = atomic_load(&dev->poll_mask); m; m &= m - 1)
			handle_queue(dev, (unsigned)__builtin_ctz(m));
	}
	close(ep);
	return NULL;
}

static int setup_eventfds(struct vm *vm, struct virtio_dev *dev, char *err, size_t errlen)
{
	struct kvm_irqfd irqfd = { .gsi = dev->irq };

	dev->irq_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	dev->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (dev->irq_fd < 0 || dev->wake_fd < 0) {
		snprintf(err, errlen, "%s: eventfd: %s", dev->ops->name, strerror(errno));
		return -errno;
	}
	irqfd.fd = (uint32_t)dev->irq_fd;
	if (ioctl(vm->fd, KVM_IRQFD, &irqfd) < 0) {
		snprintf(err, errlen, "%s: KVM_IRQFD: %s", dev->ops->name, strerror(errno));
		return -errno;
	}
	for (unsigned q = 0; q < dev->nqueues; q++) {
		struct kvm_ioeventfd io = {
			.datamatch = q, .addr = dev->base + REG_QUEUE_NOTIFY, .len = 4,
			.flags = KVM_IOEVENTFD_FLAG_DATAMATCH,
		};

		dev->kick_fd[q] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		io.fd = dev->kick_fd[q];
		if (dev->kick_fd[q] < 0 || ioctl(vm->fd, KVM_IOEVENTFD, &io) < 0) {
			snprintf(err, errlen, "%s: KVM_IOEVENTFD: %s", dev->ops->name, strerror(errno));
			return -errno;
		}
	}
	return 0;
}

int virtio_dev_init(struct virtio_dev *dev, struct vm *vm, const struct virtio_dev_ops *ops,
		    unsigned nqueues, uint16_t queue_max, char *err, size_t errlen)
{
	if (nqueues > VIRTIO_MAX_QUEUES) {
		snprintf(err, errlen, "%s: too many virtio queues", ops->name);
		return -ENOSPC;
	}
	dev->ops = ops;
	dev->vm = vm;
	dev->nqueues = nqueues;
	dev->queue_max = queue_max;
	dev->irq_fd = dev->wake_fd = -1;
	for (unsigned q = 0; q < VIRTIO_MAX_QUEUES; q++) {
		dev->kick_fd[q] = -1;
		virtq_reset(&dev->queues[q], &vm->mem);
	}
	pthread_mutex_init(&dev->lock, NULL);
	return 0;
}

int virtio_mmio_attach(struct virtio_dev *dev, unsigned index, char *err, size_t errlen)
{
	const char *name = dev->ops->name;
	int rc;

	if (index >= VIRTIO_MMIO_MAX_DEVICES) {
		snprintf(err, errlen, "%s: too many virtio devices", name);
		return -ENOSPC;
	}
	dev->base = VIRTIO_MMIO_BASE + index * VIRTIO_MMIO_STRIDE;
	dev->irq = virtio_mmio_irq(index);
	rc = setup_eventfds(dev->vm, dev, err, errlen);
	if (rc)
		return rc;
	rc = bus_register(&dev->vm->mmio, dev->base, VIRTIO_MMIO_SIZE, virtio_mmio_io, dev);
	if (rc) {
		snprintf(err, errlen, "%s: cannot register MMIO window", name);
		return rc;
	}
	rc = pthread_create(&dev->thread, NULL, device_thread, dev);
	if (rc) {
		snprintf(err, errlen, "%s: cannot start the device thread", name);
		return -rc;
	}
	dev->thread_started = true;
	return 0;
}

int virtio_mmio_cmdline(const struct virtio_dev *dev, char *buf, size_t size)
{
	return snprintf(buf, size, "virtio_mmio.device=%" PRIu64 "@0x%" PRIx64 ":%u",
			(uint64_t)VIRTIO_MMIO_SIZE, dev->base, dev->irq);
}

void virtio_mmio_detach(struct virtio_dev *dev)
{
	if (dev->thread_started) {
		atomic_store(&dev->stopping, true);
		virtio_wake(dev);
		pthread_join(dev->thread, NULL);
		dev->thread_started = false;
	}
	for (unsigned q = 0; q < dev->nqueues; q++)
		if (dev->kick_fd[q] >= 0)
			close(dev->kick_fd[q]);
	if (dev->irq_fd >= 0)
		close(dev->irq_fd);
	if (dev->wake_fd >= 0)
		close(dev->wake_fd);
}

int virtio_save(struct virtio_dev *dev, struct state_writer *w)
{
	int rc = 0;

	pthread_mutex_lock(&dev->lock);
	state_put_le32(w, dev->status);
	state_put_le32(w, dev->device_features_sel);
	state_put_le32(w, dev->driver_features_sel);
	state_put_le64(w, dev->driver_features);
	state_put_le32(w, dev->queue_sel);
	state_put_le32(w, dev->config_generation);
	state_put_le32(w, atomic_load(&dev->interrupt_status));
	state_put_le32(w, dev->nqueues);
	for (unsigned q = 0; q < dev->nqueues; q++) {
		const struct virtq *vq = &dev->queues[q];

		state_put_le16(w, vq->size);
		state_put_le16(w, (uint16_t)(vq->ready | vq->broken << 1));
		state_put_le64(w, vq->desc_gpa);
		state_put_le64(w, vq->avail_gpa);
		state_put_le64(w, vq->used_gpa);
		state_put_le16(w, vq->last_avail);
		state_put_le16(w, vq->used_idx);
	}
	if (dev->ops->save)
		rc = dev->ops->save(dev, w);
	pthread_mutex_unlock(&dev->lock);
	return rc ? rc : w->error;
}

static int load_queues(struct virtio_dev *dev, struct state_reader *r)
{
	uint32_t nqueues;
	const char *why;

	if (state_get_le32(r, &nqueues) || nqueues != dev->nqueues)
		return -EINVAL;
	for (unsigned q = 0; q < dev->nqueues; q++) {
		struct virtq *vq = &dev->queues[q];
		uint16_t flags;

		if (state_get_le16(r, &vq->size) || state_get_le16(r, &flags) ||
		    state_get_le64(r, &vq->desc_gpa) || state_get_le64(r, &vq->avail_gpa) ||
		    state_get_le64(r, &vq->used_gpa) || state_get_le16(r, &vq->last_avail) ||
		    state_get_le16(r, &vq->used_idx) || vq->size > dev->queue_max ||
		    (flags & ~3u)) /* ready, broken */
			return -EINVAL;
		/* Chains taken and not yet returned: never negative, as each
		 * used entry answers a chain taken. A used index ahead would
		 * have the device return chains it never took, and with the
		 * used index on top of the available one (the driver may place
		 * the rings so) each return would make one more chain
		 * available: the device would loop for ever. */
		if ((uint16_t)(vq->last_avail - vq->used_idx) > dev->queue_max)
			return -EINVAL;
		vq->ready = flags & 1;
		vq->broken = flags & 2;
		if (vq->ready && virtq_validate(vq, &why))
			return -EINVAL;
	}
	return 0;
}

int virtio_load(struct virtio_dev *dev, struct state_reader *r)
{
	uint32_t istatus;
	int rc = -EINVAL;

	pthread_mutex_lock(&dev->lock);
	/* Only what the transport can reach: the interrupt bits it raises,
	 * features it offered, FEATURES_OK only as write_status lets it. */
	if (!state_get_le32(r, &dev->status) && !state_get_le32(r, &dev->device_features_sel) &&
	    !state_get_le32(r, &dev->driver_features_sel) &&
	    !state_get_le64(r, &dev->driver_features) && !state_get_le32(r, &dev->queue_sel) &&
	    !state_get_le32(r, &dev->config_generation) && !state_get_le32(r, &istatus) &&
	    !(istatus & ~(uint32_t)(VIRTIO_INT_USED | VIRTIO_INT_CONFIG)) &&
	    !(dev->driver_features & ~offered_features(dev)) &&
	    (!(dev->status & VIRTIO_STATUS_FEATURES_OK) || features_acceptable(dev)) &&
	    !load_queues(dev, r)) {
		atomic_store(&dev->interrupt_status, istatus);
		rc = dev->ops->load ? dev->ops->load(dev, r) : 0;
		if (!rc && state_reader_left(r))
			rc = -EINVAL;
	}
	pthread_mutex_unlock(&dev->lock);
	return rc;
}
