/* `vmm migrate`: starts a live migration through the source's control
 * socket, shows its progress, and prints the summary. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "util.h"

/* The destination got COMMIT or may have: the guest is paused here. */
#define MIGRATE_EXIT_UNKNOWN 3

static const char migrate_usage[] =
	"usage: vmm migrate SOCKET URI [--downtime-ms N] [--timeout-s N] [--no-skip-free]\n"
	"                   [--compress auto|zstd|none] [--connections N] [--compress-threads N]\n"
	"                   [--drop-guest-cache]\n"
	"                   [--dirty-log auto|clear-log|get-log|dirty-ring] [--json]\n"
	"       vmm migrate SOCKET --cancel\n"
	"URI: tcp:HOST:PORT, tcp:[IPV6%IF]:PORT or unix:PATH\n";

static int parse_args(int argc, char **argv, json_t *req, bool *json, char *err, size_t errlen)
{
	for (int i = 3; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		uint64_t n;

		if (!strcmp(a, "--json")) {
			*json = true;
		} else if (!strcmp(a, "--no-skip-free")) {
			json_object_set_new(req, "skip_free", json_false());
		} else if (!strcmp(a, "--drop-guest-cache")) {
			json_object_set_new(req, "drop_guest_cache", json_true());
		} else if (!strcmp(a, "--fault") && v) {
			/* For tests of the commit protocol (docs/migration.md). */
			json_object_set_new(req, "fault", json_string(v));
			i++;
		} else if (!strcmp(a, "--dirty-log") && v) {
			if (strcmp(v, "auto") && strcmp(v, "clear-log") && strcmp(v, "get-log") &&
			    strcmp(v, "dirty-ring")) {
				snprintf(err, errlen,
					 "--dirty-log: '%s' is not auto, clear-log, get-log or dirty-ring", v);
				return -EINVAL;
			}
			json_object_set_new(req, "dirty_log", json_string(v));
			i++;
		} else if (!strcmp(a, "--compress") && v) {
			if (strcmp(v, "auto") && strcmp(v, "zstd") && strcmp(v, "none")) {
				snprintf(err, errlen, "--compress: '%s' is not auto, zstd or none", v);
				return -EINVAL;
			}
			json_object_set_new(req, "compress", json_string(v));
			i++;
		} else if ((!strcmp(a, "--downtime-ms") || !strcmp(a, "--timeout-s") ||
			    !strcmp(a, "--connections") || !strcmp(a, "--compress-threads")) && v) {
			if (parse_uint(v, 0, 86400000, &n)) {
				snprintf(err, errlen, "%s: '%s' is not a number", a, v);
				return -EINVAL;
			}
			if (!strcmp(a, "--connections") && (n < 1 || n > 16)) {
				snprintf(err, errlen, "--connections: %s is out of range (1-16)", v);
				return -EINVAL;
			}
			if (!strcmp(a, "--compress-threads") && n > 16) {
				snprintf(err, errlen, "--compress-threads: %s is out of range (0-16)", v);
				return -EINVAL;
			}
			json_object_set_new(req, !strcmp(a, "--downtime-ms") ? "downtime_ms"
						 : !strcmp(a, "--timeout-s")  ? "timeout_s"
						 : !strcmp(a, "--connections") ? "connections"
									       : "compress_threads",
					    json_integer((json_int_t)n));
			i++;
		} else {
			snprintf(err, errlen, "unknown or incomplete option '%s'", a);
			return -EINVAL;
		}
	}
	return 0;
}

static double num(json_t *j, const char *key)
{
	json_t *v = json_object_get(j, key);

	return json_is_real(v) ? json_real_value(v) : (double)json_integer_value(v);
}

static void print_summary(json_t *st)
{
	const double mib = 1 << 20;

	printf("migration %s in %.0f ms (setup %.0f ms, downtime %.0f ms)\n",
	       json_string_value(json_object_get(st, "phase")), num(st, "total_ms"),
	       num(st, "setup_ms"), num(st, "downtime_ms"));
	if (json_is_string(json_object_get(st, "dirty_log")))
		printf("  dirty log: %s\n", json_string_value(json_object_get(st, "dirty_log")));
	printf("  on the wire: %.1f MiB, %.0f Mbit/s, %d iterations, dirty rate %.0f pages/s\n",
	       num(st, "bytes") / mib, num(st, "throughput_mbps"), (int)num(st, "iterations"),
	       num(st, "dirty_pages_per_s"));
	printf("  pages sent: %.0f raw, %.0f zstd (ratio %.2f), %.0f zero\n", num(st, "pages_raw"),
	       num(st, "pages_zstd"), num(st, "compression_ratio"), num(st, "pages_zero"));
	printf("  skipped as free: %.0f hinted (%d hint rounds), %.0f reported, %.0f never touched"
	       " (%.1f MiB)\n",
	       num(st, "skipped_hinted"), (int)num(st, "hint_rounds"), num(st, "skipped_reported"),
	       num(st, "skipped_untouched"),
	       (num(st, "skipped_hinted") + num(st, "skipped_reported") +
		num(st, "skipped_untouched")) * 4096 / mib);
	if (num(st, "throttled_ms") > 0)
		printf("  auto-converge held the guest stopped for %.0f ms (throttle up to %d%%)\n",
		       num(st, "throttled_ms"), (int)num(st, "throttle_pct"));
	if (json_is_true(json_object_get(st, "drop_guest_cache")))
		printf("  the guest dropped its clean caches first; the bulk pass waited %.0f ms for its hints\n",
		       num(st, "drop_cache_wait_ms"));
}

