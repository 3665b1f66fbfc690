/*
 * diskbench: sequential disk throughput inside the guest, for
 * scripts/bench-disk.
 *
 *   diskbench DEV MIB [BLOCK_KIB]
 *
 * Writes MIB MiB to the block device DEV from offset 0 in blocks of
 * BLOCK_KIB KiB (default 1024) with O_DIRECT, then fdatasync()s; then
 * reads the same range back with O_DIRECT and checks the first word of
 * every block. O_DIRECT keeps the guest's page cache out of it, so every
 * byte crosses the virtio-blk device. Prints
 *
 *   diskbench: write mib=M block_kib=B seconds=S mb_per_s=R
 *   diskbench: read mib=M block_kib=B seconds=S mb_per_s=R
 *
 * (MB = 10^6 bytes), or "diskbench: FAIL ..." and exit status 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void report(const char *what, long mib, long bkib, double secs)
{
	printf("diskbench: %s mib=%ld block_kib=%ld seconds=%.3f mb_per_s=%.1f\n", what, mib, bkib,
	       secs, (double)mib * 1048576.0 / 1e6 / secs);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	long mib, bkib = 1024;
	size_t bs;
	uint64_t *buf;
	uint64_t nblocks;
	double t;
	int fd;

	if (argc < 3 || argc > 4 || (mib = atol(argv[2])) <= 0 ||
	    (argc == 4 && ((bkib = atol(argv[3])) <= 0 || bkib % 4))) {
		fprintf(stderr, "usage: diskbench DEV MIB [BLOCK_KIB, a multiple of 4]\n");
		return 2;
	}
	bs = (size_t)bkib * 1024;
	nblocks = (uint64_t)mib * 1048576 / bs;
	if (posix_memalign((void **)&buf, 4096, bs)) {
		printf("diskbench: FAIL out of memory\n");
		return 1;
	}
	memset(buf, 0x5a, bs);
	fd = open(argv[1], O_RDWR | O_DIRECT);
	if (fd < 0) {
		printf("diskbench: FAIL open %s: %s\n", argv[1], strerror(errno));
		return 1;
	}

	t = now();
	for (uint64_t b = 0; b < nblocks; b++) {
		buf[0] = b;
		if (pwrite(fd, buf, bs, (off_t)(b * bs)) != (ssize_t)bs) {
			printf("diskbench: FAIL write block %llu: %s\n", (unsigned long long)b,
			       strerror(errno));
			return 1;
		}
	}
	if (fdatasync(fd)) {
		printf("diskbench: FAIL fdatasync: %s\n", strerror(errno));
		return 1;
	}
	report("write", mib, bkib, now() - t);

	t = now();
	for (uint64_t b = 0; b < nblocks; b++) {
		ssize_t n = pread(fd, buf, bs, (off_t)(b * bs));

		if (n != (ssize_t)bs || buf[0] != b) {
			printf("diskbench: FAIL read block %llu: %s\n", (unsigned long long)b,
			       n < 0 ? strerror(errno) : n != (ssize_t)bs ? "short read" : "wrong data");
			return 1;
		}
	}
	report("read", mib, bkib, now() - t);
	close(fd);
	return 0;
}
