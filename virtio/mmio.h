/* The virtio-mmio transport, version 2 (virtio 1.2, section 4.2): one
 * 0x200-byte register window per device below 4 GiB, one IOAPIC interrupt
 * each, queue kicks through KVM_IOEVENTFD and interrupts through
 * KVM_IRQFD so neither stops a vCPU in user space. The guest learns about
 * each device from "virtio_mmio.device=<size>@<base>:<irq>" on its
 * command line. */
#ifndef VIRTIO_MMIO_H
#define VIRTIO_MMIO_H

#include <stddef.h>
#include <stdint.h>

#include "virtio/device.h"

#define VIRTIO_MMIO_BASE   0xd0000000ULL
#define VIRTIO_MMIO_STRIDE 0x1000ULL
#define VIRTIO_MMIO_SIZE   0x200ULL
#define VIRTIO_MMIO_MAX_DEVICES 16

/* The transport's part of a device that is not on any bus yet: ops,
 * queues (over the VM's memory), lock; no KVM, no thread. A device in this
 * state can be driven through its ops directly (unit tests do). 0 or
 * -ENOSPC with a reason in err. */
int virtio_dev_init(struct virtio_dev *dev, struct vm *vm, const struct virtio_dev_ops *ops,
		    unsigned nqueues, uint16_t queue_max, char *err, size_t errlen);
/* Places an initialised device as device number index, registers it on
 * the VM's MMIO bus, sets up its eventfds and starts its thread. 0 or
 * -errno with a reason in err. */
int virtio_mmio_attach(struct virtio_dev *dev, unsigned index, char *err, size_t errlen);
/* The kernel command line parameter announcing the device. */
int virtio_mmio_cmdline(const struct virtio_dev *dev, char *buf, size_t size);
/* Stops the device thread and releases the eventfds. */
void virtio_mmio_detach(struct virtio_dev *dev);
/* The register file: a bus handler (exposed for tests). */
void virtio_mmio_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write);
/* The GSI of device number index: 5 upwards, skipping 9 (the ACPI SCI). */
unsigned virtio_mmio_irq(unsigned index);

#endif
