/* console_filter: the Ctrl-A escape on the way from the host to the guest. */
#include <string.h>

#include "tests/unit/unit.h"
#include "vmm/console.h"

/* Feeds in through a fresh or continuing console; returns the output length. */
static size_t filter(struct console *c, const char *in, uint8_t *out, bool *quit)
{
	*quit = false;
	memset(out, 0xee, 64);
	return console_filter(c, (const uint8_t *)in, strlen(in), out, quit);
}

static void test_plain(void)
{
	struct console c;
	uint8_t out[64];
	bool quit;

	memset(&c, 0, sizeof(c));
	CHECK_EQ(filter(&c, "hello\r", out, &quit), 6);
	CHECK(memcmp(out, "hello\r", 6) == 0);
	CHECK_EQ(out[6], 0xee);
	CHECK(!quit);
	CHECK(!c.escape_pending);
	CHECK_EQ(filter(&c, "", out, &quit), 0);
	/* x and other control characters without the escape pass through. */
	CHECK_EQ(filter(&c, "x\x02\x03\x1b", out, &quit), 4);
	CHECK(memcmp(out, "x\x02\x03\x1b", 4) == 0);
	CHECK(!quit);
}

static void test_quit(void)
{
	struct console c;
	uint8_t out[64];
	bool quit;

	memset(&c, 0, sizeof(c));
	CHECK_EQ(filter(&c, "ab\x01x", out, &quit), 2);
	CHECK(quit);
	CHECK(memcmp(out, "ab", 2) == 0);
	memset(&c, 0, sizeof(c));
	CHECK_EQ(filter(&c, "\x01X", out, &quit), 0);
	CHECK(quit);
}

static void test_escape_escape(void)
{
	struct console c;
	uint8_t out[64];
	bool quit;

	memset(&c, 0, sizeof(c));
	CHECK_EQ(filter(&c, "a\x01\x01z", out, &quit), 3);
	CHECK_EQ(out[0], 'a');
	CHECK_EQ(out[1], 0x01);
	CHECK_EQ(out[2], 'z');
	CHECK(!quit);
	CHECK(!c.escape_pending);
	/* Three in a row: one sent, the third starts a new escape. */
	CHECK_EQ(filter(&c, "\x01\x01\x01", out, &quit), 1);
	CHECK_EQ(out[0], 0x01);
	CHECK(c.escape_pending);
	CHECK_EQ(filter(&c, "x", out, &quit), 0);
	CHECK(quit);
}

static void test_escape_other_key(void)
{
	struct console c;
	uint8_t out[64];
	bool quit;

	memset(&c, 0, sizeof(c));
	CHECK_EQ(filter(&c, "a\x01hb", out, &quit), 2);
	CHECK_EQ(out[0], 'a');
	CHECK_EQ(out[1], 'b');
	CHECK(!quit);
	CHECK(!c.escape_pending);
	CHECK_EQ(filter(&c, "\x01" "c", out, &quit), 0);
	CHECK(!quit);
	CHECK_EQ(filter(&c, "x", out, &quit), 1); /* a plain x again */
	CHECK(!quit);
}

static void test_escape_split(void)
{
	struct console c;
	uint8_t out[64];
	bool quit;

	memset(&c, 0, sizeof(c));
	CHECK_EQ(filter(&c, "q\x01", out, &quit), 1);
	CHECK_EQ(out[0], 'q');
	CHECK(c.escape_pending);
	CHECK(!quit);
	CHECK_EQ(filter(&c, "x", out, &quit), 0);
	CHECK(quit);

	memset(&c, 0, sizeof(c));
	CHECK_EQ(filter(&c, "\x01", out, &quit), 0);
	CHECK_EQ(filter(&c, "\x01r", out, &quit), 2);
	CHECK_EQ(out[0], 0x01);
	CHECK_EQ(out[1], 'r');
	CHECK(!quit);

	memset(&c, 0, sizeof(c));
	CHECK_EQ(filter(&c, "\x01", out, &quit), 0);
	CHECK_EQ(filter(&c, "kz", out, &quit), 1);
	CHECK_EQ(out[0], 'z');
	CHECK(!quit);
}

int main(int argc, char **argv)
{
	unit_init(argc, argv);
	RUN(test_plain);
	RUN(test_quit);
	RUN(test_escape_escape);
	RUN(test_escape_other_key);
	RUN(test_escape_split);
	return unit_done();
}
