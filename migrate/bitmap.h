/* Page bitmaps for live migration: one bit per guest page, in uint64_t
 * words, bit n of the bitmap being bit (n % 64) of word (n / 64). The
 * migration code keeps one whole-RAM bitmap of pages still to send; the
 * dirty log (dirty.c) ORs KVM's per-slot logs and the VMM-side bitmap of
 * vmm/mem.h into it. Bits past nbits in the last word are kept clear. */
#ifndef MIGRATE_BITMAP_H
#define MIGRATE_BITMAP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct bitmap {
	uint64_t *words;
	uint64_t nbits;
};

static inline uint64_t bitmap_words(uint64_t nbits)
{
	return nbits / 64 + (nbits % 64 != 0);
}

/* All clear. 0 or -ENOMEM; nbits 0 is allowed (no words). */
int bitmap_alloc(struct bitmap *b, uint64_t nbits);
void bitmap_free(struct bitmap *b);

/* Single bits; bit must be < nbits (checked only by the callers). */
static inline void bitmap_set(struct bitmap *b, uint64_t bit)
{
	b->words[bit / 64] |= 1ULL << (bit % 64);
}

static inline void bitmap_clear(struct bitmap *b, uint64_t bit)
{
	b->words[bit / 64] &= ~(1ULL << (bit % 64));
}

static inline bool bitmap_test(const struct bitmap *b, uint64_t bit)
{
	return b->words[bit / 64] >> (bit % 64) & 1;
}

/* [first, first + n), clipped to nbits. */
void bitmap_set_range(struct bitmap *b, uint64_t first, uint64_t n);
void bitmap_clear_range(struct bitmap *b, uint64_t first, uint64_t n);
void bitmap_set_all(struct bitmap *b);
/* bitmap_set_range for a bitmap that several threads set bits in at once
 * (word by word, with atomic OR). */
void bitmap_atomic_set_range(struct bitmap *b, uint64_t first, uint64_t n);
void bitmap_clear_all(struct bitmap *b);

/* dst |= src; both must have the same nbits (-EINVAL otherwise). */
int bitmap_or(struct bitmap *dst, const struct bitmap *src);
/* ORs nbits bits of words (bit 0 = bit 0 of words[0]) into dst at bit
 * offset at, which need not be a multiple of 64. Bits that would land past
 * dst->nbits are dropped; returns how many were dropped set (0 normally). */
uint64_t bitmap_or_words_at(struct bitmap *dst, uint64_t at, const uint64_t *words,
			    uint64_t nbits);

/* Number of set bits. */
uint64_t bitmap_count(const struct bitmap *b);
/* First set bit >= from, or nbits when there is none. */
uint64_t bitmap_find_next_set(const struct bitmap *b, uint64_t from);
/* First clear bit >= from, or nbits when there is none. */
uint64_t bitmap_find_next_clear(const struct bitmap *b, uint64_t from);

/* Atomically reads a word of a bitmap other threads set bits in (the
 * VMM-side dirty bitmap) and clears it: no bit set concurrently is lost,
 * it is either returned now or left for the next call. */
static inline uint64_t bitmap_atomic_take_word(_Atomic uint64_t *w)
{
	/* A plain load first keeps clean words from being written (and their
	 * cache lines from bouncing between the vCPU and migration threads). */
	if (!atomic_load_explicit(w, memory_order_relaxed))
		return 0;
	return atomic_exchange_explicit(w, 0, memory_order_acq_rel);
}

/* dst |= src and src = 0, word by word with bitmap_atomic_take_word();
 * src has bitmap_words(dst->nbits) words. Returns the number of bits taken. */
uint64_t bitmap_take_atomic(struct bitmap *dst, _Atomic uint64_t *src);

#endif
