/* Options that arrive from outside and are not argv-only: --balloon's
 * sub-options, --incoming, and the "migrate" control request. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "migrate/dirty.h"
#include "migrate/migration.h"
#include "tests/unit/unit.h"
#include "virtio/balloon.h"
#include "vmm/config.h"

static void test_balloon_options(void)
{
	struct balloon_options o;
	char err[256] = "";

	CHECK_EQ(balloon_parse_options("", &o, err, sizeof(err)), 0);
	CHECK(o.enabled && !o.stats_interval_s && !o.deflate_on_oom && !o.free_page_hint &&
	      !o.free_page_reporting);
	CHECK_EQ(balloon_parse_options("stats=5,deflate-on-oom,free-page-hint,free-page-reporting",
				       &o, err, sizeof(err)), 0);
	CHECK(o.stats_interval_s == 5 && o.deflate_on_oom && o.free_page_hint &&
	      o.free_page_reporting);
	CHECK_EQ(balloon_parse_options("stats=abc", &o, err, sizeof(err)), -EINVAL);
	CHECK_CONTAINS(err, "stats=abc");
	CHECK_EQ(balloon_parse_options("stats=3601", &o, err, sizeof(err)), -EINVAL);
	CHECK_EQ(balloon_parse_options("free-page-hints", &o, err, sizeof(err)), -EINVAL);
	CHECK_CONTAINS(err, "unknown option 'free-page-hints'");
}

static int parse(struct vm_config *cfg, char *err, size_t errlen, const char **args)
{
	char *argv[16];
	int argc = 0;

	while (args[argc] && argc < 15) {
		argv[argc] = (char *)args[argc];
		argc++;
	}
	argv[argc] = NULL;
	return config_parse(cfg, argc, argv, err, errlen);
}

#define PARSE(cfg, err, ...) parse((cfg), (err), sizeof(err), (const char *[]){ __VA_ARGS__, NULL })

static void test_run_balloon_and_incoming(void)
{
	struct vm_config cfg;
	char err[256] = "";

	CHECK_EQ(PARSE(&cfg, err, "run", "--kernel", "k", "--balloon"), CONFIG_OK);
	CHECK(cfg.balloon.enabled && !cfg.balloon.free_page_hint);
	CHECK_EQ(PARSE(&cfg, err, "run", "--kernel", "k", "--balloon", "stats=2,free-page-hint"),
		 CONFIG_OK);
	CHECK(cfg.balloon.free_page_hint && cfg.balloon.stats_interval_s == 2);
	/* --incoming needs no kernel: the guest arrives from the source. */
	CHECK_EQ(PARSE(&cfg, err, "run", "--incoming", "tcp:127.0.0.1:4444", "--mem", "512M"),
		 CONFIG_OK);
	CHECK_STREQ(cfg.incoming, "tcp:127.0.0.1:4444");
	CHECK_EQ(PARSE(&cfg, err, "run", "--kernel", "k", "--balloon=bogus"), -EINVAL);
	CHECK_CONTAINS(err, "bogus");
	CHECK_EQ(PARSE(&cfg, err, "run", "--incoming", ""), -EINVAL);
	CHECK_CONTAINS(err, "--incoming");
}

static int opts_from(const char *text, struct migrate_options *o, char *err, size_t errlen)
{
	json_t *req = json_loads(text, 0, NULL);
	int rc = migrate_options_from_json(req, o, err, errlen);

	json_decref(req);
	return rc;
}

