/* Control socket client and the subcommands built on it; see client.h. */
#include "client.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "control.h"
#include "util.h"

static int connect_socket(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(addr.sun_path)) {
		snprintf(err, errlen, "socket path too long: %s", path);
		return -ENAMETOOLONG;
	}
	strcpy(addr.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		int rc = -errno;

		snprintf(err, errlen, "cannot connect to %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return rc;
	}
	return fd;
}

static int read_reply_line(int fd, int timeout_ms, char *buf, size_t size, char *err,
			   size_t errlen)
{
	size_t len = 0;
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000ULL;

	while (len < size - 1) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int64_t left_ms = ((int64_t)deadline - (int64_t)now_ns()) / 1000000;
		ssize_t n;

		if (left_ms <= 0 || poll(&pfd, 1, (int)left_ms) == 0) {
			snprintf(err, errlen, "no reply within %d ms", timeout_ms);
			return -ETIMEDOUT;
		}
		n = read(fd, buf + len, size - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			snprintf(err, errlen, "connection closed before a reply");
			return -ECONNRESET;
		}
		len += (size_t)n;
		if (memchr(buf, '\n', len))
			break;
	}
	buf[len] = '\0';
	return (int)len;
}

int client_request(const char *path, json_t *req, int timeout_ms, json_t **reply, char *err,
		   size_t errlen)
{
	char *text = json_dumps(req, JSON_COMPACT);
	char *buf = malloc(CONTROL_MAX_REQUEST);
	json_error_t jerr;
	int fd, rc;

	if (!text || !buf) {
		free(text);
		free(buf);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	fd = connect_socket(path, err, errlen);
	rc = fd;
	if (fd >= 0) {
		rc = write_all(fd, text, strlen(text));
		if (!rc)
			rc = write_all(fd, "\n", 1);
		if (rc)
			snprintf(err, errlen, "cannot send to %s: %s", path, strerror(-rc));
		else
			rc = read_reply_line(fd, timeout_ms, buf, CONTROL_MAX_REQUEST, err, errlen);
		close(fd);
	}
	if (rc >= 0) {
		*reply = json_loads(buf, JSON_DISABLE_EOF_CHECK, &jerr);
		rc = 0;
		if (!*reply || !json_is_object(*reply)) {
			snprintf(err, errlen, "malformed reply from %s", path);
			json_decref(*reply);
			rc = -EPROTO;
		}
	}
	free(text);
	free(buf);
	return rc;
}

/* Sends req to the socket, prints the reply (pretty JSON, or through
 * print when it is set and the reply is ok) and returns the exit status. */
static int request_and_print(const char *what, const char *path, json_t *req, int timeout_ms,
			     void (*print)(json_t *reply))
{
	json_t *reply;
	char err[256];
	char *text;
	int rc = client_request(path, req, timeout_ms, &reply, err, sizeof(err));

	json_decref(req);
	if (rc) {
		log_err("%s: %s", what, err);
		return 1;
	}
	if (!json_is_true(json_object_get(reply, "ok"))) {
		log_err("%s: %s", what, json_string_value(json_object_get(reply, "error")) ?: "failed");
		json_decref(reply);
		return 1;
	}
	if (json_is_string(json_object_get(reply, "note")))
		log_err("%s: note: %s", what, json_string_value(json_object_get(reply, "note")));
	if (print) {
		print(reply);
	} else {
		text = json_dumps(reply, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		printf("%s\n", text ? text : "{}");
		free(text);
	}
	json_decref(reply);
	return 0;
}

int client_balloon_main(int argc, char **argv)
{
	uint64_t size;

	if (argc == 3 && !strcmp(argv[2], "--stats"))
		return request_and_print("balloon", argv[1], json_pack("{s:s}", "cmd", "balloon-stats"),
					 5000, NULL);
	if (argc == 4 && !strcmp(argv[2], "--set")) {
		if (parse_size(argv[3], &size)) {
			log_err("balloon: --set: '%s' is not a size (examples: 128M, 1G)", argv[3]);
			return 2;
		}
		return request_and_print("balloon", argv[1],
					 json_pack("{s:s, s:I}", "cmd", "balloon", "size", (json_int_t)size),
					 5000, NULL);
	}
	fprintf(stderr, "usage: vmm balloon SOCKET --set SIZE   (SIZE: the balloon's size, i.e. memory taken from the guest)\n"
			"       vmm balloon SOCKET --stats\n");
	return 2;
}

static void print_hint(json_t *reply)
{
	json_int_t bytes = json_integer_value(json_object_get(reply, "bytes"));

	printf("hint round %lld: %lld ranges, %lld bytes (%.1f MiB), %.1f ms\n",
	       (long long)json_integer_value(json_object_get(reply, "cmd_id")),
	       (long long)json_integer_value(json_object_get(reply, "ranges")), (long long)bytes,
	       (double)bytes / (1 << 20), json_real_value(json_object_get(reply, "elapsed_ms")));
	if (json_is_true(json_object_get(reply, "drop_cache")))
		printf("  the guest dropped its clean caches first\n");
}

int client_hint_main(int argc, char **argv)
{
	uint64_t timeout_ms = 10000;
	bool json = false, drop = false;

	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--json")) {
			json = true;
		} else if (!strcmp(argv[i], "--drop-cache")) {
			drop = true;
		} else if (!strcmp(argv[i], "--timeout-ms") && i + 1 < argc &&
			   !parse_uint(argv[i + 1], 1, 600000, &timeout_ms)) {
			i++;
		} else {
			argc = 0;
			break;
		}
	}
	if (argc < 2 || argv[1][0] == '-') {
		fprintf(stderr, "usage: vmm hint SOCKET [--timeout-ms N] [--drop-cache] [--json]\n");
		return 2;
	}
	return request_and_print("hint", argv[1],
				 json_pack("{s:s, s:I, s:b}", "cmd", "hint", "timeout_ms",
					   (json_int_t)timeout_ms, "drop_cache", drop),
				 (int)timeout_ms + 5000, json ? NULL : print_hint);
}

/* `vmm pause SOCKET`, `vmm resume SOCKET [--force]`. */
int client_simple_main(int argc, char **argv)
{
	bool force = argc == 3 && !strcmp(argv[0], "resume") && !strcmp(argv[2], "--force");
	json_t *req;

	if ((argc != 2 && !force) || argv[1][0] == '-') {
		fprintf(stderr, "usage: vmm %s SOCKET%s\n", argv[0],
			strcmp(argv[0], "resume") ? "" : " [--force]");
		return 2;
	}
	req = json_pack("{s:s}", "cmd", argv[0]);
	if (force)
		json_object_set_new(req, "force", json_true());
	return request_and_print(argv[0], argv[1], req, 10000, NULL);
}

int client_status_main(int argc, char **argv)
{
	if (argc != 2 || argv[1][0] == '-') {
		fprintf(stderr, "usage: vmm status SOCKET\n");
		return 2;
	}
	return request_and_print("status", argv[1], json_pack("{s:s}", "cmd", "status"), 5000, NULL);
}
