/* Unit tests for migrate/bitmap.c: single bits at word edges, ranges that
 * cross words, the last bit, empty and full bitmaps, OR at bit offsets, the
 * searches and the atomic take of the VMM-side dirty bitmap. */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "migrate/bitmap.h"
#include "unit.h"

static void test_alloc_empty(void)
{
	struct bitmap b;

	REQUIRE(bitmap_alloc(&b, 0) == 0);
	CHECK_EQ(bitmap_count(&b), 0);
	CHECK_EQ(bitmap_find_next_set(&b, 0), 0);
	CHECK_EQ(bitmap_find_next_clear(&b, 0), 0);
	bitmap_set_range(&b, 0, 10);
	CHECK_EQ(bitmap_count(&b), 0);
	bitmap_free(&b);
	CHECK(b.words == NULL);
}

static void test_single_bits(void)
{
	static const uint64_t bits[] = { 0, 1, 63, 64, 65, 127, 128, 199 };
	struct bitmap b;

	REQUIRE(bitmap_alloc(&b, 200) == 0);
	CHECK_EQ(bitmap_count(&b), 0);
	for (unsigned i = 0; i < sizeof(bits) / sizeof(bits[0]); i++) {
		CHECK(!bitmap_test(&b, bits[i]));
		bitmap_set(&b, bits[i]);
		CHECK(bitmap_test(&b, bits[i]));
		CHECK_EQ(bitmap_count(&b), i + 1);
	}
	CHECK_EQ(b.words[0], 0x8000000000000003ULL);
	CHECK_EQ(b.words[1], 0x8000000000000003ULL);
	CHECK_EQ(b.words[2], 1);
	CHECK_EQ(b.words[3], 1ULL << (199 - 192));
	CHECK(!bitmap_test(&b, 2));
	CHECK(!bitmap_test(&b, 62));
	CHECK(!bitmap_test(&b, 198));
	bitmap_clear(&b, 63);
	bitmap_clear(&b, 64);
	CHECK(!bitmap_test(&b, 63));
	CHECK(!bitmap_test(&b, 64));
	CHECK(bitmap_test(&b, 65));
	CHECK_EQ(bitmap_count(&b), 6);
	bitmap_free(&b);
}

static void test_ranges(void)
{
	struct bitmap b;

	REQUIRE(bitmap_alloc(&b, 300) == 0);
	bitmap_set_range(&b, 60, 10); /* crosses words 0 and 1 */
	CHECK_EQ(bitmap_count(&b), 10);
	CHECK_EQ(b.words[0], 0xfULL << 60);
	CHECK_EQ(b.words[1], 0x3f);
	CHECK(!bitmap_test(&b, 59));
	CHECK(!bitmap_test(&b, 70));
	bitmap_set_range(&b, 100, 150); /* crosses 2 words, one whole */
	CHECK_EQ(bitmap_count(&b), 160);
	CHECK_EQ(b.words[2], ~0ULL);
	CHECK(bitmap_test(&b, 249));
	CHECK(!bitmap_test(&b, 250));
	bitmap_clear_range(&b, 63, 130);
	CHECK(bitmap_test(&b, 62));
	CHECK(!bitmap_test(&b, 63));
	CHECK(!bitmap_test(&b, 192));
	CHECK(bitmap_test(&b, 193));
	CHECK_EQ(bitmap_count(&b), 3 + 57);
	/* Zero-length ranges change nothing. */
	bitmap_set_range(&b, 5, 0);
	bitmap_clear_range(&b, 62, 0);
	CHECK_EQ(bitmap_count(&b), 60);
	/* Ranges are clipped at nbits; the last word's tail stays clear. */
	bitmap_set_range(&b, 290, 1000);
	CHECK(bitmap_test(&b, 299));
	CHECK_EQ(b.words[4] >> (300 - 256), 0);
	bitmap_set_range(&b, 300, 5);
	bitmap_set_range(&b, UINT64_MAX, UINT64_MAX);
	CHECK_EQ(bitmap_count(&b), 70);
	/* Exactly one word, aligned. */
	bitmap_clear_all(&b);
	bitmap_set_range(&b, 64, 64);
	CHECK_EQ(b.words[0], 0);
	CHECK_EQ(b.words[1], ~0ULL);
	CHECK_EQ(b.words[2], 0);
	bitmap_free(&b);
}

static void test_full(void)
{
	struct bitmap b;

	REQUIRE(bitmap_alloc(&b, 130) == 0);
	bitmap_set_all(&b);
	CHECK_EQ(bitmap_count(&b), 130);
	CHECK(bitmap_test(&b, 129));
	CHECK_EQ(b.words[2], 3);
	CHECK_EQ(bitmap_find_next_set(&b, 129), 129);
	CHECK_EQ(bitmap_find_next_set(&b, 130), 130);
	CHECK_EQ(bitmap_find_next_clear(&b, 0), 130);
	bitmap_clear(&b, 129);
	CHECK_EQ(bitmap_find_next_clear(&b, 0), 129);
	bitmap_clear_all(&b);
	CHECK_EQ(bitmap_count(&b), 0);
	bitmap_free(&b);

	/* A multiple of 64: the last bit is bit 63 of the last word. */
	REQUIRE(bitmap_alloc(&b, 128) == 0);
	bitmap_set_all(&b);
	CHECK_EQ(b.words[1], ~0ULL);
	CHECK_EQ(bitmap_count(&b), 128);
	bitmap_free(&b);
}

