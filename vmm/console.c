/* Host console; see console.h. */
#include "console.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

/* atexit() takes no argument, so the saved terminal state is the one piece
 * of process-wide state here: there is only one controlling terminal. */
static struct termios saved_termios;
static bool termios_saved;

void console_restore_terminal(void)
{
	if (termios_saved)
		tcsetattr(STDIN_FILENO, TCSANOW, &saved_termios);
	termios_saved = false;
}

static void make_raw(void)
{
	struct termios raw;

	if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &saved_termios))
		return;
	termios_saved = true;
	atexit(console_restore_terminal);
	raw = saved_termios;
	cfmakeraw(&raw);
	tcsetattr(STDIN_FILENO, TCSANOW, &raw);
}

int console_open(struct console *c, enum console_kind kind, const char *path, char *err,
		 size_t errlen)
{
	memset(c, 0, sizeof(*c));
	c->in_fd = -1;
	c->out_fd = -1;
	switch (kind) {
	case CONSOLE_STDIO:
		c->out_fd = STDOUT_FILENO;
		c->in_fd = STDIN_FILENO;
		make_raw();
		break;
	case CONSOLE_FILE:
		c->out_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (c->out_fd < 0) {
			snprintf(err, errlen, "--console: cannot open %s: %s", path, strerror(errno));
			return -errno;
		}
		c->close_out = true;
		break;
	case CONSOLE_NONE:
		break;
	}
	return 0;
}

void console_close(struct console *c)
{
	if (c->close_out)
		close(c->out_fd);
	c->out_fd = -1;
	console_restore_terminal();
}

void console_output(void *opaque, uint8_t byte)
{
	struct console *c = opaque;

	/* A closed or full console must not stop the guest: drop the byte. */
	if (c->out_fd >= 0)
		(void)write_all(c->out_fd, &byte, 1);
}

size_t console_filter(struct console *c, const uint8_t *in, size_t n, uint8_t *out, bool *quit)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		uint8_t b = in[i];

		if (c->escape_pending) {
			c->escape_pending = false;
			if (b == 'x' || b == 'X') {
				*quit = true;
				return o;
			}
			if (b == CONSOLE_ESCAPE)
				out[o++] = b;
			/* Any other key after Ctrl-A is swallowed, as in QEMU. */
		} else if (b == CONSOLE_ESCAPE) {
			c->escape_pending = true;
		} else {
			out[o++] = b;
		}
	}
	return o;
}
