/*
 * Locked pages with a fixed guest-physical address, for the guest programs
 * that drive a virtio device from user space (blkgarbage, vqgarbage).
 *
 * mlock() keeps a page in RAM but not in place: with the default
 * vm.compact_unevictable_allowed=1 compaction may move it, and a device
 * that was given its old address would then write into whatever the kernel
 * put there next. A real driver uses the DMA API; these programs switch that
 * sysctl off before they allocate, and check at the end that no page moved.
 */
#ifndef VMM_TESTS_GUEST_LOCKEDPAGE_H
#define VMM_TESTS_GUEST_LOCKEDPAGE_H

#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define LOCKED_PAGE 4096u

struct page {
	uint8_t *va;
	uint64_t pa;
};

/* The guest-physical address of the page at VA now; 0 with errno set. */
static uint64_t locked_page_pa(const void *va)
{
	uint64_t entry;
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return 0;
	if (pread(fd, &entry, sizeof(entry), (off_t)((uintptr_t)va / LOCKED_PAGE * sizeof(entry))) !=
	    (ssize_t)sizeof(entry)) {
		close(fd);
		return 0;
	}
	close(fd);
	if (!(entry >> 63) || !(entry & ((1ULL << 55) - 1))) {
		errno = ENXIO;
		return 0;
	}
	return (entry & ((1ULL << 55) - 1)) * LOCKED_PAGE;
}

/* Keeps compaction off locked pages; 0, or -1 with errno set. */
static int locked_pages_stay(void)
{
	int fd = open("/proc/sys/vm/compact_unevictable_allowed", O_WRONLY | O_CLOEXEC);
	int ok;

	if (fd < 0)
		return errno == ENOENT ? 0 : -1; /* no compaction in this kernel */
	ok = write(fd, "0\n", 2) == 2;
	close(fd);
	return ok ? 0 : -1;
}

/* One locked, zeroed page and its address; 0, or -1 with errno set. */
static int locked_page_alloc(struct page *p)
{
	if (locked_pages_stay() < 0)
		return -1;
	p->va = mmap(NULL, LOCKED_PAGE, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (p->va == MAP_FAILED || mlock(p->va, LOCKED_PAGE) < 0)
		return -1;
	memset(p->va, 0, LOCKED_PAGE);
	p->pa = locked_page_pa(p->va);
	return p->pa ? 0 : -1;
}

/* Whether the page is no longer where the device was told it is. */
static int locked_page_moved(const struct page *p)
{
	return locked_page_pa(p->va) != p->pa;
}

#endif
