/* Small helpers shared by every part of vmm: error reporting for start-up,
 * number and size parsing for the CLI, and a monotonic clock. */
#ifndef VMM_UTIL_H
#define VMM_UTIL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define KiB (1ULL << 10)
#define MiB (1ULL << 20)
#define GiB (1ULL << 30)

/* Only for start-up: prints "vmm: <msg>" and exits 1. */
void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
/* One line on stderr, prefixed "vmm: ". */
void log_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Writes a one-line reason into err (when err is not NULL) and returns rc:
 * for functions that report -errno plus a message. */
int errf(int rc, char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* "512M", "4G", "1024K", "4096" (bytes). Returns 0, -EINVAL or -ERANGE. */
int parse_size(const char *s, uint64_t *out);
/* Decimal unsigned integer in [min, max]. Returns 0, -EINVAL or -ERANGE. */
int parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out);

uint64_t now_ns(void);

/* pthread_create with every signal blocked in the new thread: SIGINT,
 * SIGTERM and SIGHUP must reach only the main loop's signalfd, or they kill
 * vmm without its tear-down (a thread that needs a signal, such as the
 * vCPUs' kick, unblocks it itself). 0 or -errno. */
int thread_create(pthread_t *t, void *(*fn)(void *), void *arg);

/* Writes all of buf, retrying on EINTR and short writes. 0 or -errno. */
int write_all(int fd, const void *buf, size_t len);

#endif
