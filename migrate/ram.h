/* Page batches for the migration stream: zero-page detection, zstd
 * compression of a batch into one frame (the ZSTD encoding of a RAM record,
 * docs/migration-stream.md), the receiver's strict decompression, and the
 * policy behind `--compress auto`. No I/O, no global state; the policy is
 * pure arithmetic on numbers the caller feeds in (tests/unit/test_ram.c).
 *
 * Batches should be 64 KiB or more: zstd is 2 to 5 times slower per byte on
 * single 4 KiB pages. */
#ifndef MIGRATE_RAM_H
#define MIGRATE_RAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Negative: zstd's fast mode. Against level 1 on guest memory, -3
 * compresses 1.5x faster natively and 1.8x under TCG, decompresses 1.5x
 * faster, and sends 19% more bytes (docs/migration.md). */
#define RAM_ZSTD_LEVEL_DEFAULT (-3)

/* Errors of ram_decompress/ram_compress: negative, apart from -errno and
 * from the STREAM_E_* codes. */
enum ram_error_code {
	RAM_E_EMPTY = -1101,     /* no input */
	RAM_E_TRUNCATED = -1102, /* the frame stops before its end */
	RAM_E_TRAILING = -1103,  /* bytes after the frame */
	RAM_E_TOO_LONG = -1104,  /* the frame holds more than expected */
	RAM_E_SHORT = -1105,     /* the frame holds less than expected */
	RAM_E_CORRUPT = -1106,   /* zstd rejected the frame (or its checksum) */
	RAM_E_ZSTD = -1107,      /* zstd failed otherwise (parameters, memory) */
};

/* One human line for a RAM_E_* code or a -errno. */
const char *ram_strerror(int err);

/* A buffer for records or pages, mapped on its own without transparent
 * huge pages: the first write to each page then clears 4 KiB, not 2 MiB,
 * and a buffer used only in part (a compressed record in a buffer sized
 * for a raw one, the few MiB of a receive buffer in use) costs only what
 * is used. NULL when out of memory. */
void *ram_buf_alloc(size_t len);
void ram_buf_free(void *buf, size_t len);

/* True when page[0, page_size) is all zero; page_size a multiple of 8 and
 * page 8-byte aligned. Stops at the first non-zero 64-byte line. */
bool ram_page_is_zero(const void *page, size_t page_size);

struct ram_compressor {
	void *cctx;               /* ZSTD_CCtx */
	int level;
	bool checksum;
};

/* level: zstd's (1 is fast; negative is faster still, 0 means the default
 * 1 here). Frames carry zstd's content checksum (XXH64 of the pages) by
 * default, so the receiver catches a bad frame even where its structure
 * still decodes. 0 or a negative code. */
int ram_compressor_init(struct ram_compressor *c, int level);
/* Frames without the checksum: the record's checksum still covers the frame
 * on the wire; measured on 1 MiB guest-like batches, the checksum costs
 * about 15% of compression speed and 45% of decompression speed. */
int ram_compressor_set_checksum(struct ram_compressor *c, bool on);
/* Compresses src[0, len) into dst as one complete frame: its size, -ENOSPC
 * when it does not fit in cap (send RAW; passing cap < len makes a frame
 * that saves nothing come back -ENOSPC too), or RAM_E_ZSTD. With cap at
 * least ZSTD_compressBound(len) the input is read in place, never copied. */
ssize_t ram_compress(struct ram_compressor *c, const void *src, size_t len, void *dst, size_t cap);
void ram_compressor_free(struct ram_compressor *c);

struct ram_decompressor {
	void *dctx;               /* ZSTD_DCtx */
};

int ram_decompressor_init(struct ram_decompressor *d);
/* Decodes exactly one complete frame src[0, len) into exactly expected
 * bytes at dst (which has room for expected): expected, or RAM_E_EMPTY,
 * RAM_E_TRUNCATED, RAM_E_TRAILING, RAM_E_TOO_LONG, RAM_E_SHORT,
 * RAM_E_CORRUPT, RAM_E_ZSTD. The frame's content-size field is not trusted:
 * output stops at expected. Windows above 16 MiB are refused. */
ssize_t ram_decompress(struct ram_decompressor *d, const void *src, size_t len, void *dst,
		       size_t expected);
void ram_decompressor_free(struct ram_decompressor *d);

/* `--compress auto`: compress a batch when that makes the transfer faster.
 * Per raw byte, compressing costs the slower of 1/compress_rate and
 * ratio/link_rate (compressing a batch overlaps sending the one before),
 * plus RAM_AUTO_SERIAL_SHARE of 1/compress_rate that does not overlap; not
 * compressing costs 1/link_rate. Data that shrinks by less than the
 * hysteresis fraction is sent raw. The rates and the ratio are
 * moving averages of what the caller reports. Compression turns off when
 * its cost exceeds the plain one by the hysteresis fraction and on when it
 * is below by as much; while off, every probe_every-th batch is compressed
 * anyway (a probe) so a change in the data is noticed.
 *
 * The link rate must be the link's, not the sender's: feed bytes over time
 * spent waiting for the socket (e.g. around mig_conn_flush or a full send
 * queue), otherwise a compressor that is the bottleneck makes the link look
 * slow and keeps itself on. */
#define RAM_AUTO_SERIAL_SHARE 0.25

struct ram_auto {
	double ratio;             /* compressed / raw, moving average */
	double compress_bps;      /* raw bytes per second through ram_compress */
	double link_bps;          /* bytes per second on the wire */
	bool have_ratio, have_compress, have_link;
	bool on;                  /* the current decision */
	unsigned since_probe;     /* batches sent raw while off */
	unsigned probe_every;     /* default 32 */
	double hysteresis;        /* default 0.1 */
	double alpha;             /* moving-average weight of a new sample, default 0.25 */
};

void ram_auto_init(struct ram_auto *a);
/* A batch went through ram_compress: raw bytes in, compressed bytes out
 * (raw when it came back -ENOSPC), ns spent. */
void ram_auto_note_compress(struct ram_auto *a, uint64_t raw, uint64_t compressed, uint64_t ns);
/* A batch was sent without trying to compress it (counts toward a probe). */
void ram_auto_note_raw(struct ram_auto *a);
/* bytes went over the link in ns. */
void ram_auto_note_link(struct ram_auto *a, uint64_t bytes, uint64_t ns);
bool ram_auto_should_compress(const struct ram_auto *a);
/* ram_compress timed with CLOCK_MONOTONIC, reported to a. */
ssize_t ram_auto_compress(struct ram_auto *a, struct ram_compressor *c, const void *src,
			  size_t len, void *dst, size_t cap);

#endif
