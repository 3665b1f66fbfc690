/* The JSON control socket (--api-socket): newline-delimited JSON requests
 * {"cmd": NAME, ...} and replies {"ok": true, ...} or {"ok": false,
 * "error": "..."}. Served on the main thread's event loop. */
#ifndef VMM_CONTROL_H
#define VMM_CONTROL_H

#include <jansson.h>
#include <stddef.h>

#include "loop.h"

#define CONTROL_MAX_CONNS 8
#define CONTROL_MAX_REQUEST 65536

struct vm;

struct control_conn {
	struct loop_source src;
	struct control *ctl;
	char *buf;
	size_t len;
};

struct control {
	struct loop_source listen;
	struct loop *loop;
	struct vm *vm;
	char *path;
	struct control_conn conns[CONTROL_MAX_CONNS];
};

/* A command handler returns the reply's fields, or NULL with a message in err. */
typedef json_t *(*control_cmd_fn)(struct vm *vm, json_t *req, char *err, size_t errlen);

/* Creates the socket (mode 0600). 0 or -errno with a reason in err. */
int control_open(struct control *ctl, const char *path, struct loop *loop, struct vm *vm,
		 char *err, size_t errlen);
void control_close(struct control *ctl);
/* Handles one request line; returns the reply (never NULL). Exposed for tests. */
json_t *control_handle_line(struct vm *vm, const char *line, size_t len);

#endif
