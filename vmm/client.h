/* The `vmm` subcommands that talk to a running vmm over its control socket. */
#ifndef VMM_CLIENT_H
#define VMM_CLIENT_H

#include <jansson.h>
#include <stddef.h>

/* Sends req, waits up to timeout_ms for the reply. 0 with *reply set, or
 * -errno with a reason in err. A reply with "ok": false is returned as is. */
int client_request(const char *path, json_t *req, int timeout_ms, json_t **reply, char *err,
		   size_t errlen);

int client_status_main(int argc, char **argv);
/* `vmm pause SOCKET` and `vmm resume SOCKET`: argv[0] is the command. */
int client_simple_main(int argc, char **argv);
int client_balloon_main(int argc, char **argv);
int client_hint_main(int argc, char **argv);
int client_migrate_main(int argc, char **argv);

#endif
