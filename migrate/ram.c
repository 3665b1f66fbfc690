/* Page batches for the stream (see ram.h): zero detection, one zstd frame
 * per batch with ZSTD_compress2 (stable buffers: no copy of the input), strict
 * decompression with ZSTD_decompressStream (in the manner of zstd's
 * streaming examples: stopping before the frame's end is an error), and
 * the `--compress auto` policy. */
#include "ram.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <zstd.h>
#include <zstd_errors.h>

#define DECOMP_WINDOW_LOG_MAX 24 /* 16 MiB; a RAM record carries at most 8 MiB */

static const char *const errors[] = {
	[0] = "empty zstd frame",
	[1] = "zstd frame truncated",
	[2] = "bytes after the zstd frame",
	[3] = "zstd frame holds more than the record's pages",
	[4] = "zstd frame holds less than the record's pages",
	[5] = "corrupt zstd frame",
	[6] = "zstd failed",
};

const char *ram_strerror(int err)
{
	if (err <= RAM_E_EMPTY && err >= RAM_E_ZSTD)
		return errors[RAM_E_EMPTY - err];
	if (err == 0)
		return "no error";
	if (err < 0 && err > -1000)
		return strerror(-err);
	return "unknown error";
}

void *ram_buf_alloc(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	(void)madvise(p, len, MADV_NOHUGEPAGE);
	return p;
}

void ram_buf_free(void *buf, size_t len)
{
	if (buf)
		munmap(buf, len);
}

typedef uint64_t __attribute__((may_alias)) u64_alias;

bool ram_page_is_zero(const void *page, size_t page_size)
{
	const u64_alias *p = page;
	size_t n = page_size / 8, i = 0;

	for (; i + 8 <= n; i += 8)
		if (p[i] | p[i + 1] | p[i + 2] | p[i + 3] | p[i + 4] | p[i + 5] | p[i + 6] |
		    p[i + 7])
			return false;
	for (; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/* ---- compression ---- */

int ram_compressor_init(struct ram_compressor *c, int level)
{
	ZSTD_CCtx *cctx;

	memset(c, 0, sizeof(*c));
	if (level == 0)
		level = RAM_ZSTD_LEVEL_DEFAULT;
	if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel())
		return -EINVAL;
	cctx = ZSTD_createCCtx();
	if (!cctx)
		return -ENOMEM;
	if (ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1))) {
		ZSTD_freeCCtx(cctx);
		return RAM_E_ZSTD;
	}
	c->cctx = cctx;
	c->level = level;
	c->checksum = true;
	return 0;
}

int ram_compressor_set_checksum(struct ram_compressor *c, bool on)
{
	if (!c->cctx)
		return -EINVAL;
	if (ZSTD_isError(ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_checksumFlag, on)))
		return RAM_E_ZSTD;
	c->checksum = on;
	return 0;
}

/* The streaming API fills dst to the last byte, where the one-shot one
 * wants some slack: the fallback when dst is (nearly) too small. */
static ssize_t compress_streaming(struct ram_compressor *c, const void *src, size_t len,
				  void *dst, size_t cap)
{
	ZSTD_inBuffer in = { src, len, 0 };
	ZSTD_outBuffer out = { dst, cap, 0 };
	size_t left;

	ZSTD_CCtx_reset(c->cctx, ZSTD_reset_session_only);
	for (;;) {
		left = ZSTD_compressStream2(c->cctx, &out, &in, ZSTD_e_end);
		if (ZSTD_isError(left)) {
			ZSTD_CCtx_reset(c->cctx, ZSTD_reset_session_only);
			return RAM_E_ZSTD;
		}
		if (left == 0)
			return (ssize_t)out.pos;
		if (out.pos == out.size) { /* more to write and no room */
			ZSTD_CCtx_reset(c->cctx, ZSTD_reset_session_only);
			return -ENOSPC;
		}
	}
}

ssize_t ram_compress(struct ram_compressor *c, const void *src, size_t len, void *dst, size_t cap)
{
	size_t r;

	if (!c->cctx)
		return -EINVAL;
	/* One call with stable buffers: zstd reads the input where it is,
	 * where the streaming API first copies it into its window. */
	r = ZSTD_compress2(c->cctx, dst, cap, src, len);
	if (!ZSTD_isError(r))
		return (ssize_t)r;
	if (ZSTD_getErrorCode(r) != ZSTD_error_dstSize_tooSmall)
		return RAM_E_ZSTD;
	return compress_streaming(c, src, len, dst, cap);
}

void ram_compressor_free(struct ram_compressor *c)
{
	ZSTD_freeCCtx(c->cctx);
	c->cctx = NULL;
}

/* ---- decompression ---- */

int ram_decompressor_init(struct ram_decompressor *d)
{
	ZSTD_DCtx *dctx = ZSTD_createDCtx();

	d->dctx = NULL;
	if (!dctx)
		return -ENOMEM;
	if (ZSTD_isError(ZSTD_DCtx_setParameter(dctx, ZSTD_d_windowLogMax,
						DECOMP_WINDOW_LOG_MAX))) {
		ZSTD_freeDCtx(dctx);
		return RAM_E_ZSTD;
	}
	d->dctx = dctx;
	return 0;
}

