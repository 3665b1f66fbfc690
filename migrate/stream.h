/* The live-migration wire format: encoders that write records into caller
 * buffers, an incremental decoder that validates every field, and the
 * receiver's checks against its own VM. Pure code: no KVM, no I/O, no
 * global state, so it is unit-tested (tests/unit/test_stream.c) and fuzzed
 * (tests/fuzz/fuzz_stream.c). The byte layout, the phases and the
 * versioning rule are in docs/migration-stream.md.
 *
 *   record = header (12 bytes) + payload (length bytes, at most 16 MiB)
 *   +--------+--------+------------+--------------------------------+-------
 *   | type   | flags  | length     | XXH3-64(payload*,              | payload
 *   |        |        |            |   seed = le64 header[0..8)),   |
 *   |        |        |            |   low 32 bits                  |
 *   | le16   | le16   | le32       | le32                           |
 *   +--------+--------+------------+--------------------------------+-------
 *
 *   * a RAW RAM record's checksum covers its payload up to its page data
 *
 * Every multi-byte field is little-endian and read and written byte by byte.
 * Type 0 is invalid, unknown types and flags are errors (never skipped).
 *
 * Decoded records point into the caller's buffer (strings, RAM ranges and
 * data, state bytes): they are valid as long as that buffer is. Strings are
 * not NUL-terminated; print them with "%.*s". */
#ifndef MIGRATE_STREAM_H
#define MIGRATE_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define STREAM_MAGIC   0x47494d56u /* "VMIG" on the wire */
#define STREAM_VERSION 4

#define STREAM_HDR_SIZE    12
#define STREAM_MAX_PAYLOAD (16u << 20)

/* Limits (each one checked by the decoder and the encoders). */
#define STREAM_MIN_PAGE_SHIFT   12 /* 4 KiB */
#define STREAM_MAX_PAGE_SHIFT   16 /* 64 KiB */
#define STREAM_MAX_VCPUS        4096
#define STREAM_MAX_DEVICES_LEN  1024 /* HELLO device-set descriptor */
#define STREAM_MAX_REASON_LEN   1024 /* ACK and ERROR reasons */
#define STREAM_MAX_NAME_LEN     63   /* STATE section names */
#define STREAM_RAM_MAX_RANGES   512
#define STREAM_RAM_MAX_BYTES    (8u << 20)  /* RAW and ZSTD: pages' bytes per record */
#define STREAM_RAM_MAX_ZERO_PAGES (1u << 20) /* ZERO: pages per record */
#define STREAM_RAM_HDR_SIZE     4
#define STREAM_RAM_RANGE_SIZE   12
#define STREAM_ZSTD_MAGIC       0xfd2fb528u
#define STREAM_MAX_CONNECTIONS  256
#define STREAM_MIN_STRIPE_SHIFT 16   /* 64 KiB */
#define STREAM_MAX_STRIPE_SHIFT 40   /* 1 TiB */

enum stream_type {
	STREAM_HELLO = 1,        /* source -> receiver, first record */
	STREAM_ACK = 2,          /* receiver -> source */
	STREAM_RAM = 3,          /* source -> receiver: a batch of pages */
	STREAM_ITER = 4,         /* source -> receiver: a pre-copy pass begins */
	STREAM_PRECOPY_DONE = 5, /* source -> receiver: vCPUs stopped, stop-and-copy follows */
	STREAM_STATE = 6,        /* source -> receiver: a named state section */
	STREAM_END = 7,          /* source -> receiver: last record */
	STREAM_ERROR = 8,        /* either way: abort */
	STREAM_JOIN = 9,         /* source -> receiver: first record of connection 1..N-1 */
	STREAM_SYNC = 10,        /* source -> receiver: answer once all before is applied */
	STREAM_COMMIT = 11,      /* source -> receiver, after READY: run the guest there */
};
#define STREAM_TYPE_MAX STREAM_COMMIT

/* HELLO flags. */
#define STREAM_HELLO_ZSTD 0x0001u /* RAM records may use the ZSTD encoding */
#define STREAM_HELLO_FLAGS_KNOWN STREAM_HELLO_ZSTD