static void test_migrate_request(void)
{
	struct migrate_options o;
	char err[256] = "";

	CHECK_EQ(opts_from("{\"uri\":\"tcp:h:1\"}", &o, err, sizeof(err)), 0);
	CHECK(o.downtime_ms == 300 && o.skip_free && o.compress == COMPRESS_AUTO &&
	      o.connections == 1 && !o.timeout_s && !o.drop_guest_cache);
	CHECK_EQ(opts_from("{\"uri\":\"unix:/x\",\"downtime_ms\":50,\"timeout_s\":9,"
			   "\"skip_free\":false,\"compress\":\"none\"}", &o, err, sizeof(err)), 0);
	CHECK(o.downtime_ms == 50 && o.timeout_s == 9 && !o.skip_free && o.compress == COMPRESS_NONE);
	CHECK_EQ(opts_from("{}", &o, err, sizeof(err)), -EINVAL);
	CHECK_CONTAINS(err, "uri");
	CHECK_EQ(opts_from("{\"uri\":\"\"}", &o, err, sizeof(err)), -EINVAL);
	CHECK_EQ(opts_from("{\"uri\":\"tcp:h:1\",\"downtime_ms\":0}", &o, err, sizeof(err)), -EINVAL);
	CHECK_CONTAINS(err, "downtime_ms");
	CHECK_EQ(opts_from("{\"uri\":\"tcp:h:1\",\"downtime_ms\":\"1\"}", &o, err, sizeof(err)), -EINVAL);
	CHECK_EQ(opts_from("{\"uri\":\"tcp:h:1\",\"compress\":\"lz4\"}", &o, err, sizeof(err)), -EINVAL);
	CHECK_CONTAINS(err, "compress");
	CHECK_EQ(opts_from("{\"uri\":\"tcp:h:1\",\"skip_free\":1}", &o, err, sizeof(err)), -EINVAL);
	CHECK_EQ(opts_from("{\"uri\":\"tcp:h:1\",\"drop_guest_cache\":true}", &o, err, sizeof(err)), 0);
	CHECK(o.drop_guest_cache);
	CHECK_EQ(opts_from("{\"uri\":\"tcp:h:1\",\"drop_guest_cache\":\"yes\"}", &o, err,
			   sizeof(err)), -EINVAL);
	CHECK_CONTAINS(err, "drop_guest_cache");
	/* The dirty-log mode: auto unless forced. */
	CHECK_EQ(o.dirty_mode, DIRTY_MODE_AUTO);
	CHECK_EQ(opts_from("{\"uri\":\"tcp:h:1\",\"dirty_log\":\"get-log\"}", &o, err, sizeof(err)), 0);
	CHECK_EQ(o.dirty_mode, DIRTY_MODE_GET_LOG);
	CHECK_EQ(opts_from("{\"uri\":\"tcp:h:1\",\"dirty_log\":\"clear-log\"}", &o, err, sizeof(err)),
		 0);
	CHECK_EQ(o.dirty_mode, DIRTY_MODE_CLEAR_LOG);
	CHECK_EQ(opts_from("{\"uri\":\"tcp:h:1\",\"dirty_log\":\"dirty-ring\"}", &o, err,
			   sizeof(err)), 0);
	CHECK_EQ(o.dirty_mode, DIRTY_MODE_DIRTY_RING);
	CHECK_EQ(opts_from("{\"uri\":\"tcp:h:1\",\"dirty_log\":\"ring\"}", &o, err, sizeof(err)),
		 -EINVAL);
	CHECK_CONTAINS(err, "dirty_log");
	CHECK_CONTAINS(err, "dirty-ring");
	CHECK_EQ(opts_from("{\"uri\":\"tcp:h:1\",\"dirty_log\":1}", &o, err, sizeof(err)), -EINVAL);
	/* Parallel connections: 1 to 16. */
	CHECK_EQ(opts_from("{\"uri\":\"tcp:h:1\",\"connections\":4}", &o, err, sizeof(err)), 0);
	CHECK_EQ(o.connections, 4);
	CHECK_EQ(opts_from("{\"uri\":\"tcp:h:1\",\"connections\":16}", &o, err, sizeof(err)), 0);
	CHECK_EQ(o.connections, 16);
	CHECK_EQ(opts_from("{\"uri\":\"tcp:h:1\",\"connections\":17}", &o, err, sizeof(err)), -EINVAL);
	CHECK_CONTAINS(err, "connections");
	CHECK_EQ(opts_from("{\"uri\":\"tcp:h:1\",\"connections\":0}", &o, err, sizeof(err)), -EINVAL);
	CHECK_EQ(opts_from("{\"uri\":\"tcp:h:1\",\"connections\":\"2\"}", &o, err, sizeof(err)), -EINVAL);
	/* Compression workers: 0 (the lanes compress) to 16, and only with
	 * compression on. */
	CHECK_EQ(opts_from("{\"uri\":\"tcp:h:1\"}", &o, err, sizeof(err)), 0);
	CHECK_EQ(o.compress_threads, 0);
	CHECK_EQ(opts_from("{\"uri\":\"tcp:h:1\",\"compress_threads\":3}", &o, err, sizeof(err)), 0);
	CHECK_EQ(o.compress_threads, 3);
	CHECK_EQ(opts_from("{\"uri\":\"tcp:h:1\",\"compress_threads\":16,\"compress\":\"zstd\"}", &o,
			   err, sizeof(err)), 0);
	CHECK_EQ(o.compress_threads, 16);
	CHECK_EQ(opts_from("{\"uri\":\"tcp:h:1\",\"compress_threads\":17}", &o, err, sizeof(err)),
		 -EINVAL);
	CHECK_CONTAINS(err, "compress_threads");
	CHECK_EQ(opts_from("{\"uri\":\"tcp:h:1\",\"compress_threads\":-1}", &o, err, sizeof(err)),
		 -EINVAL);
	CHECK_EQ(opts_from("{\"uri\":\"tcp:h:1\",\"compress_threads\":2,\"compress\":\"none\"}", &o,
			   err, sizeof(err)), -EINVAL);
	CHECK_CONTAINS(err, "needs compress auto or zstd");
	CHECK_EQ(opts_from("{\"uri\":\"tcp:h:1\",\"compress_threads\":0,\"compress\":\"none\"}", &o,
			   err, sizeof(err)), 0);
}

