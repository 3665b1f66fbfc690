/* Compression workers (see compress_pool.h). */
#include "migrate/compress_pool.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "vmm/util.h"

static void run_job(struct zworker *w, struct zjob *j)
{
	size_t ps = w->pool->page_size;
	uint64_t t0 = now_ns();

	for (unsigned i = 0; i < j->npages; i++)
		memcpy(w->staging + i * ps, j->src[i], ps);
	j->len = ram_compress(&w->zc, w->staging, j->npages * ps, j->dst, j->cap);
	j->ns = now_ns() - t0;
}

static void *worker_thread(void *arg)
{
	struct zworker *w = arg;
	struct zpool *p = w->pool;
	char name[16];

	snprintf(name, sizeof(name), "zstd-%u", (unsigned)(w - p->w));
	pthread_setname_np(pthread_self(), name);
	pthread_mutex_lock(&p->lock);
	for (;;) {
		struct zjob *j;

		while (!p->head && !p->quit)
			pthread_cond_wait(&p->work, &p->lock);
		if (p->quit)
			break;
		j = p->head;
		p->head = j->next;
		if (!p->head)
			p->tail = NULL;
		pthread_mutex_unlock(&p->lock);
		run_job(w, j);
		pthread_mutex_lock(&p->lock);
		/* Under the lock, so a waiter cannot miss the broadcast. */
		atomic_store_explicit(&j->done, true, memory_order_release);
		pthread_cond_broadcast(&p->done);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

int zpool_init(struct zpool *p, unsigned nthreads, size_t page_size, int level, bool checksum)
{
	int rc = 0;

	memset(p, 0, sizeof(*p));
	if (!nthreads || nthreads > ZPOOL_MAX_THREADS || !page_size)
		return -EINVAL;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->work, NULL);
	pthread_cond_init(&p->done, NULL);
	p->page_size = page_size;
	p->init = true;
	for (unsigned i = 0; i < nthreads && !rc; i++) {
		struct zworker *w = &p->w[i];

		w->pool = p;
		p->nthreads = i + 1;
		if (!(w->staging = ram_buf_alloc(ZPOOL_MAX_PAGES * page_size)) ||
		    ram_compressor_init(&w->zc, level)) {
			rc = -ENOMEM;
			break;
		}
		w->zc_on = true;
		ram_compressor_set_checksum(&w->zc, checksum);
		rc = thread_create(&w->thread, worker_thread, w);
		w->started = !rc;
	}
	if (rc)
		zpool_free(p);
	return rc;
}

void zpool_submit(struct zpool *p, struct zjob *j)
{
	atomic_store_explicit(&j->done, false, memory_order_relaxed);
	j->next = NULL;
	pthread_mutex_lock(&p->lock);
	if (p->tail)
		p->tail->next = j;
	else
		p->head = j;
	p->tail = j;
	pthread_cond_signal(&p->work);
	pthread_mutex_unlock(&p->lock);
}

bool zjob_done(const struct zjob *j)
{
	return atomic_load_explicit(&j->done, memory_order_acquire);
}

ssize_t zpool_wait(struct zpool *p, struct zjob *j)
{
	if (!zjob_done(j)) {
		pthread_mutex_lock(&p->lock);
		while (!zjob_done(j))
			pthread_cond_wait(&p->done, &p->lock);
		pthread_mutex_unlock(&p->lock);
	}
	return j->len;
}

void zpool_free(struct zpool *p)
{
	if (!p->init)
		return;
	pthread_mutex_lock(&p->lock);
	p->quit = true;
	pthread_cond_broadcast(&p->work);
	pthread_mutex_unlock(&p->lock);
	for (unsigned i = 0; i < p->nthreads; i++) {
		struct zworker *w = &p->w[i];

		if (w->started)
			pthread_join(w->thread, NULL);
		if (w->zc_on)
			ram_compressor_free(&w->zc);
		ram_buf_free(w->staging, ZPOOL_MAX_PAGES * p->page_size);
	}
	pthread_cond_destroy(&p->done);
	pthread_cond_destroy(&p->work);
	pthread_mutex_destroy(&p->lock);
	p->init = false;
}
