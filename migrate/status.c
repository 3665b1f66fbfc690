/* The migration's face toward the control socket: options from a request,
 * and the progress and summary figures as JSON. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "migrate/compress_pool.h"
#include "migrate/dirty.h"
#include "migrate/migration.h"
#include "vmm/util.h"
#include "vmm/vm.h"

static const char *const phase_names[] = {
	[MIGRATE_IDLE] = "idle",          [MIGRATE_SETUP] = "setup",
	[MIGRATE_BULK] = "bulk",          [MIGRATE_ITERATE] = "iterate",
	[MIGRATE_STOP_COPY] = "stop-and-copy", [MIGRATE_COMMITTED] = "committed",
	[MIGRATE_COMPLETED] = "completed", [MIGRATE_FAILED] = "failed",
	[MIGRATE_CANCELLED] = "cancelled", [MIGRATE_UNKNOWN] = "unknown",
};

static int get_uint(json_t *req, const char *key, unsigned min, unsigned max, unsigned *out,
		    char *err, size_t errlen)
{
	json_t *v = json_object_get(req, key);

	if (!v)
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
		snprintf(err, errlen, "\"%s\" must be an integer from %u to %u", key, min, max);
		return -EINVAL;
	}
	*out = (unsigned)json_integer_value(v);
	return 0;
}

int migrate_options_from_json(json_t *req, struct migrate_options *opt, char *err, size_t errlen)
{
	json_t *uri = json_object_get(req, "uri"), *skip = json_object_get(req, "skip_free");
	json_t *drop = json_object_get(req, "drop_guest_cache");
	json_t *compress_v = json_object_get(req, "compress");
	const char *compress = json_string_value(compress_v);
	json_t *dirty_log = json_object_get(req, "dirty_log"), *fault = json_object_get(req, "fault");
	enum dirty_mode mode = DIRTY_MODE_AUTO;

	memset(opt, 0, sizeof(*opt));
	opt->downtime_ms = 300;
	opt->skip_free = true;
	opt->compress = COMPRESS_AUTO;
	opt->connections = 1;
	if (!json_is_string(uri) || !json_string_length(uri) ||
	    json_string_length(uri) >= sizeof(opt->uri)) {
		snprintf(err, errlen, "\"uri\" must be a string such as tcp:HOST:PORT");
		return -EINVAL;
	}
	strcpy(opt->uri, json_string_value(uri));
	if (get_uint(req, "downtime_ms", 1, 600000, &opt->downtime_ms, err, errlen) ||
	    get_uint(req, "timeout_s", 0, 86400, &opt->timeout_s, err, errlen) ||
	    get_uint(req, "connections", 1, 16, &opt->connections, err, errlen) ||
	    get_uint(req, "compress_threads", 0, ZPOOL_MAX_THREADS, &opt->compress_threads, err,
		     errlen))
		return -EINVAL;
	if (skip && !json_is_boolean(skip)) {
		snprintf(err, errlen, "\"skip_free\" must be true or false");
		return -EINVAL;
	}
	if (skip)
		opt->skip_free = json_is_true(skip);
	if (drop && !json_is_boolean(drop)) {
		snprintf(err, errlen, "\"drop_guest_cache\" must be true or false");
		return -EINVAL;
	}
	opt->drop_guest_cache = json_is_true(drop);
	if (dirty_log && (!json_is_string(dirty_log) ||
			  dirty_mode_parse(json_string_value(dirty_log), &mode))) {
		snprintf(err, errlen, "\"dirty_log\" must be auto, clear-log, get-log or dirty-ring");
		return -EINVAL;
	}
	opt->dirty_mode = (int)mode;
	if (fault && (!json_is_string(fault) || json_string_length(fault) >= sizeof(opt->fault) ||
		      !strchr(json_string_value(fault), ':'))) {
		snprintf(err, errlen, "\"fault\" must be a string POINT:ACTION");
		return -EINVAL;
	}
	if (fault)
		strcpy(opt->fault, json_string_value(fault));
	/* A value that is not a string is refused, not taken as absent. */
	if (compress_v && (!compress || (strcmp(compress, "auto") && strcmp(compress, "zstd") &&
					 strcmp(compress, "none")))) {
		snprintf(err, errlen, "\"compress\" must be auto, zstd or none");
		return -EINVAL;
	}
	if (compress && !strcmp(compress, "zstd"))
		opt->compress = COMPRESS_ZSTD;
	else if (compress && !strcmp(compress, "none"))
		opt->compress = COMPRESS_NONE;
	if (opt->compress == COMPRESS_NONE && opt->compress_threads) {
		snprintf(err, errlen, "\"compress_threads\" needs compress auto or zstd");
		return -EINVAL;
	}
	return 0;
}

