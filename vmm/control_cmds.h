/* The commands the control socket understands, one handler each. */
#ifndef VMM_CONTROL_CMDS_H
#define VMM_CONTROL_CMDS_H

#include "control.h"

struct control_cmd {
	const char *name;
	control_cmd_fn fn;
};

/* A command whose reply comes later, from the main loop (see struct
 * control_deferred). */
struct control_deferred_cmd {
	const char *name;
	control_defer_fn start;
};

const struct control_cmd *control_find_cmd(const char *name);
const struct control_deferred_cmd *control_find_deferred_cmd(const char *name);

#endif
