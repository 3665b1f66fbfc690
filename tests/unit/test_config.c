/* config_parse: `vmm run` options, defaults and every rejection. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/unit.h"
#include "vmm/config.h"

#define ERRLEN 256

/* The argument list, "run" first, without the trailing NULL. */
#define PARSE(cfg, err, ...) parse_args((cfg), (err), (const char *[]){ __VA_ARGS__, NULL })

static int parse_args(struct vm_config *cfg, char *err, const char **args)
{
	char *argv[32];
	int argc = 0;

	while (args[argc] && argc < 31) {
		argv[argc] = (char *)args[argc];
		argc++;
	}
	argv[argc] = NULL;
	memset(err, 0, ERRLEN);
	return config_parse(cfg, argc, argv, err, ERRLEN);
}

static void test_defaults(void)
{
	struct vm_config cfg;
	char err[ERRLEN];

	CHECK_EQ(PARSE(&cfg, err, "run", "--kernel", "bzImage"), CONFIG_OK);
	CHECK_STREQ(cfg.kernel, "bzImage");
	CHECK_EQ(cfg.mem_size, 256ULL << 20);
	CHECK_EQ(cfg.cpus, 1);
	CHECK_EQ(cfg.console, CONSOLE_STDIO);
	CHECK(cfg.initrd == NULL);
	CHECK(cfg.console_path == NULL);
	CHECK(cfg.api_socket == NULL);
	CHECK(!cfg.boot_timer);
	CHECK_STREQ(cfg.cmdline, "console=ttyS0 reboot=k panic=1 pci=off");
	CHECK_STREQ(err, "");

	/* config_defaults alone gives the same values. */
	memset(&cfg, 0xa5, sizeof(cfg));
	config_defaults(&cfg);
	CHECK(cfg.kernel == NULL);
	CHECK_EQ(cfg.mem_size, 256ULL << 20);
	CHECK_EQ(cfg.cpus, 1);
	CHECK_EQ(cfg.console, CONSOLE_STDIO);
	CHECK(!cfg.boot_timer);
}

static void test_all_options(void)
{
	struct vm_config cfg;
	char err[ERRLEN];

	CHECK_EQ(PARSE(&cfg, err, "run", "--kernel", "/k", "--initrd", "/i", "--cmdline",
		       "console=ttyS0 quiet", "--mem", "4G", "--cpus", "8", "--console",
		       "file:/tmp/out.log", "--api-socket", "/tmp/api.sock", "--boot-timer"),
		 CONFIG_OK);
	CHECK_STREQ(err, "");
	CHECK_STREQ(cfg.kernel, "/k");
	CHECK_STREQ(cfg.initrd, "/i");
	CHECK_STREQ(cfg.cmdline, "console=ttyS0 quiet");
	CHECK_EQ(cfg.mem_size, 4ULL << 30);
	CHECK_EQ(cfg.cpus, 8);
	CHECK_EQ(cfg.console, CONSOLE_FILE);
	CHECK_STREQ(cfg.console_path, "/tmp/out.log");
	CHECK_STREQ(cfg.api_socket, "/tmp/api.sock");
	CHECK(cfg.boot_timer);

	/* --opt=value works too, and the last occurrence wins. */
	CHECK_EQ(PARSE(&cfg, err, "run", "--mem=512M", "--kernel=/a", "--cpus=2", "--cpus=254",
		       "--kernel", "/b", "--console=none"),
		 CONFIG_OK);
	CHECK_EQ(cfg.mem_size, 512ULL << 20);
	CHECK_EQ(cfg.cpus, 254);
	CHECK_STREQ(cfg.kernel, "/b");
	CHECK_EQ(cfg.console, CONSOLE_NONE);

	CHECK_EQ(PARSE(&cfg, err, "run", "--kernel", "/k", "--console", "stdio", "--cpus", "1",
		       "--mem", "32M"),
		 CONFIG_OK);
	CHECK_EQ(cfg.console, CONSOLE_STDIO);
	CHECK_EQ(cfg.mem_size, CONFIG_MIN_MEM);
	CHECK_EQ(PARSE(&cfg, err, "run", "--kernel", "/k", "--mem", "1T"), CONFIG_OK);
	CHECK_EQ(cfg.mem_size, CONFIG_MAX_MEM);
	CHECK_EQ(PARSE(&cfg, err, "run", "--kernel", "/k", "--mem", "1536MiB"), CONFIG_OK);
	CHECK_EQ(cfg.mem_size, 1536ULL << 20);
}

