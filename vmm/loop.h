/* The main thread's event loop: epoll over sources that each carry their own
 * callback. Sources are embedded in their owners' structs. */
#ifndef VMM_LOOP_H
#define VMM_LOOP_H

#include <stddef.h>
#include <stdint.h>

#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

struct loop_source {
	int fd;
	void (*fn)(struct loop_source *src, uint32_t events);
};

struct loop {
	int epfd;
};

int loop_init(struct loop *loop);
void loop_close(struct loop *loop);
/* 0 or -errno. */
int loop_add(struct loop *loop, struct loop_source *src, uint32_t events);
/* Changes the events watched (0: only hang-ups and errors). 0 or -errno. */
int loop_mod(struct loop *loop, struct loop_source *src, uint32_t events);
void loop_del(struct loop *loop, struct loop_source *src);
/* Waits up to timeout_ms (-1: forever) and dispatches. 0 or -errno. */
int loop_run_once(struct loop *loop, int timeout_ms);

#endif