/* Which dirty-log modes a VM can have: with a ring (vmm run --dirty-ring)
 * only dirty-ring (KVM keeps no bitmaps then), without one all but it. */
static void test_dirty_mode_check(void)
{
	enum dirty_mode m = DIRTY_MODE_GET_LOG;
	char err[256] = "";

	CHECK_EQ(dirty_mode_parse("dirty-ring", &m), 0);
	CHECK_EQ(m, DIRTY_MODE_DIRTY_RING);
	CHECK_EQ(dirty_mode_parse("auto", &m), 0);
	CHECK_EQ(m, DIRTY_MODE_AUTO);
	CHECK_EQ(dirty_mode_parse("Dirty-Ring", &m), -EINVAL);
	CHECK_EQ(dirty_mode_parse("", &m), -EINVAL);

	CHECK_EQ(dirty_mode_check(DIRTY_MODE_AUTO, false, err, sizeof(err)), 0);
	CHECK_EQ(dirty_mode_check(DIRTY_MODE_AUTO, true, err, sizeof(err)), 0);
	CHECK_EQ(dirty_mode_check(DIRTY_MODE_CLEAR_LOG, false, err, sizeof(err)), 0);
	CHECK_EQ(dirty_mode_check(DIRTY_MODE_GET_LOG, false, err, sizeof(err)), 0);
	CHECK_EQ(dirty_mode_check(DIRTY_MODE_DIRTY_RING, true, err, sizeof(err)), 0);
	CHECK_EQ(dirty_mode_check(DIRTY_MODE_DIRTY_RING, false, err, sizeof(err)), -EINVAL);
	CHECK_CONTAINS(err, "--dirty-log dirty-ring: the VM runs without a dirty ring");
	CHECK_CONTAINS(err, "vmm run --dirty-ring N");
	CHECK_EQ(dirty_mode_check(DIRTY_MODE_GET_LOG, true, err, sizeof(err)), -EINVAL);
	CHECK_CONTAINS(err, "--dirty-log get-log: the VM runs with a dirty ring");
	CHECK_EQ(dirty_mode_check(DIRTY_MODE_CLEAR_LOG, true, err, sizeof(err)), -EINVAL);
	CHECK_CONTAINS(err, "--dirty-log clear-log: the VM runs with a dirty ring");
	CHECK(!strchr(err, '\n'));
}

/* "compress" that is not a string was taken as absent (auto), where every
 * other option of the wrong type is refused. Found by fuzz_control. */
static void test_migrate_compress_type(void)
{
	static const char *const bad[] = { "true", "1", "null", "[\"zstd\"]", "{}" };
	struct migrate_options o;
	char req[128], err[256] = "";

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(req, sizeof(req), "{\"uri\":\"tcp:h:1\",\"compress\":%s}", bad[i]);
		if (opts_from(req, &o, err, sizeof(err)) != -EINVAL)
			unit_fail(__FILE__, __LINE__, "%s accepted", req);
		else
			CHECK_CONTAINS(err, "compress");
	}
	CHECK_EQ(opts_from("{\"uri\":\"tcp:h:1\",\"compress\":\"zstd\"}", &o, err, sizeof(err)), 0);
	CHECK_EQ(o.compress, COMPRESS_ZSTD);
	CHECK_EQ(opts_from("{\"uri\":\"tcp:h:1\",\"compress\":\"auto\"}", &o, err, sizeof(err)), 0);
	CHECK_EQ(o.compress, COMPRESS_AUTO);
}

int main(int argc, char **argv)
{
	unit_init(argc, argv);
	RUN(test_balloon_options);
	RUN(test_run_balloon_and_incoming);
	RUN(test_migrate_request);
	RUN(test_dirty_mode_check);
	RUN(test_migrate_compress_type);
	return unit_done();
}
