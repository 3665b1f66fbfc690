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
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "control_cmds.h"
#include "util.h"

/* Length of the UTF-8 sequence at s if it is one jansson accepts (no
 * overlong forms, surrogates or code points above U+10FFFF), else 0. The
 * NUL terminator is no continuation byte, so it stops a sequence. */
static size_t utf8_len(const unsigned char *s)
{
	uint32_t c;
	size_t n;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		n = 2;
		c = s[0] & 0x1f;
	} else if ((s[0] & 0xf0) == 0xe0) {
		n = 3;
		c = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		n = 4;
		c = s[0] & 0x07;
	} else {
		return 0;
	}
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = c << 6 | (s[i] & 0x3f);
	}
	if ((n == 3 && c < 0x800) || (n == 4 && (c < 0x10000 || c > 0x10ffff)) ||
	    (c >= 0xd800 && c <= 0xdfff))
		return 0;
	return n;
}

/* Error messages quote the client's bytes (jansson's "invalid escape near
 * '...'", "unknown command '%.64s'" cut inside a character), and json_pack
 * refuses a string that is not valid UTF-8: the reply would be NULL, which
 * the caller takes for a deferred command whose hooks were never set. So
 * each byte that starts no valid sequence becomes '?'. The messages come
 * from err buffers of 256 bytes, which is all that is kept. */
static json_t *error_reply(const char *msg)
{
	char clean[256];
	size_t n;

	snprintf(clean, sizeof(clean), "%s", msg);
	for (unsigned char *p = (unsigned char *)clean; *p; p += n) {
		n = utf8_len(p);
		if (!n) {
			*p = '?';
			n = 1;
		}
	}
	return json_pack("{s:b, s:s}", "ok", 0, "error", clean);
}

json_t *control_handle_line(struct vm *vm, const char *line, size_t len,
			    struct control_deferred *d)
{
	json_error_t jerr;
	json_t *req, *reply = NULL, *cmd;
	const struct control_deferred_cmd *dc;
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
	dc = control_find_deferred_cmd(json_string_value(cmd));
	if (!c && !dc) {
		snprintf(err, sizeof(err), "unknown command '%.64s'", json_string_value(cmd));
		json_decref(req);
		return error_reply(err);
	}
	if (dc) {
		*d = (struct control_deferred){ .fd = -1 };
		if (dc->start(vm, req, d, err, sizeof(err)) == 0) {
			json_decref(req);
			return NULL;
		}
	} else {
		reply = c->fn(vm, req, err, sizeof(err));
	}
	json_decref(req);
	if (!reply)
		return error_reply(err[0] ? err : "command failed");
	json_object_set_new(reply, "ok", json_true());
	return reply;
}

json_t *control_deferred_reply(struct control_deferred *d, int rc, json_t *reply,
			       const char *err)
{
	if (rc || !reply) {
		json_decref(reply);
		reply = error_reply(rc && err[0] ? err : "command failed");
	} else {
		if (d->extra)
			json_object_update(reply, d->extra);
		json_object_set_new(reply, "ok", json_true());
	}
	json_decref(d->extra);
	d->extra = NULL;
	return reply;
}

