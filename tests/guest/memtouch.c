/*
 * memtouch MIB [hold-seconds [sparse]]
 *
 * Guest helper for balloon and migration tests: makes MIB MiB of guest
 * memory resident (and dirty), optionally holds it, then gives it back.
 * Each page gets a distinct non-zero value so that a VMM cannot treat the
 * pages as zero pages or merge them. With `sparse`, every other page is
 * given back before the hold: the guest's free memory then has MIB/2 MiB
 * in single pages, which free page hinting by 4 MiB blocks cannot see.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int parse_ulong(const char *s, unsigned long *out)
{
	char *end;

	errno = 0;
	*out = strtoul(s, &end, 10);
	return errno || end == s || *end || s[0] == '-' ? -1 : 0;
}

int main(int argc, char **argv)
{
	unsigned long mib, hold = 0;
	bool sparse = argc == 4 && !strcmp(argv[3], "sparse");
	size_t len, page;
	unsigned char *p;

	if (argc < 2 || argc > 4 || parse_ulong(argv[1], &mib) < 0 || mib == 0 ||
	    mib > SIZE_MAX / (1024 * 1024) ||
	    (argc >= 3 && parse_ulong(argv[2], &hold) < 0) || (argc == 4 && !sparse)) {
		fprintf(stderr, "usage: memtouch MIB [hold-seconds [sparse]]\n");
		return 2;
	}
	/* Line-buffer so tests watching the console see each line promptly. */
	setvbuf(stdout, NULL, _IOLBF, 0);

	len = (size_t)mib * 1024 * 1024;
	page = (size_t)sysconf(_SC_PAGESIZE);
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		fprintf(stderr, "memtouch: mmap %lu MiB: %s\n", mib, strerror(errno));
		return 1;
	}
	for (size_t off = 0; off < len; off += page)
		*(volatile uint64_t *)(p + off) = (off / page) | 0x5a00000000000000ull;
	printf("memtouch: touched %lu MiB\n", mib);
	if (sparse) {
		/* munmap, not madvise: the test guest's kernel has no madvise.
		 * Every hole splits the mapping; 160 MiB makes 20480 holes,
		 * well under vm.max_map_count. */
		for (size_t off = page; off < len; off += 2 * page)
			if (munmap(p + off, page) < 0) {
				fprintf(stderr, "memtouch: munmap: %s\n", strerror(errno));
				return 1;
			}
		printf("memtouch: gave back every other page\n");
	}

	/* sleep() takes an unsigned int and returns early on signals. */
	while (hold > 0) {
		unsigned int chunk = hold > 86400 ? 86400 : (unsigned int)hold;
		hold -= chunk - sleep(chunk);
	}

	if (munmap(p, len) < 0) {
		fprintf(stderr, "memtouch: munmap: %s\n", strerror(errno));
		return 1;
	}
	printf("memtouch: freed\n");
	return 0;
}
