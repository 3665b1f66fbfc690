/* libFuzzer target for the split virtqueue walker (virtio/queue.c).
 *
 * The input is a guest memory image: it is copied to guest physical address
 * 0 of a small guest memory (the rest is zero), and its first bytes, which
 * are also guest memory, describe the queue:
 *
 *   0  u16 queue size          10 u32 used ring GPA
 *   2  u32 descriptor GPA      14 u16 last_avail
 *   6  u32 available GPA       16 u16 used_idx
 *                              18 u8  max buffers per chain (mod 17)
 *                              19 u8  guest memory size in 4 KiB pages (mod 16, + 1)
 *
 * Then virtq_pop() runs until the ring is empty or rejected (at most 64
 * chains), every buffer it hands out is read and, if device-writable,
 * written end to end (so ASan sees a bad translation), and each chain is
 * pushed back with virtq_push(). Invariants the walker promises are checked
 * with __builtin_trap(). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "virtio/queue.h"
#include "vmm/mem.h"
#include "tests/fuzz/fuzz.h"

#define HDR_SIZE  20
#define MAX_BUFS  16
#define MAX_POPS  64

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

#define ENSURE(cond)                                                                       \
	do {                                                                               \
		if (!(cond))                                                               \
			__builtin_trap();                                                  \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct guest_mem mem;
	struct virtq vq;
	struct virtq_buf bufs[MAX_BUFS];
	struct virtq_chain chain;
	const char *why;
	uint64_t mem_size;
	unsigned max;
	uint8_t *ram;
	volatile uint8_t sink = 0;

	if (size < HDR_SIZE)
		return 0;
	mem_size = 4096ULL * (1 + data[19] % 16);
	/* Exactly mem_size bytes from malloc, so ASan flags any access past it. */
	ram = calloc(1, mem_size);
	if (!ram)
		return 0;
	memcpy(ram, data, size < mem_size ? size : mem_size);
	guest_mem_layout(&mem, ram, mem_size);
	if (guest_mem_dirty_alloc(&mem) < 0) {
		free(ram);
		return 0;
	}

	virtq_reset(&vq, &mem);
	vq.size = rd16(data);
	vq.desc_gpa = rd32(data + 2);
	vq.avail_gpa = rd32(data + 6);
	vq.used_gpa = rd32(data + 10);
	vq.last_avail = rd16(data + 14);
	vq.used_idx = rd16(data + 16);
	max = data[18] % (MAX_BUFS + 1);
	vq.ready = true;

	(void)virtq_validate(&vq, &why);
	(void)virtq_pending(&vq);
	(void)virtq_interrupt_suppressed(&vq);

	for (int i = 0; i < MAX_POPS; i++) {
		uint64_t readable = 0, writable = 0;
		uint16_t last = vq.last_avail;
		int r;

		why = NULL;
		r = virtq_pop(&vq, bufs, max, &chain, &why);
		if (r < 0) {
			ENSURE(why && vq.broken && vq.last_avail == last);
			ENSURE(virtq_pop(&vq, bufs, max, &chain, &why) == 0);
			break;
		}
		if (r == 0)
			break;
		ENSURE(r == 1 && vq.last_avail == (uint16_t)(last + 1));
		ENSURE(virtq_validate(&vq, &why) == 0);
		ENSURE(chain.head < vq.size && chain.nbufs <= max);
		for (unsigned b = 0; b < chain.nbufs; b++) {
			const struct virtq_buf *buf = &bufs[b];

			if (buf->len == 0) {
				ENSURE(buf->hva == NULL);
				continue;
			}
			ENSURE(buf->hva == gpa_to_hva(&mem, buf->gpa, buf->len));
			/* Touch both ends: a wrong translation is an ASan report. */
			sink ^= ((volatile uint8_t *)buf->hva)[0];
			sink ^= ((volatile uint8_t *)buf->hva)[buf->len - 1];
			if (buf->device_writes) {
				((volatile uint8_t *)buf->hva)[0] = 0xa5;
				((volatile uint8_t *)buf->hva)[buf->len - 1] = 0x5a;
				writable += buf->len;
			} else {
				ENSURE(writable == 0); /* readable ones come first */
				readable += buf->len;
			}
		}
		ENSURE(readable == chain.readable && writable == chain.writable);
		ENSURE(virtq_push(&vq, chain.head, chain.writable) == 0);
		(void)virtq_interrupt_suppressed(&vq);
		(void)virtq_pending(&vq);
	}
	(void)sink;

	free((void *)mem.dirty);
	free(ram);
	return 0;
}
