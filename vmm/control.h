/* The JSON control socket (--api-socket): newline-delimited JSON requests
 * {"cmd": NAME, ...} and replies {"ok": true, ...} or {"ok": false,
 * "error": "..."}. Served on the main thread's event loop. */
#ifndef VMM_CONTROL_H
#define VMM_CONTROL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loop.h"

/* Clients at once; one more is told so in one JSON line and closed.
 * Clients that send no complete request for a while are closed (see
 * control_open), so idle ones cannot keep the others out for long. */
#define CONTROL_MAX_CONNS 32
#define CONTROL_MAX_REQUEST 65536

struct vm;

/* A command that cannot answer at once (a hint round waits for the guest)
 * starts its work and fills this in instead of replying; the main loop
 * then watches fd and the deadline and sends the reply once poll has it,
 * so no command holds the loop (signals, other clients) meanwhile. */
struct control_deferred {
	int fd;         /* readable when the work may have ended (poll drains it), or -1 */
	int timeout_ms; /* then poll is called with timed_out */
	/* -EINPROGRESS to go on waiting (never when timed_out), 0 with the
	 * reply's fields in *reply, or -errno with a reason in err. */
	int (*poll)(struct vm *vm, const struct control_deferred *d, bool timed_out, json_t **reply,
		    char *err, size_t errlen);
	/* The client went away, or vmm stops, before the reply: end the work. */
	void (*cancel)(struct vm *vm);
	json_t *extra;  /* fields added to a successful reply (owned), or NULL */
};

struct control_conn {
	struct loop_source src;
	struct control *ctl;
	char *buf;
	size_t len;
	bool eof;                /* the client sent all it will */
	uint64_t idle_deadline;  /* now_ns() by which a complete request must come */
	bool waiting;            /* for the deferred reply below */
	struct control_deferred d;
	uint64_t d_deadline;
	struct loop_source done; /* d.fd while waiting */
};

struct control {
	struct loop_source listen;
	struct loop_source timer; /* timerfd at the earliest deadline of any client */
	struct loop *loop;
	struct vm *vm;
	char *path;
	uint64_t idle_ns;
	struct control_conn conns[CONTROL_MAX_CONNS];
};

/* A command handler returns the reply's fields, or NULL with a message in err. */
typedef json_t *(*control_cmd_fn)(struct vm *vm, json_t *req, char *err, size_t errlen);
/* A deferring handler: 0 once the work started and d is filled in, or
 * -errno with a message in err (the reply is then that error). */
typedef int (*control_defer_fn)(struct vm *vm, json_t *req, struct control_deferred *d, char *err,
				size_t errlen);

/* Creates the socket (mode 0600); clients idle for idle_s seconds are
 * closed. 0 or -errno with a reason in err. */
int control_open(struct control *ctl, const char *path, unsigned idle_s, struct loop *loop,
		 struct vm *vm, char *err, size_t errlen);
/* Closes every client (cancelling deferred work) and removes the socket. */
void control_close(struct control *ctl);
/* Handles one request line: returns the reply, or NULL when the command
 * deferred it (d is then filled in; see struct control_deferred). */
json_t *control_handle_line(struct vm *vm, const char *line, size_t len,
			    struct control_deferred *d);
/* The reply of deferred work whose poll returned rc (with *reply, or err). */
json_t *control_deferred_reply(struct control_deferred *d, int rc, json_t *reply,
			       const char *err);

#endif
