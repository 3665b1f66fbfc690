/* The VM's virtio devices as one list (struct vm's virtio[]), for the
 * parts that must treat them alike: live migration (the device-set
 * descriptor, one state section per device) and pausing. Nothing here
 * knows a device by name. */
#ifndef VMM_DEVICES_H
#define VMM_DEVICES_H

#include <stddef.h>
#include <stdint.h>

struct vm;
struct virtio_dev;

/* The migration device-set descriptor: "uart" and each virtio device's
 * entry (its describe hook, or its name), comma-separated, in MMIO order;
 * e.g.
 * "uart,balloon:stats:free-page-hint,blk0:67108864:discard:id=data". Source and destination must agree
 * byte for byte. Returns the length, or -ENOSPC if it does not fit. */
int vm_device_set(struct vm *vm, char *buf, size_t size);
/* The device whose state section is named name (not NUL-terminated) with
 * this instance, or NULL. */
struct virtio_dev *vm_virtio_find(struct vm *vm, const char *name, size_t name_len,
				  uint32_t instance);
/* Pauses every virtio device (see virtio_pause). On failure (a device
 * that cannot drain its requests) the others are resumed again and the
 * error is returned. */
int vm_virtio_pause(struct vm *vm);
void vm_virtio_resume(struct vm *vm);

#endif
