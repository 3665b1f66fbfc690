/* Minimal hardware-reduced ACPI: RSDP, XSDT, FADT, MADT and a DSDT holding
 * only \_S5. It exists so that a guest's poweroff reaches the VMM: Linux
 * writes SLP_TYP|SLP_EN to the FADT's sleep control register, a port we
 * trap. Guests booted with acpi=off still find the MP table. */
#ifndef VMM_X86_ACPI_H
#define VMM_X86_ACPI_H

#include <stddef.h>
#include <stdint.h>

#define ACPI_RSDP_GPA        0xe0000u
#define ACPI_SLEEP_CTL_PORT  0x600
#define ACPI_SLEEP_STS_PORT  0x601
#define ACPI_RESET_PORT      0x602
#define ACPI_RESET_VALUE     1
#define ACPI_S5_TYPE         5
#define ACPI_SLP_EN          0x20

/* Writes all tables into buf (seen by the guest at ACPI_RSDP_GPA).
 * Returns the bytes used, or -ENOSPC. */
int acpi_write_tables(uint8_t *buf, size_t size, unsigned ncpus);
/* Whether a byte written to the sleep control register requests S5. */
int acpi_is_poweroff(uint8_t sleep_ctl);

#endif
