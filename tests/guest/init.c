/*
 * /init of the test initramfs: the guest side of vmm's integration tests.
 *
 * The kernel command line chooses what init does:
 *
 *   vmm.job=NAME      what to run (default: shell)
 *   vmm.arg=STRING    argument of the job.  To pass spaces write
 *                     vmm.arg="a b c": the value then runs up to the LAST
 *                     double quote of the command line, so it may contain
 *                     double quotes itself; put it last.
 *
 * Jobs:
 *   hello     print "vmm-guest: hello", "vmm-guest: cpus=N" and
 *             "vmm-guest: memtotal-kib=N", then debug-exit 0
 *   boot      print "vmm-guest: booted", then debug-exit 0 (boot benchmark)
 *   exit      debug-exit with status vmm.arg (decimal 0-255)
 *   sh        /bin/sh -c "$vmm.arg", then debug-exit with its exit status
 *             (128+N if killed by signal N)
 *   poweroff  sync, reboot(RB_POWER_OFF)
 *   reboot    reboot(RB_AUTOBOOT)
 *   halt      reboot(RB_HALT_SYSTEM)
 *   shell     interactive /bin/sh on the console; power off when it exits
 *   anything else: print "vmm-guest: unknown job NAME", debug-exit 3
 *   (a bad vmm.arg for `exit` also debug-exits 3)
 *
 * I/O-port contract with the VMM (all byte-wide OUTs):
 *
 *   0x501  DEBUG-EXIT   writing byte B makes the VMM exit with status B.
 *                       (QEMU's isa-debug-exit device at iobase=0x501 makes
 *                       QEMU exit with (B << 1) | 1 instead.)
 *   0x502  BOOT-MARKER  writing any byte (init writes 123) makes the VMM
 *                       record the time elapsed since it started, like
 *                       Firecracker's boot timer.  It is the very first
 *                       thing init does, so it measures VMM start to
 *                       userspace entry.
 *
 * If a debug-exit write does not stop the machine (a VMM or QEMU without the
 * port), init says so and powers off instead.  init never returns: PID 1
 * exiting panics the kernel, which would hide the real outcome.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#define PORT_DEBUG_EXIT 0x501
#define PORT_BOOT_MARKER 0x502
#define BOOT_MARKER_VALUE 123
#define EXIT_USAGE 3

static int have_ports;

/* write(2) directly: stdio buffering could lose lines when we power off. */
static void say(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	for (char *p = buf; n > 0;) {
		ssize_t w = write(STDOUT_FILENO, p, (size_t)n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		p += w;
		n -= (int)w;
	}
}

static __attribute__((noreturn)) void hang(void)
{
	for (;;)
		pause();
}

/* write() to the console returns once the bytes are in the tty buffer; the
 * UART sends them later, by interrupt. Wait for that before the machine
 * stops, or the last lines never reach the host. */
static void drain_console(void)
{
	tcdrain(STDOUT_FILENO);
}

static __attribute__((noreturn)) void power_off(void)
{
	drain_console();
	sync();
	reboot(RB_POWER_OFF);
	say("vmm-guest: reboot(RB_POWER_OFF) failed: %s", strerror(errno));
	hang();
}

static __attribute__((noreturn)) void debug_exit(int status)
{
	say("vmm-guest: debug-exit %d", status);
	drain_console();
	if (have_ports)
		outb((unsigned char)status, PORT_DEBUG_EXIT);
	/* Only reached when nothing listens on the port. */
	say("vmm-guest: debug-exit port had no effect, powering off");
	power_off();
}

static void do_reboot(int cmd, const char *what)
{
	drain_console();
	sync();
	reboot(cmd);
	say("vmm-guest: reboot(%s) failed: %s", what, strerror(errno));
}

static void mount_one(const char *src, const char *dir, const char *type)
{
	mkdir(dir, 0755);
	/* EBUSY: the kernel already mounted it (devtmpfs automount). */
	if (mount(src, dir, type, MS_NOSUID, NULL) < 0 && errno != EBUSY)
		say("vmm-guest: mount %s on %s: %s", type, dir, strerror(errno));
}

/*
 * The kernel gives init /dev/console as fds 0-2 only if the initramfs has
 * that node.  Without it, reopen the console from devtmpfs so that at least
 * the output after the mounts is visible.
 */
static void ensure_console(void)
{
	int fd;

	if (fcntl(STDOUT_FILENO, F_GETFD) >= 0)
		return;
	fd = open("/dev/console", O_RDWR | O_NOCTTY);
	if (fd < 0)
		return;
	for (int i = 0; i < 3; i++)
		if (fd != i)
			dup2(fd, i);
	if (fd > 2)
		close(fd);
}

static char *read_file(const char *path)
{
	static char buf[8192];
	size_t len = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return NULL;
	while (len < sizeof(buf) - 1) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	buf[len] = '\0';
	return buf;
}

/*
 * Parses vmm.job and vmm.arg out of the command line, which is modified in
 * place.  Scanning is quote-aware so that "vmm.job=" inside a quoted arg is
 * not taken for a parameter.  Later occurrences win, as in the kernel.
 */
static void parse_cmdline(char *s, const char **job, const char **arg)
{
	char *p = s;

	while (*p) {
		while (*p == ' ' || *p == '\t' || *p == '\n')
			p++;
		if (!*p)
			break;
		if (strncmp(p, "vmm.arg=\"", 9) == 0) {
			char *start = p + 9, *end = strrchr(start, '"');
			if (end) {
				*end = '\0';
				*arg = start;
				p = end + 1;
				continue;
			}
			/* Unterminated quote: the rest of the line, like the kernel. */
			*arg = start;
			start[strcspn(start, "\n")] = '\0';
			break;
		}
		char *tok = p;
		int quoted = 0;
		while (*p && (quoted || (*p != ' ' && *p != '\t' && *p != '\n'))) {
			if (*p == '"')
				quoted = !quoted;
			p++;
		}
		if (*p)
			*p++ = '\0';
		if (strncmp(tok, "vmm.job=", 8) == 0)
			*job = tok + 8;
		else if (strncmp(tok, "vmm.arg=", 8) == 0)
			*arg = tok + 8;
	}
}

static long meminfo_kib(const char *field)
{
	char *s = read_file("/proc/meminfo");
	size_t flen = strlen(field);

	for (char *line = s; line && *line;) {
		if (strncmp(line, field, flen) == 0 && line[flen] == ':')
			return strtol(line + flen + 1, NULL, 10);
		line = strchr(line, '\n');
		if (line)
			line++;
	}
	return -1;
}

/* Waits for pid, reaping any orphans re-parented to us meanwhile. */
static int wait_for(pid_t pid)
{
	int st;

	for (;;) {
		pid_t r = waitpid(-1, &st, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return 255;
		}
		if (r != pid)
			continue;
		if (WIFEXITED(st))
			return WEXITSTATUS(st);
		if (WIFSIGNALED(st))
			return 128 + WTERMSIG(st);
	}
}

static __attribute__((noreturn)) void job_sh(const char *arg)
{
	pid_t pid = fork();

	if (pid < 0) {
		say("vmm-guest: fork: %s", strerror(errno));
		debug_exit(255);
	}
	if (pid == 0) {
		execl("/bin/sh", "sh", "-c", arg, (char *)NULL);
		say("vmm-guest: exec /bin/sh: %s", strerror(errno));
		_exit(127);
	}
	debug_exit(wait_for(pid));
}

static __attribute__((noreturn)) void job_shell(void)
{
	pid_t pid;

	say("vmm-guest: starting /bin/sh on the console; exit it to power off");
	pid = fork();
	if (pid < 0) {
		say("vmm-guest: fork: %s", strerror(errno));
		power_off();
	}
	if (pid == 0) {
		/* A controlling tty makes ^C and job control work in the shell. */
		int fd;

		setsid();
		fd = open("/dev/console", O_RDWR);
		if (fd >= 0) {
			ioctl(fd, TIOCSCTTY, 1);
			for (int i = 0; i < 3; i++)
				dup2(fd, i);
			if (fd > 2)
				close(fd);
		}
		execl("/bin/sh", "-sh", (char *)NULL);
		say("vmm-guest: exec /bin/sh: %s", strerror(errno));
		_exit(127);
	}
	wait_for(pid);
	say("vmm-guest: shell exited, powering off");
	power_off();
}

static int parse_status(const char *s)
{
	char *end;
	long v;

	if (!s || !*s)
		return -1;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v < 0 || v > 255)
		return -1;
	return (int)v;
}

