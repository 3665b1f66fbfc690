/* Split virtqueues (virtio 1.2, section 2.7), device side. See queue.h.
 *
 * Every guest address goes through gpa_to_hva() with overflow-checked
 * arithmetic; every value read from guest memory is read once into a local
 * (the driver may change it behind our back) and checked there. Guest
 * memory is little-endian (VIRTIO_F_VERSION_1), so loads and stores convert
 * explicitly.
 *
 * Ordering: the driver writes descriptors and the ring entry, then the
 * available index (with a write barrier in between); the device therefore
 * loads the available index with acquire semantics before it reads the ring
 * entry or any descriptor. Symmetrically, virtq_push() stores the used
 * element, then the used index with release semantics. VIRTIO_F_EVENT_IDX is
 * not supported: interrupt suppression uses the NO_INTERRUPT flag only. */
#include "virtio/queue.h"

#include <endian.h>
#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

#include <linux/virtio_ring.h>

/* Sizes of the ring parts (virtio 1.2, 2.7: flags, idx, ring[], event). */
#define DESC_SIZE       16u
#define AVAIL_HDR       4u /* flags, idx */
#define AVAIL_ELEM      2u
#define USED_HDR        4u /* flags, idx */
#define USED_ELEM       8u /* id, len */
#define RING_EVENT      2u /* used_event / avail_event after the ring */

/* Host pointer for [base + off, base + off + len), or NULL on overflow or
 * when out of guest memory. */
static void *guest_ptr(const struct virtq *vq, uint64_t base, uint64_t off, uint64_t len)
{
	uint64_t gpa;

	if (__builtin_add_overflow(base, off, &gpa))
		return NULL;
	return gpa_to_hva(vq->mem, gpa, len);
}

static uint16_t load_le16(const void *p)
{
	uint16_t v;

	memcpy(&v, p, sizeof(v));
	return le16toh(v);
}

static uint32_t load_le32(const void *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return le32toh(v);
}

static uint64_t load_le64(const void *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return le64toh(v);
}

static void store_le32(void *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, sizeof(v));
}

void virtq_reset(struct virtq *vq, struct guest_mem *mem)
{
	memset(vq, 0, sizeof(*vq));
	vq->mem = mem;
}

int virtq_validate(const struct virtq *vq, const char **why)
{
	uint64_t size = vq->size;
	const char *reason = NULL;

	if (!vq->mem)
		reason = "queue has no guest memory";
	else if (size == 0)
		reason = "queue size is zero";
	else if (size > VIRTQ_MAX_SIZE)
		reason = "queue size larger than 32768";
	else if (vq->desc_gpa % 16)
		reason = "descriptor table not 16-byte aligned";
	else if (!guest_ptr(vq, vq->desc_gpa, 0, DESC_SIZE * size))
		reason = "descriptor table outside guest memory";
	else if (vq->avail_gpa % 2)
		reason = "available ring not 2-byte aligned";
	else if (!guest_ptr(vq, vq->avail_gpa, 0, AVAIL_HDR + AVAIL_ELEM * size + RING_EVENT))
		reason = "available ring outside guest memory";
	else if (vq->used_gpa % 4)
		reason = "used ring not 4-byte aligned";
	else if (!guest_ptr(vq, vq->used_gpa, 0, USED_HDR + USED_ELEM * size + RING_EVENT))
		reason = "used ring outside guest memory";
	if (reason) {
		if (why)
			*why = reason;
		return -EINVAL;
	}
	return 0;
}

/* The driver's available index, loaded with acquire semantics so that the
 * ring entries and descriptors it publishes are read after it. */
static uint16_t avail_idx_acquire(const void *p)
{
	return le16toh(__atomic_load_n((const uint16_t *)p, __ATOMIC_ACQUIRE));
}

