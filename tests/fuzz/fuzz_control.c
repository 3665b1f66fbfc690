/* libFuzzer target for the control socket's request handling
 * (control_handle_line in vmm/control.c and the commands of
 * vmm/control_cmds.c, vmm/debug_cmds.c and migrate/status.c): what an
 * untrusted client sends, one request per input line, on a VM built
 * without KVM (no vCPUs, 64 MiB of guest memory that is never mapped, and
 * a balloon whose driver negotiated free page hinting, so hint rounds can
 * start). migrate_start() is replaced (the link wraps it, see the
 * Makefile): the target sees the options the request produced, and no
 * connection is ever made.
 *
 * Invariants: every request gets a reply (only `hint` may defer it, and
 * its deferred work is then polled and cancelled), a reply is an object
 * with a boolean "ok", a refusal carries a non-empty "error" string; and
 * a request that is accepted (ok, deferred, or handed to migrate_start)
 * has only well-typed values under the keys its command documents
 * (README.md), and migrate options within their documented ranges. */
#include <errno.h>
#include <jansson.h>
#include <linux/virtio_balloon.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migrate/migration.h"
#include "virtio/balloon.h"
#include "virtio/mmio.h"
#include "vmm/control.h"
#include "vmm/vm.h"
#include "tests/fuzz/fuzz.h"

#define MAX_LINES 8

int __wrap_migrate_start(struct vm *vm, const struct migrate_options *opt, char *err,
			 size_t errlen);

static struct vm vm;
static struct balloon balloon;
static bool migrate_reached;

int __wrap_migrate_start(struct vm *v, const struct migrate_options *opt, char *err,
			 size_t errlen)
{
	(void)v;
	ENSURE(opt->uri[0] && strlen(opt->uri) < sizeof(opt->uri));
	ENSURE(opt->downtime_ms >= 1 && opt->downtime_ms <= 600000);
	ENSURE(opt->timeout_s <= 86400);
	ENSURE(opt->connections >= 1 && opt->connections <= 16);
	ENSURE(opt->compress == COMPRESS_AUTO || opt->compress == COMPRESS_ZSTD ||
	       opt->compress == COMPRESS_NONE);
	ENSURE(strlen(opt->fault) < sizeof(opt->fault));
	migrate_reached = true;
	snprintf(err, errlen, "migration not started (fuzzing)");
	return -EAGAIN;
}

/* A driver's register writes: features with hinting, then DRIVER_OK. */
static void mmio_write(uint64_t off, uint32_t v)
{
	uint8_t b[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24) };

	virtio_mmio_io(&balloon.dev, off, b, 4, true);
}

static void setup_once(void)
{
	struct balloon_options o = { .enabled = true, .free_page_hint = true };
	static bool made;
	char err[256];

	if (made)
		return;
	guest_mem_layout(&vm.mem, NULL, 64ULL << 20);
	vm.fd = -1;
	if (balloon_init(&vm, &balloon, &o, err, sizeof(err)))
		abort();
	vm.balloon = &balloon;
	vm.virtio[vm.nvirtio++] = &balloon.dev;
	mmio_write(0x70, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	mmio_write(0x24, 0);
	mmio_write(0x20, 1u << VIRTIO_BALLOON_F_FREE_PAGE_HINT | 1u << BALLOON_F_DROP_CACHE);
	mmio_write(0x24, 1);
	mmio_write(0x20, 1); /* VERSION_1 */
	mmio_write(0x70, 0x0b);
	mmio_write(0x70, 0x0f);
	ENSURE(balloon.q_hint >= 0);
	made = true;
}

/* The keys each command documents, and their JSON types. */
static const struct {
	const char *cmd, *key;
	json_type type;
} keys[] = {
	{ "balloon", "size", JSON_INTEGER },
	{ "hint", "timeout_ms", JSON_INTEGER },
	{ "hint", "drop_cache", JSON_TRUE }, /* JSON_TRUE: a boolean */
	{ "resume", "force", JSON_TRUE },
	{ "migrate-status", "follow", JSON_TRUE },
	{ "migrate", "uri", JSON_STRING },
	{ "migrate", "downtime_ms", JSON_INTEGER },
	{ "migrate", "timeout_s", JSON_INTEGER },
	{ "migrate", "connections", JSON_INTEGER },
	{ "migrate", "skip_free", JSON_TRUE },
	{ "migrate", "drop_guest_cache", JSON_TRUE },
	{ "migrate", "dirty_log", JSON_STRING },
	{ "migrate", "compress", JSON_STRING },
	{ "migrate", "fault", JSON_STRING },
};

/* An accepted request: each documented key it has is of its type. */
static void check_accepted(const char *line, size_t len)
{
	json_t *req = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL);
	const char *cmd = json_string_value(json_object_get(req, "cmd"));

	ENSURE(cmd);
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		json_t *v = json_object_get(req, keys[i].key);

		if (!v || strcmp(cmd, keys[i].cmd))
			continue;
		if (keys[i].type == JSON_TRUE)
			ENSURE(json_is_boolean(v));
		else
			ENSURE(json_typeof(v) == keys[i].type);
	}
	json_decref(req);
}

static void check_reply(json_t *reply)
{
	json_t *ok = json_object_get(reply, "ok");
	char *text;

	ENSURE(json_is_object(reply) && json_is_boolean(ok));
	if (json_is_false(ok)) {
		const char *e = json_string_value(json_object_get(reply, "error"));

		ENSURE(e && e[0]);
	}
	text = json_dumps(reply, JSON_COMPACT);
	ENSURE(text);
	free(text);
}

static void one_request(const char *line, size_t len)
{
	struct control_deferred d = { .fd = -1 };
	json_t *reply, *polled = NULL;
	char err[256] = "";
	int rc;

	migrate_reached = false;
	reply = control_handle_line(&vm, line, len, &d);
	if (reply) {
		check_reply(reply);
		if (migrate_reached || json_is_true(json_object_get(reply, "ok")))
			check_accepted(line, len);
		json_decref(reply);
		return;
	}
	/* Deferred: only hint does that, and it needs its hooks. */
	ENSURE(d.poll && d.cancel && d.timeout_ms >= 1 && d.timeout_ms <= 600000);
	check_accepted(line, len);
	rc = d.poll(&vm, &d, true, &polled, err, sizeof(err));
	reply = control_deferred_reply(&d, rc, polled, err);
	check_reply(reply);
	json_decref(reply);
	d.cancel(&vm);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data, *end = p + size;

	setup_once();
	vm.pause_owners = 0; /* a pause request of the last input */
	for (int n = 0; p < end && n < MAX_LINES; n++) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);

		one_request(p, len);
		p += len + 1;
	}
	return 0;
}
