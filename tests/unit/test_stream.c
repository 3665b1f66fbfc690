/* stream_*: the migration wire format (migrate/stream.c). Round trips of
 * every record type, incremental decoding (byte by byte, in random pieces,
 * with a guard page right after the bytes so that a read past len faults),
 * every rejection path, the receiver's checks and the record order. Records
 * whose fields are corrupted on purpose get their checksum recomputed here
 * (byte by byte, little-endian) so that the field check is what fires. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>

#include "migrate/stream.h"
#include "tests/unit/unit.h"

#define PAGE 4096u

static uint8_t buf[64 << 10];

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)v);
	put32(p + 4, (uint32_t)(v >> 32));
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Recomputes the checksum of the record at rec (after a field was changed). */
static void fix_checksum(uint8_t *rec)
{
	uint32_t len = get32(rec + 4);
	uint64_t seed = get32(rec) | (uint64_t)get32(rec + 4) << 32;
	const uint8_t *p = rec + STREAM_HDR_SIZE;

	/* Version 4: a RAW RAM record's page data is not covered. */
	if ((get32(rec) & 0xffff) == STREAM_RAM && len >= 4 && p[0] == STREAM_RAM_RAW &&
	    4u + 12u * (p[2] | (uint32_t)p[3] << 8) < len)
		len = 4 + 12 * (p[2] | (uint32_t)p[3] << 8);
	put32(rec + 8, (uint32_t)XXH3_64bits_withSeed(p, len, seed));
}

/* Decodes n bytes; *consumed must be n for a record and 0 otherwise. */
static int decode_n(const uint8_t *p, size_t n, struct stream_record *rec)
{
	size_t used = 12345;
	int r = stream_decode(p, n, rec, &used);

	if (r > 0)
		CHECK_EQ(used, n);
	else
		CHECK_EQ(used, 0);
	return r;
}

/* Encodes, changes a field, fixes the checksum, expects `want`. */
#define REC_EXPECT(encode, mutate, want)                                                   \
	do {                                                                               \
		n = (encode);                                                              \
		REQUIRE(n > 0);                                                            \
		mutate;                                                                    \
		fix_checksum(buf);                                                              \
		CHECK_EQ(decode_n(buf, STREAM_HDR_SIZE + get32(buf + 4), &rec), (want));   \
	} while (0)

static const struct stream_hello hello0 = {
	.flags = STREAM_HELLO_ZSTD, .page_size = PAGE, .nr_vcpus = 2, .ram_size = 512ULL << 20,
	.connections = 1, .stripe_shift = 22, .session = 0x0123456789abcdefULL,
	.devices = "uart;balloon:hint,report", .devices_len = 24,
};

/* hello0 with four connections. */
static struct stream_hello hello4(void)
{
	struct stream_hello h = hello0;

	h.connections = 4;
	return h;
}

static void test_hello_roundtrip(void)
{
	struct stream_record rec;
	ssize_t n = stream_encode_hello(buf, sizeof(buf), &hello0);

	REQUIRE(n == STREAM_HDR_SIZE + 38 + 24);
	/* The magic and version on the wire, byte by byte. */
	CHECK(memcmp(buf + STREAM_HDR_SIZE, "VMIG\x04\x00", 6) == 0);
	CHECK_EQ(buf[0], 1);
	CHECK_EQ(buf[1], 0);
	REQUIRE(decode_n(buf, (size_t)n, &rec) == STREAM_HELLO);
	CHECK_EQ(rec.hello.version, STREAM_VERSION);
	CHECK_EQ(rec.hello.flags, STREAM_HELLO_ZSTD);
	CHECK_EQ(rec.hello.page_size, PAGE);
	CHECK_EQ(rec.hello.nr_vcpus, 2);
	CHECK_EQ(rec.hello.ram_size, 512ULL << 20);
	CHECK_EQ(rec.hello.connections, 1);
	CHECK_EQ(rec.hello.stripe_shift, 22);
	CHECK_EQ(rec.hello.session, 0x0123456789abcdefULL);
	/* The session, little-endian at offset 28. */
	CHECK_EQ(buf[STREAM_HDR_SIZE + 28], 0xef);
	CHECK_EQ(buf[STREAM_HDR_SIZE + 35], 0x01);
	CHECK_EQ(rec.hello.devices_len, 24);
	CHECK(memcmp(rec.hello.devices, hello0.devices, 24) == 0);
	CHECK_EQ(stream_check_hello(&rec.hello, &hello0), 0);
}

static void test_ack_error_roundtrip(void)
{
	struct stream_record rec;
	ssize_t n;

	n = stream_encode_ack(buf, sizeof(buf), STREAM_PHASE_READY, 0, NULL);
	REQUIRE(n == STREAM_HDR_SIZE + 8);
	REQUIRE(decode_n(buf, (size_t)n, &rec) == STREAM_ACK);
	CHECK_EQ(rec.ack.phase, STREAM_PHASE_READY);
	CHECK_EQ(rec.ack.status, 0);
	CHECK_EQ(rec.ack.reason_len, 0);

	n = stream_encode_ack(buf, sizeof(buf), STREAM_PHASE_SETUP, 7, "RAM size differs");
	REQUIRE(n > 0);
	REQUIRE(decode_n(buf, (size_t)n, &rec) == STREAM_ACK);
	CHECK_EQ(rec.ack.phase, STREAM_PHASE_SETUP);
	CHECK_EQ(rec.ack.status, 7);
	CHECK_EQ(rec.ack.reason_len, 16);
	CHECK(memcmp(rec.ack.reason, "RAM size differs", 16) == 0);

	n = stream_encode_error(buf, sizeof(buf), 5, "disk on fire");
	REQUIRE(n == STREAM_HDR_SIZE + 6 + 12);
	REQUIRE(decode_n(buf, (size_t)n, &rec) == STREAM_ERROR);
	CHECK_EQ(rec.error.code, 5);
	CHECK_EQ(rec.error.reason_len, 12);
	CHECK(memcmp(rec.error.reason, "disk on fire", 12) == 0);
}

static void test_small_records_roundtrip(void)
{
	struct stream_record rec;
	ssize_t n;

	n = stream_encode_iter(buf, sizeof(buf), 0xdeadbeef);
	REQUIRE(n == STREAM_HDR_SIZE + 4);
	REQUIRE(decode_n(buf, (size_t)n, &rec) == STREAM_ITER);
	CHECK_EQ(rec.iteration, 0xdeadbeef);

	n = stream_encode_precopy_done(buf, sizeof(buf));
	REQUIRE(n == STREAM_HDR_SIZE);
	REQUIRE(decode_n(buf, (size_t)n, &rec) == STREAM_PRECOPY_DONE);
	CHECK_EQ(rec.len, 0);

	n = stream_encode_end(buf, sizeof(buf), 0x123456789aULL, 42);
	REQUIRE(n == STREAM_HDR_SIZE + 12);
	REQUIRE(decode_n(buf, (size_t)n, &rec) == STREAM_END);
	CHECK_EQ(rec.end.ram_pages, 0x123456789aULL);
	CHECK_EQ(rec.end.state_count, 42);

	n = stream_encode_join(buf, sizeof(buf),
			       &(struct stream_join){ 0xfeedfacecafe0001ULL, 3, 4 });
	REQUIRE(n == STREAM_HDR_SIZE + 12);
	CHECK_EQ(buf[0], STREAM_JOIN);
	REQUIRE(decode_n(buf, (size_t)n, &rec) == STREAM_JOIN);
	CHECK_EQ(rec.join.session, 0xfeedfacecafe0001ULL);
	CHECK_EQ(rec.join.index, 3);
	CHECK_EQ(rec.join.connections, 4);

	n = stream_encode_ack(buf, sizeof(buf), STREAM_PHASE_CONNECTED, 0, NULL);
	REQUIRE(n > 0);
	REQUIRE(decode_n(buf, (size_t)n, &rec) == STREAM_ACK);
	CHECK_EQ(rec.ack.phase, STREAM_PHASE_CONNECTED);

	n = stream_encode_sync(buf, sizeof(buf));
	REQUIRE(n == STREAM_HDR_SIZE);
	CHECK_EQ(buf[0], 10);
	REQUIRE(decode_n(buf, (size_t)n, &rec) == STREAM_SYNC);
	CHECK_EQ(rec.len, 0);
	n = stream_encode_ack(buf, sizeof(buf), STREAM_PHASE_SYNCED, 0, NULL);
	REQUIRE(n > 0);
	REQUIRE(decode_n(buf, (size_t)n, &rec) == STREAM_ACK);
	CHECK_EQ(rec.ack.phase, STREAM_PHASE_SYNCED);
}

static void test_state_roundtrip(void)
{
	struct stream_record rec;
	uint8_t blob[300];
	ssize_t n;

	for (size_t i = 0; i < sizeof(blob); i++)
		blob[i] = (uint8_t)(i * 7);
	n = stream_encode_state(buf, sizeof(buf), "cpu.regs", 3, 2, 17, blob, sizeof(blob));
	REQUIRE(n == (ssize_t)(STREAM_HDR_SIZE + 22 + 8 + sizeof(blob)));
	REQUIRE(decode_n(buf, (size_t)n, &rec) == STREAM_STATE);
	CHECK_EQ(rec.state.name_len, 8);
	CHECK(memcmp(rec.state.name, "cpu.regs", 8) == 0);
	CHECK_EQ(rec.state.instance, 3);
	CHECK_EQ(rec.state.version, 2);
	CHECK_EQ(rec.state.section_id, 17);
	CHECK_EQ(rec.state.data_len, sizeof(blob));
	CHECK(memcmp(rec.state.data, blob, sizeof(blob)) == 0);
	/* The footer repeats the section id. */
	CHECK_EQ(get32(buf + n - 4), 17);

	n = stream_encode_state(buf, sizeof(buf), "vm", 0, 1, 1, NULL, 0);
	REQUIRE(n > 0);
	REQUIRE(decode_n(buf, (size_t)n, &rec) == STREAM_STATE);
	CHECK_EQ(rec.state.data_len, 0);
}

