/* Split virtqueues (virtio 1.2, section 2.7), device side.
 *
 *   descriptor table (16 bytes each)      available ring (driver writes)
 *   +------+-----+-------+------+        +-------+-----+---------+-----
 *   | addr | len | flags | next |        | flags | idx | ring[0] | ...
 *   +------+-----+-------+------+        +-------+-----+---------+-----
 *   flags: NEXT (chain continues at next), WRITE (device writes),
 *          INDIRECT (addr/len point at a table of descriptors)
 *
 *   used ring (device writes)
 *   +-------+-----+--------------------+-----
 *   | flags | idx | ring[0] = {id,len} | ...
 *   +-------+-----+--------------------+-----
 *
 * Everything here is guest-controlled and hostile: every index is checked
 * against the queue size, every address and length goes through
 * gpa_to_hva(), a chain may hold at most `size` descriptors (and an indirect
 * table at most its own entry count), nested indirect tables are refused,
 * and device-writable buffers must follow the readable ones. A malformed
 * ring makes virtq_pop() fail with -EINVAL and a reason; the device then
 * sets DEVICE_NEEDS_RESET and stops using the queue.
 *
 * Every write the device makes to guest memory through this file (used
 * ring entries and the used index) is recorded in the guest memory's
 * VMM-side dirty bitmap, which live migration ORs with KVM's dirty log. */
#ifndef VIRTIO_QUEUE_H
#define VIRTIO_QUEUE_H

#include <stdbool.h>
#include <stdint.h>

#include "vmm/mem.h"

#define VIRTQ_MAX_SIZE 32768

struct virtq {
	/* Set by the driver through the transport. */
	uint16_t size;
	bool ready;
	uint64_t desc_gpa;
	uint64_t avail_gpa;
	uint64_t used_gpa;
	/* Device-side state; migrates with the device. */
	uint16_t last_avail; /* next available-ring slot to consume */
	uint16_t used_idx;   /* next used-ring slot to fill */
	bool broken;         /* a malformed ring was seen: never touched again */
	struct guest_mem *mem;
};

/* One buffer of a chain, translated and bounds-checked. A zero-length
 * descriptor yields hva == NULL and len == 0. */
struct virtq_buf {
	void *hva;
	uint64_t gpa;
	uint32_t len;
	bool device_writes;
};

struct virtq_chain {
	uint16_t head;      /* descriptor id to hand back in virtq_push() */
	unsigned nbufs;
	uint32_t readable;  /* total bytes of device-readable buffers */
	uint32_t writable;  /* total bytes of device-writable buffers */
};

/* Resets the device-side state (queue disabled, indices zero). */
void virtq_reset(struct virtq *vq, struct guest_mem *mem);
/* Checks that the three ring areas lie in guest memory (alignment and
 * size per the spec). 0 or -EINVAL with a reason in *why. */
int virtq_validate(const struct virtq *vq, const char **why);
/* Takes the next available chain into bufs[0..max). Returns 1 when a chain
 * was taken, 0 when the ring is empty, -EINVAL (with a reason in *why) for
 * a malformed ring or a chain longer than max buffers. */
int virtq_pop(struct virtq *vq, struct virtq_buf *bufs, unsigned max, struct virtq_chain *chain,
	      const char **why);
/* Returns a chain to the driver with `written` bytes written into it.
 * 0 or -EINVAL if the used ring is not in guest memory. */
int virtq_push(struct virtq *vq, uint16_t head, uint32_t written);
/* Whether the driver asked not to be interrupted (VRING_AVAIL_F_NO_INTERRUPT). */
bool virtq_interrupt_suppressed(const struct virtq *vq);
/* Asks the driver not to kick (VRING_USED_F_NO_NOTIFY), or to kick again:
 * for a device that polls the queue. A hint only: a driver may kick anyway.
 * After turning kicks back on the device must look at the queue once more,
 * for buffers added while they were off. 0 or -EINVAL. */
int virtq_set_kicks(struct virtq *vq, bool on);
/* Number of chains the driver made available that are not consumed yet. */
uint16_t virtq_pending(const struct virtq *vq);

#endif
