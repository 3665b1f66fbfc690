/* libFuzzer target for the migration stream decoder (migrate/stream.c).
 *
 * The input is a byte stream as a receiver would get it. Records are
 * decoded from it one after another until an error or "need more", and
 * each one is fed to the order checkers (of connection 0, and, once a
 * HELLO set the session up, of a connection after the first, which must
 * JOIN) and the guest-memory range check.
 * Invariants are checked with __builtin_trap():
 *   - a decoded record is re-encoded by the encoders into exactly the same
 *     bytes (whatever the decoder accepts, the encoder would have written);
 *   - consumed is the header plus the payload and never more than len;
 *   - any prefix of the input (the first half, and a cut chosen by the
 *     first byte) decodes to "need more" or to the same result as the
 *     whole, so incremental feeding never changes the outcome;
 *   - the head of a RAW RAM record (stream_decode_ram_head, read before
 *     its pages arrive) agrees with the whole record, also on a prefix;
 *   - every error has a message.
 * A checksum is a wall a mutated input rarely gets over, so the input is
 * decoded twice: as it is, and with every record's checksum recomputed
 * (following the lengths in the headers), which lets mutations reach the
 * field checks behind it.
 * Prefixes are copied into buffers of exactly their size, so a read past
 * len is an ASan report. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "migrate/stream.h"
#include "tests/fuzz/fuzz.h"

#define MAX_RECORDS 4096

/* A C string copy of a decoded (length-counted) string. */
static char *cstr(const char *s, size_t len)
{
	char *c = malloc(len + 1);

	if (c) {
		if (len)
			memcpy(c, s, len);
		c[len] = '\0';
	}
	return c;
}

static ssize_t reencode_ram(uint8_t *out, size_t cap, const struct stream_record *rec)
{
	struct stream_range ranges[STREAM_RAM_MAX_RANGES];

	for (unsigned i = 0; i < rec->ram.nr_ranges; i++)
		ranges[i] = stream_ram_range(rec, i);
	return stream_encode_ram(out, cap, rec->ram.encoding, 1u << rec->ram.page_shift, ranges,
				 rec->ram.nr_ranges, rec->ram.data, rec->ram.data_len);
}

/* Encodes rec again and compares with the bytes it came from. */
static void reencode(const uint8_t *in, size_t len, const struct stream_record *rec)
{
	uint8_t *out = malloc(len);
	char *s = NULL;
	ssize_t n = -1;

	if (!out)
		return;
	switch (rec->type) {
	case STREAM_HELLO:
		n = stream_encode_hello(out, len, &rec->hello);
		break;
	case STREAM_ACK:
		s = cstr(rec->ack.reason, rec->ack.reason_len);
		if (s)
			n = stream_encode_ack(out, len, rec->ack.phase, rec->ack.status, s);
		break;
	case STREAM_ERROR:
		s = cstr(rec->error.reason, rec->error.reason_len);
		if (s)
			n = stream_encode_error(out, len, rec->error.code, s);
		break;
	case STREAM_RAM:
		n = reencode_ram(out, len, rec);
		break;
	case STREAM_ITER:
		n = stream_encode_iter(out, len, rec->iteration);
		break;
	case STREAM_PRECOPY_DONE:
		n = stream_encode_precopy_done(out, len);
		break;
	case STREAM_STATE:
		s = cstr(rec->state.name, rec->state.name_len);
		if (s)
			n = stream_encode_state(out, len, s, rec->state.instance, rec->state.version,
						rec->state.section_id, rec->state.data,
						rec->state.data_len);
		break;
	case STREAM_END:
		n = stream_encode_end(out, len, rec->end.ram_pages, rec->end.state_count);
		break;
	case STREAM_JOIN:
		n = stream_encode_join(out, len, &rec->join);
		break;
	case STREAM_SYNC:
		n = stream_encode_sync(out, len);
		break;
	case STREAM_COMMIT:
		n = stream_encode_commit(out, len, rec->commit_session);
		break;
	default:
		__builtin_trap();
	}
	if (n != -1 || s) /* -1 only when a malloc failed */
		ENSURE(n == (ssize_t)len && memcmp(out, in, len) == 0);
	free(s);
	free(out);
}

static void check_record(const uint8_t *p, size_t len, size_t used,
			 const struct stream_record *rec)
{
	static const struct stream_region regions[] = { { 0, 3ULL << 30 },
							{ 4ULL << 30, 1ULL << 30 } };
	const struct stream_layout layout = { .page_size = 4096, .nregions = 2,
					      .regions = regions };
	int err;

	ENSURE(used == STREAM_HDR_SIZE + (size_t)rec->len && used <= len);
	reencode(p, used, rec);
	if (rec->type == STREAM_RAM) {
		ENSURE(rec->ram.raw_len == rec->ram.pages << rec->ram.page_shift);
		err = stream_check_ram_ranges(rec, &layout);
		ENSURE(err == 0 || err == STREAM_E_PAGE_SIZE || err == STREAM_E_RAM_OUTSIDE);
	}
}

/* The head of a RAW record (decoded before its pages arrive) agrees with
 * the whole record: same verdict when both have one, same ranges. Run on
 * an exact-size copy, so a read past len is an ASan report. */
