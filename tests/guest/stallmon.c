/* stallmon: how long the guest itself stalls, as its own clock sees it.
 * Reads CLOCK_MONOTONIC in a tight loop and, every REPORT-MS milliseconds
 * (default 1000), prints the longest gap between two readings in that
 * interval:
 *
 *   stallmon: t=MS max_gap_us=N
 *
 * where t is the time since stallmon started. A gap is time the loop did
 * not run: the vCPU was out of the guest (a VMM's throttle or hint round,
 * a page fault the host took long over), or the guest scheduled something
 * else. The migration benchmark (scripts/bench-migrate.py) takes the
 * largest gap printed while a migration ran. Both vmm and QEMU resume the
 * guest's kvmclock where it stopped, so the stop-and-copy downtime itself
 * does not show here; the VMMs report it.
 * Usage: stallmon [REPORT-MS] (static, tests/guest/). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv)
{
	unsigned long report_ms = 1000;
	uint64_t start, prev, next, max_gap = 0;
	char *end;

	if (argc > 2)
		goto usage;
	if (argc == 2) {
		errno = 0;
		report_ms = strtoul(argv[1], &end, 10);
		if (errno || end == argv[1] || *end || argv[1][0] == '-' || report_ms == 0 ||
		    report_ms > 3600000)
			goto usage;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	start = prev = now_ns();
	next = start + report_ms * 1000000ull;
	for (;;) {
		uint64_t t = now_ns();

		if (t - prev > max_gap)
			max_gap = t - prev;
		prev = t;
		if (t >= next) {
			printf("stallmon: t=%llu max_gap_us=%llu\n",
			       (unsigned long long)((t - start) / 1000000),
			       (unsigned long long)(max_gap / 1000));
			max_gap = 0;
			/* The print's own time counts in the next interval: a
			 * VMM that is slow to take console output stalls the
			 * guest as much as one that keeps its vCPU out. */
			next = t + report_ms * 1000000ull;
		}
	}
usage:
	fprintf(stderr, "usage: stallmon [REPORT-MS]\n");
	return 2;
}