static void test_ram_raw_roundtrip(void)
{
	const struct stream_range ranges[] = { { 0x1000, 2 }, { 0x10000, 1 }, { 1ULL << 32, 3 } };
	struct stream_ram_enc e;
	struct stream_record rec;
	struct stream_range r;
	ssize_t n;

	/* The pages are written straight into the record. */
	REQUIRE(stream_ram_begin(&e, buf, sizeof(buf), STREAM_RAM_RAW, PAGE, ranges, 3) == 0);
	CHECK_EQ(e.raw_len, 6 * PAGE);
	CHECK(e.data == buf + STREAM_HDR_SIZE + 4 + 3 * 12);
	REQUIRE(e.room >= 6 * PAGE);
	for (unsigned i = 0; i < 6 * PAGE; i++)
		e.data[i] = (uint8_t)(i / PAGE + 1);
	n = stream_ram_finish(&e, 6 * PAGE);
	REQUIRE(n == STREAM_HDR_SIZE + 4 + 36 + 6 * PAGE);

	REQUIRE(decode_n(buf, (size_t)n, &rec) == STREAM_RAM);
	CHECK_EQ(rec.ram.encoding, STREAM_RAM_RAW);
	CHECK_EQ(rec.ram.page_shift, 12);
	CHECK_EQ(rec.ram.nr_ranges, 3);
	CHECK_EQ(rec.ram.pages, 6);
	CHECK_EQ(rec.ram.raw_len, 6 * PAGE);
	CHECK_EQ(rec.ram.data_len, 6 * PAGE);
	CHECK_EQ(rec.ram.data[0], 1);
	CHECK_EQ(rec.ram.data[6 * PAGE - 1], 6);
	for (unsigned i = 0; i < 3; i++) {
		r = stream_ram_range(&rec, i);
		CHECK_EQ(r.gpa, ranges[i].gpa);
		CHECK_EQ(r.pages, ranges[i].pages);
	}
	/* A wrong data length cannot be finished. */
	REQUIRE(stream_ram_begin(&e, buf, sizeof(buf), STREAM_RAM_RAW, PAGE, ranges, 3) == 0);
	CHECK_EQ(stream_ram_finish(&e, 6 * PAGE - 1), -EINVAL);
}

static void test_ram_zero_zstd_roundtrip(void)
{
	const struct stream_range zr[] = { { 0, 1u << 20 } };
	const struct stream_range r2[] = { { 0x200000, 512 } };
	const uint8_t frame[] = { 0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3, 4, 5 };
	struct stream_ram_enc e;
	struct stream_record rec;
	ssize_t n;

	n = stream_encode_ram(buf, sizeof(buf), STREAM_RAM_ZERO, PAGE, zr, 1, NULL, 0);
	REQUIRE(n == STREAM_HDR_SIZE + 4 + 12);
	REQUIRE(decode_n(buf, (size_t)n, &rec) == STREAM_RAM);
	CHECK_EQ(rec.ram.encoding, STREAM_RAM_ZERO);
	CHECK_EQ(rec.ram.pages, 1u << 20);
	CHECK(rec.ram.data == NULL);
	CHECK_EQ(rec.ram.data_len, 0);

	/* ZSTD: the caller compresses into e.data and finishes with the frame's size. */
	REQUIRE(stream_ram_begin(&e, buf, sizeof(buf), STREAM_RAM_ZSTD, PAGE, r2, 1) == 0);
	CHECK_EQ(e.room, sizeof(buf) - STREAM_HDR_SIZE - 16);
	memcpy(e.data, frame, sizeof(frame));
	n = stream_ram_finish(&e, sizeof(frame));
	REQUIRE(n == (ssize_t)(STREAM_HDR_SIZE + 16 + sizeof(frame)));
	REQUIRE(decode_n(buf, (size_t)n, &rec) == STREAM_RAM);
	CHECK_EQ(rec.ram.encoding, STREAM_RAM_ZSTD);
	CHECK_EQ(rec.ram.raw_len, 512 * PAGE); /* the declared uncompressed length */
	CHECK_EQ(rec.ram.data_len, sizeof(frame));
	CHECK(memcmp(rec.ram.data, frame, sizeof(frame)) == 0);

	/* Page size 64 KiB. */
	n = stream_encode_ram(buf, sizeof(buf), STREAM_RAM_ZERO, 65536, r2, 1, NULL, 0);
	REQUIRE(n > 0);
	REQUIRE(decode_n(buf, (size_t)n, &rec) == STREAM_RAM);
	CHECK_EQ(rec.ram.page_shift, 16);
	CHECK_EQ(rec.ram.raw_len, 512ULL << 16);
}

/* A whole source stream: its records' types in order and total size. */
static int whole_stream(uint8_t *out, size_t cap, size_t *len, int *types)
{
	const struct stream_range r1[] = { { 0, 2 }, { 0x5000, 1 } }, r2[] = { { 0x100000, 64 } };
	uint8_t pages[3 * PAGE], blob[100];
	size_t off = 0;
	int nt = 0;
	ssize_t n;

	for (size_t i = 0; i < sizeof(pages); i++)
		pages[i] = (uint8_t)(i * 31 + 1);
	memset(blob, 0xab, sizeof(blob));
#define ADD(type, expr)                                                                    \
	do {                                                                               \
		n = (expr);                                                                \
		if (n <= 0)                                                                \
			return -1;                                                         \
		off += (size_t)n;                                                          \
		types[nt++] = (type);                                                      \
	} while (0)
	ADD(STREAM_HELLO, stream_encode_hello(out + off, cap - off, &hello0));
	ADD(STREAM_ITER, stream_encode_iter(out + off, cap - off, 0));
	ADD(STREAM_RAM, stream_encode_ram(out + off, cap - off, STREAM_RAM_RAW, PAGE, r1, 2,
					  pages, sizeof(pages)));
	ADD(STREAM_RAM, stream_encode_ram(out + off, cap - off, STREAM_RAM_ZERO, PAGE, r2, 1,
					  NULL, 0));
	ADD(STREAM_ITER, stream_encode_iter(out + off, cap - off, 1));
	ADD(STREAM_RAM, stream_encode_ram(out + off, cap - off, STREAM_RAM_RAW, PAGE, r1, 1,
					  pages, 2 * PAGE));
	ADD(STREAM_PRECOPY_DONE, stream_encode_precopy_done(out + off, cap - off));
	ADD(STREAM_RAM, stream_encode_ram(out + off, cap - off, STREAM_RAM_RAW, PAGE, r1 + 1, 1,
					  pages, PAGE));
	ADD(STREAM_STATE, stream_encode_state(out + off, cap - off, "cpu", 0, 1, 1, blob, 100));
	ADD(STREAM_STATE, stream_encode_state(out + off, cap - off, "cpu", 1, 1, 2, blob, 50));
	ADD(STREAM_STATE, stream_encode_state(out + off, cap - off, "vm", 0, 1, 3, NULL, 0));
	ADD(STREAM_END, stream_encode_end(out + off, cap - off, 3 + 64 + 2 + 1, 3));
#undef ADD
	*len = off;
	return nt;
}

/* Memory whose end is followed by an inaccessible page. */
struct guarded {
	uint8_t *map;
	size_t map_len;
	size_t cap;
};

static int guarded_alloc(struct guarded *g, size_t cap)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);

	g->cap = cap;
	g->map_len = (cap + pg - 1) / pg * pg + pg;
	g->map = mmap(NULL, g->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (g->map == MAP_FAILED)
		return -1;
	return mprotect(g->map + g->map_len - pg, pg, PROT_NONE);
}

/* n bytes copied so that the last one sits just before the guard page. */
static const uint8_t *guarded_put(struct guarded *g, const uint8_t *src, size_t n)
{
	uint8_t *p = g->map + g->map_len - (size_t)sysconf(_SC_PAGESIZE) - n;

	memcpy(p, src, n);
	return p;
}

static void test_incremental_bytewise(void)
{
	static uint8_t stream[64 << 10];
	struct stream_record rec;
	struct stream_seq seq;
	struct guarded g;
	size_t len, off = 0, used;
	int types[32], nt, got = 0;

	nt = whole_stream(stream, sizeof(stream), &len, types);
	REQUIRE(nt == 12);
	REQUIRE(guarded_alloc(&g, len) == 0);
	stream_seq_init(&seq);
	/* Offer one more byte at a time; the bytes end at the guard page. */
	for (size_t have = 1; off < len && have <= len - off; have++) {
		const uint8_t *p = guarded_put(&g, stream + off, have);
		int r = stream_decode(p, have, &rec, &used);

		if (r == 0)
			continue;
		REQUIRE(r > 0);
		REQUIRE(got < nt);
		CHECK_EQ(r, types[got]);
		CHECK_EQ(used, have);
		CHECK_EQ(stream_seq_next(&seq, &rec), 0);
		got++;
		off += used;
		have = 0;
	}
	CHECK_EQ(off, len);
	CHECK_EQ(got, nt);
	CHECK_EQ(seq.phase, STREAM_SEQ_ENDED);
	munmap(g.map, g.map_len);
}

