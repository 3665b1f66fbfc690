/* The commands the control socket understands, one handler each. */
#ifndef VMM_CONTROL_CMDS_H
#define VMM_CONTROL_CMDS_H

#include "control.h"

struct control_cmd {
	const char *name;
	control_cmd_fn fn;
};

const struct control_cmd *control_find_cmd(const char *name);

#endif