ssize_t ram_decompress(struct ram_decompressor *d, const void *src, size_t len, void *dst,
		       size_t expected)
{
	uint8_t spill[64];
	ZSTD_inBuffer in = { src, len, 0 };
	ZSTD_outBuffer out = { dst, expected, 0 };
	ZSTD_outBuffer extra = { spill, sizeof(spill), 0 };
	ZSTD_outBuffer *o;
	size_t ret, in0, o0;
	ssize_t r = 0;

	if (!d->dctx)
		return -EINVAL;
	if (len == 0)
		return RAM_E_EMPTY;
	ZSTD_DCtx_reset(d->dctx, ZSTD_reset_session_only);
	while (r == 0) {
		/* Once dst is full, anything more the frame holds spills. */
		o = out.pos < out.size ? &out : &extra;
		in0 = in.pos;
		o0 = o->pos;
		ret = ZSTD_decompressStream(d->dctx, o, &in);
		if (ZSTD_isError(ret))
			r = ZSTD_getErrorCode(ret) == ZSTD_error_memory_allocation ? RAM_E_ZSTD
										: RAM_E_CORRUPT;
		else if (extra.pos)
			r = RAM_E_TOO_LONG;
		else if (ret == 0) /* the frame is complete */
			r = in.pos < in.size	    ? RAM_E_TRAILING
			    : out.pos < expected ? RAM_E_SHORT
						 : (ssize_t)expected;
		else if (in.pos == in0 && o->pos == o0) /* no progress */
			r = in.pos == in.size ? RAM_E_TRUNCATED : RAM_E_CORRUPT;
	}
	if (r < 0)
		ZSTD_DCtx_reset(d->dctx, ZSTD_reset_session_only);
	return r;
}

void ram_decompressor_free(struct ram_decompressor *d)
{
	ZSTD_freeDCtx(d->dctx);
	d->dctx = NULL;
}

/* ---- --compress auto ---- */

void ram_auto_init(struct ram_auto *a)
{
	memset(a, 0, sizeof(*a));
	a->on = true;
	a->probe_every = 32;
	a->hysteresis = 0.1;
	a->alpha = 0.25;
}

static void ewma(double *avg, bool *have, double sample, double alpha)
{
	*avg = *have ? *avg + alpha * (sample - *avg) : sample;
	*have = true;
}

/* Seconds per raw byte with and without compression; flips `on` past the
 * hysteresis band. Compressing one batch overlaps sending the ones before
 * it (the kernel drains the socket while the lane compresses), so the time
 * with compression is the slower of the two, not their sum, plus the share
 * of zstd's time that does not overlap: the kernel's side of sending runs
 * on the lane's CPU too. Taking the sum made a 100 Mbit/s link with zstd at
 * 25 MB/s and a ratio of 0.5 look like a tie, where zstd was 1.75 times
 * faster end to end (docs/BENCHMARKS.md). Data that compresses by less
 * than the hysteresis fraction is never worth zstd's CPU. */
static void decide(struct ram_auto *a)
{
	double with, without, zstd_s;

	if (!a->have_ratio || !a->have_compress || !a->have_link || a->compress_bps <= 0 ||
	    a->link_bps <= 0)
		return;
	zstd_s = 1.0 / a->compress_bps;
	with = (zstd_s > a->ratio / a->link_bps ? zstd_s : a->ratio / a->link_bps) +
	       RAM_AUTO_SERIAL_SHARE * zstd_s;
	without = 1.0 / a->link_bps;
	if (a->ratio > 1.0 - a->hysteresis)
		with = 2 * without;
	if (a->on && with > without * (1.0 + a->hysteresis))
		a->on = false;
	else if (!a->on && with < without * (1.0 - a->hysteresis))
		a->on = true;
}

void ram_auto_note_compress(struct ram_auto *a, uint64_t raw, uint64_t compressed, uint64_t ns)
{
	if (raw == 0)
		return;
	if (ns == 0)
		ns = 1;
	if (compressed > raw)
		compressed = raw;
	ewma(&a->ratio, &a->have_ratio, (double)compressed / (double)raw, a->alpha);
	ewma(&a->compress_bps, &a->have_compress, (double)raw * 1e9 / (double)ns, a->alpha);
	a->since_probe = 0;
	decide(a);
}

void ram_auto_note_raw(struct ram_auto *a)
{
	if (a->since_probe < 0xffffffffu)
		a->since_probe++;
}

void ram_auto_note_link(struct ram_auto *a, uint64_t bytes, uint64_t ns)
{
	if (bytes == 0)
		return;
	if (ns == 0)
		ns = 1;
	ewma(&a->link_bps, &a->have_link, (double)bytes * 1e9 / (double)ns, a->alpha);
	decide(a);
}

bool ram_auto_should_compress(const struct ram_auto *a)
{
	if (!a->have_compress || a->on)
		return true;
	return a->since_probe >= a->probe_every;
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

ssize_t ram_auto_compress(struct ram_auto *a, struct ram_compressor *c, const void *src,
			  size_t len, void *dst, size_t cap)
{
	uint64_t t0 = mono_ns();
	ssize_t r = ram_compress(c, src, len, dst, cap);

	if (r >= 0 || r == -ENOSPC)
		ram_auto_note_compress(a, len, r >= 0 ? (uint64_t)r : len, mono_ns() - t0);
	return r;
}