static void test_incremental_random_pieces(void)
{
	static uint8_t stream[64 << 10], rx[64 << 10];
	struct stream_record rec;
	size_t len, used;
	int types[32], nt;

	nt = whole_stream(stream, sizeof(stream), &len, types);
	REQUIRE(nt > 0);
	srand(1234);
	for (int round = 0; round < 200; round++) {
		size_t sent = 0, have = 0, start = 0;
		int got = 0;

		while (sent < len || have > start) {
			size_t piece = (size_t)rand() % (round % 2 ? 64 : 9000) + 1;
			int r;

			if (piece > len - sent)
				piece = len - sent;
			memcpy(rx + have, stream + sent, piece);
			have += piece;
			sent += piece;
			while ((r = stream_decode(rx + start, have - start, &rec, &used)) > 0) {
				REQUIRE(got < nt);
				CHECK_EQ(r, types[got]);
				got++;
				start += used;
			}
			REQUIRE(r == 0);
			if (sent == len && have > start) {
				CHECK(0); /* bytes left that never make a record */
				break;
			}
		}
		CHECK_EQ(got, nt);
	}
}

/* Never reads past len: every prefix of every record, right at the guard. */
static void test_truncated_needs_more(void)
{
	static uint8_t stream[64 << 10];
	struct stream_record rec;
	struct guarded g;
	size_t len, off = 0, used;
	int types[32], nt;

	nt = whole_stream(stream, sizeof(stream), &len, types);
	REQUIRE(nt > 0);
	REQUIRE(guarded_alloc(&g, len) == 0);
	for (int i = 0; i < nt; i++) {
		size_t size;

		REQUIRE(stream_decode(stream + off, len - off, &rec, &size) == types[i]);
		for (size_t k = 0; k < size; k++) {
			const uint8_t *p = guarded_put(&g, stream + off, k);

			CHECK_EQ(stream_decode(p, k, &rec, &used), 0);
			CHECK_EQ(used, 0);
		}
		off += size;
	}
	munmap(g.map, g.map_len);
}

static void test_header_errors(void)
{
	struct stream_record rec;
	ssize_t n = stream_encode_iter(buf, sizeof(buf), 5);
	uint8_t save[STREAM_HDR_SIZE];

	REQUIRE(n > 0);
	memcpy(save, buf, sizeof(save));
	/* Type 0 and unknown types are rejected from the header alone. */
	put16(buf, 0);
	CHECK_EQ(decode_n(buf, STREAM_HDR_SIZE, &rec), STREAM_E_TYPE_ZERO);
	put16(buf, STREAM_TYPE_MAX + 1);
	CHECK_EQ(decode_n(buf, STREAM_HDR_SIZE, &rec), STREAM_E_TYPE);
	put16(buf, 0xffff);
	CHECK_EQ(decode_n(buf, (size_t)n, &rec), STREAM_E_TYPE);
	memcpy(buf, save, sizeof(save));
	put16(buf + 2, 0x8000);
	CHECK_EQ(decode_n(buf, STREAM_HDR_SIZE, &rec), STREAM_E_FLAGS);
	memcpy(buf, save, sizeof(save));
	put32(buf + 4, STREAM_MAX_PAYLOAD + 1);
	CHECK_EQ(decode_n(buf, STREAM_HDR_SIZE, &rec), STREAM_E_TOO_LONG);
	put32(buf + 4, 0xffffffff);
	CHECK_EQ(decode_n(buf, STREAM_HDR_SIZE, &rec), STREAM_E_TOO_LONG);
	/* The maximum itself waits for its payload. */
	put32(buf + 4, STREAM_MAX_PAYLOAD);
	CHECK_EQ(decode_n(buf, STREAM_HDR_SIZE + 100, &rec), 0);
	memcpy(buf, save, sizeof(save));
	CHECK_EQ(decode_n(buf, (size_t)n, &rec), STREAM_ITER);
}

static void test_checksum(void)
{
	struct stream_record rec;
	ssize_t n = stream_encode_state(buf, sizeof(buf), "dev", 0, 1, 9, "abcdef", 6);

	REQUIRE(n > 0);
	/* A bit flipped in the payload, in the length-free part of the header
	 * (type stays valid: flip in the checksum field), and in the checksum. */
	buf[STREAM_HDR_SIZE + 10] ^= 0x10;
	CHECK_EQ(decode_n(buf, (size_t)n, &rec), STREAM_E_CHECKSUM);
	buf[STREAM_HDR_SIZE + 10] ^= 0x10;
	buf[8] ^= 0x01;
	CHECK_EQ(decode_n(buf, (size_t)n, &rec), STREAM_E_CHECKSUM);
	buf[8] ^= 0x01;
	/* A header bit: type STATE (6) -> END (7) keeps a valid type. */
	buf[0] ^= 0x01;
	CHECK_EQ(decode_n(buf, (size_t)n, &rec), STREAM_E_CHECKSUM);
	buf[0] ^= 0x01;
	/* The length, shortened: still covered by the checksum. */
	put32(buf + 4, get32(buf + 4) - 1);
	CHECK_EQ(decode_n(buf, (size_t)n, &rec), STREAM_E_CHECKSUM);
	put32(buf + 4, get32(buf + 4) + 1);
	CHECK_EQ(decode_n(buf, (size_t)n, &rec), STREAM_STATE);
}

/* Version 4: a RAW record's checksum covers its header and ranges, not
 * its pages (they go from and into guest memory without a copy); every
 * other record's covers all of its payload. */
static void test_checksum_raw_covers_head_only(void)
{
	const struct stream_range ranges[] = { { 0x2000, 1 }, { 0x8000, 1 } };
	uint8_t page[2 * PAGE];
	struct stream_record rec;
	size_t head = STREAM_HDR_SIZE + 4 + 2 * 12;
	ssize_t n;

	memset(page, 0x5a, sizeof(page));
	n = stream_encode_ram(buf, sizeof(buf), STREAM_RAM_RAW, PAGE, ranges, 2, page, sizeof(page));
	REQUIRE(n == (ssize_t)(head + 2 * PAGE));
	/* A page byte changed: still the same record. */
	buf[head + 100] ^= 0xff;
	CHECK_EQ(decode_n(buf, (size_t)n, &rec), STREAM_RAM);
	CHECK_EQ(rec.ram.data[100], 0x5a ^ 0xff);
	/* A range changed (last byte of the second gpa), or the encoding: caught. */
	buf[STREAM_HDR_SIZE + 4 + 12 + 1] ^= 0x10;
	CHECK_EQ(decode_n(buf, (size_t)n, &rec), STREAM_E_CHECKSUM);
	buf[STREAM_HDR_SIZE + 4 + 12 + 1] ^= 0x10;
	buf[STREAM_HDR_SIZE + 2] ^= 0x01; /* 2 ranges -> 3 */
	CHECK(decode_n(buf, (size_t)n, &rec) < 0);
	buf[STREAM_HDR_SIZE + 2] ^= 0x01;
	CHECK_EQ(decode_n(buf, (size_t)n, &rec), STREAM_RAM);
	/* ZSTD's frame stays covered. */
	memset(page, 0, sizeof(page));
	{
		uint8_t frame[8] = { 0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3, 4 };

		n = stream_encode_ram(buf, sizeof(buf), STREAM_RAM_ZSTD, PAGE, ranges, 2, frame, 8);
		REQUIRE(n > 0);
		buf[n - 1] ^= 0x01;
		CHECK_EQ(decode_n(buf, (size_t)n, &rec), STREAM_E_CHECKSUM);
	}
}

/* The head of a RAW record decodes before its pages are there. */
static void test_ram_head(void)
{
	const struct stream_range ranges[] = { { 0x1000, 2 }, { 0x10000, 1 } };
	uint8_t page[3 * PAGE];
	struct stream_record rec;
	size_t head = STREAM_HDR_SIZE + 4 + 2 * 12, hl = 99;
	ssize_t n;

	memset(page, 7, sizeof(page));
	n = stream_encode_ram(buf, sizeof(buf), STREAM_RAM_RAW, PAGE, ranges, 2, page, sizeof(page));
	REQUIRE(n == (ssize_t)(head + 3 * PAGE));
	for (size_t len = 0; len < head; len++) {
		CHECK_EQ(stream_decode_ram_head(buf, len, &rec, &hl), 0);
		CHECK_EQ(hl, 0);
	}
	for (size_t len = head; len <= (size_t)n; len += 1000) {
		hl = 0;
		REQUIRE(stream_decode_ram_head(buf, len, &rec, &hl) == STREAM_RAM);
		CHECK_EQ(hl, head);
		CHECK_EQ(rec.ram.encoding, STREAM_RAM_RAW);
		CHECK_EQ(rec.ram.nr_ranges, 2);
		CHECK_EQ(rec.ram.pages, 3);
		CHECK_EQ(rec.ram.data_len, 3 * PAGE);
		CHECK(rec.ram.data == NULL);
		CHECK_EQ(stream_ram_range(&rec, 1).gpa, 0x10000);
	}
	/* A corrupt range is caught by the head's checksum. */
	buf[STREAM_HDR_SIZE + 4 + 3] ^= 0x01;
	CHECK_EQ(stream_decode_ram_head(buf, head, &rec, &hl), STREAM_E_CHECKSUM);
	buf[STREAM_HDR_SIZE + 4 + 3] ^= 0x01;
	/* A length that does not match the ranges, checksum fixed. */
	put32(buf + 4, get32(buf + 4) - PAGE);
	fix_checksum(buf);
	CHECK_EQ(stream_decode_ram_head(buf, head, &rec, &hl), STREAM_E_RAM_DATA);
	/* Not RAW, or not RAM: 0, and stream_decode() decides. */
	n = stream_encode_ram(buf, sizeof(buf), STREAM_RAM_ZERO, PAGE, ranges, 2, NULL, 0);
	REQUIRE(n > 0);
	CHECK_EQ(stream_decode_ram_head(buf, (size_t)n, &rec, &hl), 0);
	n = stream_encode_iter(buf, sizeof(buf), 3);
	REQUIRE(n > 0);
	CHECK_EQ(stream_decode_ram_head(buf, (size_t)n, &rec, &hl), 0);
}