/* Arms the timer for the earliest deadline of any client (or disarms it). */
static void rearm(struct control *ctl)
{
	struct itimerspec its = { 0 };
	uint64_t first = UINT64_MAX;

	for (int i = 0; i < CONTROL_MAX_CONNS; i++) {
		const struct control_conn *c = &ctl->conns[i];
		uint64_t t = c->waiting ? c->d_deadline : c->idle_deadline;

		if (c->src.fd >= 0 && t < first)
			first = t;
	}
	if (first != UINT64_MAX) {
		its.it_value.tv_sec = (time_t)(first / 1000000000ULL);
		its.it_value.tv_nsec = (long)(first % 1000000000ULL);
	}
	timerfd_settime(ctl->timer.fd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void conn_close(struct control_conn *conn)
{
	if (conn->waiting) {
		/* Nobody will read the reply: the work ends now. */
		if (conn->d.fd >= 0)
			loop_del(conn->ctl->loop, &conn->done);
		conn->d.cancel(conn->ctl->vm);
		json_decref(conn->d.extra);
		conn->d.extra = NULL;
		conn->waiting = false;
	}
	loop_del(conn->ctl->loop, &conn->src);
	close(conn->src.fd);
	free(conn->buf);
	conn->buf = NULL;
	conn->len = 0;
	conn->src.fd = -1;
}

/* Closes the client from one of its events, and rearms for the others. */
static void conn_drop(struct control_conn *conn)
{
	conn_close(conn);
	rearm(conn->ctl);
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

/* Waits for the deferred reply in conn->d: no further request of this
 * client is read meanwhile (the replies keep their order), but a client
 * that hangs up is still seen (EPOLLHUP comes without asking). */
static int conn_defer(struct control_conn *conn)
{
	struct control_deferred *d = &conn->d;

	conn->done = (struct loop_source){ .fd = d->fd, .fn = conn->done.fn };
	if (d->fd >= 0 && loop_add(conn->ctl->loop, &conn->done, EPOLLIN))
		d->fd = -1; /* the deadline still ends it */
	conn->waiting = true;
	conn->d_deadline = now_ns() + (uint64_t)d->timeout_ms * 1000000ULL;
	return loop_mod(conn->ctl->loop, &conn->src, 0);
}

/* Answers every complete line in the buffer, until one defers its reply;
 * keeps a partial line. */
static int conn_drain_lines(struct control_conn *conn)
{
	char *nl;

	while (!conn->waiting && (nl = memchr(conn->buf, '\n', conn->len))) {
		size_t line_len = (size_t)(nl - conn->buf);
		json_t *reply = control_handle_line(conn->ctl->vm, conn->buf, line_len, &conn->d);
		int rc = reply ? conn_reply(conn, reply) : conn_defer(conn);

		conn->len -= line_len + 1;
		memmove(conn->buf, nl + 1, conn->len);
		conn->idle_deadline = now_ns() + conn->ctl->idle_ns;
		if (rc)
			return rc;
	}
	return 0;
}

/* After a reply: the next requests, or the end of a client that is done. */
static void conn_continue(struct control_conn *conn)
{
	if (conn_drain_lines(conn) || (!conn->waiting && conn->eof))
		conn_close(conn);
	else if (!conn->waiting && loop_mod(conn->ctl->loop, &conn->src, EPOLLIN))
		conn_close(conn);
	rearm(conn->ctl);
}

/* Asks the deferred work whether it is done (or out of time); replies if so. */
static void conn_poll(struct control_conn *conn, bool timed_out)
{
	struct control_deferred *d = &conn->d;
	json_t *reply = NULL;
	char err[256] = "";
	int rc = d->poll(conn->ctl->vm, d, timed_out, &reply, err, sizeof(err));

	if (rc == -EINPROGRESS && !timed_out)
		return;
	if (d->fd >= 0)
		loop_del(conn->ctl->loop, &conn->done);
	conn->waiting = false;
	conn->idle_deadline = now_ns() + conn->ctl->idle_ns;
	if (conn_reply(conn, control_deferred_reply(d, rc, reply, err)))
		conn_drop(conn);
	else
		conn_continue(conn);
}

static void done_event(struct loop_source *src, uint32_t events)
{
	struct control_conn *conn = container_of(src, struct control_conn, done);

	(void)events;
	/* An event from the same epoll batch as the client's closing. */
	if (conn->waiting)
		conn_poll(conn, false);
}

static void conn_event(struct loop_source *src, uint32_t events)
{
	struct control_conn *conn = container_of(src, struct control_conn, src);
	ssize_t n;

	if (conn->waiting) {
		/* Only a hang-up is reported while waiting: nobody wants the reply. */
		if (events & (EPOLLHUP | EPOLLERR))
			conn_drop(conn);
		return;
	}
	n = read(src->fd, conn->buf + conn->len, CONTROL_MAX_REQUEST - conn->len);
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (n < 0) {
		conn_drop(conn);
		return;
	}
	if (n == 0) {
		/* A last request without its newline still gets an answer. */
		conn->eof = true;
		if (conn->len)
			conn->buf[conn->len++] = '\n';
	}
	conn->len += (size_t)n;
	if (conn->len == CONTROL_MAX_REQUEST && !memchr(conn->buf, '\n', conn->len)) {
		conn_reply(conn, error_reply("request too long"));
		conn_drop(conn);
		return;
	}
	conn_continue(conn);
}

static void timer_event(struct loop_source *src, uint32_t events)
{
	struct control *ctl = container_of(src, struct control, timer);
	uint64_t now = now_ns(), v;

	(void)events;
	(void)!read(src->fd, &v, sizeof(v));
	for (int i = 0; i < CONTROL_MAX_CONNS; i++) {
		struct control_conn *c = &ctl->conns[i];

		if (c->src.fd < 0)
			continue;
		if (c->waiting && now >= c->d_deadline)
			conn_poll(c, true);
		else if (!c->waiting && now >= c->idle_deadline)
			conn_close(c);
	}
	rearm(ctl);
}

static void listen_event(struct loop_source *src, uint32_t events)
{
	struct control *ctl = container_of(src, struct control, listen);
	struct control_conn *conn = NULL;
	char *buf;
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
	buf = conn ? malloc(CONTROL_MAX_REQUEST) : NULL;
	if (!buf) {
		char busy[160];

		snprintf(busy, sizeof(busy),
			 "{\"ok\":false,\"error\":\"too many control connections (at most %d; a client "
			 "idle for %llu s is closed)\"}\n",
			 CONTROL_MAX_CONNS, (unsigned long long)(ctl->idle_ns / 1000000000ULL));
		(void)write_all(fd, busy, strlen(busy));
		close(fd);
		return;
	}
	*conn = (struct control_conn){
		.src = { .fd = fd, .fn = conn_event },
		.ctl = ctl,
		.buf = buf,
		.idle_deadline = now_ns() + ctl->idle_ns,
		.done = { .fd = -1, .fn = done_event },
	};
	if (loop_add(ctl->loop, &conn->src, EPOLLIN)) {
		free(conn->buf);
		conn->buf = NULL;
		close(fd);
		conn->src.fd = -1;
	}
	rearm(ctl);
}

int control_open(struct control *ctl, const char *path, unsigned idle_s, struct loop *loop,
		 struct vm *vm, char *err, size_t errlen)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct stat st;
	mode_t old_umask;
	int fd, rc;

	memset(ctl, 0, sizeof(*ctl));
	ctl->listen.fd = ctl->timer.fd = -1;
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
	if (rc < 0 || listen(fd, 16) < 0) {
		rc = -errno;
		snprintf(err, errlen, "--api-socket: cannot listen on %s: %s", path, strerror(errno));
		close(fd);
		return rc;
	}
	ctl->listen.fd = fd;
	ctl->listen.fn = listen_event;
	ctl->loop = loop;
	ctl->vm = vm;
	ctl->idle_ns = (uint64_t)idle_s * 1000000000ULL;
	ctl->path = strdup(path);
	/* Idle clients and deferred replies end on this timer. */
	ctl->timer = (struct loop_source){ .fn = timer_event };
	ctl->timer.fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (ctl->timer.fd < 0 || loop_add(loop, &ctl->timer, EPOLLIN)) {
		snprintf(err, errlen, "--api-socket: timerfd: %s", strerror(errno));
		return -errno;
	}
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
	if (ctl->timer.fd >= 0)
		close(ctl->timer.fd);
	free(ctl->path);
	ctl->path = NULL;
	ctl->listen.fd = -1;
	ctl->timer.fd = -1;
}