static void check_head(const uint8_t *p, size_t len, int whole, const struct stream_record *w)
{
	struct stream_record rec;
	size_t head = 12345;
	uint8_t *copy = malloc(len ? len : 1);
	int h;

	if (!copy)
		return;
	if (len)
		memcpy(copy, p, len);
	h = stream_decode_ram_head(copy, len, &rec, &head);
	ENSURE(h == 0 || h == STREAM_RAM || strcmp(stream_strerror(h), "unknown error") != 0);
	ENSURE(h == 0 || whole == 0 || h == whole);
	if (h == STREAM_RAM) {
		ENSURE(head <= len && head == STREAM_HDR_SIZE + STREAM_RAM_HDR_SIZE +
						     (size_t)rec.ram.nr_ranges * STREAM_RAM_RANGE_SIZE);
		ENSURE(rec.ram.encoding == STREAM_RAM_RAW && !rec.ram.data &&
		       rec.ram.data_len == rec.ram.raw_len);
		ENSURE(head + rec.ram.data_len == STREAM_HDR_SIZE + (size_t)rec.len);
		if (whole == STREAM_RAM)
			ENSURE(rec.ram.pages == w->ram.pages && rec.ram.nr_ranges == w->ram.nr_ranges);
	} else {
		ENSURE(head == 0);
	}
	free(copy);
}

/* Decoding a prefix gives "need more" or what the whole gives. */
static void check_prefix(const uint8_t *p, size_t len, size_t cut, int whole, size_t whole_used)
{
	struct stream_record rec;
	uint8_t *copy;
	size_t used;
	int r;

	if (cut > len)
		cut = len;
	copy = malloc(cut ? cut : 1);
	if (!copy)
		return;
	if (cut)
		memcpy(copy, p, cut);
	r = stream_decode(copy, cut, &rec, &used);
	ENSURE(r == 0 || r == whole);
	ENSURE(r > 0 ? used == whole_used : used == 0);
	free(copy);
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Writes each whole record's correct checksum, as far as headers lead. */
static void fix_checksums(uint8_t *p, size_t size)
{
	size_t off = 0;

	while (size - off >= STREAM_HDR_SIZE) {
		uint32_t len = rd32(p + off + 4);
		uint64_t seed = rd32(p + off) | (uint64_t)len << 32;
		uint32_t crc;

		if (len > STREAM_MAX_PAYLOAD || len > size - off - STREAM_HDR_SIZE)
			break;
		const uint8_t *q = p + off + STREAM_HDR_SIZE;
		uint32_t cov = len;

		/* A RAW RAM record's page data is not covered (version 4). */
		if ((rd32(p + off) & 0xffff) == STREAM_RAM && len >= STREAM_RAM_HDR_SIZE &&
		    q[0] == STREAM_RAM_RAW &&
		    STREAM_RAM_HDR_SIZE + (q[2] | (uint32_t)q[3] << 8) * STREAM_RAM_RANGE_SIZE < len)
			cov = STREAM_RAM_HDR_SIZE + (q[2] | (uint32_t)q[3] << 8) * STREAM_RAM_RANGE_SIZE;
		crc = (uint32_t)XXH3_64bits_withSeed(q, cov, seed);
		for (int i = 0; i < 4; i++)
			p[off + 8 + i] = (uint8_t)(crc >> (8 * i));
		off += STREAM_HDR_SIZE + len;
	}
}

static void run(const uint8_t *data, size_t size)
{
	struct stream_record rec;
	struct stream_seq seq, lane;
	bool lane_on = false;
	size_t off = 0, used;
	int r = 0;

	stream_seq_init(&seq);
	for (int i = 0; i < MAX_RECORDS && off <= size; i++) {
		const uint8_t *p = data + off;
		size_t len = size - off;

		r = stream_decode(p, len, &rec, &used);
		check_head(p, len, r, &rec);
		if (i == 0) {
			check_head(p, len / 2, r, &rec);
			check_prefix(p, len, len / 2, r, used);
			if (size)
				check_prefix(p, len, data[0] * 8u, r, used);
		}
		if (r <= 0) {
			ENSURE(used == 0);
			break;
		}
		ENSURE(r == rec.type);
		check_record(p, len, used, &rec);
		if (lane_on) {
			int lr = stream_seq_next(&lane, &rec);

			ENSURE(lr == 0 || strcmp(stream_strerror(lr), "unknown error") != 0);
		}
		if (stream_seq_next(&seq, &rec) == 0 && rec.type == STREAM_HELLO) {
			/* The same records, as a second connection would see them. */
			stream_seq_init_join(&lane, &seq);
			ENSURE(lane.connections == rec.hello.connections);
			lane_on = true;
		}
		off += used;
	}
	if (r < 0) {
		const char *msg = stream_strerror(r);

		ENSURE(msg && msg[0] && strcmp(msg, "unknown error") != 0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *fixed;

	run(data, size);
	fixed = malloc(size ? size : 1);
	if (!fixed)
		return 0;
	if (size)
		memcpy(fixed, data, size);
	fix_checksums(fixed, size);
	run(fixed, size);
	free(fixed);
	return 0;
}
