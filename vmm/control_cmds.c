/* Control socket commands; see control_cmds.h. */
#include "control_cmds.h"

#include <string.h>

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
			  atomic_load(&vm->stop_reason) ? "stopping" : "running", "version",
			  VMM_VERSION, "cpus", (int)vm->ncpus, "mem_bytes", (json_int_t)vm->mem.size,
			  "uptime_ms", (double)(now_ns() - vm->start_ns) / 1e6);
	if (reply)
		json_object_set_new(reply, "boot_marker_ms",
				    marker ? json_real((double)marker / 1e6) : json_null());
	return reply;
}

static const struct control_cmd commands[] = {
	{ "status", cmd_status },
};

const struct control_cmd *control_find_cmd(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
		if (!strcmp(commands[i].name, name))
			return &commands[i];
	return NULL;
}