static void test_hello_errors(void)
{
	struct stream_record rec;
	uint8_t *p = buf + STREAM_HDR_SIZE;
	ssize_t n;

#define HELLO_EXPECT(mutate, want)                                                         \
	do {                                                                               \
		n = stream_encode_hello(buf, sizeof(buf), &hello0);                        \
		REQUIRE(n > 0);                                                            \
		mutate;                                                                    \
		fix_checksum(buf);                                                              \
		CHECK_EQ(decode_n(buf, STREAM_HDR_SIZE + get32(buf + 4), &rec), (want));   \
	} while (0)
	HELLO_EXPECT(p[0] = 'X', STREAM_E_MAGIC);
	HELLO_EXPECT(put16(p + 4, 5), STREAM_E_VERSION);
	HELLO_EXPECT(put16(p + 4, 3), STREAM_E_VERSION); /* version 3 hashed RAW pages */
	HELLO_EXPECT(put16(p + 4, 2), STREAM_E_VERSION);
	HELLO_EXPECT(put16(p + 4, 1), STREAM_E_VERSION);
	HELLO_EXPECT(put16(p + 4, 0), STREAM_E_VERSION);
	HELLO_EXPECT(put16(p + 6, 0x0002), STREAM_E_FLAGS);
	HELLO_EXPECT(put32(p + 8, 8192 + 4096), STREAM_E_PAGE_SIZE);
	HELLO_EXPECT(put32(p + 8, 2048), STREAM_E_PAGE_SIZE);
	HELLO_EXPECT(put32(p + 8, 1u << 17), STREAM_E_PAGE_SIZE);
	HELLO_EXPECT(put32(p + 12, 0), STREAM_E_HELLO);
	HELLO_EXPECT(put32(p + 12, STREAM_MAX_VCPUS + 1), STREAM_E_HELLO);
	HELLO_EXPECT(put64(p + 16, 0), STREAM_E_HELLO);
	HELLO_EXPECT(put64(p + 16, PAGE + 1), STREAM_E_HELLO);
	/* Connections 1..256; stripes of 64 KiB to 1 TiB, at least a page. */
	HELLO_EXPECT(put16(p + 24, 0), STREAM_E_HELLO);
	HELLO_EXPECT(put16(p + 24, STREAM_MAX_CONNECTIONS + 1), STREAM_E_HELLO);
	HELLO_EXPECT(put16(p + 24, STREAM_MAX_CONNECTIONS), STREAM_HELLO);
	HELLO_EXPECT(put16(p + 26, 15), STREAM_E_HELLO);
	HELLO_EXPECT(put16(p + 26, 41), STREAM_E_HELLO);
	HELLO_EXPECT((put32(p + 8, 1u << 16), put16(p + 26, 16)), STREAM_HELLO);
	HELLO_EXPECT(put16(p + 26, 40), STREAM_HELLO);
	HELLO_EXPECT(put16(p + 36, 25), STREAM_E_TRUNCATED);
	HELLO_EXPECT(put16(p + 36, 23), STREAM_E_TRAILING);
	HELLO_EXPECT(put16(p + 36, STREAM_MAX_DEVICES_LEN + 1), STREAM_E_STRING);
	HELLO_EXPECT(p[38] = 0, STREAM_E_STRING);    /* NUL inside */
	HELLO_EXPECT(p[39] = 0x1b, STREAM_E_STRING); /* an escape */
	HELLO_EXPECT(p[40] = 0x80, STREAM_E_STRING);
	/* Too short for magic, for version, for the fixed part. */
	HELLO_EXPECT(put32(buf + 4, 3), STREAM_E_TRUNCATED);
	HELLO_EXPECT(put32(buf + 4, 5), STREAM_E_TRUNCATED);
	HELLO_EXPECT(put32(buf + 4, 37), STREAM_E_TRUNCATED);
	/* A version-1 HELLO (26 fixed bytes) fails on its version, not its size. */
	HELLO_EXPECT((put16(p + 4, 1), put32(buf + 4, 26 + 24)), STREAM_E_VERSION);
#undef HELLO_EXPECT
}

static void test_check_hello(void)
{
	struct stream_hello want = hello0, got = hello0;

	CHECK_EQ(stream_check_hello(&got, &want), 0);
	got.page_size = 65536;
	CHECK_EQ(stream_check_hello(&got, &want), STREAM_E_PAGE_SIZE);
	got = hello0;
	got.ram_size += PAGE;
	CHECK_EQ(stream_check_hello(&got, &want), STREAM_E_CONFIG);
	got = hello0;
	got.nr_vcpus = 3;
	CHECK_EQ(stream_check_hello(&got, &want), STREAM_E_CONFIG);
	got = hello0;
	got.devices = "uart;balloon:hint,REPORT";
	CHECK_EQ(stream_check_hello(&got, &want), STREAM_E_CONFIG);
	got = hello0;
	want.flags = 0; /* this side does not accept ZSTD */
	CHECK_EQ(stream_check_hello(&got, &want), STREAM_E_CONFIG);
	got.flags = 0;
	CHECK_EQ(stream_check_hello(&got, &want), 0);
}

static void test_ack_error_errors(void)
{
	struct stream_record rec;
	uint8_t *p = buf + STREAM_HDR_SIZE;
	ssize_t n;

#define ACK(r) stream_encode_ack(buf, sizeof(buf), STREAM_PHASE_SETUP, 0, r)
	REC_EXPECT(ACK("ok"), put16(p, 0), STREAM_E_PHASE);
	REC_EXPECT(ACK("ok"), put16(p, 7), STREAM_E_PHASE);
	REC_EXPECT(ACK("ok"), put16(p, 0xffff), STREAM_E_PHASE);
	REC_EXPECT(ACK("ok"), put16(p + 2, 3), STREAM_E_TRUNCATED);
	REC_EXPECT(ACK("ok"), put16(p + 2, 1), STREAM_E_TRAILING);
	REC_EXPECT(ACK("ok"), put16(p + 2, STREAM_MAX_REASON_LEN + 1), STREAM_E_STRING);
	REC_EXPECT(ACK("ok"), p[9] = 0, STREAM_E_STRING);
	REC_EXPECT(ACK("ok"), p[8] = '\n', STREAM_E_STRING);
	REC_EXPECT(ACK(NULL), put32(buf + 4, 7), STREAM_E_TRUNCATED);
#define ERR(r) stream_encode_error(buf, sizeof(buf), 1, r)
	REC_EXPECT(ERR("bad"), put16(p + 4, 4), STREAM_E_TRUNCATED);
	REC_EXPECT(ERR("bad"), put16(p + 4, 2), STREAM_E_TRAILING);
	REC_EXPECT(ERR("bad"), p[7] = 0, STREAM_E_STRING);
	REC_EXPECT(ERR(NULL), put32(buf + 4, 5), STREAM_E_TRUNCATED);
	/* Fixed-size records: one byte short or long. */
	REC_EXPECT(stream_encode_iter(buf, sizeof(buf), 1), put32(buf + 4, 3), STREAM_E_TRUNCATED);
	REC_EXPECT(stream_encode_iter(buf, sizeof(buf), 1), put32(buf + 4, 5), STREAM_E_TRAILING);
	REC_EXPECT(stream_encode_precopy_done(buf, sizeof(buf)), put32(buf + 4, 1),
		   STREAM_E_TRAILING);
	REC_EXPECT(stream_encode_sync(buf, sizeof(buf)), put32(buf + 4, 1), STREAM_E_TRAILING);
	REC_EXPECT(stream_encode_end(buf, sizeof(buf), 1, 1), put32(buf + 4, 11),
		   STREAM_E_TRUNCATED);
	REC_EXPECT(stream_encode_end(buf, sizeof(buf), 1, 1), put32(buf + 4, 13),
		   STREAM_E_TRAILING);
#define JOIN(i, n) stream_encode_join(buf, sizeof(buf), &(struct stream_join){ 7, (i), (n) })
	REC_EXPECT(JOIN(1, 2), put32(buf + 4, 11), STREAM_E_TRUNCATED);
	REC_EXPECT(JOIN(1, 2), put32(buf + 4, 13), STREAM_E_TRAILING);
	/* Index 1..connections-1, connections 2..256. */
	REC_EXPECT(JOIN(1, 2), put16(p + 8, 0), STREAM_E_JOIN);
	REC_EXPECT(JOIN(1, 2), put16(p + 8, 2), STREAM_E_JOIN);
	REC_EXPECT(JOIN(1, 2), put16(p + 10, 1), STREAM_E_JOIN);
	REC_EXPECT(JOIN(1, 2), (put16(p + 8, 300), put16(p + 10, 301)), STREAM_E_JOIN);
	REC_EXPECT(JOIN(1, 2), (put16(p + 8, 255), put16(p + 10, 256)), STREAM_JOIN);
#undef JOIN
#undef ACK
#undef ERR
}

