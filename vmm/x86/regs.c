/* Initial vCPU state; see regs.h. */
#include "regs.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "../util.h"

#define CR0_PE (1u << 0)
#define CR0_MP (1u << 1)
#define CR0_ET (1u << 4)
#define CR0_NE (1u << 5)
#define CR0_PG (1u << 31)
#define CR4_PAE (1u << 5)
#define EFER_LME (1u << 8)
#define EFER_LMA (1u << 10)
#define PTE_PRESENT 0x1ULL
#define PTE_RW 0x2ULL
#define PTE_PS 0x80ULL

/* The boot protocol wants __BOOT_CS at 0x10 and __BOOT_DS at 0x18. */
#define GDT_CODE_SEL 0x10
#define GDT_DATA_SEL 0x18
#define GDT_TSS_SEL  0x20
static const uint64_t boot_gdt[] = {
	0,
	0,
	0x00af9b000000ffffULL, /* 64-bit code, present, DPL 0 */
	0x00cf93000000ffffULL, /* 4 GiB flat data */
	0x008f8b000000ffffULL, /* busy TSS: VMX refuses entry without a usable TR */
};

#define MSR_IA32_SYSENTER_CS  0x174
#define MSR_IA32_SYSENTER_ESP 0x175
#define MSR_IA32_SYSENTER_EIP 0x176
#define MSR_IA32_MISC_ENABLE  0x1a0
#define MSR_MTRR_DEF_TYPE     0x2ff
#define MSR_STAR              0xc0000081
#define MSR_LSTAR             0xc0000082
#define MSR_CSTAR             0xc0000083
#define MSR_SYSCALL_MASK      0xc0000084
#define MSR_KERNEL_GS_BASE    0xc0000102

#define APIC_LVT0 0x350
#define APIC_LVT1 0x360
#define APIC_MODE_NMI    0x4
#define APIC_MODE_EXTINT 0x7

int regs_write_boot_tables(struct guest_mem *mem)
{
	uint64_t *pml4 = gpa_to_hva(mem, BOOT_PML4_GPA, 0x1000);
	uint64_t *pdpt = gpa_to_hva(mem, BOOT_PML4_GPA + 0x1000, 0x1000);
	uint64_t *pd = gpa_to_hva(mem, BOOT_PML4_GPA + 0x2000, 0x1000 * BOOT_IDENTITY_MAP_GIB);
	void *gdt = gpa_to_hva(mem, BOOT_GDT_GPA, sizeof(boot_gdt));

	if (!pml4 || !pdpt || !pd || !gdt)
		return -ENOMEM;
	memcpy(gdt, boot_gdt, sizeof(boot_gdt));
	memset(pml4, 0, 0x1000);
	memset(pdpt, 0, 0x1000);
	pml4[0] = (BOOT_PML4_GPA + 0x1000) | PTE_PRESENT | PTE_RW;
	for (uint64_t g = 0; g < BOOT_IDENTITY_MAP_GIB; g++) {
		pdpt[g] = (BOOT_PML4_GPA + 0x2000 + g * 0x1000) | PTE_PRESENT | PTE_RW;
		for (uint64_t i = 0; i < 512; i++)
			pd[g * 512 + i] = (g << 30 | i << 21) | PTE_PRESENT | PTE_RW | PTE_PS;
	}
	return 0;
}

static void flat_segment(struct kvm_segment *s, uint16_t sel, uint8_t type, bool code)
{
	*s = (struct kvm_segment){
		.base = 0, .limit = 0xffffffff, .selector = sel, .type = type,
		.present = 1, .dpl = 0, .db = !code, .s = 1, .l = code, .g = 1,
	};
}

static int set_long_mode(int fd, const struct boot_entry *entry)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs = { .rip = entry->rip, .rsi = entry->rsi, .rflags = 2 };

	if (ioctl(fd, KVM_GET_SREGS, &sregs) < 0)
		return -errno;
	flat_segment(&sregs.cs, GDT_CODE_SEL, 0xb, true);
	flat_segment(&sregs.ds, GDT_DATA_SEL, 0x3, false);
	sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
	sregs.tr = (struct kvm_segment){ .selector = GDT_TSS_SEL, .limit = 0xffff, .type = 0xb,
					 .present = 1 };
	sregs.gdt.base = BOOT_GDT_GPA;
	sregs.gdt.limit = sizeof(boot_gdt) - 1;
	sregs.idt.base = 0;
	sregs.idt.limit = 0;
	/* Caches on (no CD/NW): the decompressor would crawl on uncached memory. */
	sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_PG;
	sregs.cr3 = BOOT_PML4_GPA;
	sregs.cr4 = CR4_PAE;
	sregs.efer = EFER_LME | EFER_LMA;
	if (ioctl(fd, KVM_SET_SREGS, &sregs) < 0 || ioctl(fd, KVM_SET_REGS, &regs) < 0)
		return -errno;
	return 0;
}

static int set_msrs(int fd)
{
	static const struct { uint32_t index; uint64_t value; } boot_msrs[] = {
		{ MSR_IA32_SYSENTER_CS, 0 }, { MSR_IA32_SYSENTER_ESP, 0 },
		{ MSR_IA32_SYSENTER_EIP, 0 }, { MSR_STAR, 0 }, { MSR_LSTAR, 0 },
		{ MSR_CSTAR, 0 }, { MSR_SYSCALL_MASK, 0 }, { MSR_KERNEL_GS_BASE, 0 },
		{ MSR_IA32_MISC_ENABLE, 1 },            /* fast string operations */
		{ MSR_MTRR_DEF_TYPE, (1u << 11) | 6 },  /* MTRRs on, default write-back */
	};
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e[ARRAY_SIZE(boot_msrs)];
	} msrs = { .hdr.nmsrs = ARRAY_SIZE(boot_msrs) };
	int rc;

	for (unsigned i = 0; i < ARRAY_SIZE(boot_msrs); i++) {
		msrs.e[i].index = boot_msrs[i].index;
		msrs.e[i].data = boot_msrs[i].value;
	}
	rc = ioctl(fd, KVM_SET_MSRS, &msrs);
	if (rc < 0)
		return -errno;
	return rc == (int)ARRAY_SIZE(boot_msrs) ? 0 : -EINVAL;
}

static void set_lvt_mode(struct kvm_lapic_state *lapic, unsigned reg, uint32_t mode)
{
	uint32_t v;

	memcpy(&v, &lapic->regs[reg], sizeof(v));
	v = (v & ~0x700u) | mode << 8;
	memcpy(&lapic->regs[reg], &v, sizeof(v));
}

static int set_lapic_wiring(int fd)
{
	struct kvm_lapic_state lapic;

	if (ioctl(fd, KVM_GET_LAPIC, &lapic) < 0)
		return -errno;
	set_lvt_mode(&lapic, APIC_LVT0, APIC_MODE_EXTINT);
	set_lvt_mode(&lapic, APIC_LVT1, APIC_MODE_NMI);
	if (ioctl(fd, KVM_SET_LAPIC, &lapic) < 0)
		return -errno;
	return 0;
}

int regs_init_vcpu(int fd, const struct boot_entry *entry, bool boot_cpu)
{
	struct kvm_fpu fpu = { .fcw = 0x37f, .mxcsr = 0x1f80 };
	int rc;

	if (ioctl(fd, KVM_SET_FPU, &fpu) < 0)
		return -errno;
	rc = set_msrs(fd);
	if (!rc)
		rc = set_lapic_wiring(fd);
	if (!rc && boot_cpu)
		rc = set_long_mode(fd, entry);
	return rc;
}
