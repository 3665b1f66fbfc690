/* The live-migration wire format: encode, decode, validate (see stream.h
 * and docs/migration-stream.md). Every field is read and written byte by
 * byte in little-endian order; every length from the peer is checked
 * before it is used, with overflow-safe arithmetic. */
#include "stream.h"

#include <errno.h>
#include <string.h>
#include <xxhash.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Fixed parts of each payload. */
#define HELLO_FIXED  38 /* magic..devices_len */
#define ACK_FIXED    8
#define ERROR_FIXED  6
#define ITER_SIZE    4
#define END_SIZE     12
#define JOIN_SIZE    12
#define COMMIT_SIZE  8
#define STATE_FIXED  22 /* name_len, instance, version, section_id, data_len, footer */

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p)
{
	return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

static void wr16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void wr32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void wr64(uint8_t *p, uint64_t v)
{
	wr32(p, (uint32_t)v);
	wr32(p + 4, (uint32_t)(v >> 32));
}

/* The payload bytes the checksum covers: all of them, except a RAW RAM
 * record's page data. Those pages go from guest memory to the socket and
 * from the socket into guest memory without a copy on either side, so
 * nobody could hash them: on the source the guest may write a page while
 * the kernel reads it (the page is dirty then and goes again), and the
 * destination writes them where they belong before it could check them.
 * TCP's own checksum guards them on the way, as it guards QEMU's stream;
 * what the checksum must catch, a framing error that would write pages to
 * the wrong place, lies in the headers and ranges
 * (docs/migration-stream.md, "What the checksum covers"). Only reads the
 * RAM header when it is inside len. */
static uint32_t covered_len(const uint8_t *hdr, const uint8_t *payload, uint32_t len)
{
	uint32_t head;

	if (rd16(hdr) != STREAM_RAM || len < STREAM_RAM_HDR_SIZE || payload[0] != STREAM_RAM_RAW)
		return len;
	head = STREAM_RAM_HDR_SIZE + (uint32_t)rd16(payload + 2) * STREAM_RAM_RANGE_SIZE;
	return head < len ? head : len;
}

/* XXH3, not crc32: it is several times faster (docs/migration-stream.md).
 * The header's first 8 bytes are the seed, so they are covered without a
 * second pass. */
static uint32_t record_checksum(const uint8_t *hdr, const uint8_t *payload, uint32_t len)
{
	len = covered_len(hdr, payload, len);
	return (uint32_t)XXH3_64bits_withSeed(len ? payload : NULL, len, rd64(hdr));
}

/* Table index of a STREAM_E_* code. */
#define E(code) (-1001 - (code))

static const char *const errors[] = {
	[E(STREAM_E_MAGIC)] = "bad magic: not a vmm migration stream",
	[E(STREAM_E_VERSION)] = "unsupported stream version",
	[E(STREAM_E_PAGE_SIZE)] = "page size unsupported or different from this side's",
	[E(STREAM_E_TYPE_ZERO)] = "record type 0 (invalid)",
	[E(STREAM_E_TYPE)] = "unknown record type",
	[E(STREAM_E_FLAGS)] = "unknown flags",
	[E(STREAM_E_TOO_LONG)] = "record length over the limit",
	[E(STREAM_E_CHECKSUM)] = "record checksum mismatch",
	[E(STREAM_E_TRUNCATED)] = "payload shorter than its fields say (truncated payload)",
	[E(STREAM_E_TRAILING)] = "payload longer than its fields say",
	[E(STREAM_E_STRING)] = "bad string: empty, too long or not printable ASCII",
	[E(STREAM_E_HELLO)] = "bad HELLO field (vCPU count, RAM size, connections or stripe size)",
	[E(STREAM_E_PHASE)] = "unknown ACK phase",
	[E(STREAM_E_RAM_ENCODING)] = "unknown RAM encoding",
	[E(STREAM_E_RAM_NRANGES)] = "RAM record with no ranges or too many",
	[E(STREAM_E_RAM_ALIGN)] = "RAM range address not page-aligned",
	[E(STREAM_E_RAM_COUNT)] = "RAM range of zero pages",
	[E(STREAM_E_RAM_PAGES)] = "too many pages in one RAM record",
	[E(STREAM_E_RAM_OVERFLOW)] = "RAM range runs past 2^64",
	[E(STREAM_E_RAM_ORDER)] = "RAM ranges overlap or are not in ascending order",
	[E(STREAM_E_RAM_DATA)] = "RAM data length does not match the ranges and encoding",
	[E(STREAM_E_RAM_ZSTD)] = "ZSTD RAM data is not a zstd frame",
	[E(STREAM_E_RAM_OUTSIDE)] = "RAM range outside guest memory",
	[E(STREAM_E_STATE_FOOTER)] = "STATE footer does not repeat the section id (misframed)",
	[E(STREAM_E_CONFIG)] = "the source VM differs from this one (RAM, vCPUs, devices or flags)",
	[E(STREAM_E_ORDER)] = "record not allowed at this point of the stream",
	[E(STREAM_E_TALLY)] = "END's counts differ from what was received",
	[E(STREAM_E_ITER)] = "pre-copy iteration numbers do not increase",
	[E(STREAM_E_JOIN)] = "JOIN does not belong to this migration (session, index or connection count)",
	[E(STREAM_E_RAM_LANE)] = "RAM range outside this connection's stripes",
};

const char *stream_strerror(int err)
{
	if (err <= STREAM_E_MAGIC && (size_t)E(err) < ARRAY_LEN(errors) && errors[E(err)])
		return errors[E(err)];
	if (err == 0)
		return "no error";
	if (err < 0 && err > -1000) /* -errno */
		return strerror(-err);
	return "unknown error";
}

/* Printable ASCII only: a peer's text goes to logs and terminals. */
static bool printable(const uint8_t *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (s[i] < 0x20 || s[i] > 0x7e)
			return false;
	return true;
}

/* Section names: [a-z0-9_.:-], starting with a letter or digit. */
static bool name_ok(const uint8_t *s, size_t len)
{
	if (len == 0 || len > STREAM_MAX_NAME_LEN)
		return false;
	for (size_t i = 0; i < len; i++) {
		uint8_t c = s[i];
		bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');

		if (!alnum && (i == 0 || (c != '_' && c != '.' && c != ':' && c != '-')))
			return false;
	}
	return true;
}

static bool page_size_ok(uint32_t page_size)
{
	return page_size >= (1u << STREAM_MIN_PAGE_SHIFT) &&
	       page_size <= (1u << STREAM_MAX_PAGE_SHIFT) && !(page_size & (page_size - 1));
}

/* The fields of HELLO that do not depend on the receiver. */
static bool hello_fields_ok(const struct stream_hello *h)
{
	return h->nr_vcpus && h->nr_vcpus <= STREAM_MAX_VCPUS && h->ram_size &&
	       !(h->ram_size % h->page_size) && h->connections &&
	       h->connections <= STREAM_MAX_CONNECTIONS &&
	       h->stripe_shift >= STREAM_MIN_STRIPE_SHIFT &&
	       h->stripe_shift <= STREAM_MAX_STRIPE_SHIFT &&
	       (1ULL << h->stripe_shift) >= h->page_size;
}

static int decode_hello(const uint8_t *p, uint32_t len, struct stream_hello *h)
{
	/* Magic and version first, so that any other peer fails with them. */
	if (len < 4)
		return STREAM_E_TRUNCATED;
	if (rd32(p) != STREAM_MAGIC)
		return STREAM_E_MAGIC;
	if (len < 6)
		return STREAM_E_TRUNCATED;
	h->version = rd16(p + 4);
	if (h->version != STREAM_VERSION)
		return STREAM_E_VERSION;
	if (len < HELLO_FIXED)
		return STREAM_E_TRUNCATED;
	h->flags = rd16(p + 6);
	h->page_size = rd32(p + 8);
	h->nr_vcpus = rd32(p + 12);
	h->ram_size = rd64(p + 16);
	h->connections = rd16(p + 24);
	h->stripe_shift = rd16(p + 26);
	h->session = rd64(p + 28);
	h->devices_len = rd16(p + 36);
	h->devices = (const char *)(p + HELLO_FIXED);
	if (h->flags & ~STREAM_HELLO_FLAGS_KNOWN)
		return STREAM_E_FLAGS;
	if (!page_size_ok(h->page_size))
		return STREAM_E_PAGE_SIZE;
	if (!hello_fields_ok(h))
		return STREAM_E_HELLO;
	if (h->devices_len > STREAM_MAX_DEVICES_LEN)
		return STREAM_E_STRING;
	if (len < HELLO_FIXED + (uint32_t)h->devices_len)
		return STREAM_E_TRUNCATED;
	if (len > HELLO_FIXED + (uint32_t)h->devices_len)
		return STREAM_E_TRAILING;
	if (!printable(p + HELLO_FIXED, h->devices_len))
		return STREAM_E_STRING;
	return 0;
}

/* A length-prefixed reason at p + off, which must end the payload. */
static int decode_reason(const uint8_t *p, uint32_t len, uint32_t off, uint16_t rlen,
			 const char **reason)
{
	if (rlen > STREAM_MAX_REASON_LEN)
		return STREAM_E_STRING;
	if (len < off + rlen)
		return STREAM_E_TRUNCATED;
	if (len > off + rlen)
		return STREAM_E_TRAILING;
	if (!printable(p + off, rlen))
		return STREAM_E_STRING;
	*reason = (const char *)(p + off);
	return 0;
}

static int decode_ack(const uint8_t *p, uint32_t len, struct stream_ack *a)
{
	if (len < ACK_FIXED)
		return STREAM_E_TRUNCATED;
	a->phase = rd16(p);
	a->reason_len = rd16(p + 2);
	a->status = rd32(p + 4);
	if (a->phase < STREAM_PHASE_SETUP || a->phase > STREAM_PHASE_MAX)
		return STREAM_E_PHASE;
	return decode_reason(p, len, ACK_FIXED, a->reason_len, &a->reason);
}

static int decode_error(const uint8_t *p, uint32_t len, struct stream_error *e)
{
	if (len < ERROR_FIXED)
		return STREAM_E_TRUNCATED;
	e->code = rd32(p);
	e->reason_len = rd16(p + 4);
	return decode_reason(p, len, ERROR_FIXED, e->reason_len, &e->reason);
}

static bool join_ok(const struct stream_join *j)
{
	return j->connections >= 2 && j->connections <= STREAM_MAX_CONNECTIONS && j->index >= 1 &&
	       j->index < j->connections;
}

static int decode_fixed(uint32_t len, uint32_t want)
{
	if (len < want)
		return STREAM_E_TRUNCATED;
	return len > want ? STREAM_E_TRAILING : 0;
}

static int decode_state(const uint8_t *p, uint32_t len, struct stream_state *s)
{
	uint32_t off, footer;

	if (len < 2)
		return STREAM_E_TRUNCATED;
	s->name_len = rd16(p);
	s->name = (const char *)(p + 2);
	if (s->name_len == 0 || s->name_len > STREAM_MAX_NAME_LEN)
		return STREAM_E_STRING;
	/* name_len <= 63, so none of these sums can overflow. */
	if (len < STATE_FIXED + (uint32_t)s->name_len)
		return STREAM_E_TRUNCATED;
	if (!name_ok(p + 2, s->name_len))
		return STREAM_E_STRING;
	off = 2u + s->name_len;
	s->instance = rd32(p + off);
	s->version = rd32(p + off + 4);
	s->section_id = rd32(p + off + 8);
	s->data_len = rd32(p + off + 12);
	off += 16;
	s->data = p + off;
	/* len - off - 4 >= 0 by the check above. */
	if (s->data_len > len - off - 4)
		return STREAM_E_TRUNCATED;
	if (s->data_len < len - off - 4)
		return STREAM_E_TRAILING;
	footer = rd32(p + off + s->data_len);
	if (footer != s->section_id)
		return STREAM_E_STATE_FOOTER;
	return 0;
}

struct stream_range stream_ram_range(const struct stream_record *rec, unsigned i)
{
	const uint8_t *p = rec->ram.ranges + (size_t)i * STREAM_RAM_RANGE_SIZE;

	return (struct stream_range){ .gpa = rd64(p), .pages = rd32(p + 8) };
}

/* The ranges alone: aligned, non-empty, no wrap, ascending and disjoint,
 * and the page total within the encoding's bound. */
static int check_ranges(const struct stream_range *r, unsigned n, unsigned shift,
			uint8_t encoding, uint64_t *pages_out)
{
	uint64_t page_size = 1ULL << shift, pages = 0, next = 0, end, bytes;
	bool no_data = encoding == STREAM_RAM_ZERO || encoding == STREAM_RAM_SKIP;
	uint64_t max_pages = no_data ? STREAM_RAM_MAX_ZERO_PAGES : STREAM_RAM_MAX_BYTES >> shift;

	if (n == 0 || n > STREAM_RAM_MAX_RANGES)
		return STREAM_E_RAM_NRANGES;
	for (unsigned i = 0; i < n; i++) {
		if (r[i].gpa & (page_size - 1))
			return STREAM_E_RAM_ALIGN;
		if (r[i].pages == 0)
			return STREAM_E_RAM_COUNT;
		if (r[i].pages > max_pages)
			return STREAM_E_RAM_PAGES;
		if (__builtin_mul_overflow((uint64_t)r[i].pages, page_size, &bytes) ||
		    __builtin_add_overflow(r[i].gpa, bytes - 1, &end))
			return STREAM_E_RAM_OVERFLOW;
		if (i > 0 && r[i].gpa < next)
			return STREAM_E_RAM_ORDER;
		/* end is the last byte; end + 1 may be 2^64 (then nothing may follow). */
		next = end + 1;
		if (next == 0 && i + 1 < n)
			return STREAM_E_RAM_ORDER;
		pages += r[i].pages;
		if (pages > max_pages)
			return STREAM_E_RAM_PAGES;
	}
	*pages_out = pages;
	return 0;
}

static int check_ram_data(uint8_t encoding, uint64_t raw_len, const uint8_t *data,
			  uint32_t data_len)
{
	switch (encoding) {
	case STREAM_RAM_RAW:
		return raw_len == data_len ? 0 : STREAM_E_RAM_DATA;
	case STREAM_RAM_ZERO:
	case STREAM_RAM_SKIP:
		return data_len == 0 ? 0 : STREAM_E_RAM_DATA;
	case STREAM_RAM_ZSTD:
		if (data_len < 4)
			return STREAM_E_RAM_DATA;
		return rd32(data) == STREAM_ZSTD_MAGIC ? 0 : STREAM_E_RAM_ZSTD;
	}
	return STREAM_E_RAM_ENCODING;
}

static int decode_ram(const uint8_t *p, uint32_t len, struct stream_ram *r)
{
	struct stream_range ranges[STREAM_RAM_MAX_RANGES];
	uint32_t ranges_len;
	int err;

	if (len < STREAM_RAM_HDR_SIZE)
		return STREAM_E_TRUNCATED;
	r->encoding = p[0];
	r->page_shift = p[1];
	r->nr_ranges = rd16(p + 2);
	if (r->encoding < STREAM_RAM_RAW || r->encoding > STREAM_RAM_ENCODING_MAX)
		return STREAM_E_RAM_ENCODING;
	if (r->page_shift < STREAM_MIN_PAGE_SHIFT || r->page_shift > STREAM_MAX_PAGE_SHIFT)
		return STREAM_E_PAGE_SIZE;
	if (r->nr_ranges == 0 || r->nr_ranges > STREAM_RAM_MAX_RANGES)
		return STREAM_E_RAM_NRANGES;
	ranges_len = (uint32_t)r->nr_ranges * STREAM_RAM_RANGE_SIZE;
	if (len < STREAM_RAM_HDR_SIZE + ranges_len)
		return STREAM_E_TRUNCATED;
	r->ranges = p + STREAM_RAM_HDR_SIZE;
	for (unsigned i = 0; i < r->nr_ranges; i++) {
		const uint8_t *q = r->ranges + (size_t)i * STREAM_RAM_RANGE_SIZE;

		ranges[i] = (struct stream_range){ .gpa = rd64(q), .pages = rd32(q + 8) };
	}
	err = check_ranges(ranges, r->nr_ranges, r->page_shift, r->encoding, &r->pages);
	if (err)
		return err;
	r->raw_len = r->pages << r->page_shift;
	r->data_len = len - STREAM_RAM_HDR_SIZE - ranges_len;
	r->data = r->data_len ? r->ranges + ranges_len : NULL;
	return check_ram_data(r->encoding, r->raw_len, r->data, r->data_len);
}

static int decode_payload(struct stream_record *out)
{
	const uint8_t *p = out->payload;
	uint32_t len = out->len;
	int err;

	switch (out->type) {
	case STREAM_HELLO:
		return decode_hello(p, len, &out->hello);
	case STREAM_ACK:
		return decode_ack(p, len, &out->ack);
	case STREAM_RAM:
		return decode_ram(p, len, &out->ram);
	case STREAM_ITER:
		err = decode_fixed(len, ITER_SIZE);
		if (!err)
			out->iteration = rd32(p);
		return err;
	case STREAM_PRECOPY_DONE:
	case STREAM_SYNC:
		return decode_fixed(len, 0);
	case STREAM_STATE:
		return decode_state(p, len, &out->state);
	case STREAM_END:
		err = decode_fixed(len, END_SIZE);
		if (!err) {
			out->end.ram_pages = rd64(p);
			out->end.state_count = rd32(p + 8);
		}
		return err;
	case STREAM_ERROR:
		return decode_error(p, len, &out->error);
	case STREAM_JOIN:
		err = decode_fixed(len, JOIN_SIZE);
		if (err)
			return err;
		out->join.session = rd64(p);
		out->join.index = rd16(p + 8);
		out->join.connections = rd16(p + 10);
		return join_ok(&out->join) ? 0 : STREAM_E_JOIN;
	case STREAM_COMMIT:
		err = decode_fixed(len, COMMIT_SIZE);
		if (!err)
			out->commit_session = rd64(p);
		return err;
	}
	return STREAM_E_TYPE;
}

int stream_decode(const uint8_t *buf, size_t len, struct stream_record *out, size_t *consumed)
{
	int err;

	*consumed = 0;
	if (len < STREAM_HDR_SIZE)
		return 0;
	memset(out, 0, sizeof(*out));
	out->type = rd16(buf);
	out->flags = rd16(buf + 2);
	out->len = rd32(buf + 4);
	/* The header is judged before its payload is waited for. */
	if (out->type == 0)
		return STREAM_E_TYPE_ZERO;
	if (out->type > STREAM_TYPE_MAX)
		return STREAM_E_TYPE;
	if (out->flags != 0)
		return STREAM_E_FLAGS;
	if (out->len > STREAM_MAX_PAYLOAD)
		return STREAM_E_TOO_LONG;
	if (len - STREAM_HDR_SIZE < out->len)
		return 0;
	out->payload = buf + STREAM_HDR_SIZE;
	if (record_checksum(buf, out->payload, out->len) != rd32(buf + 8))
		return STREAM_E_CHECKSUM;
	err = decode_payload(out);
	if (err)
		return err;
	*consumed = STREAM_HDR_SIZE + (size_t)out->len;
	return out->type;
}

int stream_decode_ram_head(const uint8_t *buf, size_t len, struct stream_record *out,
			   size_t *head_len)
{
	const uint8_t *p = buf + STREAM_HDR_SIZE;
	size_t head;
	int err;

	*head_len = 0;
	if (len < STREAM_HDR_SIZE + STREAM_RAM_HDR_SIZE || rd16(buf) != STREAM_RAM ||
	    rd16(buf + 2) != 0 || rd32(buf + 4) > STREAM_MAX_PAYLOAD || p[0] != STREAM_RAM_RAW)
		return 0; /* not one, or stream_decode() judges it */
	head = STREAM_HDR_SIZE + STREAM_RAM_HDR_SIZE + (size_t)rd16(p + 2) * STREAM_RAM_RANGE_SIZE;
	if (len < head || rd32(buf + 4) < head - STREAM_HDR_SIZE)
		return 0;
	memset(out, 0, sizeof(*out));
	out->type = STREAM_RAM;
	out->len = rd32(buf + 4);
	out->payload = p;
	if (record_checksum(buf, p, (uint32_t)(head - STREAM_HDR_SIZE)) != rd32(buf + 8))
		return STREAM_E_CHECKSUM;
	/* decode_ram() checks the length against the ranges; RAW's check of
	 * its data looks at the length only, not at the bytes. */
	err = decode_ram(p, out->len, &out->ram);
	if (err)
		return err;
	out->ram.data = NULL;
	*head_len = head;
	return STREAM_RAM;
}

int stream_check_ram_ranges(const struct stream_record *rec, const struct stream_layout *layout)
{
	if (rec->type != STREAM_RAM)
		return -EINVAL;
	if (layout->page_size != 1u << rec->ram.page_shift)
		return STREAM_E_PAGE_SIZE;
	for (unsigned i = 0; i < rec->ram.nr_ranges; i++) {
		struct stream_range r = stream_ram_range(rec, i);
		/* The decoder guarantees that gpa + bytes - 1 does not wrap. */
		uint64_t bytes = (uint64_t)r.pages << rec->ram.page_shift;
		bool inside = false;

		for (unsigned j = 0; j < layout->nregions && !inside; j++) {
			const struct stream_region *g = &layout->regions[j];

			inside = r.gpa >= g->gpa && r.gpa - g->gpa < g->size &&
				 bytes <= g->size - (r.gpa - g->gpa);
		}
		if (!inside)
			return STREAM_E_RAM_OUTSIDE;
	}
	return 0;
}

int stream_check_hello(const struct stream_hello *got, const struct stream_hello *want)
{
	if (got->page_size != want->page_size)
		return STREAM_E_PAGE_SIZE;
	if (got->ram_size != want->ram_size || got->nr_vcpus != want->nr_vcpus ||
	    (got->flags & ~want->flags) || got->devices_len != want->devices_len ||
	    (got->devices_len && memcmp(got->devices, want->devices, got->devices_len)))
		return STREAM_E_CONFIG;
	return 0;
}

/* Encoding. */

/* Writes the header of a record whose payload is already at buf + 12. */
static ssize_t finish_record(uint8_t *buf, enum stream_type type, uint32_t len)
{
	wr16(buf, (uint16_t)type);
	wr16(buf + 2, 0);
	wr32(buf + 4, len);
	wr32(buf + 8, record_checksum(buf, buf + STREAM_HDR_SIZE, len));
	return (ssize_t)(STREAM_HDR_SIZE + (size_t)len);
}

static ssize_t room_for(size_t cap, size_t payload)
{
	if (payload > STREAM_MAX_PAYLOAD)
		return -EINVAL;
	if (cap < STREAM_HDR_SIZE || cap - STREAM_HDR_SIZE < payload)
		return -ENOSPC;
	return 0;
}

ssize_t stream_encode_hello(uint8_t *buf, size_t cap, const struct stream_hello *h)
{
	uint8_t *p = buf + STREAM_HDR_SIZE;
	size_t len = HELLO_FIXED + (size_t)h->devices_len;
	ssize_t err;

	if ((h->flags & ~STREAM_HELLO_FLAGS_KNOWN) || !page_size_ok(h->page_size) ||
	    !hello_fields_ok(h) || h->devices_len > STREAM_MAX_DEVICES_LEN ||
	    (h->devices_len && (!h->devices ||
				!printable((const uint8_t *)h->devices, h->devices_len))))
		return -EINVAL;
	err = room_for(cap, len);
	if (err)
		return err;
	wr32(p, STREAM_MAGIC);
	wr16(p + 4, STREAM_VERSION);
	wr16(p + 6, h->flags);
	wr32(p + 8, h->page_size);
	wr32(p + 12, h->nr_vcpus);
	wr64(p + 16, h->ram_size);
	wr16(p + 24, h->connections);
	wr16(p + 26, h->stripe_shift);
	wr64(p + 28, h->session);
	wr16(p + 36, h->devices_len);
	if (h->devices_len)
		memcpy(p + HELLO_FIXED, h->devices, h->devices_len);
	return finish_record(buf, STREAM_HELLO, (uint32_t)len);
}

static ssize_t encode_reason(const char *reason, size_t *rlen)
{
	*rlen = reason ? strlen(reason) : 0;
	if (*rlen > STREAM_MAX_REASON_LEN || !printable((const uint8_t *)reason, *rlen))
		return -EINVAL;
	return 0;
}

ssize_t stream_encode_ack(uint8_t *buf, size_t cap, enum stream_phase phase, uint32_t status,
			  const char *reason)
{
	uint8_t *p = buf + STREAM_HDR_SIZE;
	size_t rlen;
	ssize_t err;

	if (phase < STREAM_PHASE_SETUP || phase > STREAM_PHASE_MAX)
		return -EINVAL;
	err = encode_reason(reason, &rlen);
	if (!err)
		err = room_for(cap, ACK_FIXED + rlen);
	if (err)
		return err;
	wr16(p, (uint16_t)phase);
	wr16(p + 2, (uint16_t)rlen);
	wr32(p + 4, status);
	if (rlen)
		memcpy(p + ACK_FIXED, reason, rlen);
	return finish_record(buf, STREAM_ACK, (uint32_t)(ACK_FIXED + rlen));
}

ssize_t stream_encode_error(uint8_t *buf, size_t cap, uint32_t code, const char *reason)
{
	uint8_t *p = buf + STREAM_HDR_SIZE;
	size_t rlen;
	ssize_t err;

	err = encode_reason(reason, &rlen);
	if (!err)
		err = room_for(cap, ERROR_FIXED + rlen);
	if (err)
		return err;
	wr32(p, code);
	wr16(p + 4, (uint16_t)rlen);
	if (rlen)
		memcpy(p + ERROR_FIXED, reason, rlen);
	return finish_record(buf, STREAM_ERROR, (uint32_t)(ERROR_FIXED + rlen));
}

ssize_t stream_encode_join(uint8_t *buf, size_t cap, const struct stream_join *j)
{
	ssize_t err = join_ok(j) ? room_for(cap, JOIN_SIZE) : -EINVAL;

	if (err)
		return err;
	wr64(buf + STREAM_HDR_SIZE, j->session);
	wr16(buf + STREAM_HDR_SIZE + 8, j->index);
	wr16(buf + STREAM_HDR_SIZE + 10, j->connections);
	return finish_record(buf, STREAM_JOIN, JOIN_SIZE);
}

ssize_t stream_encode_iter(uint8_t *buf, size_t cap, uint32_t iteration)
{
	ssize_t err = room_for(cap, ITER_SIZE);

	if (err)
		return err;
	wr32(buf + STREAM_HDR_SIZE, iteration);
	return finish_record(buf, STREAM_ITER, ITER_SIZE);
}

ssize_t stream_encode_precopy_done(uint8_t *buf, size_t cap)
{
	ssize_t err = room_for(cap, 0);

	if (err)
		return err;
	return finish_record(buf, STREAM_PRECOPY_DONE, 0);
}

ssize_t stream_encode_sync(uint8_t *buf, size_t cap)
{
	ssize_t err = room_for(cap, 0);

	if (err)
		return err;
	return finish_record(buf, STREAM_SYNC, 0);
}

ssize_t stream_encode_commit(uint8_t *buf, size_t cap, uint64_t session)
{
	ssize_t err = room_for(cap, COMMIT_SIZE);

	if (err)
		return err;
	wr64(buf + STREAM_HDR_SIZE, session);
	return finish_record(buf, STREAM_COMMIT, COMMIT_SIZE);
}

ssize_t stream_encode_end(uint8_t *buf, size_t cap, uint64_t ram_pages, uint32_t state_count)
{
	ssize_t err = room_for(cap, END_SIZE);

	if (err)
		return err;
	wr64(buf + STREAM_HDR_SIZE, ram_pages);
	wr32(buf + STREAM_HDR_SIZE + 8, state_count);
	return finish_record(buf, STREAM_END, END_SIZE);
}

ssize_t stream_encode_state(uint8_t *buf, size_t cap, const char *name, uint32_t instance,
			    uint32_t version, uint32_t section_id, const void *data, size_t len)
{
	uint8_t *p = buf + STREAM_HDR_SIZE;
	size_t nlen = name ? strnlen(name, STREAM_MAX_NAME_LEN + 1) : 0, off;
	ssize_t err;

	if (!name_ok((const uint8_t *)name, nlen) || len > STREAM_MAX_PAYLOAD)
		return -EINVAL;
	err = room_for(cap, STATE_FIXED + nlen + len);
	if (err)
		return err;
	wr16(p, (uint16_t)nlen);
	memcpy(p + 2, name, nlen);
	off = 2 + nlen;
	wr32(p + off, instance);
	wr32(p + off + 4, version);
	wr32(p + off + 8, section_id);
	wr32(p + off + 12, (uint32_t)len);
	off += 16;
	if (len)
		memcpy(p + off, data, len);
	wr32(p + off + len, section_id);
	return finish_record(buf, STREAM_STATE, (uint32_t)(STATE_FIXED + nlen + len));
}

int stream_ram_begin(struct stream_ram_enc *e, uint8_t *buf, size_t cap,
		     enum stream_ram_encoding enc, uint32_t page_size,
		     const struct stream_range *ranges, unsigned nr_ranges)
{
	unsigned shift = (unsigned)__builtin_ctz(page_size ? page_size : 1);
	uint8_t *p;
	uint64_t pages;
	size_t hdr, avail;

	memset(e, 0, sizeof(*e));
	if (enc < STREAM_RAM_RAW || enc > STREAM_RAM_ENCODING_MAX || !page_size_ok(page_size))
		return -EINVAL;
	if (check_ranges(ranges, nr_ranges, shift, (uint8_t)enc, &pages))
		return -EINVAL;
	hdr = STREAM_HDR_SIZE + STREAM_RAM_HDR_SIZE + (size_t)nr_ranges * STREAM_RAM_RANGE_SIZE;
	if (cap < hdr)
		return -ENOSPC;
	e->raw_len = pages << shift;
	avail = cap - hdr;
	if (avail > STREAM_MAX_PAYLOAD + STREAM_HDR_SIZE - hdr)
		avail = STREAM_MAX_PAYLOAD + STREAM_HDR_SIZE - hdr;
	if ((enc == STREAM_RAM_RAW && avail < e->raw_len) || (enc == STREAM_RAM_ZSTD && avail < 4))
		return -ENOSPC;
	p = buf + STREAM_HDR_SIZE;
	p[0] = (uint8_t)enc;
	p[1] = (uint8_t)shift;
	wr16(p + 2, (uint16_t)nr_ranges);
	for (unsigned i = 0; i < nr_ranges; i++) {
		uint8_t *q = p + STREAM_RAM_HDR_SIZE + (size_t)i * STREAM_RAM_RANGE_SIZE;

		wr64(q, ranges[i].gpa);
		wr32(q + 8, ranges[i].pages);
	}
	e->buf = buf;
	e->hdr_len = hdr;
	e->data = buf + hdr;
	e->room = enc == STREAM_RAM_ZERO || enc == STREAM_RAM_SKIP ? 0 : avail;
	e->encoding = (uint8_t)enc;
	return 0;
}

ssize_t stream_ram_finish(struct stream_ram_enc *e, size_t data_len)
{
	if (!e->buf || data_len > e->room)
		return -EINVAL;
	if (check_ram_data(e->encoding, e->raw_len, e->data, (uint32_t)data_len))
		return -EINVAL;
	return finish_record(e->buf, STREAM_RAM,
			     (uint32_t)(e->hdr_len - STREAM_HDR_SIZE + data_len));
}

ssize_t stream_encode_ram(uint8_t *buf, size_t cap, enum stream_ram_encoding enc,
			  uint32_t page_size, const struct stream_range *ranges,
			  unsigned nr_ranges, const void *data, size_t data_len)
{
	struct stream_ram_enc e;
	int err = stream_ram_begin(&e, buf, cap, enc, page_size, ranges, nr_ranges);

	if (err)
		return err;
	if (data_len > e.room)
		return enc == STREAM_RAM_ZSTD ? -ENOSPC : -EINVAL;
	if (data_len)
		memcpy(e.data, data, data_len);
	return stream_ram_finish(&e, data_len);
}