/* Walks the chain starting at head. Returns 0 or a reason. */
static const char *walk_chain(const struct virtq *vq, uint16_t head, struct virtq_buf *bufs,
			      unsigned max, struct virtq_chain *chain)
{
	uint64_t table = vq->desc_gpa;
	uint32_t entries = vq->size; /* of the table being walked */
	uint32_t seen = 0;           /* descriptors visited in that table */
	uint32_t readable = 0, writable = 0;
	unsigned n = 0;
	bool indirect = false, saw_write = false;
	uint32_t idx = head;

	for (;;) {
		const uint8_t *d;
		uint64_t addr, off;
		uint32_t len;
		uint16_t flags, next;

		if (seen++ >= entries)
			return indirect ? "indirect descriptor loop or chain longer than its table"
					: "descriptor loop or chain longer than the queue";
		/* idx < entries <= VIRTQ_MAX_SIZE, so this cannot overflow, and
		 * guest_ptr() checks the addition. */
		off = (uint64_t)idx * DESC_SIZE;
		d = guest_ptr(vq, table, off, DESC_SIZE);
		if (!d)
			return "descriptor outside guest memory";
		addr = load_le64(d);
		len = load_le32(d + 8);
		flags = load_le16(d + 12);
		next = load_le16(d + 14);

		if (flags & VRING_DESC_F_INDIRECT) {
			if (indirect)
				return "nested indirect descriptor";
			if (flags & VRING_DESC_F_NEXT)
				return "indirect descriptor with NEXT set";
			if (len == 0 || len % DESC_SIZE)
				return "indirect table length not a nonzero multiple of 16";
			if (len / DESC_SIZE > VIRTQ_MAX_SIZE)
				return "indirect table larger than 32768 descriptors";
			if (!gpa_to_hva(vq->mem, addr, len))
				return "indirect table outside guest memory";
			indirect = true;
			table = addr;
			entries = len / DESC_SIZE;
			seen = 0;
			idx = 0;
			continue;
		}

		if (n >= max)
			return "chain has more buffers than the device accepts";
		if (flags & VRING_DESC_F_WRITE) {
			saw_write = true;
			if (__builtin_add_overflow(writable, len, &writable))
				return "writable buffers longer than 4 GiB in total";
		} else {
			if (saw_write)
				return "readable buffer after a writable one";
			if (__builtin_add_overflow(readable, len, &readable))
				return "readable buffers longer than 4 GiB in total";
		}
		bufs[n] = (struct virtq_buf){
			.hva = NULL, .gpa = addr, .len = len,
			.device_writes = (flags & VRING_DESC_F_WRITE) != 0,
		};
		if (len) {
			bufs[n].hva = gpa_to_hva(vq->mem, addr, len);
			if (!bufs[n].hva)
				return "buffer outside guest memory";
		}
		n++;

		if (!(flags & VRING_DESC_F_NEXT))
			break;
		if (next >= entries)
			return indirect ? "next descriptor outside the indirect table"
					: "next descriptor index out of range";
		idx = next;
	}
	chain->head = head;
	chain->nbufs = n;
	chain->readable = readable;
	chain->writable = writable;
	return NULL;
}

int virtq_pop(struct virtq *vq, struct virtq_buf *bufs, unsigned max, struct virtq_chain *chain,
	      const char **why)
{
	const char *reason = NULL;
	const uint8_t *avail, *slot;
	uint16_t avail_idx, pending, head;
	struct virtq_chain c;

	if (!vq->ready || vq->broken)
		return 0;
	if (virtq_validate(vq, &reason) < 0)
		goto bad;
	/* Validated: the whole available ring is addressable. */
	avail = gpa_to_hva(vq->mem, vq->avail_gpa, AVAIL_HDR + (uint64_t)AVAIL_ELEM * vq->size);
	if (!avail) {
		reason = "available ring outside guest memory";
		goto bad;
	}
	avail_idx = avail_idx_acquire(avail + 2);
	pending = (uint16_t)(avail_idx - vq->last_avail);
	if (pending > vq->size) {
		reason = "available index jumped ahead";
		goto bad;
	}
	if (pending == 0)
		return 0;
	slot = avail + AVAIL_HDR + (size_t)AVAIL_ELEM * (vq->last_avail % vq->size);
	head = load_le16(slot);
	if (head >= vq->size) {
		reason = "head descriptor index out of range";
		goto bad;
	}
	reason = walk_chain(vq, head, bufs, max, &c);
	if (reason)
		goto bad;
	*chain = c;
	vq->last_avail++;
	return 1;

bad:
	vq->broken = true;
	if (why)
		*why = reason;
	return -EINVAL;
}