static void test_state_errors(void)
{
	struct stream_record rec;
	uint8_t *p = buf + STREAM_HDR_SIZE;
	ssize_t n;
	/* payload: name_len(2) "blk"(3) instance version section_id data_len "xyz" footer */
#define STATE() stream_encode_state(buf, sizeof(buf), "blk", 0, 1, 5, "xyz", 3)
	REC_EXPECT(STATE(), put32(p + 5 + 8, 6), STREAM_E_STATE_FOOTER); /* section id */
	REC_EXPECT(STATE(), put32(p + 5 + 16 + 3, 4), STREAM_E_STATE_FOOTER);
	REC_EXPECT(STATE(), put16(p, 0), STREAM_E_STRING);
	REC_EXPECT(STATE(), put16(p, STREAM_MAX_NAME_LEN + 1), STREAM_E_STRING);
	REC_EXPECT(STATE(), p[3] = 0, STREAM_E_STRING);   /* NUL in the name */
	REC_EXPECT(STATE(), p[2] = '.', STREAM_E_STRING); /* must start alphanumeric */
	REC_EXPECT(STATE(), p[4] = 'K', STREAM_E_STRING);
	REC_EXPECT(STATE(), put32(p + 5 + 12, 4), STREAM_E_TRUNCATED); /* data_len */
	REC_EXPECT(STATE(), put32(p + 5 + 12, 0xffffffff), STREAM_E_TRUNCATED);
	REC_EXPECT(STATE(), put32(p + 5 + 12, 2), STREAM_E_TRAILING);
	REC_EXPECT(STATE(), put32(buf + 4, 1), STREAM_E_TRUNCATED);
	REC_EXPECT(STATE(), put32(buf + 4, 5 + 17), STREAM_E_TRUNCATED);
	/* A name of exactly the limit is fine. */
	n = stream_encode_state(buf, sizeof(buf),
				"a23456789012345678901234567890123456789012345678901234567890123",
				0, 0, 0, NULL, 0);
	REQUIRE(n > 0);
	CHECK_EQ(decode_n(buf, (size_t)n, &rec), STREAM_STATE);
	CHECK_EQ(rec.state.name_len, STREAM_MAX_NAME_LEN);
#undef STATE
}

/* A RAM record with arbitrary (possibly invalid) fields, checksum fixed. */
static size_t raw_ram(uint8_t enc, uint8_t shift, const struct stream_range *r, unsigned n,
		      uint16_t nr_field, size_t data_len)
{
	uint8_t *p = buf + STREAM_HDR_SIZE;
	size_t len = 4 + 12 * (size_t)n + data_len;

	put16(buf, STREAM_RAM);
	put16(buf + 2, 0);
	put32(buf + 4, (uint32_t)len);
	p[0] = enc;
	p[1] = shift;
	put16(p + 2, nr_field);
	for (unsigned i = 0; i < n; i++) {
		put64(p + 4 + 12 * i, r[i].gpa);
		put32(p + 12 + 12 * i, r[i].pages);
	}
	memset(p + 4 + 12 * n, 0x5a, data_len);
	if (data_len >= 4 && enc == STREAM_RAM_ZSTD)
		put32(p + 4 + 12 * n, STREAM_ZSTD_MAGIC);
	fix_checksum(buf);
	return STREAM_HDR_SIZE + len;
}

static int ram_decode(uint8_t enc, const struct stream_range *r, unsigned n, size_t data_len)
{
	struct stream_record rec;

	return decode_n(buf, raw_ram(enc, 12, r, n, (uint16_t)n, data_len), &rec);
}

static void test_ram_errors(void)
{
	static struct stream_range many[STREAM_RAM_MAX_RANGES + 1];
	struct stream_record rec;
	struct stream_range r[3];
	const uint64_t top = 0xfffffffffffff000ULL; /* the last 4 KiB page */

	/* The valid baseline. */
	r[0] = (struct stream_range){ 0x1000, 1 };
	CHECK_EQ(ram_decode(STREAM_RAM_RAW, r, 1, PAGE), STREAM_RAM);
	/* Encodings and page sizes. */
	CHECK_EQ(ram_decode(0, r, 1, PAGE), STREAM_E_RAM_ENCODING);
	CHECK_EQ(ram_decode(5, r, 1, PAGE), STREAM_E_RAM_ENCODING);
	/* SKIP carries no data, like ZERO. */
	CHECK_EQ(ram_decode(STREAM_RAM_SKIP, r, 1, 0), STREAM_RAM);
	CHECK_EQ(ram_decode(STREAM_RAM_SKIP, r, 1, PAGE), STREAM_E_RAM_DATA);
	CHECK_EQ(decode_n(buf, raw_ram(STREAM_RAM_ZERO, 11, r, 1, 1, 0), &rec), STREAM_E_PAGE_SIZE);
	CHECK_EQ(decode_n(buf, raw_ram(STREAM_RAM_ZERO, 17, r, 1, 1, 0), &rec), STREAM_E_PAGE_SIZE);
	/* Range count: zero, over the limit, more than the payload holds. */
	CHECK_EQ(ram_decode(STREAM_RAM_ZERO, r, 0, 0), STREAM_E_RAM_NRANGES);
	for (unsigned i = 0; i < STREAM_RAM_MAX_RANGES + 1; i++)
		many[i] = (struct stream_range){ (uint64_t)i * 2 * PAGE, 1 };
	CHECK_EQ(ram_decode(STREAM_RAM_ZERO, many, STREAM_RAM_MAX_RANGES, 0), STREAM_RAM);
	CHECK_EQ(ram_decode(STREAM_RAM_ZERO, many, STREAM_RAM_MAX_RANGES + 1, 0),
		 STREAM_E_RAM_NRANGES);
	CHECK_EQ(decode_n(buf, raw_ram(STREAM_RAM_ZERO, 12, r, 1, 2, 0), &rec), STREAM_E_TRUNCATED);
	CHECK_EQ(decode_n(buf, raw_ram(STREAM_RAM_ZERO, 12, r, 0, 0, 0), &rec),
		 STREAM_E_RAM_NRANGES);
	put32(buf + 4, 3);
	fix_checksum(buf);
	CHECK_EQ(decode_n(buf, STREAM_HDR_SIZE + 3, &rec), STREAM_E_TRUNCATED);
	/* Unaligned, zero count. */
	r[0] = (struct stream_range){ 0x1800, 1 };
	CHECK_EQ(ram_decode(STREAM_RAM_ZERO, r, 1, 0), STREAM_E_RAM_ALIGN);
	r[0] = (struct stream_range){ 0x1001, 1 };
	CHECK_EQ(ram_decode(STREAM_RAM_ZERO, r, 1, 0), STREAM_E_RAM_ALIGN);
	r[0] = (struct stream_range){ 0x2000, 0 };
	CHECK_EQ(ram_decode(STREAM_RAM_ZERO, r, 1, 0), STREAM_E_RAM_COUNT);
	/* count * page size beyond any bound (2^32-1 pages), and per-record totals. */
	r[0] = (struct stream_range){ 0, 0xffffffff };
	CHECK_EQ(ram_decode(STREAM_RAM_ZERO, r, 1, 0), STREAM_E_RAM_PAGES);
	CHECK_EQ(ram_decode(STREAM_RAM_RAW, r, 1, 0), STREAM_E_RAM_PAGES);
	r[0] = (struct stream_range){ 0, STREAM_RAM_MAX_BYTES / PAGE + 1 };
	CHECK_EQ(ram_decode(STREAM_RAM_ZSTD, r, 1, 8), STREAM_E_RAM_PAGES);
	r[0] = (struct stream_range){ 0, STREAM_RAM_MAX_ZERO_PAGES };
	r[1] = (struct stream_range){ 1ULL << 40, 1 };
	CHECK_EQ(ram_decode(STREAM_RAM_ZERO, r, 1, 0), STREAM_RAM);
	CHECK_EQ(ram_decode(STREAM_RAM_ZERO, r, 2, 0), STREAM_E_RAM_PAGES);
	/* gpa + length past 2^64; ending exactly at 2^64 is fine (and last). */
	r[0] = (struct stream_range){ top, 2 };
	CHECK_EQ(ram_decode(STREAM_RAM_ZERO, r, 1, 0), STREAM_E_RAM_OVERFLOW);
	r[0] = (struct stream_range){ top - 0x1000, 0x100000 };
	CHECK_EQ(ram_decode(STREAM_RAM_ZERO, r, 1, 0), STREAM_E_RAM_OVERFLOW);
	r[0] = (struct stream_range){ top, 1 };
	CHECK_EQ(ram_decode(STREAM_RAM_ZERO, r, 1, 0), STREAM_RAM);
	r[1] = (struct stream_range){ top, 1 };
	CHECK_EQ(ram_decode(STREAM_RAM_ZERO, r, 2, 0), STREAM_E_RAM_ORDER);
	/* Order: overlapping, descending, adjacent (fine). */
	r[0] = (struct stream_range){ 0x10000, 4 };
	r[1] = (struct stream_range){ 0x13000, 1 };
	CHECK_EQ(ram_decode(STREAM_RAM_ZERO, r, 2, 0), STREAM_E_RAM_ORDER);
	r[1] = (struct stream_range){ 0x1000, 1 };
	CHECK_EQ(ram_decode(STREAM_RAM_ZERO, r, 2, 0), STREAM_E_RAM_ORDER);
	r[1] = (struct stream_range){ 0x14000, 1 };
	CHECK_EQ(ram_decode(STREAM_RAM_ZERO, r, 2, 0), STREAM_RAM);
	/* Data length against ranges and encoding. */
	r[0] = (struct stream_range){ 0x1000, 2 };
	CHECK_EQ(ram_decode(STREAM_RAM_RAW, r, 1, 2 * PAGE), STREAM_RAM);
	CHECK_EQ(ram_decode(STREAM_RAM_RAW, r, 1, 2 * PAGE - 1), STREAM_E_RAM_DATA);
	CHECK_EQ(ram_decode(STREAM_RAM_RAW, r, 1, 2 * PAGE + 1), STREAM_E_RAM_DATA);
	CHECK_EQ(ram_decode(STREAM_RAM_RAW, r, 1, 0), STREAM_E_RAM_DATA);
	CHECK_EQ(ram_decode(STREAM_RAM_ZERO, r, 1, 1), STREAM_E_RAM_DATA);
	CHECK_EQ(ram_decode(STREAM_RAM_ZSTD, r, 1, 0), STREAM_E_RAM_DATA);
	CHECK_EQ(ram_decode(STREAM_RAM_ZSTD, r, 1, 3), STREAM_E_RAM_DATA);
	CHECK_EQ(ram_decode(STREAM_RAM_ZSTD, r, 1, 4), STREAM_RAM);
	raw_ram(STREAM_RAM_ZSTD, 12, r, 1, 1, 10);
	buf[STREAM_HDR_SIZE + 16] ^= 1; /* the frame magic */
	fix_checksum(buf);
	CHECK_EQ(decode_n(buf, STREAM_HDR_SIZE + 26, &rec), STREAM_E_RAM_ZSTD);
}