enum stream_phase {
	STREAM_PHASE_SETUP = 1,        /* answers HELLO */
	STREAM_PHASE_PRECOPY_DONE = 2, /* answers PRECOPY_DONE */
	STREAM_PHASE_READY = 3,        /* answers END: all arrived, checked and loaded; waits for COMMIT */
	STREAM_PHASE_CONNECTED = 4,    /* every connection has joined: RAM may flow */
	STREAM_PHASE_SYNCED = 5,       /* answers SYNC, on its connection */
	STREAM_PHASE_RUNNING = 6,      /* answers COMMIT: the guest is this side's now */
};
#define STREAM_PHASE_MAX STREAM_PHASE_RUNNING

enum stream_ram_encoding {
	STREAM_RAM_RAW = 1,  /* data = the pages' bytes, in range order */
	STREAM_RAM_ZERO = 2, /* no data: the pages are zero */
	STREAM_RAM_ZSTD = 3, /* data = one zstd frame of the pages' bytes */
	STREAM_RAM_SKIP = 4, /* no data: the receiver's pages already hold what they need */
};
#define STREAM_RAM_ENCODING_MAX STREAM_RAM_SKIP

/* Project-specific error codes: negative, and apart from -errno. */
enum stream_error_code {
	STREAM_E_MAGIC = -1001,
	STREAM_E_VERSION = -1002,
	STREAM_E_PAGE_SIZE = -1003,
	STREAM_E_TYPE_ZERO = -1004,
	STREAM_E_TYPE = -1005,
	STREAM_E_FLAGS = -1006,
	STREAM_E_TOO_LONG = -1007,
	STREAM_E_CHECKSUM = -1008,
	STREAM_E_TRUNCATED = -1009,
	STREAM_E_TRAILING = -1010,
	STREAM_E_STRING = -1011,
	STREAM_E_HELLO = -1012,
	STREAM_E_PHASE = -1013,
	STREAM_E_RAM_ENCODING = -1014,
	STREAM_E_RAM_NRANGES = -1015,
	STREAM_E_RAM_ALIGN = -1016,
	STREAM_E_RAM_COUNT = -1017,
	STREAM_E_RAM_PAGES = -1018,
	STREAM_E_RAM_OVERFLOW = -1019,
	STREAM_E_RAM_ORDER = -1020,
	STREAM_E_RAM_DATA = -1021,
	STREAM_E_RAM_ZSTD = -1022,
	STREAM_E_RAM_OUTSIDE = -1023,
	STREAM_E_STATE_FOOTER = -1024,
	STREAM_E_CONFIG = -1025,
	STREAM_E_ORDER = -1026,
	STREAM_E_TALLY = -1027,
	STREAM_E_ITER = -1028,
	STREAM_E_JOIN = -1029,
	STREAM_E_RAM_LANE = -1030,
};

struct stream_hello {
	uint16_t version;     /* decoded only; encoders write STREAM_VERSION */
	uint16_t flags;       /* STREAM_HELLO_* */
	uint32_t page_size;
	uint32_t nr_vcpus;
	uint64_t ram_size;    /* bytes, a multiple of page_size */
	uint16_t connections; /* 1..STREAM_MAX_CONNECTIONS */
	uint16_t stripe_shift; /* RAM is split among the connections in stripes of 1 << shift bytes */
	uint64_t session;     /* repeated by every JOIN */
	const char *devices;  /* device-set descriptor, printable ASCII */
	uint16_t devices_len;
};

struct stream_ack {
	uint16_t phase;       /* enum stream_phase */
	uint32_t status;      /* 0 = ok; else the receiver refuses (a positive code) */
	const char *reason;
	uint16_t reason_len;
};

struct stream_error {
	uint32_t code;        /* positive code, for logs */
	const char *reason;
	uint16_t reason_len;
};

struct stream_join {
	uint64_t session;     /* HELLO's */
	uint16_t index;       /* 1..connections-1 */
	uint16_t connections; /* HELLO's */
};

struct stream_range {
	uint64_t gpa;
	uint32_t pages;
};

struct stream_ram {
	uint8_t encoding;     /* enum stream_ram_encoding */
	uint8_t page_shift;
	uint16_t nr_ranges;
	const uint8_t *ranges; /* wire form: read with stream_ram_range() */
	uint64_t pages;        /* sum over the ranges */
	uint64_t raw_len;      /* pages << page_shift: the declared uncompressed length */
	const uint8_t *data;   /* RAW: raw_len bytes; ZSTD: one frame; ZERO: NULL */
	uint32_t data_len;
};

