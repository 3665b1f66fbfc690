/* Control socket client and the subcommands built on it; see client.h. */
#include "client.h"

#include <errno.h>
#include <poll.h>
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

int client_status_main(int argc, char **argv)
{
	json_t *req, *reply;
	char err[256];
	char *text;
	int rc;

	if (argc != 2 || argv[1][0] == '-') {
		fprintf(stderr, "usage: vmm status SOCKET\n");
		return 2;
	}
	req = json_pack("{s:s}", "cmd", "status");
	rc = client_request(argv[1], req, 5000, &reply, err, sizeof(err));
	json_decref(req);
	if (rc) {
		log_err("status: %s", err);
		return 1;
	}
	text = json_dumps(reply, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	printf("%s\n", text ? text : "{}");
	free(text);
	if (!json_is_true(json_object_get(reply, "ok"))) {
		json_decref(reply);
		return 1;
	}
	json_decref(reply);
	return 0;
}
