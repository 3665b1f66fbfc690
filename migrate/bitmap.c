/* Page bitmaps; see bitmap.h. */
#include "bitmap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int bitmap_alloc(struct bitmap *b, uint64_t nbits)
{
	uint64_t n = bitmap_words(nbits);

	b->nbits = nbits;
	b->words = calloc(n ? n : 1, sizeof(uint64_t));
	return b->words ? 0 : -ENOMEM;
}

void bitmap_free(struct bitmap *b)
{
	free(b->words);
	b->words = NULL;
	b->nbits = 0;
}

/* Bits [lo, hi) of one word, 0 <= lo < hi <= 64. */
static uint64_t word_mask(unsigned lo, unsigned hi)
{
	uint64_t upto = hi == 64 ? ~0ULL : (1ULL << hi) - 1;

	return upto & ~((1ULL << lo) - 1);
}

enum range_op { RANGE_SET, RANGE_CLEAR, RANGE_SET_ATOMIC };

static void range_op(struct bitmap *b, uint64_t first, uint64_t n, enum range_op op)
{
	uint64_t end;

	if (first >= b->nbits)
		return;
	end = n > b->nbits - first ? b->nbits : first + n;
	while (first < end) {
		uint64_t w = first / 64;
		unsigned lo = first % 64;
		unsigned hi = end - w * 64 >= 64 ? 64 : (unsigned)(end - w * 64);
		uint64_t m = word_mask(lo, hi);

		if (op == RANGE_SET)
			b->words[w] |= m;
		else if (op == RANGE_CLEAR)
			b->words[w] &= ~m;
		else
			atomic_fetch_or_explicit((_Atomic uint64_t *)&b->words[w], m,
						 memory_order_relaxed);
		first = w * 64 + hi;
	}
}

void bitmap_atomic_set_range(struct bitmap *b, uint64_t first, uint64_t n)
{
	range_op(b, first, n, RANGE_SET_ATOMIC);
}

void bitmap_set_range(struct bitmap *b, uint64_t first, uint64_t n)
{
	range_op(b, first, n, RANGE_SET);
}

void bitmap_clear_range(struct bitmap *b, uint64_t first, uint64_t n)
{
	range_op(b, first, n, RANGE_CLEAR);
}

void bitmap_set_all(struct bitmap *b)
{
	range_op(b, 0, b->nbits, RANGE_SET);
}

void bitmap_clear_all(struct bitmap *b)
{
	memset(b->words, 0, bitmap_words(b->nbits) * sizeof(uint64_t));
}

int bitmap_or(struct bitmap *dst, const struct bitmap *src)
{
	if (dst->nbits != src->nbits)
		return -EINVAL;
	for (uint64_t i = 0; i < bitmap_words(dst->nbits); i++)
		dst->words[i] |= src->words[i];
	return 0;
}

uint64_t bitmap_or_words_at(struct bitmap *dst, uint64_t at, const uint64_t *words,
			    uint64_t nbits)
{
	uint64_t dropped = 0, fit;
	unsigned shift = at % 64;

	fit = at >= dst->nbits ? 0 : dst->nbits - at < nbits ? dst->nbits - at : nbits;
	for (uint64_t i = 0; i < bitmap_words(nbits); i++) {
		uint64_t v = words[i], base = i * 64, keep;

		if (nbits - base < 64)
			v &= (1ULL << (nbits - base)) - 1;
		/* Bits of v at or past fit are dropped. */
		keep = fit <= base ? 0 : fit - base >= 64 ? ~0ULL : (1ULL << (fit - base)) - 1;
		dropped += (uint64_t)__builtin_popcountll(v & ~keep);
		v &= keep;
		if (!v)
			continue;
		dst->words[(at + base) / 64] |= v << shift;
		if (shift && v >> (64 - shift))
			dst->words[(at + base) / 64 + 1] |= v >> (64 - shift);
	}
	return dropped;
}

uint64_t bitmap_count(const struct bitmap *b)
{
	uint64_t n = 0;

	for (uint64_t i = 0; i < bitmap_words(b->nbits); i++)
		n += (uint64_t)__builtin_popcountll(b->words[i]);
	return n;
}

static uint64_t find_next(const struct bitmap *b, uint64_t from, uint64_t invert)
{
	uint64_t w, v;

	if (from >= b->nbits)
		return b->nbits;
	w = from / 64;
	v = (b->words[w] ^ invert) & ~((1ULL << (from % 64)) - 1);
	for (;;) {
		if (v) {
			uint64_t bit = w * 64 + (uint64_t)__builtin_ctzll(v);

			return bit < b->nbits ? bit : b->nbits;
		}
		if (++w >= bitmap_words(b->nbits))
			return b->nbits;
		v = b->words[w] ^ invert;
	}
}

uint64_t bitmap_find_next_set(const struct bitmap *b, uint64_t from)
{
	return find_next(b, from, 0);
}

uint64_t bitmap_find_next_clear(const struct bitmap *b, uint64_t from)
{
	return find_next(b, from, ~0ULL);
}

uint64_t bitmap_take_atomic(struct bitmap *dst, _Atomic uint64_t *src)
{
	uint64_t n = 0;

	for (uint64_t i = 0; i < bitmap_words(dst->nbits); i++) {
		uint64_t v = bitmap_atomic_take_word(&src[i]);

		dst->words[i] |= v;
		n += (uint64_t)__builtin_popcountll(v);
	}
	return n;
}