/* Expects -EINVAL with a message containing want. */
static void expect_error(int line, int rc, const char *err, const char *want)
{
	if (rc != -EINVAL)
		unit_fail(__FILE__, line, "config_parse returned %d, want -EINVAL (%d)", rc, -EINVAL);
	if (!strstr(err, want))
		unit_fail(__FILE__, line, "error \"%s\" does not mention \"%s\"", err, want);
	if (strchr(err, '\n'))
		unit_fail(__FILE__, line, "error \"%s\" is not one line", err);
}

#define EXPECT_ERROR(want, ...)                                                            \
	do {                                                                               \
		struct vm_config cfg_;                                                     \
		char err_[ERRLEN];                                                         \
		int rc_ = PARSE(&cfg_, err_, __VA_ARGS__);                                 \
		expect_error(__LINE__, rc_, err_, want);                                   \
	} while (0)

static void test_cpus_rejected(void)
{
	EXPECT_ERROR("--cpus", "run", "--kernel", "k", "--cpus", "0");
	EXPECT_ERROR("--cpus", "run", "--kernel", "k", "--cpus", "255");
	EXPECT_ERROR("--cpus", "run", "--kernel", "k", "--cpus", "abc");
	EXPECT_ERROR("--cpus", "run", "--kernel", "k", "--cpus", "-1");
	EXPECT_ERROR("--cpus", "run", "--kernel", "k", "--cpus", "");
	EXPECT_ERROR("--cpus", "run", "--kernel", "k", "--cpus", "2x");
	EXPECT_ERROR("--cpus", "run", "--kernel", "k", "--cpus", "99999999999999999999999");
	EXPECT_ERROR("255", "run", "--kernel", "k", "--cpus", "255");
	EXPECT_ERROR("abc", "run", "--kernel", "k", "--cpus", "abc");
}

static void test_mem_rejected(void)
{
	EXPECT_ERROR("--mem", "run", "--kernel", "k", "--mem", "lots");
	EXPECT_ERROR("--mem", "run", "--kernel", "k", "--mem", "");
	EXPECT_ERROR("--mem", "run", "--kernel", "k", "--mem", "1.5G");
	EXPECT_ERROR("not a size", "run", "--kernel", "k", "--mem", "12Q");
	/* Too small, too large, and sizes parse_size itself finds out of range. */
	EXPECT_ERROR("range", "run", "--kernel", "k", "--mem", "31M");
	EXPECT_ERROR("range", "run", "--kernel", "k", "--mem", "0");
	EXPECT_ERROR("range", "run", "--kernel", "k", "--mem", "1025G");
	EXPECT_ERROR("range", "run", "--kernel", "k", "--mem", "99999999999T");
	/* Not a multiple of 1 MiB. */
	EXPECT_ERROR("multiple of 1M", "run", "--kernel", "k", "--mem", "33554433");
	EXPECT_ERROR("multiple of 1M", "run", "--kernel", "k", "--mem", "65537K");
}

