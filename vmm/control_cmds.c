/* Control socket commands; see control_cmds.h. */
#include "control_cmds.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "debug_cmds.h"
#include "devices.h"
#include "migrate/migration.h"
#include "util.h"
#include "vm.h"

static json_t *cmd_status(struct vm *vm, json_t *req, char *err, size_t errlen)
{
	uint64_t marker = atomic_load(&vm->boot_marker_ns);
	json_t *reply;

	(void)req;
	(void)err;
	(void)errlen;
	reply = json_pack("{s:s, s:s, s:i, s:I, s:f}", "state",
			  atomic_load(&vm->stop_reason)                         ? "stopping"
			  : vm_paused_by(vm, VM_PAUSE_USER | VM_PAUSE_MIGRATION) ? "paused"
										 : "running",
			  "version",
			  VMM_VERSION, "cpus", (int)vm->ncpus, "mem_bytes", (json_int_t)vm->mem.size,
			  "uptime_ms", (double)(now_ns() - vm->start_ns) / 1e6);
	if (reply)
		json_object_set_new(reply, "boot_marker_ms",
				    marker ? json_real((double)marker / 1e6) : json_null());
	return reply;
}

static struct balloon *need_balloon(struct vm *vm, char *err, size_t errlen)
{
	if (!vm->balloon)
		snprintf(err, errlen, "no balloon device (start vmm run with --balloon)");
	return vm->balloon;
}

static json_t *cmd_balloon(struct vm *vm, json_t *req, char *err, size_t errlen)
{
	struct balloon *b = need_balloon(vm, err, errlen);
	json_t *size = json_object_get(req, "size");

	if (!b)
		return NULL;
	if (!json_is_integer(size) || json_integer_value(size) < 0) {
		snprintf(err, errlen, "\"size\" must be a non-negative integer (bytes)");
		return NULL;
	}
	if (balloon_set_size(b, (uint64_t)json_integer_value(size))) {
		snprintf(err, errlen, "balloon size %lld exceeds guest memory (%llu bytes)",
			 (long long)json_integer_value(size), (unsigned long long)vm->mem.size);
		return NULL;
	}
	return json_pack("{s:I}", "target_bytes", json_integer_value(size) & ~4095LL);
}

static json_t *cmd_balloon_stats(struct vm *vm, json_t *req, char *err, size_t errlen)
{
	struct balloon *b = need_balloon(vm, err, errlen);

	(void)req;
	return b ? balloon_stats_json(b) : NULL;
}

/* The hint round's reply, once the guest ended it or time ran out; the
 * round ends (DONE) either way. Outside migration hints are only counted:
 * nothing is discarded, because the guest may reuse a hinted page at any
 * moment. */
static int hint_poll(struct vm *vm, const struct control_deferred *d, bool timed_out,
		     json_t **reply, char *err, size_t errlen)
{
	struct balloon *b = vm->balloon;
	bool running = balloon_hint_running(b);

	if (running && !timed_out)
		return -EINPROGRESS;
	*reply = balloon_hint_json(b);
	balloon_hint_done(b);
	if (running) {
		json_decref(*reply);
		*reply = NULL;
		snprintf(err, errlen, "the guest did not finish the hint round within %d ms",
			 d->timeout_ms);
		return -ETIMEDOUT;
	}
	return 0;
}

static void hint_cancel(struct vm *vm)
{
	balloon_hint_done(vm->balloon);
}

/* Starts a hint round; the reply comes from hint_poll when the round ends,
 * so the main loop goes on meanwhile. */
static int cmd_hint(struct vm *vm, json_t *req, struct control_deferred *d, char *err,
		    size_t errlen)
{
	struct balloon *b = need_balloon(vm, err, errlen);
	json_t *t = json_object_get(req, "timeout_ms"), *drop = json_object_get(req, "drop_cache");
	const char *note = NULL;
	int rc;

	if (!b)
		return -ENODEV;
	if (drop && !json_is_boolean(drop))
		return errf(-EINVAL, err, errlen, "\"drop_cache\" must be true or false");
	if (t && (!json_is_integer(t) || json_integer_value(t) < 1 ||
		  json_integer_value(t) > 600000))
		return errf(-EINVAL, err, errlen, "\"timeout_ms\" must be an integer from 1 to 600000");
	if (json_is_true(drop))
		note = balloon_drop_cache_unavailable(b);
	rc = balloon_hint_start(b, json_is_true(drop), NULL, NULL);
	if (rc == -ENOTSUP)
		return errf(rc, err, errlen, "the guest has not enabled free page hinting "
					     "(needs --balloon free-page-hint and a driver that accepts it)");
	if (rc)
		return errf(rc, err, errlen, "a hint round is already running");
	*d = (struct control_deferred){
		.fd = balloon_hint_fd(b),
		.timeout_ms = t ? (int)json_integer_value(t) : 10000,
		.poll = hint_poll,
		.cancel = hint_cancel,
		.extra = note ? json_pack("{s:s+}", "note", "--drop-cache has no effect: ", note) : NULL,
	};
	return 0;
}