/* Mirrors the conditions under which precopy.c runs a hint round. */
const char *migrate_drop_cache_note(struct vm *vm, const struct migrate_options *opt)
{
	if (!opt->drop_guest_cache)
		return NULL;
	if (!vm->balloon)
		return "there is no balloon device (vmm run --balloon free-page-hint)";
	if (!opt->skip_free)
		return "--no-skip-free turns free page hinting off";
	if (vm->balloon->poison_val)
		return "the guest poisons free pages, which turns free page hinting off";
	return balloon_drop_cache_unavailable(vm->balloon);
}

json_t *migrate_status_json(struct vm *vm, bool follow)
{
	struct migration *m = vm->migration;
	const struct migrate_stats *st;
	uint64_t now = now_ns(), end, downtime;
	json_t *j;

	if (!m)
		return json_pack("{s:s}", "phase", "idle");
	pthread_mutex_lock(&m->lock);
	st = &m->st;
	end = st->end_ns ? st->end_ns : now;
	downtime = st->paused_ns ? end - st->paused_ns : 0;
	j = json_pack("{s:s, s:s, s:f, s:f, s:f, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:i, s:I,"
		      " s:f, s:f, s:i, s:i}",
		      "phase", phase_names[m->phase], "error", m->error,
		      "total_ms", (double)(end - st->start_ns) / 1e6,
		      "setup_ms", st->setup_ns ? (double)(st->setup_ns - st->start_ns) / 1e6 : 0.0,
		      "downtime_ms", (double)downtime / 1e6,
		      "bytes", (json_int_t)st->bytes_wire,
		      "pages_raw", (json_int_t)st->pages_raw,
		      "pages_zstd", (json_int_t)st->pages_zstd,
		      "pages_zero", (json_int_t)st->pages_zero,
		      "skipped_hinted", (json_int_t)st->skipped_hinted,
		      "skipped_reported", (json_int_t)st->skipped_reported,
		      "skipped_untouched", (json_int_t)st->skipped_untouched,
		      "compression_ratio",
		      st->zstd_bytes ? (double)st->raw_bytes_compressed / (double)st->zstd_bytes : 1.0,
		      "iterations", (int)st->iterations,
		      "remaining_pages", (json_int_t)st->remaining_pages,
		      "dirty_pages_per_s", st->dirty_pages_per_s,
		      /* Until an iteration measured it, the average so far. */
		      "throughput_mbps",
		      (st->bandwidth_bps > 0 ? st->bandwidth_bps
		       : end > st->start_ns ? (double)st->bytes_wire * 1e9 / (double)(end - st->start_ns)
					     : 0.0) * 8 / 1e6,
		      "throttle_pct", (int)st->throttle_pct,
		      "hint_rounds", (int)st->hint_rounds);
	json_object_set_new(j, "throttled_ms", json_real((double)st->throttled_ns / 1e6));
	json_object_set_new(j, "dirty_log", m->dirty_log ? json_string(m->dirty_log) : json_null());
	json_object_set_new(j, "drop_guest_cache", json_boolean(st->guest_cache_dropped));
	json_object_set_new(j, "drop_cache_wait_ms", json_real((double)st->drop_cache_wait_ns / 1e6));
	if (follow && m->phase >= MIGRATE_COMPLETED) {
		m->final_seen = true;
		pthread_cond_broadcast(&m->cond);
	}
	pthread_mutex_unlock(&m->lock);
	return j;
}
