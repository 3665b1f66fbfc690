/* memcheck: a guest workload for live-migration tests. It fills MIB MiB
 * with a pattern it can verify, keeps rewriting pages at RATE pages per
 * second (default 1000, 0: never), and verifies every page in a loop,
 * printing one line per full pass:
 *
 *   memcheck: PASS pass=N pages=P rewrites=W
 *   memcheck: FAIL page=I expected version V ...
 *
 * Each page holds its index and a version in every 64-bit word, so a page
 * that arrives stale, zeroed or from elsewhere is caught. The host
 * migrates the guest while this runs and looks for PASS lines after each
 * hop. RATE `max` rewrites with no rate limit: one page (7919 pages
 * further on each time, so the writes spread over all of MIB) after each
 * page it verifies, so a pass rewrites MIB MiB and still ends with its
 * PASS line (scripts/soak-migrate's guest).
 * Usage: memcheck MIB [RATE|max] (static, tests/guest/). */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096

static uint64_t word(uint64_t page, uint32_t version, unsigned i)
{
	return (page << 32 | version) ^ (i * 0x9e3779b97f4a7c15ULL);
}

static void fill(uint64_t *p, uint64_t page, uint32_t version)
{
	for (unsigned i = 0; i < PAGE / 8; i++)
		p[i] = word(page, version, i);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	uint64_t npages, rate, rewrites = 0, pass = 0, next = 0;
	uint32_t *version;
	uint8_t *mem;
	bool max;
	double t0;

	if (argc < 2 || atoi(argv[1]) <= 0) {
		fprintf(stderr, "usage: memcheck MIB [REWRITES_PER_SECOND|max]\n");
		return 2;
	}
	npages = (uint64_t)atoi(argv[1]) * 256;
	max = argc > 2 && !strcmp(argv[2], "max");
	rate = max ? 0 : argc > 2 ? (uint64_t)atoll(argv[2]) : 1000;
	mem = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	version = calloc(npages, sizeof(*version));
	if (mem == MAP_FAILED || !version) {
		perror("memcheck");
		return 1;
	}
	for (uint64_t p = 0; p < npages; p++)
		fill((uint64_t *)(mem + p * PAGE), p, 0);
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("memcheck: filled %llu MiB\n", (unsigned long long)(npages / 256));
	t0 = now();
	for (;;) {
		for (uint64_t p = 0; p < npages; p++) {
			const uint64_t *w = (const uint64_t *)(mem + p * PAGE);

			/* Rewrite a few pages on the way, at the set rate. */
			while (rate && (double)rewrites < (now() - t0) * (double)rate) {
				version[next]++;
				fill((uint64_t *)(mem + next * PAGE), next, version[next]);
				next = (next + 7919) % npages;
				rewrites++;
			}
			for (unsigned i = 0; i < PAGE / 8; i++) {
				if (w[i] != word(p, version[p], i)) {
					printf("memcheck: FAIL page=%llu word=%u expected version %u, "
					       "found %016llx\n", (unsigned long long)p, i, version[p],
					       (unsigned long long)w[i]);
					return 1;
				}
			}
			/* No rate limit: one rewrite per verified page. */
			if (max) {
				version[next]++;
				fill((uint64_t *)(mem + next * PAGE), next, version[next]);
				next = (next + 7919) % npages;
				rewrites++;
			}
		}
		printf("memcheck: PASS pass=%llu pages=%llu rewrites=%llu\n",
		       (unsigned long long)++pass, (unsigned long long)npages,
		       (unsigned long long)rewrites);
	}
}