static void test_find_next(void)
{
	struct bitmap b;

	REQUIRE(bitmap_alloc(&b, 1000) == 0);
	CHECK_EQ(bitmap_find_next_set(&b, 0), 1000);
	bitmap_set(&b, 0);
	bitmap_set(&b, 63);
	bitmap_set(&b, 64);
	bitmap_set(&b, 999);
	CHECK_EQ(bitmap_find_next_set(&b, 0), 0);
	CHECK_EQ(bitmap_find_next_set(&b, 1), 63);
	CHECK_EQ(bitmap_find_next_set(&b, 63), 63);
	CHECK_EQ(bitmap_find_next_set(&b, 64), 64);
	CHECK_EQ(bitmap_find_next_set(&b, 65), 999);
	CHECK_EQ(bitmap_find_next_set(&b, 999), 999);
	CHECK_EQ(bitmap_find_next_set(&b, 1000), 1000);
	CHECK_EQ(bitmap_find_next_set(&b, UINT64_MAX), 1000);
	CHECK_EQ(bitmap_find_next_clear(&b, 0), 1);
	CHECK_EQ(bitmap_find_next_clear(&b, 63), 65);
	CHECK_EQ(bitmap_find_next_clear(&b, 999), 1000);
	/* Iterating visits exactly the set bits. */
	{
		uint64_t n = 0;

		for (uint64_t i = bitmap_find_next_set(&b, 0); i < b.nbits;
		     i = bitmap_find_next_set(&b, i + 1))
			n++;
		CHECK_EQ(n, 4);
	}
	bitmap_free(&b);
}

static void test_or(void)
{
	struct bitmap a, b, c;

	REQUIRE(bitmap_alloc(&a, 130) == 0);
	REQUIRE(bitmap_alloc(&b, 130) == 0);
	REQUIRE(bitmap_alloc(&c, 131) == 0);
	bitmap_set(&a, 1);
	bitmap_set(&b, 1);
	bitmap_set(&b, 129);
	CHECK_EQ(bitmap_or(&a, &b), 0);
	CHECK_EQ(bitmap_count(&a), 2);
	CHECK(bitmap_test(&a, 129));
	CHECK_EQ(bitmap_or(&a, &c), -EINVAL);
	bitmap_free(&a);
	bitmap_free(&b);
	bitmap_free(&c);
}

static void test_or_words_at(void)
{
	uint64_t src[3] = { 0x8000000000000001ULL, 0x1, 0xff };
	struct bitmap b;

	REQUIRE(bitmap_alloc(&b, 400) == 0);
	/* Aligned. */
	CHECK_EQ(bitmap_or_words_at(&b, 64, src, 130), 0);
	CHECK_EQ(b.words[1], src[0]);
	CHECK_EQ(b.words[2], 1);
	CHECK_EQ(b.words[3], 0x3); /* only 2 bits of src[2] are in range */
	CHECK_EQ(bitmap_count(&b), 5);
	bitmap_clear_all(&b);
	/* Unaligned: bit 63 of src[0] lands on bit 4 + 63 = 67. */
	CHECK_EQ(bitmap_or_words_at(&b, 4, src, 192), 0);
	CHECK(bitmap_test(&b, 4));
	CHECK(bitmap_test(&b, 67));
	CHECK(bitmap_test(&b, 68));
	for (uint64_t i = 132; i < 140; i++)
		CHECK(bitmap_test(&b, i));
	CHECK_EQ(bitmap_count(&b), 11);
	bitmap_clear_all(&b);
	/* Past the end: dropped and counted. */
	CHECK_EQ(bitmap_or_words_at(&b, 300, src, 192), 8); /* src[2] lands at 428.. */
	CHECK(bitmap_test(&b, 300));
	CHECK(bitmap_test(&b, 363));
	CHECK(bitmap_test(&b, 364));
	CHECK_EQ(bitmap_count(&b), 3);
	bitmap_clear_all(&b);
	/* The last bit of dst, from an unaligned offset. */
	CHECK_EQ(bitmap_or_words_at(&b, 336, src, 192), 8 + 1);
	CHECK(bitmap_test(&b, 336));
	CHECK(bitmap_test(&b, 399));
	CHECK_EQ(bitmap_count(&b), 2);
	bitmap_clear_all(&b);
	CHECK_EQ(bitmap_or_words_at(&b, 400, src, 64), 2);
	CHECK_EQ(bitmap_or_words_at(&b, UINT64_MAX, src, 64), 2);
	bitmap_free(&b);
}

static void test_take_atomic(void)
{
	_Atomic uint64_t src[2];
	struct bitmap b;

	atomic_init(&src[0], 0x5);
	atomic_init(&src[1], 1ULL << 63);
	REQUIRE(bitmap_alloc(&b, 128) == 0);
	bitmap_set(&b, 1);
	CHECK_EQ(bitmap_take_atomic(&b, src), 3);
	CHECK_EQ(b.words[0], 0x7);
	CHECK_EQ(b.words[1], 1ULL << 63);
	CHECK_EQ(atomic_load(&src[0]), 0);
	CHECK_EQ(atomic_load(&src[1]), 0);
	CHECK_EQ(bitmap_take_atomic(&b, src), 0);
	atomic_store(&src[1], 2);
	CHECK_EQ(bitmap_atomic_take_word(&src[1]), 2);
	CHECK_EQ(bitmap_atomic_take_word(&src[1]), 0);
	bitmap_free(&b);
}

int main(int argc, char **argv)
{
	unit_init(argc, argv);
	RUN(test_alloc_empty);
	RUN(test_single_bits);
	RUN(test_ranges);
	RUN(test_full);
	RUN(test_find_next);
	RUN(test_or);
	RUN(test_or_words_at);
	RUN(test_take_atomic);
	return unit_done();
}
