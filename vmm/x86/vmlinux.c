/* ELF vmlinux parsing; see vmlinux.h. */
#include "vmlinux.h"

#include <elf.h>
#include <errno.h>
#include <string.h>

bool vmlinux_is_elf(const uint8_t *img, size_t size)
{
	return size >= SELFMAG && memcmp(img, ELFMAG, SELFMAG) == 0;
}

static int reject(const char **why, const char *reason)
{
	*why = reason;
	return -ENOEXEC;
}

static int add_segment(struct vmlinux_info *info, const Elf64_Phdr *ph, size_t size,
		       uint64_t min_paddr, const char **why)
{
	struct vmlinux_segment *s;
	uint64_t file_end, mem_end;

	if (ph->p_filesz > ph->p_memsz)
		return reject(why, "ELF segment is larger in the file than in memory");
	if (__builtin_add_overflow(ph->p_offset, ph->p_filesz, &file_end) || file_end > size)
		return reject(why, "ELF segment extends past the end of the file (truncated?)");
	if (__builtin_add_overflow(ph->p_paddr, ph->p_memsz, &mem_end))
		return reject(why, "ELF segment's physical range overflows");
	if (ph->p_paddr < min_paddr)
		return reject(why, "ELF segment loads below 1 MiB, over the boot structures");
	if (ph->p_memsz == 0)
		return 0;
	if (info->nsegs == VMLINUX_MAX_SEGMENTS)
		return reject(why, "too many ELF load segments");
	s = &info->segs[info->nsegs++];
	*s = (struct vmlinux_segment){ ph->p_offset, ph->p_paddr, ph->p_filesz, ph->p_memsz };
	if (info->nsegs == 1 || s->paddr < info->low)
		info->low = s->paddr;
	if (mem_end > info->end)
		info->end = mem_end;
	return 0;
}

int vmlinux_parse(const uint8_t *img, size_t size, uint64_t min_paddr, struct vmlinux_info *info,
		  const char **why)
{
	Elf64_Ehdr eh;
	uint64_t ph_end;
	bool entry_loaded = false;

	memset(info, 0, sizeof(*info));
	if (size < sizeof(eh) || !vmlinux_is_elf(img, size))
		return reject(why, "not an ELF file");
	memcpy(&eh, img, sizeof(eh));
	if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB ||
	    eh.e_machine != EM_X86_64)
		return reject(why, "ELF kernel is not x86-64 (64-bit little-endian)");
	if (eh.e_type != ET_EXEC)
		return reject(why, "ELF kernel is not an executable (a module or object file?)");
	if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0)
		return reject(why, "ELF kernel has no usable program headers");
	if (__builtin_mul_overflow((uint64_t)eh.e_phnum, sizeof(Elf64_Phdr), &ph_end) ||
	    __builtin_add_overflow(ph_end, eh.e_phoff, &ph_end) || ph_end > size)
		return reject(why, "ELF program headers extend past the end of the file");
	for (unsigned i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;
		int rc;

		memcpy(&ph, img + eh.e_phoff + i * sizeof(ph), sizeof(ph));
		if (ph.p_type != PT_LOAD)
			continue;
		rc = add_segment(info, &ph, size, min_paddr, why);
		if (rc)
			return rc;
		if (eh.e_entry >= ph.p_paddr && eh.e_entry - ph.p_paddr < ph.p_filesz)
			entry_loaded = true;
	}
	if (info->nsegs == 0)
		return reject(why, "ELF kernel has no load segments");
	if (!entry_loaded)
		return reject(why, "ELF entry point is outside the loaded segments");
	info->entry = eh.e_entry;
	return 0;
}