int virtq_push(struct virtq *vq, uint16_t head, uint32_t written)
{
	uint64_t elem_off, elem_gpa, idx_gpa;
	uint8_t *elem;
	uint16_t *idx;

	if (!vq->ready || vq->broken || head >= vq->size || virtq_validate(vq, NULL) < 0)
		return -EINVAL;
	elem_off = USED_HDR + (uint64_t)USED_ELEM * (vq->used_idx % vq->size);
	if (__builtin_add_overflow(vq->used_gpa, elem_off, &elem_gpa) ||
	    __builtin_add_overflow(vq->used_gpa, 2, &idx_gpa))
		return -EINVAL;
	elem = gpa_to_hva(vq->mem, elem_gpa, USED_ELEM);
	idx = gpa_to_hva(vq->mem, idx_gpa, 2);
	if (!elem || !idx)
		return -EINVAL;

	store_le32(elem, head);
	store_le32(elem + 4, written);
	guest_mem_mark_dirty(vq->mem, elem_gpa, USED_ELEM);
	vq->used_idx++;
	/* The element must be visible before the index that publishes it. */
	__atomic_store_n(idx, htole16(vq->used_idx), __ATOMIC_RELEASE);
	guest_mem_mark_dirty(vq->mem, idx_gpa, 2);
	return 0;
}

int virtq_set_kicks(struct virtq *vq, bool on)
{
	uint16_t *flags;

	if (!vq->ready || vq->broken || virtq_validate(vq, NULL) < 0)
		return -EINVAL;
	flags = gpa_to_hva(vq->mem, vq->used_gpa, 2);
	if (!flags)
		return -EINVAL;
	__atomic_store_n(flags, htole16(on ? 0 : VRING_USED_F_NO_NOTIFY), __ATOMIC_RELAXED);
	guest_mem_mark_dirty(vq->mem, vq->used_gpa, 2);
	/* The flag must be visible before the device next reads the
	 * available index, or a driver that saw kicks still off would add a
	 * buffer nobody looks at. */
	atomic_thread_fence(memory_order_seq_cst);
	return 0;
}

bool virtq_interrupt_suppressed(const struct virtq *vq)
{
	const uint8_t *flags;

	if (!vq->ready || vq->broken || virtq_validate(vq, NULL) < 0)
		return false;
	flags = gpa_to_hva(vq->mem, vq->avail_gpa, 2);
	if (!flags)
		return false;
	/* The used index stored by virtq_push() must be visible before the
	 * flags are read, or a driver that clears NO_INTERRUPT after seeing a
	 * stale used index would wait for an interrupt that never comes. */
	atomic_thread_fence(memory_order_seq_cst);
	return le16toh(__atomic_load_n((const uint16_t *)flags, __ATOMIC_RELAXED)) &
	       VRING_AVAIL_F_NO_INTERRUPT;
}

uint16_t virtq_pending(const struct virtq *vq)
{
	const uint8_t *avail;

	if (!vq->ready || vq->broken || virtq_validate(vq, NULL) < 0)
		return 0;
	avail = gpa_to_hva(vq->mem, vq->avail_gpa, AVAIL_HDR);
	if (!avail)
		return 0;
	return (uint16_t)(avail_idx_acquire(avail + 2) - vq->last_avail);
}