static int simple(const char *path, const char *cmd, json_t **reply, char *err, size_t errlen)
{
	json_t *req = json_pack("{s:s}", "cmd", cmd);
	int rc = client_request(path, req, 5000, reply, err, errlen);

	json_decref(req);
	return rc;
}

/* The status, as the follower: the source waits (a few seconds at most)
 * for this query to see the final phase before it exits, so the summary
 * is never lost; monitors that poll too do not count. */
static int status(const char *path, json_t **reply, char *err, size_t errlen)
{
	json_t *req = json_pack("{s:s, s:b}", "cmd", "migrate-status", "follow", 1);
	int rc = client_request(path, req, 5000, reply, err, errlen);

	json_decref(req);
	return rc;
}

/* Polls the status until the migration ends; a live line on a terminal. */
static int follow(const char *path, bool json)
{
	bool tty = isatty(STDOUT_FILENO) && !json;
	json_t *st = NULL;
	char err[256];

	for (;;) {
		const char *phase;
		struct timespec ts = { .tv_nsec = 200000000L };

		json_decref(st);
		st = NULL;
		int rc = status(path, &st, err, sizeof(err));

		if (rc) {
			/* The source may have died with this request in flight: a
			 * second try, a poll interval later, tells a vmm that is
			 * gone from a slow one. */
			nanosleep(&ts, NULL);
			rc = status(path, &st, err, sizeof(err));
		}
		if (rc == -ENOENT || rc == -ECONNREFUSED) {
			/* The source vmm ended before the migration did (it removes
			 * its socket only when it exits): its guest powered off,
			 * reset or triple-faulted, or it was killed. */
			log_err("migrate: the source vmm exited before the migration ended"
				" (its stderr says why): %s", err);
			return 1;
		}
		if (rc) {
			log_err("migrate: lost the source's control socket: %s", err);
			return 1;
		}
		phase = json_string_value(json_object_get(st, "phase"));
		if (!phase || !strcmp(phase, "completed") || !strcmp(phase, "failed") ||
		    !strcmp(phase, "cancelled") || !strcmp(phase, "unknown"))
			break;
		if (tty)
			printf("\r%-13s iteration %d, remaining %.1f MiB, %.0f Mbit/s, throttle %d%%   ",
			       phase, (int)num(st, "iterations"), num(st, "remaining_pages") * 4096 / (1 << 20),
			       num(st, "throughput_mbps"), (int)num(st, "throttle_pct"));
		fflush(stdout);
		nanosleep(&ts, NULL);
	}
	if (tty)
		printf("\n");
	if (json) {
		char *text = json_dumps(st, JSON_INDENT(2) | JSON_PRESERVE_ORDER);

		printf("%s\n", text ? text : "{}");
		free(text);
	} else {
		print_summary(st);
	}
	if (!strcmp(json_string_value(json_object_get(st, "phase")) ?: "", "unknown")) {
		/* Neither side may run the guest on its own now: say so, and
		 * exit with a status of its own. */
		log_err("migrate: %s", json_string_value(json_object_get(st, "error")) ?: "");
		log_err("migrate: check whether the guest runs at the destination; if it does not,"
			" `vmm resume --force SOCKET` runs it here");
		json_decref(st);
		return MIGRATE_EXIT_UNKNOWN;
	}
	if (strcmp(json_string_value(json_object_get(st, "phase")) ?: "", "completed")) {
		log_err("migrate: %s: %s", json_string_value(json_object_get(st, "phase")) ?: "failed",
			json_string_value(json_object_get(st, "error")) ?: "");
		json_decref(st);
		return 1;
	}
	json_decref(st);
	return 0;
}

int client_migrate_main(int argc, char **argv)
{
	json_t *req, *reply = NULL;
	bool json = false;
	char err[256];
	int rc;

	if (argc == 3 && !strcmp(argv[2], "--cancel")) {
		rc = simple(argv[1], "migrate-cancel", &reply, err, sizeof(err));
	} else if (argc >= 3 && argv[1][0] != '-' && argv[2][0] != '-') {
		req = json_pack("{s:s, s:s}", "cmd", "migrate", "uri", argv[2]);
		if (parse_args(argc, argv, req, &json, err, sizeof(err))) {
			json_decref(req);
			log_err("migrate: %s", err);
			return 2;
		}
		rc = client_request(argv[1], req, 5000, &reply, err, sizeof(err));
		json_decref(req);
	} else {
		fputs(migrate_usage, stderr);
		return 2;
	}
	if (rc) {
		log_err("migrate: %s", err);
		return 1;
	}
	if (!json_is_true(json_object_get(reply, "ok"))) {
		log_err("migrate: %s", json_string_value(json_object_get(reply, "error")) ?: "refused");
		json_decref(reply);
		return 1;
	}
	/* On stderr, so that --json output stays one JSON document. */
	if (json_is_string(json_object_get(reply, "note")))
		log_err("migrate: note: %s", json_string_value(json_object_get(reply, "note")));
	json_decref(reply);
	return argc == 3 && !strcmp(argv[2], "--cancel") ? 0 : follow(argv[1], json);
}
