/* The host side of the serial console: guest output to stdout or a file,
 * host stdin (raw mode on a terminal) to the UART, and QEMU's Ctrl-A escape. */
#ifndef VMM_CONSOLE_H
#define VMM_CONSOLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <termios.h>

#include "config.h"

#define CONSOLE_ESCAPE 0x01 /* Ctrl-A */

struct console {
	int out_fd;
	bool close_out;
	int in_fd;           /* -1 when there is no input */
	bool escape_pending; /* the previous byte was Ctrl-A */
	uint8_t pending[256]; /* filtered input the UART could not take yet */
	size_t npending;
};

/* 0, or -errno with a reason in err. Puts a terminal on stdin in raw mode
 * and restores it at exit. */
int console_open(struct console *c, enum console_kind kind, const char *path, char *err,
		 size_t errlen);
void console_close(struct console *c);
/* UART output callback. */
void console_output(void *opaque, uint8_t byte);
/* Applies the escape rules to in[0..n): writes what goes to the guest into
 * out (at least n bytes) and returns its length; sets *quit on Ctrl-A x. */
size_t console_filter(struct console *c, const uint8_t *in, size_t n, uint8_t *out, bool *quit);
/* Restores the terminal; safe to call more than once. */
void console_restore_terminal(void);

#endif