int main(void)
{
	const char *job = NULL, *arg = NULL;
	char *cmdline;

	/* Before anything else, so that the benchmark sees userspace entry. */
	if (ioperm(PORT_DEBUG_EXIT, 2, 1) == 0) {
		have_ports = 1;
		outb(BOOT_MARKER_VALUE, PORT_BOOT_MARKER);
	}
	say("vmm-guest: init");
	if (!have_ports)
		say("vmm-guest: ioperm: %s", strerror(errno));

	mount_one("proc", "/proc", "proc");
	mount_one("sysfs", "/sys", "sysfs");
	mount_one("devtmpfs", "/dev", "devtmpfs");
	mount_one("tmpfs", "/tmp", "tmpfs");
	ensure_console();
	setenv("PATH", "/bin:/sbin:/usr/bin:/usr/sbin", 1);
	setenv("HOME", "/", 1);

	cmdline = read_file("/proc/cmdline");
	if (cmdline)
		parse_cmdline(cmdline, &job, &arg);
	else
		say("vmm-guest: cannot read /proc/cmdline: %s", strerror(errno));

	if (!job || !*job || strcmp(job, "shell") == 0)
		job_shell();

	if (strcmp(job, "hello") == 0) {
		say("vmm-guest: hello");
		say("vmm-guest: cpus=%ld", sysconf(_SC_NPROCESSORS_ONLN));
		say("vmm-guest: memtotal-kib=%ld", meminfo_kib("MemTotal"));
		debug_exit(0);
	} else if (strcmp(job, "boot") == 0) {
		say("vmm-guest: booted");
		debug_exit(0);
	} else if (strcmp(job, "exit") == 0) {
		int st = parse_status(arg);
		if (st < 0) {
			say("vmm-guest: exit needs vmm.arg=0..255, got '%s'", arg ? arg : "");
			debug_exit(EXIT_USAGE);
		}
		debug_exit(st);
	} else if (strcmp(job, "sh") == 0) {
		job_sh(arg ? arg : "");
	} else if (strcmp(job, "poweroff") == 0) {
		say("vmm-guest: powering off");
		power_off();
	} else if (strcmp(job, "reboot") == 0) {
		say("vmm-guest: rebooting");
		do_reboot(RB_AUTOBOOT, "RB_AUTOBOOT");
	} else if (strcmp(job, "halt") == 0) {
		say("vmm-guest: halting");
		do_reboot(RB_HALT_SYSTEM, "RB_HALT_SYSTEM");
	} else {
		say("vmm-guest: unknown job %s", job);
		debug_exit(EXIT_USAGE);
	}
	hang();
}