static void test_check_ram_ranges(void)
{
	/* 3 GiB low, then 1 GiB from 4 GiB (like vmm/mem.c's hole). */
	const struct stream_region regions[] = { { 0, 3ULL << 30 }, { 4ULL << 30, 1ULL << 30 } };
	const struct stream_layout layout = { .page_size = PAGE, .nregions = 2, .regions = regions };
	struct stream_layout big = layout;
	struct stream_record rec;
	struct stream_range r[2];

#define RANGES_EXPECT(n, want)                                                             \
	do {                                                                               \
		REQUIRE(ram_decode(STREAM_RAM_ZERO, r, (n), 0) == STREAM_RAM);             \
		REQUIRE(stream_decode(buf, STREAM_HDR_SIZE + 4 + 12 * (n), &rec, &(size_t){0}) \
			== STREAM_RAM);                                                    \
		CHECK_EQ(stream_check_ram_ranges(&rec, &layout), (want));                  \
	} while (0)
	r[0] = (struct stream_range){ 0, 1 };
	r[1] = (struct stream_range){ (4ULL << 30) + (1ULL << 30) - PAGE, 1 };
	RANGES_EXPECT(2, 0);
	r[0] = (struct stream_range){ (3ULL << 30) - PAGE, 1 };
	RANGES_EXPECT(1, 0);
	r[0] = (struct stream_range){ (3ULL << 30) - PAGE, 2 }; /* into the hole */
	RANGES_EXPECT(1, STREAM_E_RAM_OUTSIDE);
	r[0] = (struct stream_range){ 3ULL << 30, 1 };
	RANGES_EXPECT(1, STREAM_E_RAM_OUTSIDE);
	r[0] = (struct stream_range){ 0, 1 };
	r[1] = (struct stream_range){ 5ULL << 30, 1 }; /* just past the end */
	RANGES_EXPECT(2, STREAM_E_RAM_OUTSIDE);
	r[0] = (struct stream_range){ 0xfffffffffffff000ULL, 1 };
	RANGES_EXPECT(1, STREAM_E_RAM_OUTSIDE);
	r[0] = (struct stream_range){ 0, 1 };
	RANGES_EXPECT(1, 0);
	big.page_size = 65536;
	CHECK_EQ(stream_check_ram_ranges(&rec, &big), STREAM_E_PAGE_SIZE);
#undef RANGES_EXPECT
}

static void test_sequence(void)
{
	static uint8_t stream[64 << 10];
	struct stream_record recs[16], rec;
	struct stream_seq seq;
	size_t len, off = 0, used;
	int types[32], nt;
	ssize_t n;

	nt = whole_stream(stream, sizeof(stream), &len, types);
	REQUIRE(nt == 12);
	for (int i = 0; i < nt; i++) {
		REQUIRE(stream_decode(stream + off, len - off, &recs[i], &used) == types[i]);
		off += used;
	}
	/* Anything but HELLO first. */
	stream_seq_init(&seq);
	CHECK_EQ(stream_seq_next(&seq, &recs[1]), STREAM_E_ORDER);
	/* STATE before PRECOPY_DONE; a second HELLO; ACK from the source. */
	stream_seq_init(&seq);
	CHECK_EQ(stream_seq_next(&seq, &recs[0]), 0);
	CHECK_EQ(stream_seq_next(&seq, &recs[8]), STREAM_E_ORDER);
	CHECK_EQ(stream_seq_next(&seq, &recs[0]), STREAM_E_ORDER);
	n = stream_encode_ack(buf, sizeof(buf), STREAM_PHASE_SETUP, 0, NULL);
	REQUIRE(stream_decode(buf, (size_t)n, &rec, &used) == STREAM_ACK);
	CHECK_EQ(stream_seq_next(&seq, &rec), STREAM_E_ORDER);
	/* Iterations must increase. */
	CHECK_EQ(stream_seq_next(&seq, &recs[4]), 0); /* ITER 1 */
	CHECK_EQ(stream_seq_next(&seq, &recs[1]), STREAM_E_ITER); /* ITER 0 */
	CHECK_EQ(stream_seq_next(&seq, &recs[4]), STREAM_E_ITER);
	/* ITER after PRECOPY_DONE; section ids must increase; END tallies. */
	CHECK_EQ(stream_seq_next(&seq, &recs[6]), 0);
	CHECK_EQ(stream_seq_next(&seq, &recs[4]), STREAM_E_ORDER);
	CHECK_EQ(stream_seq_next(&seq, &recs[9]), 0);
	CHECK_EQ(stream_seq_next(&seq, &recs[8]), STREAM_E_ORDER);
	CHECK_EQ(stream_seq_next(&seq, &recs[11]), STREAM_E_TALLY);
	/* ERROR at any point ends the stream. */
	n = stream_encode_error(buf, sizeof(buf), 1, "x");
	REQUIRE(stream_decode(buf, (size_t)n, &rec, &used) == STREAM_ERROR);
	CHECK_EQ(stream_seq_next(&seq, &rec), 0);
	CHECK_EQ(seq.phase, STREAM_SEQ_ABORTED);
	CHECK_EQ(stream_seq_next(&seq, &recs[2]), STREAM_E_ORDER);
	/* RAM with another page size than HELLO's, ZSTD without the flag. */
	{
		const struct stream_range r[] = { { 0x10000, 1 } };
		const uint8_t frame[] = { 0x28, 0xb5, 0x2f, 0xfd };
		struct stream_hello h = hello0;

		n = stream_encode_ram(buf, sizeof(buf), STREAM_RAM_ZERO, 65536, r, 1, NULL, 0);
		REQUIRE(stream_decode(buf, (size_t)n, &rec, &used) == STREAM_RAM);
		stream_seq_init(&seq);
		CHECK_EQ(stream_seq_next(&seq, &recs[0]), 0);
		CHECK_EQ(stream_seq_next(&seq, &rec), STREAM_E_PAGE_SIZE);
		n = stream_encode_ram(buf, sizeof(buf), STREAM_RAM_ZSTD, PAGE, r, 1, frame, 4);
		REQUIRE(stream_decode(buf, (size_t)n, &rec, &used) == STREAM_RAM);
		CHECK_EQ(stream_seq_next(&seq, &rec), 0);
		h.flags = 0;
		n = stream_encode_hello(buf + 1000, sizeof(buf) - 1000, &h);
		REQUIRE(stream_decode(buf + 1000, (size_t)n, &recs[15], &used) == STREAM_HELLO);
		stream_seq_init(&seq);
		CHECK_EQ(stream_seq_next(&seq, &recs[15]), 0);
		CHECK_EQ(stream_seq_next(&seq, &rec), STREAM_E_RAM_ENCODING);
	}
	/* After END only COMMIT of this session, once; then nothing. */
	stream_seq_init(&seq);
	for (int i = 0; i < nt; i++)
		CHECK_EQ(stream_seq_next(&seq, &recs[i]), 0);
	CHECK_EQ(seq.phase, STREAM_SEQ_ENDED);
	CHECK_EQ(stream_seq_next(&seq, &recs[2]), STREAM_E_ORDER);
	n = stream_encode_commit(buf, sizeof(buf), recs[0].hello.session + 1);
	REQUIRE(stream_decode(buf, (size_t)n, &rec, &used) == STREAM_COMMIT);
	CHECK_EQ(stream_seq_next(&seq, &rec), STREAM_E_JOIN);
	n = stream_encode_commit(buf, sizeof(buf), recs[0].hello.session);
	REQUIRE(n == STREAM_HDR_SIZE + 8);
	REQUIRE(stream_decode(buf, (size_t)n, &rec, &used) == STREAM_COMMIT);
	CHECK_EQ(rec.commit_session, recs[0].hello.session);
	CHECK_EQ(stream_seq_next(&seq, &rec), 0);
	CHECK_EQ(seq.phase, STREAM_SEQ_COMMITTED);
	CHECK_EQ(stream_seq_next(&seq, &rec), STREAM_E_ORDER);
	/* COMMIT before END is out of order; ERROR after END (a source that
	 * gave up waiting for READY) ends the stream. */
	stream_seq_init(&seq);
	CHECK_EQ(stream_seq_next(&seq, &recs[0]), 0);
	CHECK_EQ(stream_seq_next(&seq, &rec), STREAM_E_ORDER);
	stream_seq_init(&seq);
	for (int i = 0; i < nt; i++)
		CHECK_EQ(stream_seq_next(&seq, &recs[i]), 0);
	n = stream_encode_error(buf, sizeof(buf), 1, "no READY");
	REQUIRE(stream_decode(buf, (size_t)n, &rec, &used) == STREAM_ERROR);
	CHECK_EQ(stream_seq_next(&seq, &rec), 0);
	CHECK_EQ(seq.phase, STREAM_SEQ_ABORTED);
	/* A COMMIT payload must be exactly the session. */
	n = stream_encode_commit(buf, sizeof(buf), 7);
	put32(buf + 4, 9);
	fix_checksum(buf);
	CHECK_EQ(stream_decode(buf, (size_t)n + 1, &rec, &used), STREAM_E_TRAILING);
	CHECK_EQ(stream_encode_commit(buf, 19, 7), -ENOSPC);
}

