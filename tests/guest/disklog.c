/*
 * disklog: a guest workload for disk tests across live migration.
 *
 *   disklog PATH RECORDS [RATE]
 *
 * Appends RECORDS records of 4 KiB to PATH (created or truncated), each
 * followed by fsync(), at about RATE records per second (default 10),
 * printing "disklog: wrote N" every 10 records. After each record it also
 * reads an earlier one back with O_DIRECT into the same buffer and checks
 * it: the device writes that buffer directly, so a migration that missed
 * such a write (the VMM must mark it dirty) leaves stale data there and
 * fails the check on the destination. At the end it drops the page
 * cache and reads the whole file back from the disk, checking every
 * record, and prints "disklog: PASS records=N" or "disklog: FAIL record=I
 * ...". Exit status 0 on PASS.
 *
 * Record i holds, in every 64-bit word w, (i << 32 | w) ^ 0x9e3779b97f4a7c15,
 * so a record that is stale, missing, zeroed or in the wrong place fails.
 * The host checks the same pattern in the image after vmm exits.
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

#define REC 4096
#define WORDS (REC / 8)

static void fill(uint64_t *p, uint64_t i)
{
	for (uint64_t w = 0; w < WORDS; w++)
		p[w] = (i << 32 | w) ^ 0x9e3779b97f4a7c15ULL;
}

static void sleep_s(double s)
{
	struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int verify(const char *path, long records)
{
	uint64_t want[WORDS], got[WORDS];
	int fd, dc = open("/proc/sys/vm/drop_caches", O_WRONLY);

	/* Read from the disk, not from the page cache the writes filled. */
	if (dc < 0 || write(dc, "3", 1) != 1)
		printf("disklog: cannot drop the page cache: %s\n", strerror(errno));
	if (dc >= 0)
		close(dc);
	fd = open(path, O_RDONLY);
	if (fd < 0) {
		printf("disklog: FAIL open %s: %s\n", path, strerror(errno));
		return 1;
	}
	for (long i = 0; i < records; i++) {
		ssize_t n = pread(fd, got, REC, (off_t)i * REC);

		fill(want, (uint64_t)i);
		if (n != REC || memcmp(want, got, REC)) {
			printf("disklog: FAIL record=%ld (read %zd bytes, first word 0x%llx, want 0x%llx)\n",
			       i, n, n > 0 ? (unsigned long long)got[0] : 0ULL,
			       (unsigned long long)want[0]);
			return 1;
		}
	}
	if (lseek(fd, 0, SEEK_END) != (off_t)records * REC) {
		printf("disklog: FAIL size %lld, want %lld\n", (long long)lseek(fd, 0, SEEK_END),
		       (long long)records * REC);
		return 1;
	}
	close(fd);
	printf("disklog: PASS records=%ld\n", records);
	return 0;
}

/* Reads record i of the file through rfd (O_DIRECT) into rbuf and checks it. */
static int read_back(int rfd, uint64_t *rbuf, long i)
{
	uint64_t want[WORDS];
	ssize_t n = pread(rfd, rbuf, REC, (off_t)i * REC);

	fill(want, (uint64_t)i);
	if (n == REC && !memcmp(want, rbuf, REC))
		return 0;
	printf("disklog: FAIL read-back of record %ld (read %zd bytes, first word 0x%llx, want "
	       "0x%llx)\n", i, n, n > 0 ? (unsigned long long)rbuf[0] : 0ULL,
	       (unsigned long long)want[0]);
	return -1;
}

int main(int argc, char **argv)
{
	uint64_t buf[WORDS], *rbuf;
	long records, rate = 10;
	int fd, rfd;

	if (argc < 3 || argc > 4 || (records = atol(argv[2])) <= 0 ||
	    (argc == 4 && (rate = atol(argv[3])) <= 0)) {
		fprintf(stderr, "usage: disklog PATH RECORDS [RATE]\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) {
		printf("disklog: FAIL open %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	rfd = open(argv[1], O_RDONLY | O_DIRECT);
	if (rfd < 0 || posix_memalign((void **)&rbuf, 4096, REC)) {
		printf("disklog: FAIL open %s with O_DIRECT: %s\n", argv[1], strerror(errno));
		return 1;
	}
	for (long i = 0; i < records; i++) {
		fill(buf, (uint64_t)i);
		if (write_all(fd, buf, REC) || fsync(fd)) {
			printf("disklog: FAIL writing record %ld: %s\n", i, strerror(errno));
			return 1;
		}
		/* Alternate between far-apart records, so the buffer's content
		 * changes with every read. */
		if (read_back(rfd, rbuf, i % 2 ? i : i / 2))
			return 1;
		if ((i + 1) % 10 == 0)
			printf("disklog: wrote %ld\n", i + 1);
		sleep_s(1.0 / (double)rate);
	}
	close(fd);
	close(rfd);
	return verify(argv[1], records);
}