struct stream_state {
	const char *name;
	uint16_t name_len;
	uint32_t instance;
	uint32_t version;     /* the section's own format version */
	uint32_t section_id;  /* unique in the stream; repeated in the footer */
	const uint8_t *data;
	uint32_t data_len;
};

struct stream_end {
	uint64_t ram_pages;   /* pages in the RAM records of this connection */
	uint32_t state_count; /* STATE records of this connection */
};

struct stream_record {
	uint16_t type;        /* enum stream_type */
	uint16_t flags;       /* header flags: 0 in version 1 */
	uint32_t len;         /* payload bytes */
	const uint8_t *payload;
	union {
		struct stream_hello hello;
		struct stream_ack ack;
		struct stream_ram ram;
		struct stream_state state;
		struct stream_end end;
		struct stream_error error;
		struct stream_join join;
		uint32_t iteration; /* ITER */
		uint64_t commit_session; /* COMMIT: HELLO's session */
	};
};

/* Decodes the record at the start of buf[0, len). Returns its type (> 0)
 * and sets *consumed to its size when a whole, valid record is there; 0
 * when more bytes are needed (a header is rejected as soon as its 12 bytes
 * are there, before its payload arrives); or a STREAM_E_* code. Never reads
 * past len. *consumed is 0 unless a record is returned. */
int stream_decode(const uint8_t *buf, size_t len, struct stream_record *out, size_t *consumed);

/* The head of a RAW RAM record (header, RAM header and ranges: the bytes
 * its checksum covers) at the start of buf[0, len), so that its page data
 * can be received straight into guest memory. Returns STREAM_RAM with *out
 * decoded and checked as stream_decode() would (ram.data NULL, ram.data_len
 * the page bytes that follow) and *head_len the head's size; 0 when buf
 * does not start with a RAW RAM record whose head is all there (then
 * stream_decode() decides); or a STREAM_E_* code for a head that is wrong.
 * Never reads past len. */
int stream_decode_ram_head(const uint8_t *buf, size_t len, struct stream_record *out,
			   size_t *head_len);

/* One human line for a STREAM_E_* code or a -errno. */
const char *stream_strerror(int err);

/* Range i (< nr_ranges) of a decoded RAM record. */
struct stream_range stream_ram_range(const struct stream_record *rec, unsigned i);

/* The receiver's guest memory, as disjoint (gpa, size) regions. */
struct stream_region {
	uint64_t gpa;
	uint64_t size;
};

struct stream_layout {
	uint32_t page_size;
	unsigned nregions;
	const struct stream_region *regions;
};

/* Every range of a decoded RAM record lies inside one region and the
 * record's page size is the layout's: 0, STREAM_E_PAGE_SIZE or
 * STREAM_E_RAM_OUTSIDE. */
int stream_check_ram_ranges(const struct stream_record *rec, const struct stream_layout *layout);

/* A decoded HELLO against this VM: 0, STREAM_E_PAGE_SIZE or STREAM_E_CONFIG
 * (RAM size, vCPUs, device set, or a flag this side does not accept:
 * `want->flags` are the flags this side accepts). */
int stream_check_hello(const struct stream_hello *got, const struct stream_hello *want);

/* Order of the source's records, checked by the receiver, one checker per
 * connection (stream_seq.c). Connection 0: HELLO; then RAM, ITER and SYNC;
 * PRECOPY_DONE; then RAM and STATE; END, whose tallies must match what came
 * on connection 0; then COMMIT of HELLO's session.
 * Connections 1..N-1 (stream_seq_init_join): JOIN; then RAM, ITER and SYNC; END. RAM
 * ranges must lie in the connection's own stripes. ERROR may come at any
 * point and ends the stream. */
enum stream_seq_phase {
	STREAM_SEQ_START = 0,
	STREAM_SEQ_PRECOPY,
	STREAM_SEQ_STOPCOPY,
	STREAM_SEQ_ENDED,     /* connection 0 after END: only COMMIT (or ERROR) may follow */
	STREAM_SEQ_COMMITTED, /* connection 0 after COMMIT: nothing more */
	STREAM_SEQ_ABORTED,
	STREAM_SEQ_JOIN,      /* connection 1..N-1, before its JOIN */
	STREAM_SEQ_LANE,      /* connection 1..N-1, after its JOIN */
	STREAM_SEQ_LANE_ENDED, /* connection 1..N-1 after its END */
};