/* Why pause/resume are refused now, or NULL. While a migration runs the
 * guest's pause belongs to it (stop-and-copy, the throttle); after an
 * unknown outcome only `resume --force` may run the guest here. */
static const char *pause_refusal(struct vm *vm)
{
	if (migrate_running(vm))
		return "a migration is running; cancel it first (vmm migrate SOCKET --cancel)";
	if (migrate_outcome_unknown(vm))
		return "the outcome of the last migration is unknown: the guest may run at the "
		       "destination. Check there; if it does not run there, `vmm resume --force` "
		       "runs it here";
	return NULL;
}

static json_t *cmd_pause(struct vm *vm, json_t *req, char *err, size_t errlen)
{
	const char *no = pause_refusal(vm);
	int rc;

	(void)req;
	if (no) {
		snprintf(err, errlen, "%s", no);
		return NULL;
	}
	if (vm_paused_by(vm, VM_PAUSE_USER))
		return json_object();
	rc = vm_pause(vm, VM_PAUSE_USER, 5000);
	if (rc) {
		snprintf(err, errlen, "cannot pause the vCPUs: %s", strerror(-rc));
		return NULL;
	}
	rc = vm_virtio_pause(vm);
	if (rc) {
		vm_resume(vm, VM_PAUSE_USER);
		snprintf(err, errlen, "cannot pause the devices: %s", strerror(-rc));
		return NULL;
	}
	return json_object();
}

static json_t *cmd_resume(struct vm *vm, json_t *req, char *err, size_t errlen)
{
	json_t *force = json_object_get(req, "force");
	const char *no = pause_refusal(vm);

	if (force && !json_is_boolean(force)) {
		snprintf(err, errlen, "\"force\" must be true or false");
		return NULL;
	}
	if (json_is_true(force) && migrate_outcome_unknown(vm)) {
		migrate_force_resume(vm);
		log_err("resumed by the operator after a migration with an unknown outcome");
	} else if (no) {
		snprintf(err, errlen, "%s", no);
		return NULL;
	}
	if (!vm_paused_by(vm, VM_PAUSE_USER))
		return json_object();
	vm_virtio_resume(vm);
	vm_resume(vm, VM_PAUSE_USER);
	return json_object();
}

static json_t *cmd_migrate(struct vm *vm, json_t *req, char *err, size_t errlen)
{
	struct migrate_options opt;
	const char *note;

	if (vm_paused_by(vm, VM_PAUSE_USER)) {
		snprintf(err, errlen, "the VM is paused; resume it before migrating");
		return NULL;
	}
	if (migrate_options_from_json(req, &opt, err, errlen))
		return NULL;
	note = migrate_drop_cache_note(vm, &opt);
	if (migrate_start(vm, &opt, err, errlen))
		return NULL;
	if (!note)
		return json_object();
	return json_pack("{s:s+}", "note", "--drop-guest-cache has no effect: ", note);
}

static json_t *cmd_migrate_status(struct vm *vm, json_t *req, char *err, size_t errlen)
{
	json_t *follow = json_object_get(req, "follow");

	if (follow && !json_is_boolean(follow)) {
		snprintf(err, errlen, "\"follow\" must be true or false");
		return NULL;
	}
	return migrate_status_json(vm, json_is_true(follow));
}

static json_t *cmd_migrate_cancel(struct vm *vm, json_t *req, char *err, size_t errlen)
{
	int rc = migrate_cancel(vm);

	(void)req;
	if (rc == -EBUSY) {
		snprintf(err, errlen, "too late to cancel: COMMIT was sent to the destination");
		return NULL;
	}
	if (rc) {
		snprintf(err, errlen, "no migration is running");
		return NULL;
	}
	return json_object();
}

static const struct control_cmd commands[] = {
	{ "migrate", cmd_migrate },
	{ "migrate-status", cmd_migrate_status },
	{ "migrate-cancel", cmd_migrate_cancel },
	{ "pause", cmd_pause },
	{ "resume", cmd_resume },
	{ "status", cmd_status },
	{ "balloon", cmd_balloon },
	{ "balloon-stats", cmd_balloon_stats },
	{ "debug-vcpus", debug_cmd_vcpus },
};

static const struct control_deferred_cmd deferred_commands[] = {
	{ "hint", cmd_hint },
};

const struct control_cmd *control_find_cmd(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
		if (!strcmp(commands[i].name, name))
			return &commands[i];
	return NULL;
}

const struct control_deferred_cmd *control_find_deferred_cmd(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(deferred_commands); i++)
		if (!strcmp(deferred_commands[i].name, name))
			return &deferred_commands[i];
	return NULL;
}