/* Decodes a ZERO record of one range into rec (its bytes in out). */
static void zero_rec(uint8_t *out, size_t cap, uint64_t gpa, uint32_t pages,
		     struct stream_record *rec)
{
	const struct stream_range r[] = { { gpa, pages } };
	ssize_t n = stream_encode_ram(out, cap, STREAM_RAM_ZERO, PAGE, r, 1, NULL, 0);
	size_t used;

	REQUIRE(n > 0);
	REQUIRE(stream_decode(out, (size_t)n, rec, &used) == STREAM_RAM);
}

/* A record encoded into out and decoded into rec. */
#define DECODED(out, rec, encode)                                                          \
	do {                                                                               \
		ssize_t n_ = (encode);                                                     \
		size_t used_;                                                              \
		REQUIRE(n_ > 0);                                                           \
		REQUIRE(stream_decode((out), (size_t)n_, (rec), &used_) > 0);              \
	} while (0)

/* Four connections, stripes of 4 MiB: stripe i belongs to connection i % 4. */
static void test_sequence_connections(void)
{
	static uint8_t b[8][256];
	const struct stream_hello h4 = hello4();
	struct stream_record hello, ram, rec;
	struct stream_seq main, lane;

	CHECK_EQ(stream_lane_of(0, 22, 4), 0);
	CHECK_EQ(stream_lane_of(5ULL << 22, 22, 4), 1);
	CHECK_EQ(stream_lane_of((4ULL << 30) + (2ULL << 22), 22, 4), 2);
	CHECK_EQ(stream_lane_of(5ULL << 22, 22, 1), 0);
	DECODED(b[0], &hello, stream_encode_hello(b[0], sizeof(b[0]), &h4));
	stream_seq_init(&main);
	REQUIRE(stream_seq_next(&main, &hello) == 0);
	/* Connection 0 carries stripes 0, 4, 8, ... and no JOIN. */
	zero_rec(b[1], sizeof(b[1]), 0x1000, 3, &ram);
	CHECK_EQ(stream_seq_next(&main, &ram), 0);
	zero_rec(b[1], sizeof(b[1]), 4ULL << 22, 1024, &ram);
	CHECK_EQ(stream_seq_next(&main, &ram), 0);
	zero_rec(b[1], sizeof(b[1]), 1ULL << 22, 1, &ram);
	CHECK_EQ(stream_seq_next(&main, &ram), STREAM_E_RAM_LANE);
	/* A range may not run into the next stripe. */
	zero_rec(b[1], sizeof(b[1]), (1ULL << 22) - PAGE, 2, &ram);
	CHECK_EQ(stream_seq_next(&main, &ram), STREAM_E_RAM_LANE);
	DECODED(b[2], &rec, stream_encode_join(b[2], sizeof(b[2]),
					       &(struct stream_join){ h4.session, 1, 4 }));
	CHECK_EQ(stream_seq_next(&main, &rec), STREAM_E_ORDER);

	/* Connection 2: JOIN first, and only one of this session and size. */
	stream_seq_init_join(&lane, &main);
	zero_rec(b[1], sizeof(b[1]), 2ULL << 22, 1, &ram);
	CHECK_EQ(stream_seq_next(&lane, &ram), STREAM_E_ORDER);
	stream_seq_init_join(&lane, &main);
	DECODED(b[2], &rec, stream_encode_join(b[2], sizeof(b[2]),
					       &(struct stream_join){ h4.session + 1, 2, 4 }));
	CHECK_EQ(stream_seq_next(&lane, &rec), STREAM_E_JOIN);
	DECODED(b[2], &rec, stream_encode_join(b[2], sizeof(b[2]),
					       &(struct stream_join){ h4.session, 2, 3 }));
	CHECK_EQ(stream_seq_next(&lane, &rec), STREAM_E_JOIN);
	DECODED(b[2], &rec, stream_encode_join(b[2], sizeof(b[2]),
					       &(struct stream_join){ h4.session, 2, 4 }));
	CHECK_EQ(stream_seq_next(&lane, &rec), 0);
	CHECK_EQ(lane.index, 2);
	CHECK_EQ(stream_seq_next(&lane, &rec), STREAM_E_ORDER); /* a second JOIN */
	/* Its stripes 2, 6, ...; ITER that increases; RAM on its own. */
	CHECK_EQ(stream_seq_next(&lane, &ram), 0);
	zero_rec(b[1], sizeof(b[1]), 6ULL << 22, 1024, &ram);
	CHECK_EQ(stream_seq_next(&lane, &ram), 0);
	zero_rec(b[1], sizeof(b[1]), 3ULL << 22, 1, &ram);
	CHECK_EQ(stream_seq_next(&lane, &ram), STREAM_E_RAM_LANE);
	DECODED(b[3], &rec, stream_encode_iter(b[3], sizeof(b[3]), 0));
	CHECK_EQ(stream_seq_next(&lane, &rec), 0);
	DECODED(b[3], &rec, stream_encode_iter(b[3], sizeof(b[3]), 1));
	CHECK_EQ(stream_seq_next(&lane, &rec), 0);
	CHECK_EQ(stream_seq_next(&lane, &rec), STREAM_E_ITER);
	DECODED(b[7], &rec, stream_encode_sync(b[7], sizeof(b[7])));
	CHECK_EQ(stream_seq_next(&lane, &rec), 0);
	CHECK_EQ(stream_seq_next(&main, &rec), 0);
	DECODED(b[4], &rec, stream_encode_precopy_done(b[4], sizeof(b[4])));
	CHECK_EQ(stream_seq_next(&lane, &rec), STREAM_E_ORDER);
	/* Connection 0: no SYNC once pre-copy is over. */
	CHECK_EQ(stream_seq_next(&main, &rec), 0);
	DECODED(b[7], &rec, stream_encode_sync(b[7], sizeof(b[7])));
	CHECK_EQ(stream_seq_next(&main, &rec), STREAM_E_ORDER);
	DECODED(b[4], &rec, stream_encode_state(b[4], sizeof(b[4]), "vm", 0, 1, 1, NULL, 0));
	CHECK_EQ(stream_seq_next(&lane, &rec), STREAM_E_ORDER);
	DECODED(b[4], &rec, stream_encode_hello(b[4], sizeof(b[4]), &h4));
	CHECK_EQ(stream_seq_next(&lane, &rec), STREAM_E_ORDER);
	/* Its END counts its own pages (1 + 1024) and no state. */
	DECODED(b[5], &rec, stream_encode_end(b[5], sizeof(b[5]), 1025, 1));
	CHECK_EQ(stream_seq_next(&lane, &rec), STREAM_E_TALLY);
	DECODED(b[5], &rec, stream_encode_end(b[5], sizeof(b[5]), 1024, 0));
	CHECK_EQ(stream_seq_next(&lane, &rec), STREAM_E_TALLY);
	DECODED(b[5], &rec, stream_encode_end(b[5], sizeof(b[5]), 1025, 0));
	CHECK_EQ(stream_seq_next(&lane, &rec), 0);
	CHECK_EQ(lane.phase, STREAM_SEQ_LANE_ENDED);
	CHECK_EQ(stream_seq_next(&lane, &ram), STREAM_E_ORDER);
	/* ERROR on a connection ends it. */
	stream_seq_init_join(&lane, &main);
	DECODED(b[6], &rec, stream_encode_error(b[6], sizeof(b[6]), 1, "no"));
	CHECK_EQ(stream_seq_next(&lane, &rec), 0);
	CHECK_EQ(lane.phase, STREAM_SEQ_ABORTED);
	/* One connection: a range may span stripes. */
	DECODED(b[0], &hello, stream_encode_hello(b[0], sizeof(b[0]), &hello0));
	stream_seq_init(&main);
	REQUIRE(stream_seq_next(&main, &hello) == 0);
	zero_rec(b[1], sizeof(b[1]), (1ULL << 22) - PAGE, 2, &ram);
	CHECK_EQ(stream_seq_next(&main, &ram), 0);
}

