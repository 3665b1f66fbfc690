/* JSON control socket server; see control.h. */
#include "control.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "control_cmds.h"
#include "util.h"

static json_t *error_reply(const char *msg)
{
	return json_pack("{s:b, s:s}", "ok", 0, "error", msg);
}

json_t *control_handle_line(struct vm *vm, const char *line, size_t len)
{
	json_error_t jerr;
	json_t *req, *reply, *cmd;
	const struct control_cmd *c;
	char err[256] = "";

	req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!req) {
		snprintf(err, sizeof(err), "malformed JSON: %s", jerr.text);
		return error_reply(err);
	}
	cmd = json_object_get(req, "cmd");
	if (!json_is_object(req) || !json_is_string(cmd)) {
		json_decref(req);
		return error_reply("request must be an object with a string \"cmd\"");
	}
	c = control_find_cmd(json_string_value(cmd));
	if (!c) {
		snprintf(err, sizeof(err), "unknown command '%.64s'", json_string_value(cmd));
		json_decref(req);
		return error_reply(err);
	}
	reply = c->fn(vm, req, err, sizeof(err));
	json_decref(req);
	if (!reply)
		return error_reply(err[0] ? err : "command failed");
	json_object_set_new(reply, "ok", json_true());
	return reply;
}

static void conn_close(struct control_conn *conn)
{
	loop_del(conn->ctl->loop, &conn->src);
	close(conn->src.fd);
	free(conn->buf);
	conn->buf = NULL;
	conn->len = 0;
	conn->src.fd = -1;
}

static int conn_reply(struct control_conn *conn, json_t *reply)
{
	char *text = json_dumps(reply, JSON_COMPACT);
	int rc;

	json_decref(reply);
	if (!text)
		return -ENOMEM;
	rc = write_all(conn->src.fd, text, strlen(text));
	if (!rc)
		rc = write_all(conn->src.fd, "\n", 1);
	free(text);
	return rc;
}

/* Answers every complete line in the buffer; keeps a partial one. */
static int conn_drain_lines(struct control_conn *conn)
{
	char *nl;

	while ((nl = memchr(conn->buf, '\n', conn->len))) {
		size_t line_len = (size_t)(nl - conn->buf);
		int rc = conn_reply(conn, control_handle_line(conn->ctl->vm, conn->buf, line_len));

		conn->len -= line_len + 1;
		memmove(conn->buf, nl + 1, conn->len);
		if (rc)
			return rc;
	}
	return 0;
}

static void conn_event(struct loop_source *src, uint32_t events)
{
	struct control_conn *conn = container_of(src, struct control_conn, src);
	ssize_t n;

	(void)events;
	n = read(src->fd, conn->buf + conn->len, CONTROL_MAX_REQUEST - conn->len);
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (n <= 0) {
		/* A last request without its newline still gets an answer. */
		if (n == 0 && conn->len)
			conn_reply(conn, control_handle_line(conn->ctl->vm, conn->buf, conn->len));
		conn_close(conn);
		return;
	}
	conn->len += (size_t)n;
	if (conn_drain_lines(conn)) {
		conn_close(conn);
		return;
	}
	if (conn->len == CONTROL_MAX_REQUEST) {
		conn_reply(conn, error_reply("request too long"));
		conn_close(conn);
	}
}

static void listen_event(struct loop_source *src, uint32_t events)
{
	struct control *ctl = container_of(src, struct control, listen);
	struct control_conn *conn = NULL;
	int fd;

	(void)events;
	fd = accept4(src->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0)
		return;
	for (int i = 0; i < CONTROL_MAX_CONNS; i++) {
		if (ctl->conns[i].src.fd < 0) {
			conn = &ctl->conns[i];
			break;
		}
	}
	if (!conn || !(conn->buf = malloc(CONTROL_MAX_REQUEST))) {
		static const char busy[] = "{\"ok\":false,\"error\":\"too many connections\"}\n";

		(void)write_all(fd, busy, sizeof(busy) - 1);
		close(fd);
		return;
	}
	conn->src.fd = fd;
	conn->src.fn = conn_event;
	conn->ctl = ctl;
	conn->len = 0;
	if (loop_add(ctl->loop, &conn->src, EPOLLIN)) {
		free(conn->buf);
		conn->buf = NULL;
		close(fd);
		conn->src.fd = -1;
	}
}

int control_open(struct control *ctl, const char *path, struct loop *loop, struct vm *vm,
		 char *err, size_t errlen)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct stat st;
	mode_t old_umask;
	int fd, rc;

	memset(ctl, 0, sizeof(*ctl));
	ctl->listen.fd = -1;
	for (int i = 0; i < CONTROL_MAX_CONNS; i++)
		ctl->conns[i].src.fd = -1;
	if (strlen(path) >= sizeof(addr.sun_path)) {
		snprintf(err, errlen, "--api-socket: path too long (at most %zu bytes)",
			 sizeof(addr.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	strcpy(addr.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		snprintf(err, errlen, "--api-socket: socket: %s", strerror(errno));
		return -errno;
	}
	/* A stale socket from a dead vmm would make bind fail; a live one is in use. */
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0) {
		close(fd);
		snprintf(err, errlen, "--api-socket: %s is in use by another process", path);
		return -EADDRINUSE;
	}
	if (lstat(path, &st) == 0 && !S_ISSOCK(st.st_mode)) {
		close(fd);
		snprintf(err, errlen, "--api-socket: %s exists and is not a socket", path);
		return -EEXIST;
	}
	unlink(path);
	old_umask = umask(0177); /* the socket is born 0600: no window where others can connect */
	rc = bind(fd, (struct sockaddr *)&addr, sizeof(addr));
	umask(old_umask);
	if (rc < 0 || listen(fd, 8) < 0) {
		rc = -errno;
		snprintf(err, errlen, "--api-socket: cannot listen on %s: %s", path, strerror(errno));
		close(fd);
		return rc;
	}
	ctl->listen.fd = fd;
	ctl->listen.fn = listen_event;
	ctl->loop = loop;
	ctl->vm = vm;
	ctl->path = strdup(path);
	return loop_add(loop, &ctl->listen, EPOLLIN);
}

void control_close(struct control *ctl)
{
	for (int i = 0; i < CONTROL_MAX_CONNS; i++)
		if (ctl->conns[i].src.fd >= 0)
			conn_close(&ctl->conns[i]);
	if (ctl->listen.fd >= 0) {
		close(ctl->listen.fd);
		unlink(ctl->path);
	}
	free(ctl->path);
	ctl->path = NULL;
	ctl->listen.fd = -1;
}
