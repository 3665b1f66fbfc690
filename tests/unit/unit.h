/* A tiny header-only unit test framework. A test binary looks like:
 *
 *	static void test_something(void) { CHECK_EQ(1 + 1, 2); }
 *
 *	int main(int argc, char **argv)
 *	{
 *		unit_init(argc, argv);
 *		RUN(test_something);
 *		return unit_done();
 *	}
 *
 * Each test prints one line, "PASS: <binary>/<test>" or "FAIL: <binary>/<test>",
 * the latter followed by one indented line per failed check. unit_done()
 * returns 1 if any test failed, else 0. REQUIRE() is CHECK() that also ends
 * the current test, for preconditions later checks cannot do without. */
#ifndef UNIT_H
#define UNIT_H

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *unit_binary = "?";
static int unit_failed_tests;
static int unit_failed_checks; /* in the current test */
static char unit_log[16384];  /* the current test's failure lines */
static size_t unit_log_len;

static inline void unit_init(int argc, char **argv)
{
	const char *slash;

	if (argc > 0 && argv[0]) {
		slash = strrchr(argv[0], '/');
		unit_binary = slash ? slash + 1 : argv[0];
	}
}

static inline __attribute__((format(printf, 3, 4))) void unit_fail(const char *file, int line,
								   const char *fmt, ...)
{
	size_t room = sizeof(unit_log) - unit_log_len;
	va_list ap;
	int n;

	unit_failed_checks++;
	if (room < 2)
		return;
	n = snprintf(unit_log + unit_log_len, room, "    %s:%d: ", file, line);
	if (n > 0 && (size_t)n < room) {
		unit_log_len += (size_t)n;
		room -= (size_t)n;
		va_start(ap, fmt);
		n = vsnprintf(unit_log + unit_log_len, room, fmt, ap);
		va_end(ap);
		if (n > 0)
			unit_log_len += (size_t)n < room ? (size_t)n : room - 1;
	}
	if (unit_log_len + 1 < sizeof(unit_log))
		unit_log[unit_log_len++] = '\n';
	unit_log[unit_log_len] = '\0';
}

/* Integers are passed as unsigned long long together with whether their
 * type is signed, so that -1 and ULLONG_MAX never compare equal. */
#define UNIT_IS_SIGNED(x)                                                                  \
	_Generic((x), signed char: 1, short: 1, int: 1, long: 1, long long: 1,             \
		 char: ((char)-1 < 0), default: 0)

static inline int unit_int_eq(unsigned long long a, int as, unsigned long long b, int bs)
{
	int aneg = as && (long long)a < 0, bneg = bs && (long long)b < 0;

	return aneg == bneg && a == b;
}

static inline void unit_int_fmt(char *buf, size_t len, unsigned long long v, int is_signed)
{
	if (is_signed)
		snprintf(buf, len, "%lld (%#llx)", (long long)v, v);
	else
		snprintf(buf, len, "%llu (%#llx)", v, v);
}

static inline void unit_check_eq(const char *file, int line, const char *ea, const char *eb,
				 unsigned long long a, int as, unsigned long long b, int bs)
{
	char va[64], vb[64];

	if (unit_int_eq(a, as, b, bs))
		return;
	unit_int_fmt(va, sizeof(va), a, as);
	unit_int_fmt(vb, sizeof(vb), b, bs);
	unit_fail(file, line, "CHECK_EQ(%s, %s): %s != %s", ea, eb, va, vb);
}

static inline int unit_check_str(const char *file, int line, const char *ea, const char *eb,
				 const char *a, const char *b, int contains)
{
	if (a && b && (contains ? strstr(a, b) != NULL : strcmp(a, b) == 0))
		return 1;
	unit_fail(file, line, "%s(%s, %s): \"%s\" %s \"%s\"",
		  contains ? "CHECK_CONTAINS" : "CHECK_STREQ", ea, eb, a ? a : "(null)",
		  contains ? "does not contain" : "!=", b ? b : "(null)");
	return 0;
}

#define CHECK(cond)                                                                        \
	do {                                                                               \
		if (!(cond))                                                               \
			unit_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);                 \
	} while (0)

#define REQUIRE(cond)                                                                      \
	do {                                                                               \
		if (!(cond)) {                                                             \
			unit_fail(__FILE__, __LINE__, "REQUIRE(%s)", #cond);               \
			return;                                                            \
		}                                                                          \
	} while (0)

#define CHECK_EQ(a, b)                                                                     \
	unit_check_eq(__FILE__, __LINE__, #a, #b, (unsigned long long)(a), UNIT_IS_SIGNED(a), \
		      (unsigned long long)(b), UNIT_IS_SIGNED(b))

#define CHECK_STREQ(a, b) ((void)unit_check_str(__FILE__, __LINE__, #a, #b, (a), (b), 0))
/* a contains b as a substring. */
#define CHECK_CONTAINS(a, b) ((void)unit_check_str(__FILE__, __LINE__, #a, #b, (a), (b), 1))

static inline void unit_run(const char *name, void (*fn)(void))
{
	unit_failed_checks = 0;
	unit_log_len = 0;
	unit_log[0] = '\0';
	fn();
	printf("%s: %s/%s\n", unit_failed_checks ? "FAIL" : "PASS", unit_binary, name);
	if (unit_failed_checks) {
		fputs(unit_log, stdout);
		if (unit_log_len + 1 >= sizeof(unit_log))
			puts("    (more failures not shown)");
		unit_failed_tests++;
	}
	fflush(stdout);
}

#define RUN(fn) unit_run(#fn, fn)

static inline int unit_done(void)
{
	return unit_failed_tests ? 1 : 0;
}

#endif