static void test_console_kinds(void)
{
	struct vm_config cfg;
	char err[ERRLEN];

	CHECK_EQ(PARSE(&cfg, err, "run", "--kernel", "k", "--console", "file:out.txt"), CONFIG_OK);
	CHECK_EQ(cfg.console, CONSOLE_FILE);
	CHECK_STREQ(cfg.console_path, "out.txt");
	CHECK_EQ(PARSE(&cfg, err, "run", "--kernel", "k", "--console", "none"), CONFIG_OK);
	CHECK_EQ(cfg.console, CONSOLE_NONE);
	CHECK_EQ(PARSE(&cfg, err, "run", "--kernel", "k", "--console", "stdio"), CONFIG_OK);
	CHECK_EQ(cfg.console, CONSOLE_STDIO);

	EXPECT_ERROR("--console", "run", "--kernel", "k", "--console", "bogus");
	EXPECT_ERROR("bogus", "run", "--kernel", "k", "--console", "bogus");
	EXPECT_ERROR("--console", "run", "--kernel", "k", "--console", "file:");
	EXPECT_ERROR("--console", "run", "--kernel", "k", "--console", "");
	EXPECT_ERROR("--console", "run", "--kernel", "k", "--console", "STDIO");
	EXPECT_ERROR("--api-socket", "run", "--kernel", "k", "--api-socket", "");
}

static void test_bad_usage(void)
{
	EXPECT_ERROR("--bogus", "run", "--kernel", "k", "--bogus");
	EXPECT_ERROR("-x", "run", "-x", "--kernel", "k");
	EXPECT_ERROR("--kernel", "run", "--kernel");
	EXPECT_ERROR("needs an argument", "run", "--kernel");
	EXPECT_ERROR("--mem", "run", "--kernel", "k", "--mem");
	EXPECT_ERROR("--kernel is required", "run");
	EXPECT_ERROR("--kernel is required", "run", "--mem", "1G", "--cpus", "2");
	EXPECT_ERROR("extra", "run", "--kernel", "k", "extra");
	/* Options stop at the first non-option: nothing after it is parsed. */
	EXPECT_ERROR("extra", "run", "extra", "--kernel", "k");
	EXPECT_ERROR("--boot-timer", "run", "--kernel", "k", "--boot-timer=yes");
}

/* --dirty-ring ENTRIES: a power of two from 256 to 65536, always with a
 * value; the host's own bounds are KVM's to check at start-up. */
static void test_dirty_ring(void)
{
	struct vm_config cfg;
	char err[ERRLEN];

	CHECK_EQ(PARSE(&cfg, err, "run", "--kernel", "k"), CONFIG_OK);
	CHECK_EQ(cfg.dirty_ring, 0);
	CHECK_EQ(PARSE(&cfg, err, "run", "--kernel", "k", "--dirty-ring", "4096"), CONFIG_OK);
	CHECK_EQ(cfg.dirty_ring, 4096);
	CHECK_EQ(PARSE(&cfg, err, "run", "--kernel", "k", "--dirty-ring=256"), CONFIG_OK);
	CHECK_EQ(cfg.dirty_ring, 256);
	CHECK_EQ(PARSE(&cfg, err, "run", "--incoming", "tcp:0:1", "--dirty-ring", "65536"),
		 CONFIG_OK);
	CHECK_EQ(cfg.dirty_ring, 65536);
	EXPECT_ERROR("needs an argument", "run", "--kernel", "k", "--dirty-ring");
	EXPECT_ERROR("--dirty-ring: 'abc' is not a number", "run", "--kernel", "k", "--dirty-ring",
		     "abc");
	EXPECT_ERROR("--dirty-ring: '' is not a number", "run", "--kernel", "k", "--dirty-ring", "");
	EXPECT_ERROR("--dirty-ring: '-4096' is not a number", "run", "--kernel", "k",
		     "--dirty-ring=-4096");
	EXPECT_ERROR("--dirty-ring: '4k' is not a number", "run", "--kernel", "k", "--dirty-ring",
		     "4k");
	EXPECT_ERROR("--dirty-ring: 3000 is not a power of two from 256 to 65536", "run",
		     "--kernel", "k", "--dirty-ring", "3000");
	EXPECT_ERROR("--dirty-ring: 128 is not a power of two", "run", "--kernel", "k",
		     "--dirty-ring", "128");
	EXPECT_ERROR("--dirty-ring: 0 is not", "run", "--kernel", "k", "--dirty-ring", "0");
	EXPECT_ERROR("--dirty-ring: 131072 is not", "run", "--kernel", "k", "--dirty-ring",
		     "131072");
	EXPECT_ERROR("--dirty-ring: 99999999999999999999999 is not", "run", "--kernel", "k",
		     "--dirty-ring", "99999999999999999999999");
	CHECK_CONTAINS(config_usage, "--dirty-ring N");
}

