/* Little-endian stores into byte buffers, and the 8-bit checksum that the
 * firmware tables (MP table, ACPI) use. Written byte by byte, so the host's
 * own layout never shows through. */
#ifndef VMM_LE_H
#define VMM_LE_H

#include <stddef.h>
#include <stdint.h>

static inline void put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void put_le32(uint8_t *p, uint32_t v)
{
	put_le16(p, (uint16_t)v);
	put_le16(p + 2, (uint16_t)(v >> 16));
}

static inline void put_le64(uint8_t *p, uint64_t v)
{
	put_le32(p, (uint32_t)v);
	put_le32(p + 4, (uint32_t)(v >> 32));
}

/* The byte that makes p[0..len) sum to zero modulo 256. */
static inline uint8_t checksum8(const uint8_t *p, size_t len)
{
	uint8_t sum = 0;

	while (len--)
		sum = (uint8_t)(sum + *p++);
	return (uint8_t)-sum;
}

#endif
