/* Minimal ACPI: RSDP, XSDT, FADT, MADT and a DSDT holding only \_S5. It
 * exists so that a guest's poweroff reaches the VMM: Linux writes
 * SLP_TYP|SLP_EN to the PM1a control register, a port we trap. Guests
 * booted with acpi=off still find the MP table.
 *
 * Not hardware-reduced ACPI: in that mode Linux drops the legacy PIC and
 * with it the identity mapping of ISA IRQs, and the UART's IRQ 4 would go
 * nowhere. And guests need CONFIG_PCI: without it, Linux 6.1's ACPICA fails
 * to install its default region handlers and loads no DSDT at all. */
#ifndef VMM_X86_ACPI_H
#define VMM_X86_ACPI_H

#include <stddef.h>
#include <stdint.h>

#define ACPI_RSDP_GPA        0xe0000u
#define ACPI_PM1_EVT_PORT    0x600 /* status and enable, 2 bytes each */
#define ACPI_PM1_CNT_PORT    0x604 /* 2 bytes */
#define ACPI_RESET_PORT      0x606
#define ACPI_PM_PORTS_LEN    7
#define ACPI_RESET_VALUE     1
#define ACPI_SCI_IRQ         9
#define ACPI_S5_TYPE         5
#define ACPI_PM1_SCI_EN      0x0001
#define ACPI_PM1_SLP_EN      0x2000

/* Writes all tables into buf (seen by the guest at ACPI_RSDP_GPA).
 * Returns the bytes used, or -ENOSPC. */
int acpi_write_tables(uint8_t *buf, size_t size, unsigned ncpus);
/* Whether a value written to PM1a control requests S5. */
int acpi_is_poweroff(uint16_t pm1_cnt);

#endif
