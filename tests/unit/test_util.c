/* parse_size and parse_uint: the CLI's number parsing. */
#include <errno.h>
#include <stdint.h>

#include "tests/unit/unit.h"
#include "vmm/util.h"

#define SENTINEL 0x5a5a5a5a5a5a5a5aULL

/* Parses s and returns the result; *out keeps SENTINEL when nothing was stored. */
static int size_of(const char *s, uint64_t *out)
{
	*out = SENTINEL;
	return parse_size(s, out);
}

static void test_parse_size_units(void)
{
	uint64_t v;

	CHECK_EQ(size_of("512M", &v), 0);
	CHECK_EQ(v, 512ULL << 20);
	CHECK_EQ(size_of("4G", &v), 0);
	CHECK_EQ(v, 4ULL << 30);
	CHECK_EQ(size_of("1024K", &v), 0);
	CHECK_EQ(v, 1024ULL << 10);
	CHECK_EQ(size_of("4096", &v), 0);
	CHECK_EQ(v, 4096);
	CHECK_EQ(size_of("1T", &v), 0);
	CHECK_EQ(v, 1ULL << 40);
	CHECK_EQ(size_of("0", &v), 0);
	CHECK_EQ(v, 0);
	CHECK_EQ(size_of("16m", &v), 0);
	CHECK_EQ(v, 16ULL << 20);
	CHECK_EQ(size_of("3k", &v), 0);
	CHECK_EQ(v, 3ULL << 10);
}

static void test_parse_size_suffixes(void)
{
	uint64_t v;

	CHECK_EQ(size_of("2GiB", &v), 0);
	CHECK_EQ(v, 2ULL << 30);
	CHECK_EQ(size_of("8MB", &v), 0);
	CHECK_EQ(v, 8ULL << 20);
	CHECK_EQ(size_of("64kib", &v), 0);
	CHECK_EQ(v, 64ULL << 10);
	/* A bare "B" or "iB" with no unit is not a size. */
	CHECK_EQ(size_of("512B", &v), -EINVAL);
	CHECK_EQ(size_of("512iB", &v), -EINVAL);
	CHECK_EQ(size_of("2GiBB", &v), -EINVAL);
	CHECK_EQ(size_of("2Gi", &v), -EINVAL);
	CHECK_EQ(v, SENTINEL);
}

static void test_parse_size_rejects(void)
{
	static const char *const bad[] = {
		"", "M", "-1", "12Q", "1.5G", " 4G", "4G ", "+4G", "0x10", "4 G", "G4", "4MM",
	};
	uint64_t v;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = size_of(bad[i], &v);

		if (rc != -EINVAL)
			unit_fail(__FILE__, __LINE__, "parse_size(\"%s\") = %d, want -EINVAL",
				  bad[i], rc);
		if (v != SENTINEL)
			unit_fail(__FILE__, __LINE__, "parse_size(\"%s\") stored %llu", bad[i],
				  (unsigned long long)v);
	}
	CHECK_EQ(parse_size(NULL, &v), -EINVAL);
}

static void test_parse_size_overflow(void)
{
	uint64_t v;

	CHECK_EQ(size_of("99999999999T", &v), -ERANGE);
	CHECK_EQ(v, SENTINEL);
	CHECK_EQ(size_of("99999999999999999999", &v), -ERANGE); /* > UINT64_MAX bytes */
	CHECK_EQ(size_of("17179869184G", &v), -ERANGE);         /* exactly 2^64 */
	CHECK_EQ(v, SENTINEL);
	/* The largest values that still fit. */
	CHECK_EQ(size_of("16777215T", &v), 0);
	CHECK_EQ(v, 16777215ULL << 40);
	CHECK_EQ(size_of("18446744073709551615", &v), 0);
	CHECK_EQ(v, UINT64_MAX);
}

static void test_parse_uint(void)
{
	uint64_t v = SENTINEL;

	CHECK_EQ(parse_uint("1", 1, 254, &v), 0);
	CHECK_EQ(v, 1);
	CHECK_EQ(parse_uint("254", 1, 254, &v), 0);
	CHECK_EQ(v, 254);
	CHECK_EQ(parse_uint("007", 0, 10, &v), 0);
	CHECK_EQ(v, 7);
	CHECK_EQ(parse_uint("18446744073709551615", 0, UINT64_MAX, &v), 0);
	CHECK_EQ(v, UINT64_MAX);

	v = SENTINEL;
	CHECK_EQ(parse_uint("0", 1, 254, &v), -ERANGE);
	CHECK_EQ(parse_uint("255", 1, 254, &v), -ERANGE);
	CHECK_EQ(parse_uint("5", 6, 10, &v), -ERANGE);
	CHECK_EQ(parse_uint("18446744073709551616", 0, UINT64_MAX, &v), -ERANGE);
	CHECK_EQ(v, SENTINEL);
}

static void test_parse_uint_garbage(void)
{
	static const char *const bad[] = { "", "abc", "-1", "+1", " 1", "1 ", "1x", "0x10", "1.0", "1K" };
	uint64_t v = SENTINEL;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = parse_uint(bad[i], 0, UINT64_MAX, &v);

		if (rc != -EINVAL)
			unit_fail(__FILE__, __LINE__, "parse_uint(\"%s\") = %d, want -EINVAL",
				  bad[i], rc);
	}
	CHECK_EQ(parse_uint(NULL, 0, 10, &v), -EINVAL);
	CHECK_EQ(v, SENTINEL);
}

int main(int argc, char **argv)
{
	unit_init(argc, argv);
	RUN(test_parse_size_units);
	RUN(test_parse_size_suffixes);
	RUN(test_parse_size_rejects);
	RUN(test_parse_size_overflow);
	RUN(test_parse_uint);
	RUN(test_parse_uint_garbage);
	return unit_done();
}
