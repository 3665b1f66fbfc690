/* ACPI tables; see acpi.h. Layouts follow ACPI 6.0; all fields are
 * little-endian and written byte by byte. */
#include "acpi.h"

#include <errno.h>
#include <string.h>

#include "vmm/le.h"

#include "mptable.h"

#define SDT_HEADER_SIZE 36
#define RSDP_SIZE 36
#define FADT_SIZE 276
#define FADT_PWR_BUTTON      (1u << 4)  /* no fixed-feature power button */
#define FADT_SLP_BUTTON      (1u << 5)  /* no fixed-feature sleep button */
#define FADT_RESET_REG_SUP   (1u << 10)
#define BOOT_ARCH_NO_VGA     (1u << 2)
#define BOOT_ARCH_NO_CMOS    (1u << 5)
#define GAS_SYSTEM_IO 1
#define MADT_PCAT_COMPAT 1

/* DefName(\_S5, Package(2) { 5, 5 }): the only AML the guest needs. */
static const uint8_t dsdt_aml[] = {
	0x08, '_', 'S', '5', '_', 0x12, 0x06, 0x02, 0x0a, ACPI_S5_TYPE, 0x0a, ACPI_S5_TYPE,
};

static void sdt_header(uint8_t *t, const char *sig, uint32_t len, uint8_t rev)
{
	memcpy(t, sig, 4);
	put_le32(t + 4, len);
	t[8] = rev;
	memcpy(t + 10, "VMMVMM", 6);
	memcpy(t + 16, "MICROVM ", 8);
	put_le32(t + 24, 1);
	memcpy(t + 28, "VMM ", 4);
	put_le32(t + 32, 1);
}

static void sdt_finish(uint8_t *t, uint32_t len)
{
	t[9] = 0;
	t[9] = checksum8(t, len);
}

/* A Generic Address Structure for one byte of port I/O. */
static void put_gas_port(uint8_t *p, uint16_t port)
{
	p[0] = GAS_SYSTEM_IO;
	p[1] = 8; /* bit width */
	p[2] = 0; /* bit offset */
	p[3] = 1; /* byte access */
	put_le64(p + 4, port);
}

static void write_fadt(uint8_t *t, uint32_t dsdt_gpa)
{
	sdt_header(t, "FACP", FADT_SIZE, 6);
	put_le32(t + 40, dsdt_gpa);
	put_le16(t + 46, ACPI_SCI_IRQ);
	/* SMI_CMD (48) stays 0: the machine is always in ACPI mode. */
	put_le32(t + 56, ACPI_PM1_EVT_PORT);
	put_le32(t + 64, ACPI_PM1_CNT_PORT);
	t[88] = 4; /* PM1_EVT_LEN */
	t[89] = 2; /* PM1_CNT_LEN */
	put_le16(t + 109, BOOT_ARCH_NO_VGA | BOOT_ARCH_NO_CMOS);
	put_le32(t + 112, FADT_PWR_BUTTON | FADT_SLP_BUTTON | FADT_RESET_REG_SUP);
	put_gas_port(t + 116, ACPI_RESET_PORT);
	t[128] = ACPI_RESET_VALUE;
	t[131] = 0; /* minor version */
	put_le64(t + 140, dsdt_gpa);
	memcpy(t + 268, "VMMVMM  ", 8);
	sdt_finish(t, FADT_SIZE);
}

static uint32_t madt_size(unsigned ncpus)
{
	return SDT_HEADER_SIZE + 8 + 8 * ncpus + 12;
}

static void write_madt(uint8_t *t, unsigned ncpus)
{
	uint32_t len = madt_size(ncpus);
	uint8_t *p = t + SDT_HEADER_SIZE + 8;

	sdt_header(t, "APIC", len, 4);
	put_le32(t + 36, MPTABLE_LAPIC_ADDR);
	put_le32(t + 40, MADT_PCAT_COMPAT);
	for (unsigned i = 0; i < ncpus; i++, p += 8) {
		p[0] = 0; /* processor local APIC */
		p[1] = 8;
		p[2] = (uint8_t)i; /* processor UID */
		p[3] = (uint8_t)i; /* APIC id */
		put_le32(p + 4, 1); /* enabled */
	}
	p[0] = 1; /* I/O APIC */
	p[1] = 12;
	p[2] = (uint8_t)ncpus;
	put_le32(p + 4, MPTABLE_IOAPIC_ADDR);
	put_le32(p + 8, 0); /* GSI base */
	sdt_finish(t, len);
}

int acpi_write_tables(uint8_t *buf, size_t size, unsigned ncpus)
{
	uint32_t xsdt_off = RSDP_SIZE + 12; /* keep tables 16-byte aligned */
	uint32_t xsdt_len = SDT_HEADER_SIZE + 2 * 8;
	uint32_t fadt_off = (xsdt_off + xsdt_len + 15) & ~15u;
	uint32_t madt_off = (fadt_off + FADT_SIZE + 15) & ~15u;
	uint32_t dsdt_off = (madt_off + madt_size(ncpus) + 15) & ~15u;
	uint32_t dsdt_len = SDT_HEADER_SIZE + sizeof(dsdt_aml);
	uint32_t total = dsdt_off + dsdt_len;
	uint8_t *xsdt = buf + xsdt_off;

	if (total > size || ncpus == 0 || ncpus > 254)
		return -ENOSPC;
	memset(buf, 0, total);

	memcpy(buf, "RSD PTR ", 8);
	memcpy(buf + 9, "VMMVMM", 6);
	buf[15] = 2; /* revision: ACPI 2.0+, XSDT */
	put_le32(buf + 20, RSDP_SIZE);
	put_le64(buf + 24, ACPI_RSDP_GPA + xsdt_off);
	buf[8] = checksum8(buf, 20);
	buf[32] = checksum8(buf, RSDP_SIZE);

	sdt_header(xsdt, "XSDT", xsdt_len, 1);
	put_le64(xsdt + SDT_HEADER_SIZE, ACPI_RSDP_GPA + fadt_off);
	put_le64(xsdt + SDT_HEADER_SIZE + 8, ACPI_RSDP_GPA + madt_off);
	sdt_finish(xsdt, xsdt_len);

	write_fadt(buf + fadt_off, ACPI_RSDP_GPA + dsdt_off);
	write_madt(buf + madt_off, ncpus);
	sdt_header(buf + dsdt_off, "DSDT", dsdt_len, 2);
	memcpy(buf + dsdt_off + SDT_HEADER_SIZE, dsdt_aml, sizeof(dsdt_aml));
	sdt_finish(buf + dsdt_off, dsdt_len);
	return (int)total;
}

int acpi_is_poweroff(uint16_t pm1_cnt)
{
	return (pm1_cnt & ACPI_PM1_SLP_EN) && ((pm1_cnt >> 10) & 7) == ACPI_S5_TYPE;
}
