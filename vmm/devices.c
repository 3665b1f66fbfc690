/* The VM's virtio device list; see devices.h. */
#include "vmm/devices.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "virtio/device.h"
#include "vmm/util.h"
#include "vmm/vm.h"

int vm_device_set(struct vm *vm, char *buf, size_t size)
{
	size_t len = (size_t)snprintf(buf, size, "uart");

	for (unsigned i = 0; i < vm->nvirtio && len < size; i++) {
		struct virtio_dev *dev = vm->virtio[i];
		char entry[128];

		if (dev->ops->describe)
			dev->ops->describe(dev, entry, sizeof(entry));
		else
			snprintf(entry, sizeof(entry), "%s", dev->ops->name);
		len += (size_t)snprintf(buf + len, size - len, ",%s", entry);
	}
	return len < size ? (int)len : -ENOSPC;
}

struct virtio_dev *vm_virtio_find(struct vm *vm, const char *name, size_t name_len,
				  uint32_t instance)
{
	for (unsigned i = 0; i < vm->nvirtio; i++) {
		struct virtio_dev *dev = vm->virtio[i];

		if (strlen(dev->ops->name) == name_len && !memcmp(dev->ops->name, name, name_len) &&
		    dev->instance == instance)
			return dev;
	}
	return NULL;
}

int vm_virtio_pause(struct vm *vm)
{
	for (unsigned i = 0; i < vm->nvirtio; i++) {
		int rc = virtio_pause(vm->virtio[i]);

		if (rc) {
			log_err("%s%u: cannot pause: %s", vm->virtio[i]->ops->name,
				vm->virtio[i]->instance, strerror(-rc));
			for (unsigned j = 0; j <= i; j++)
				virtio_resume(vm->virtio[j]);
			return rc;
		}
	}
	return 0;
}

void vm_virtio_resume(struct vm *vm)
{
	for (unsigned i = 0; i < vm->nvirtio; i++)
		virtio_resume(vm->virtio[i]);
}
