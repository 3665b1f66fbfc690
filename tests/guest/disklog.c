/*
 * disklog: guest workloads for disk tests across live migration.
 *
 *   disklog write PATH RECORDS [RATE]
 *   disklog read PATH RECORDS [RATE [SECONDS]]
 *
 * write: appends RECORDS records of 4 KiB to PATH (created or truncated),
 * each followed by fsync(), at about RATE records per second (default 10),
 * printing "disklog: wrote N" every 10 records. After each record it also
 * reads an earlier one back with O_DIRECT and checks it. At the end it
 * drops the page cache and reads the whole file back from the disk,
 * checking every record: "disklog: PASS records=N" or "disklog: FAIL ...".
 *
 * read: reads records of a file that `write` made with O_DIRECT, at
 * RATE per second for SECONDS seconds (default 60), round-robin into 64
 * page-sized buffers, and remembers which record each buffer holds. After
 * every read it checks all 64 buffers against what they should hold,
 * without reading them again. Only the device writes those buffers (no
 * guest CPU write, so KVM's dirty log never sees it): if a migration
 * missed such a write (the VMM must mark its own writes dirty), a buffer
 * on the destination holds an older record and the check fails. Prints
 * "disklog: reading", "disklog: reader ok N" every 100 reads and
 * "disklog: reader PASS".
 *
 * Record i holds, in every 64-bit word w, (i << 32 | w) ^ 0x9e3779b97f4a7c15,
 * so a record that is stale, missing, zeroed or in the wrong place fails.
 * The host checks the same pattern in the image after vmm exits. Exit
 * status 0 on PASS, 1 on FAIL, 2 for usage errors.
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

static void drop_caches(void)
{
	int dc = open("/proc/sys/vm/drop_caches", O_WRONLY);

	if (dc < 0 || write(dc, "3", 1) != 1)
		printf("disklog: cannot drop the page cache: %s\n", strerror(errno));
	if (dc >= 0)
		close(dc);
}

/* Reads record i through fd into buf and checks it. */
static int check_record(int fd, uint64_t *buf, long i, const char *what)
{
	uint64_t want[WORDS];
	ssize_t n = pread(fd, buf, REC, (off_t)i * REC);

	fill(want, (uint64_t)i);
	if (n == REC && !memcmp(want, buf, REC))
		return 0;
	printf("disklog: FAIL %s record=%ld (read %zd bytes, first word 0x%llx, want 0x%llx)\n",
	       what, i, n, n > 0 ? (unsigned long long)buf[0] : 0ULL, (unsigned long long)want[0]);
	return -1;
}

static int verify(const char *path, long records)
{
	uint64_t buf[WORDS];
	int fd;

	/* Read from the disk, not from the page cache the writes filled. */
	drop_caches();
	fd = open(path, O_RDONLY);
	if (fd < 0) {
		printf("disklog: FAIL open %s: %s\n", path, strerror(errno));
		return 1;
	}
	for (long i = 0; i < records; i++)
		if (check_record(fd, buf, i, "verify"))
			return 1;
	if (lseek(fd, 0, SEEK_END) != (off_t)records * REC) {
		printf("disklog: FAIL size %lld, want %lld\n", (long long)lseek(fd, 0, SEEK_END),
		       (long long)records * REC);
		return 1;
	}
	close(fd);
	printf("disklog: PASS records=%ld\n", records);
	return 0;
}

static int do_write(const char *path, long records, long rate)
{
	uint64_t buf[WORDS], *rbuf;
	int fd, rfd;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) {
		printf("disklog: FAIL open %s: %s\n", path, strerror(errno));
		return 1;
	}
	rfd = open(path, O_RDONLY | O_DIRECT);
	if (rfd < 0 || posix_memalign((void **)&rbuf, 4096, REC)) {
		printf("disklog: FAIL open %s with O_DIRECT: %s\n", path, strerror(errno));
		return 1;
	}
	for (long i = 0; i < records; i++) {
		fill(buf, (uint64_t)i);
		if (write_all(fd, buf, REC) || fsync(fd)) {
			printf("disklog: FAIL writing record %ld: %s\n", i, strerror(errno));
			return 1;
		}
		/* Alternate between far-apart records: the buffer changes each time. */
		if (check_record(rfd, rbuf, i % 2 ? i : i / 2, "read-back"))
			return 1;
		if ((i + 1) % 10 == 0)
			printf("disklog: wrote %ld\n", i + 1);
		sleep_s(1.0 / (double)rate);
	}
	close(fd);
	close(rfd);
	return verify(path, records);
}

#define NBUF 64

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int do_read(const char *path, long records, long rate, long seconds)
{
	uint64_t *bufs, want[WORDS];
	long holds[NBUF], n = 0;
	double end;
	int fd;

	fd = open(path, O_RDONLY | O_DIRECT);
	if (fd < 0 || posix_memalign((void **)&bufs, 4096, (size_t)NBUF * REC)) {
		printf("disklog: FAIL open %s with O_DIRECT: %s\n", path, strerror(errno));
		return 1;
	}
	for (int k = 0; k < NBUF; k++)
		holds[k] = -1;
	printf("disklog: reading\n");
	for (end = now() + (double)seconds; now() < end; n++) {
		int k = (int)(n % NBUF);
		long rec = (n * 7) % records;
		uint64_t *b = bufs + (size_t)k * WORDS;

		/* Invalid while the read runs: a stop in between checks nothing. */
		holds[k] = -1;
		__sync_synchronize();
		if (check_record(fd, b, rec, "read"))
			return 1;
		__sync_synchronize();
		holds[k] = rec;
		for (int j = 0; j < NBUF; j++) {
			if (holds[j] < 0)
				continue;
			fill(want, (uint64_t)holds[j]);
			if (memcmp(want, bufs + (size_t)j * WORDS, REC)) {
				printf("disklog: FAIL buffer %d should hold record %ld, first word 0x%llx, "
				       "want 0x%llx\n", j, holds[j],
				       (unsigned long long)bufs[(size_t)j * WORDS],
				       (unsigned long long)want[0]);
				return 1;
			}
		}
		if ((n + 1) % 100 == 0)
			printf("disklog: reader ok %ld\n", n + 1);
		sleep_s(1.0 / (double)rate);
	}
	close(fd);
	printf("disklog: reader PASS\n");
	return 0;
}

int main(int argc, char **argv)
{
	long records, rate = 10, seconds = 60;
	int reader = argc > 1 && !strcmp(argv[1], "read");

	if (argc < 4 || argc > 5 + reader || (!reader && strcmp(argv[1], "write")) ||
	    (records = atol(argv[3])) <= 0 || (argc > 4 && (rate = atol(argv[4])) <= 0) ||
	    (argc > 5 && (seconds = atol(argv[5])) <= 0)) {
		fprintf(stderr, "usage: disklog write PATH RECORDS [RATE]\n"
				"       disklog read PATH RECORDS [RATE [SECONDS]]\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	return reader ? do_read(argv[2], records, rate, seconds) : do_write(argv[2], records, rate);
}
