/* The order of a migration stream's records, checked by the receiver one
 * connection at a time (see stream.h and docs/migration-stream.md,
 * "Phases"). Pure: no I/O, no KVM. */
#include "stream.h"

#include <string.h>

void stream_seq_init(struct stream_seq *s)
{
	memset(s, 0, sizeof(*s));
	s->phase = STREAM_SEQ_START;
}

/* Every range lies in stripes of this connection. With more than one
 * connection, neighbouring stripes belong to different ones, so a range
 * must stay inside one stripe. */
static int seq_ram_lane(const struct stream_seq *s, const struct stream_record *rec)
{
	if (s->connections <= 1)
		return 0;
	for (unsigned i = 0; i < rec->ram.nr_ranges; i++) {
		struct stream_range r = stream_ram_range(rec, i);
		/* The decoder guarantees that the last byte does not wrap. */
		uint64_t last = r.gpa + (((uint64_t)r.pages << rec->ram.page_shift) - 1);

		if (r.gpa >> s->stripe_shift != last >> s->stripe_shift ||
		    stream_lane_of(r.gpa, s->stripe_shift, s->connections) != s->index)
			return STREAM_E_RAM_LANE;
	}
	return 0;
}

/* A RAM record uses HELLO's page size, ZSTD only if HELLO allowed it, and
 * this connection's stripes. */
static int seq_ram(struct stream_seq *s, const struct stream_record *rec)
{
	int err;

	if (s->page_size != 1u << rec->ram.page_shift)
		return STREAM_E_PAGE_SIZE;
	if (rec->ram.encoding == STREAM_RAM_ZSTD && !(s->hello_flags & STREAM_HELLO_ZSTD))
		return STREAM_E_RAM_ENCODING;
	err = seq_ram_lane(s, rec);
	if (err)
		return err;
	s->ram_pages += rec->ram.pages;
	return 0;
}

static int seq_iter(struct stream_seq *s, const struct stream_record *rec)
{
	if (s->iter_seen && rec->iteration <= s->iteration)
		return STREAM_E_ITER;
	s->iter_seen = true;
	s->iteration = rec->iteration;
	return 0;
}

/* RAM, ITER and SYNC: what every connection carries during pre-copy. */
static int seq_pass(struct stream_seq *s, const struct stream_record *rec)
{
	switch (rec->type) {
	case STREAM_RAM:
		return seq_ram(s, rec);
	case STREAM_ITER:
		return seq_iter(s, rec);
	case STREAM_SYNC:
		return 0;
	}
	return STREAM_E_ORDER;
}

static int seq_precopy(struct stream_seq *s, const struct stream_record *rec)
{
	if (rec->type != STREAM_PRECOPY_DONE)
		return seq_pass(s, rec);
	s->phase = STREAM_SEQ_STOPCOPY;
	return 0;
}

static int seq_stopcopy(struct stream_seq *s, const struct stream_record *rec)
{
	switch (rec->type) {
	case STREAM_RAM:
		return seq_ram(s, rec);
	case STREAM_STATE:
		if (s->state_count && rec->state.section_id <= s->last_section_id)
			return STREAM_E_ORDER;
		s->last_section_id = rec->state.section_id;
		s->state_count++;
		return 0;
	case STREAM_END:
		if (rec->end.ram_pages != s->ram_pages || rec->end.state_count != s->state_count)
			return STREAM_E_TALLY;
		s->phase = STREAM_SEQ_ENDED;
		return 0;
	}
	return STREAM_E_ORDER;
}

/* After END on connection 0 only COMMIT may come (once READY was sent,
 * which the receiver knows, not this checker), for this session. */
static int seq_ended(struct stream_seq *s, const struct stream_record *rec)
{
	if (rec->type != STREAM_COMMIT || s->index != 0)
		return STREAM_E_ORDER;
	if (rec->commit_session != s->session)
		return STREAM_E_JOIN;
	s->phase = STREAM_SEQ_COMMITTED;
	return 0;
}

void stream_seq_init_join(struct stream_seq *s, const struct stream_seq *main)
{
	memset(s, 0, sizeof(*s));
	s->phase = STREAM_SEQ_JOIN;
	s->page_size = main->page_size;
	s->hello_flags = main->hello_flags;
	s->connections = main->connections;
	s->stripe_shift = main->stripe_shift;
	s->session = main->session;
}

static int seq_join(struct stream_seq *s, const struct stream_record *rec)
{
	if (rec->type != STREAM_JOIN)
		return STREAM_E_ORDER;
	if (rec->join.session != s->session || rec->join.connections != s->connections ||
	    !rec->join.index || rec->join.index >= s->connections)
		return STREAM_E_JOIN;
	s->index = rec->join.index;
	s->phase = STREAM_SEQ_LANE;
	return 0;
}

/* Connections 1..N-1 carry RAM and ITER only, and their own END. */
static int seq_lane(struct stream_seq *s, const struct stream_record *rec)
{
	if (rec->type != STREAM_END)
		return seq_pass(s, rec);
	if (rec->end.ram_pages != s->ram_pages || rec->end.state_count != 0)
		return STREAM_E_TALLY;
	s->phase = STREAM_SEQ_LANE_ENDED;
	return 0;
}

int stream_seq_next(struct stream_seq *s, const struct stream_record *rec)
{
	if (s->phase == STREAM_SEQ_COMMITTED || s->phase == STREAM_SEQ_LANE_ENDED ||
	    s->phase == STREAM_SEQ_ABORTED)
		return STREAM_E_ORDER;
	/* ERROR ends the stream at any point before COMMIT: a source that
	 * gave up waiting for READY says so. */
	if (rec->type == STREAM_ERROR) {
		s->phase = STREAM_SEQ_ABORTED;
		return 0;
	}
	switch (s->phase) {
	case STREAM_SEQ_START:
		if (rec->type != STREAM_HELLO)
			return STREAM_E_ORDER;
		s->page_size = rec->hello.page_size;
		s->hello_flags = rec->hello.flags;
		s->connections = rec->hello.connections;
		s->stripe_shift = rec->hello.stripe_shift;
		s->session = rec->hello.session;
		s->phase = STREAM_SEQ_PRECOPY;
		return 0;
	case STREAM_SEQ_PRECOPY:
		return seq_precopy(s, rec);
	case STREAM_SEQ_STOPCOPY:
		return seq_stopcopy(s, rec);
	case STREAM_SEQ_ENDED:
		return seq_ended(s, rec);
	case STREAM_SEQ_JOIN:
		return seq_join(s, rec);
	case STREAM_SEQ_LANE:
		return seq_lane(s, rec);
	default:
		return STREAM_E_ORDER;
	}
}