static void test_encoder_limits(void)
{
	const struct stream_range r[] = { { 0, 2 } }, bad[] = { { 0x800, 1 } };
	struct stream_hello h = hello0;
	struct stream_ram_enc e;
	char longer[STREAM_MAX_REASON_LEN + 2];
	ssize_t n;

	/* -ENOSPC one byte short, for every encoder. */
	n = stream_encode_hello(buf, sizeof(buf), &hello0);
	CHECK_EQ(stream_encode_hello(buf, (size_t)n - 1, &hello0), -ENOSPC);
	n = stream_encode_ack(buf, sizeof(buf), STREAM_PHASE_SETUP, 0, "why");
	CHECK_EQ(stream_encode_ack(buf, (size_t)n - 1, STREAM_PHASE_SETUP, 0, "why"), -ENOSPC);
	n = stream_encode_error(buf, sizeof(buf), 0, "why");
	CHECK_EQ(stream_encode_error(buf, (size_t)n - 1, 0, "why"), -ENOSPC);
	CHECK_EQ(stream_encode_join(buf, 23, &(struct stream_join){ 1, 1, 2 }), -ENOSPC);
	CHECK_EQ(stream_encode_join(buf, 24, &(struct stream_join){ 1, 1, 2 }), 24);
	CHECK_EQ(stream_encode_iter(buf, 15, 0), -ENOSPC);
	CHECK_EQ(stream_encode_precopy_done(buf, 11), -ENOSPC);
	CHECK_EQ(stream_encode_end(buf, 23, 0, 0), -ENOSPC);
	n = stream_encode_state(buf, sizeof(buf), "x", 0, 0, 0, "abc", 3);
	CHECK_EQ(stream_encode_state(buf, (size_t)n - 1, "x", 0, 0, 0, "abc", 3), -ENOSPC);
	n = stream_encode_ram(buf, sizeof(buf), STREAM_RAM_RAW, PAGE, r, 1, buf + 20000, 2 * PAGE);
	CHECK_EQ(n, STREAM_HDR_SIZE + 16 + 2 * PAGE);
	CHECK_EQ(stream_encode_ram(buf, (size_t)n - 1, STREAM_RAM_RAW, PAGE, r, 1, buf + 20000,
				   2 * PAGE), -ENOSPC);
	CHECK_EQ(stream_ram_begin(&e, buf, 27, STREAM_RAM_ZERO, PAGE, r, 1), -ENOSPC);
	CHECK_EQ(stream_ram_begin(&e, buf, 28, STREAM_RAM_ZERO, PAGE, r, 1), 0);
	CHECK_EQ(stream_ram_begin(&e, buf, 31, STREAM_RAM_ZSTD, PAGE, r, 1), -ENOSPC);
	/* -EINVAL for what the decoder would reject. */
	h.page_size = 3000;
	CHECK_EQ(stream_encode_hello(buf, sizeof(buf), &h), -EINVAL);
	h = hello0;
	h.flags = 0x8000;
	CHECK_EQ(stream_encode_hello(buf, sizeof(buf), &h), -EINVAL);
	h = hello0;
	h.devices = "tab\there";
	h.devices_len = 8;
	CHECK_EQ(stream_encode_hello(buf, sizeof(buf), &h), -EINVAL);
	CHECK_EQ(stream_encode_ack(buf, sizeof(buf), 0, 0, NULL), -EINVAL);
	CHECK_EQ(stream_encode_ack(buf, sizeof(buf), 7, 0, NULL), -EINVAL);
	CHECK_EQ(stream_encode_sync(buf, 11), -ENOSPC);
	CHECK_EQ(stream_encode_sync(buf, 12), 12);
	h = hello0;
	h.connections = 0;
	CHECK_EQ(stream_encode_hello(buf, sizeof(buf), &h), -EINVAL);
	h.connections = 1;
	h.stripe_shift = 12;
	CHECK_EQ(stream_encode_hello(buf, sizeof(buf), &h), -EINVAL);
	h.stripe_shift = 16;
	h.page_size = 1u << 16;
	CHECK(stream_encode_hello(buf, sizeof(buf), &h) > 0);
	CHECK_EQ(stream_encode_join(buf, sizeof(buf), &(struct stream_join){ 1, 0, 2 }), -EINVAL);
	CHECK_EQ(stream_encode_join(buf, sizeof(buf), &(struct stream_join){ 1, 2, 2 }), -EINVAL);
	CHECK_EQ(stream_encode_join(buf, sizeof(buf), &(struct stream_join){ 1, 1, 1 }), -EINVAL);
	memset(longer, 'a', sizeof(longer) - 1);
	longer[sizeof(longer) - 1] = '\0';
	CHECK_EQ(stream_encode_error(buf, sizeof(buf), 0, longer), -EINVAL);
	longer[STREAM_MAX_REASON_LEN] = '\0';
	CHECK(stream_encode_error(buf, sizeof(buf), 0, longer) > 0);
	CHECK_EQ(stream_encode_state(buf, sizeof(buf), "", 0, 0, 0, NULL, 0), -EINVAL);
	CHECK_EQ(stream_encode_state(buf, sizeof(buf), "Upper", 0, 0, 0, NULL, 0), -EINVAL);
	CHECK_EQ(stream_encode_state(buf, sizeof(buf), NULL, 0, 0, 0, NULL, 0), -EINVAL);
	CHECK_EQ(stream_encode_state(buf, sizeof(buf), longer, 0, 0, 0, NULL, 0), -EINVAL);
	CHECK_EQ(stream_encode_ram(buf, sizeof(buf), STREAM_RAM_RAW, PAGE, bad, 1, buf, PAGE),
		 -EINVAL);
	CHECK_EQ(stream_encode_ram(buf, sizeof(buf), STREAM_RAM_RAW, 5000, r, 1, buf, 2 * PAGE),
		 -EINVAL);
	CHECK_EQ(stream_encode_ram(buf, sizeof(buf), STREAM_RAM_ZERO, PAGE, r, 1, buf, 1), -EINVAL);
	CHECK_EQ(stream_encode_ram(buf, sizeof(buf), STREAM_RAM_ZSTD, PAGE, r, 1, "abcd", 4),
		 -EINVAL);
	CHECK_EQ(stream_encode_ram(buf, sizeof(buf), 0, PAGE, r, 1, NULL, 0), -EINVAL);
	CHECK_EQ(stream_encode_ram(buf, sizeof(buf), STREAM_RAM_ZERO, PAGE, r, 0, NULL, 0), -EINVAL);
}

static void test_strerror(void)
{
	for (int e = STREAM_E_MAGIC; e >= STREAM_E_RAM_LANE; e--) {
		const char *s = stream_strerror(e);

		CHECK(s && *s && strcmp(s, "unknown error") != 0);
		for (int f = STREAM_E_MAGIC; f > e; f--)
			CHECK(strcmp(s, stream_strerror(f)) != 0);
	}
	CHECK_CONTAINS(stream_strerror(STREAM_E_CHECKSUM), "checksum");
	CHECK_CONTAINS(stream_strerror(STREAM_E_MAGIC), "magic");
	CHECK_STREQ(stream_strerror(-ENOSPC), strerror(ENOSPC));
	CHECK_STREQ(stream_strerror(STREAM_E_RAM_LANE - 1), "unknown error");
	CHECK_STREQ(stream_strerror(-1000), "unknown error");
	CHECK_STREQ(stream_strerror(-5000), "unknown error");
	CHECK_STREQ(stream_strerror(1), "unknown error");
}

int main(int argc, char **argv)
{
	unit_init(argc, argv);
	RUN(test_hello_roundtrip);
	RUN(test_ack_error_roundtrip);
	RUN(test_small_records_roundtrip);
	RUN(test_state_roundtrip);
	RUN(test_ram_raw_roundtrip);
	RUN(test_ram_zero_zstd_roundtrip);
	RUN(test_incremental_bytewise);
	RUN(test_incremental_random_pieces);
	RUN(test_truncated_needs_more);
	RUN(test_header_errors);
	RUN(test_checksum);
	RUN(test_checksum_raw_covers_head_only);
	RUN(test_ram_head);
	RUN(test_hello_errors);
	RUN(test_check_hello);
	RUN(test_ack_error_errors);
	RUN(test_state_errors);
	RUN(test_ram_errors);
	RUN(test_check_ram_ranges);
	RUN(test_sequence);
	RUN(test_sequence_connections);
	RUN(test_encoder_limits);
	RUN(test_strerror);
	return unit_done();
}