struct stream_seq {
	enum stream_seq_phase phase;
	uint32_t page_size;   /* from HELLO */
	uint16_t hello_flags;
	uint16_t connections; /* from HELLO */
	uint16_t stripe_shift;
	uint64_t session;
	uint16_t index;       /* this connection's */
	uint64_t ram_pages;
	uint32_t state_count;
	uint32_t last_section_id;
	uint32_t iteration;
	bool iter_seen;
};

/* Connection 0: expects HELLO. */
void stream_seq_init(struct stream_seq *s);
/* Connection 1..N-1 of the stream whose connection 0 is main (past its
 * HELLO): expects a JOIN that matches HELLO. */
void stream_seq_init_join(struct stream_seq *s, const struct stream_seq *main);
/* 0 when rec may come now (and counts it), else STREAM_E_ORDER (also for
 * STATE section ids that do not increase), STREAM_E_ITER (iteration
 * numbers must increase), STREAM_E_TALLY (END's counts differ),
 * STREAM_E_PAGE_SIZE (a RAM record's page size is not HELLO's),
 * STREAM_E_RAM_ENCODING (ZSTD without HELLO's ZSTD flag), STREAM_E_JOIN
 * (a JOIN of another session or connection count) or STREAM_E_RAM_LANE
 * (a RAM range in another connection's stripe). */
int stream_seq_next(struct stream_seq *s, const struct stream_record *rec);

/* The connection that carries the page at gpa: stripe gpa >> shift goes on
 * connection stripe % connections. */
static inline unsigned stream_lane_of(uint64_t gpa, unsigned stripe_shift, unsigned connections)
{
	return connections <= 1 ? 0 : (unsigned)((gpa >> stripe_shift) % connections);
}

/* Encoders: bytes written, -ENOSPC when cap is too small, or -EINVAL for
 * input the decoder would reject (so whatever encodes, decodes). */
ssize_t stream_encode_hello(uint8_t *buf, size_t cap, const struct stream_hello *h);
ssize_t stream_encode_ack(uint8_t *buf, size_t cap, enum stream_phase phase, uint32_t status,
			  const char *reason);
ssize_t stream_encode_iter(uint8_t *buf, size_t cap, uint32_t iteration);
ssize_t stream_encode_precopy_done(uint8_t *buf, size_t cap);
ssize_t stream_encode_state(uint8_t *buf, size_t cap, const char *name, uint32_t instance,
			    uint32_t version, uint32_t section_id, const void *data, size_t len);
ssize_t stream_encode_end(uint8_t *buf, size_t cap, uint64_t ram_pages, uint32_t state_count);
ssize_t stream_encode_error(uint8_t *buf, size_t cap, uint32_t code, const char *reason);
ssize_t stream_encode_join(uint8_t *buf, size_t cap, const struct stream_join *j);
ssize_t stream_encode_sync(uint8_t *buf, size_t cap);
ssize_t stream_encode_commit(uint8_t *buf, size_t cap, uint64_t session);

/* RAM in two steps, so the pages are written (or compressed) straight into
 * the record: stream_ram_begin() writes the header and the ranges and says
 * where the data goes and how much room there is; the caller writes the
 * data there; stream_ram_finish() sets the length and the checksum. */
struct stream_ram_enc {
	uint8_t *buf;
	uint8_t *data;      /* where the caller writes the data */
	size_t room;        /* bytes available at data (at most what the record allows) */
	uint64_t raw_len;   /* pages * page size */
	uint8_t encoding;
	size_t hdr_len;     /* header + RAM header + ranges */
};

int stream_ram_begin(struct stream_ram_enc *e, uint8_t *buf, size_t cap,
		     enum stream_ram_encoding enc, uint32_t page_size,
		     const struct stream_range *ranges, unsigned nr_ranges);
/* data_len: RAW must be raw_len, ZERO 0, ZSTD a frame of 4..room bytes. */
ssize_t stream_ram_finish(struct stream_ram_enc *e, size_t data_len);
/* Both steps with a copy of data (for small records and tests). */
ssize_t stream_encode_ram(uint8_t *buf, size_t cap, enum stream_ram_encoding enc,
			  uint32_t page_size, const struct stream_range *ranges,
			  unsigned nr_ranges, const void *data, size_t data_len);

#endif