static void test_help_version(void)
{
	struct vm_config cfg;
	char err[ERRLEN];

	CHECK_EQ(PARSE(&cfg, err, "run", "--help"), CONFIG_HELP);
	CHECK_EQ(PARSE(&cfg, err, "run", "-h"), CONFIG_HELP);
	CHECK_EQ(PARSE(&cfg, err, "run", "--kernel", "k", "--help", "--mem", "bad"), CONFIG_HELP);
	CHECK_EQ(PARSE(&cfg, err, "run", "--version"), CONFIG_VERSION);
	CHECK_EQ(PARSE(&cfg, err, "run", "-V"), CONFIG_VERSION);
	CHECK_CONTAINS(config_usage, "--kernel");
	CHECK_CONTAINS(config_usage, "--cpus");
}

static void test_parse_twice(void)
{
	struct vm_config cfg;
	char err[ERRLEN];

	CHECK_EQ(PARSE(&cfg, err, "run", "--kernel", "a", "--cpus", "4"), CONFIG_OK);
	CHECK_EQ(cfg.cpus, 4);
	/* A second parse starts from the defaults and from argv[1]. */
	CHECK_EQ(PARSE(&cfg, err, "run", "--kernel", "b"), CONFIG_OK);
	CHECK_STREQ(cfg.kernel, "b");
	CHECK_EQ(cfg.cpus, 1);
	/* An error in the middle of a cluster of short options leaves getopt
	 * half-way through an argument; the next parse must not resume there. */
	CHECK_EQ(PARSE(&cfg, err, "run", "-hx"), CONFIG_HELP);
	CHECK_EQ(PARSE(&cfg, err, "run", "--kernel", "c", "--mem", "64M"), CONFIG_OK);
	CHECK_STREQ(cfg.kernel, "c");
	CHECK_EQ(cfg.mem_size, 64ULL << 20);
	CHECK_EQ(PARSE(&cfg, err, "run", "--cpus", "0", "--kernel", "d"), -EINVAL);
	CHECK_EQ(PARSE(&cfg, err, "run", "--kernel", "e"), CONFIG_OK);
	CHECK_STREQ(cfg.kernel, "e");
}

/* VMM_CONTROL_IDLE_S sets the control socket's idle timeout (tests use it). */
static void test_idle_timeout_env(void)
{
	struct vm_config cfg;
	char err[ERRLEN];

	unsetenv("VMM_CONTROL_IDLE_S");
	CHECK_EQ(PARSE(&cfg, err, "run", "--kernel", "k"), CONFIG_OK);
	CHECK_EQ(cfg.api_idle_s, CONFIG_API_IDLE_S);
	setenv("VMM_CONTROL_IDLE_S", "3", 1);
	CHECK_EQ(PARSE(&cfg, err, "run", "--kernel", "k"), CONFIG_OK);
	CHECK_EQ(cfg.api_idle_s, 3);
	setenv("VMM_CONTROL_IDLE_S", "0", 1);
	CHECK_EQ(PARSE(&cfg, err, "run", "--kernel", "k"), -EINVAL);
	CHECK_CONTAINS(err, "VMM_CONTROL_IDLE_S: '0' is not 1 to 86400");
	setenv("VMM_CONTROL_IDLE_S", "soon", 1);
	CHECK_EQ(PARSE(&cfg, err, "run", "--kernel", "k"), -EINVAL);
	unsetenv("VMM_CONTROL_IDLE_S");
}

int main(int argc, char **argv)
{
	unit_init(argc, argv);
	RUN(test_defaults);
	RUN(test_all_options);
	RUN(test_cpus_rejected);
	RUN(test_mem_rejected);
	RUN(test_console_kinds);
	RUN(test_bad_usage);
	RUN(test_dirty_ring);
	RUN(test_help_version);
	RUN(test_parse_twice);
	RUN(test_idle_timeout_env);
	return unit_done();
}
