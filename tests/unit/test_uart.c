/* The 16550A model, driven through uart_io as the guest's port I/O would
 * be, with fake ops that record the IRQ line and the transmitted bytes;
 * and its migration state (uart_save, uart_load). */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "migrate/state.h"
#include "tests/unit/unit.h"
#include "vmm/x86/uart.h"

enum { RBR = 0, THR = 0, DLL = 0, IER = 1, DLM = 1, IIR = 2, FCR = 2, LCR = 3, MCR = 4,
       LSR = 5, MSR = 6, SCR = 7 };

struct fake {
	int irq_changes;
	int level;
	size_t nout;
	uint8_t out[64];
};

static void fake_set_irq(void *opaque, int level)
{
	struct fake *f = opaque;

	f->irq_changes++;
	f->level = level;
}

static void fake_output(void *opaque, uint8_t byte)
{
	struct fake *f = opaque;

	if (f->nout < sizeof(f->out))
		f->out[f->nout] = byte;
	f->nout++;
}

static const struct uart_ops fake_ops = { fake_set_irq, fake_output };

static void setup(struct uart *u, struct fake *f)
{
	memset(f, 0, sizeof(*f));
	uart_init(u, &fake_ops, f);
}

static void wr(struct uart *u, unsigned reg, uint8_t v)
{
	uart_io(u, reg, &v, 1, true);
}

static uint8_t rd(struct uart *u, unsigned reg)
{
	uint8_t v = 0x5a;

	uart_io(u, reg, &v, 1, false);
	return v;
}

static void test_transmit(void)
{
	struct uart u;
	struct fake f;

	setup(&u, &f);
	CHECK_EQ(rd(&u, LSR) & 0x60, 0x60); /* THRE | TEMT */
	CHECK_EQ(rd(&u, LSR) & 0x01, 0);    /* no data */
	wr(&u, THR, 'h');
	wr(&u, THR, 'i');
	REQUIRE(f.nout == 2);
	CHECK_EQ(f.out[0], 'h');
	CHECK_EQ(f.out[1], 'i');
	CHECK_EQ(rd(&u, LSR) & 0x60, 0x60); /* transmission is instant */
	/* IER is 0: no interrupt for the transmitted bytes. */
	CHECK_EQ(f.irq_changes, 0);
	CHECK_EQ(rd(&u, IIR) & 0x0f, 0x01);
}

static void test_scratch(void)
{
	struct uart u;
	struct fake f;

	setup(&u, &f);
	wr(&u, SCR, 0xa5);
	CHECK_EQ(rd(&u, SCR), 0xa5);
	wr(&u, SCR, 0x5a);
	CHECK_EQ(rd(&u, SCR), 0x5a);
	wr(&u, LCR, 0x03);
	CHECK_EQ(rd(&u, LCR), 0x03);
	CHECK_EQ(f.nout, 0);
}

static void test_dlab(void)
{
	struct uart u;
	struct fake f;

	setup(&u, &f);
	wr(&u, IER, 0x05);
	wr(&u, LCR, 0x83); /* DLAB | 8N1 */
	wr(&u, DLL, 0x0c);
	wr(&u, DLM, 0x01);
	CHECK_EQ(rd(&u, DLL), 0x0c);
	CHECK_EQ(rd(&u, DLM), 0x01);
	CHECK_EQ(f.nout, 0); /* the DLL write was not transmitted */
	wr(&u, LCR, 0x03);
	CHECK_EQ(rd(&u, IER), 0x05); /* IER kept its value under DLAB */
	wr(&u, THR, 'x');
	CHECK_EQ(f.nout, 1);
	wr(&u, LCR, 0x83);
	CHECK_EQ(rd(&u, DLL), 0x0c); /* not overwritten by the THR write */
	CHECK_EQ(rd(&u, DLM), 0x01);
	wr(&u, LCR, 0x03);
	CHECK_EQ(rd(&u, RBR), 0); /* empty receive FIFO, not DLL */
}

static void test_fifo_enable(void)
{
	struct uart u;
	struct fake f;

	setup(&u, &f);
	CHECK_EQ(rd(&u, IIR), 0x01);
	wr(&u, FCR, 0x07); /* enable, clear both FIFOs */
	CHECK_EQ(rd(&u, IIR), 0xc1);
	wr(&u, FCR, 0x00);
	CHECK_EQ(rd(&u, IIR), 0x01);
}

static void test_thr_interrupt(void)
{
	struct uart u;
	struct fake f;

	setup(&u, &f);
	wr(&u, IER, 0x02); /* THRI, with the transmitter empty */
	CHECK_EQ(f.level, 1);
	CHECK_EQ(f.irq_changes, 1);
	CHECK_EQ(rd(&u, IIR) & 0x0f, 0x02);
	/* Reading IIR acknowledged it. */
	CHECK_EQ(f.level, 0);
	CHECK_EQ(f.irq_changes, 2);
	CHECK_EQ(rd(&u, IIR) & 0x0f, 0x01);
	/* Each transmitted byte raises it again. */
	wr(&u, THR, 'a');
	CHECK_EQ(f.level, 1);
	CHECK_EQ(rd(&u, IIR) & 0x0f, 0x02);
	CHECK_EQ(f.level, 0);
	/* Disabling THRI drops a pending THR interrupt. */
	wr(&u, THR, 'b');
	CHECK_EQ(f.level, 1);
	wr(&u, IER, 0x00);
	CHECK_EQ(f.level, 0);
	CHECK_EQ(rd(&u, IIR), 0x01);
}

static void test_receive(void)
{
	static const uint8_t in[] = { 'a', 'b', 'c' };
	struct uart u;
	struct fake f;

	setup(&u, &f);
	CHECK_EQ(uart_receive(&u, in, 3), 3);
	CHECK_EQ(rd(&u, LSR) & 0x01, 0x01);
	CHECK_EQ(f.level, 0); /* RDI not enabled yet */
	wr(&u, IER, 0x01);
	CHECK_EQ(f.level, 1);
	CHECK_EQ(rd(&u, IIR) & 0x0f, 0x04);
	CHECK_EQ(f.level, 1); /* reading IIR does not acknowledge received data */
	CHECK_EQ(rd(&u, RBR), 'a');
	CHECK_EQ(rd(&u, RBR), 'b');
	CHECK_EQ(f.level, 1);
	CHECK_EQ(rd(&u, LSR) & 0x01, 0x01);
	CHECK_EQ(rd(&u, RBR), 'c');
	CHECK_EQ(rd(&u, LSR) & 0x01, 0);
	CHECK_EQ(f.level, 0);
	CHECK_EQ(rd(&u, IIR) & 0x0f, 0x01);

	/* With RDI already enabled, input raises the line at once. */
	CHECK_EQ(uart_receive(&u, in + 2, 1), 1);
	CHECK_EQ(f.level, 1);
	CHECK_EQ(rd(&u, RBR), 'c');
	CHECK_EQ(f.level, 0);

	/* Received data takes priority over THRE. */
	wr(&u, IER, 0x03);
	CHECK_EQ(uart_receive(&u, in, 1), 1);
	CHECK_EQ(rd(&u, IIR) & 0x0f, 0x04);
	CHECK_EQ(rd(&u, RBR), 'a');
	CHECK_EQ(rd(&u, IIR) & 0x0f, 0x02);

	/* FCR can clear the receive FIFO. */
	CHECK_EQ(uart_receive(&u, in, 3), 3);
	wr(&u, FCR, 0x03);
	CHECK_EQ(rd(&u, LSR) & 0x01, 0);
	CHECK_EQ(uart_receive(&u, in + 1, 1), 1);
	CHECK_EQ(rd(&u, RBR), 'b');
}

static void test_receive_full(void)
{
	uint8_t in[UART_RX_FIFO + 10];
	struct uart u;
	struct fake f;

	setup(&u, &f);
	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)i;
	CHECK_EQ(uart_receive(&u, in, 100), 100);
	CHECK_EQ(uart_receive(&u, in + 100, sizeof(in) - 100), UART_RX_FIFO - 100);
	CHECK_EQ(uart_receive(&u, in, 1), 0);
	/* Draining one byte makes room for one; order survives the wrap-around. */
	CHECK_EQ(rd(&u, RBR), 0);
	CHECK_EQ(uart_receive(&u, in + 7, 2), 1);
	for (unsigned i = 1; i < UART_RX_FIFO; i++) {
		uint8_t b = rd(&u, RBR);

		if (b != (uint8_t)i) {
			unit_fail(__FILE__, __LINE__, "byte %u read back as %u", i, b);
			break;
		}
	}
	CHECK_EQ(rd(&u, RBR), 7);
	CHECK_EQ(rd(&u, LSR) & 0x01, 0);
}

static void test_loopback(void)
{
	struct uart u;
	struct fake f;

	setup(&u, &f);
	CHECK_EQ(rd(&u, MSR) & 0xb0, 0xb0); /* DCD, DSR, CTS asserted outside loopback */
	wr(&u, MCR, 0x1A);                   /* LOOP | OUT2 | RTS: Linux's 8250 probe */
	CHECK_EQ(rd(&u, MCR), 0x1A);
	CHECK_EQ(rd(&u, MSR) & 0xF0, 0x90);
	wr(&u, MCR, 0x1F);
	CHECK_EQ(rd(&u, MSR) & 0xF0, 0xF0);
	wr(&u, MCR, 0x11); /* DTR -> DSR */
	CHECK_EQ(rd(&u, MSR) & 0xF0, 0x20);
	wr(&u, MCR, 0x14); /* OUT1 -> RI */
	CHECK_EQ(rd(&u, MSR) & 0xF0, 0x40);
	wr(&u, MCR, 0x10);
	CHECK_EQ(rd(&u, MSR) & 0xF0, 0x00);

	wr(&u, THR, 0x55);
	wr(&u, THR, 0xaa);
	CHECK_EQ(f.nout, 0); /* nothing leaves the UART in loopback */
	CHECK_EQ(rd(&u, LSR) & 0x01, 0x01);
	CHECK_EQ(rd(&u, RBR), 0x55);
	CHECK_EQ(rd(&u, RBR), 0xaa);
	CHECK_EQ(rd(&u, LSR) & 0x01, 0);

	wr(&u, MCR, 0x0b);
	wr(&u, THR, 'z');
	CHECK_EQ(f.nout, 1);
	CHECK_EQ(rd(&u, LSR) & 0x01, 0);
	wr(&u, MCR, 0xff);
	CHECK_EQ(rd(&u, MCR), 0x1f); /* the top 3 bits are always 0 */
}

static void test_bad_access(void)
{
	struct uart u;
	struct fake f;
	uint8_t data[4];

	setup(&u, &f);
	wr(&u, SCR, 0x12);
	memset(data, 0, sizeof(data));
	uart_io(&u, SCR, data, 2, false);
	CHECK_EQ(data[0], 0xff);
	CHECK_EQ(data[1], 0xff);
	memset(data, 0, sizeof(data));
	uart_io(&u, LSR, data, 4, false);
	CHECK_EQ(data[0], 0xff);
	CHECK_EQ(data[3], 0xff);
	memset(data, 0x34, sizeof(data));
	uart_io(&u, SCR, data, 2, true); /* ignored */
	uart_io(&u, THR, data, 4, true);
	CHECK_EQ(rd(&u, SCR), 0x12);
	CHECK_EQ(f.nout, 0);
	data[0] = 0;
	uart_io(&u, UART_NREGS, data, 1, false);
	CHECK_EQ(data[0], 0xff);
	/* LSR and MSR are read-only. */
	wr(&u, LSR, 0x00);
	CHECK_EQ(rd(&u, LSR) & 0x60, 0x60);
}

/* A "uart" section: the 9 register bytes of uart_save (IER, LCR, MCR, SCR,
 * DLL, DLM, FCR, THRE pending, IRQ line), le16 FIFO count, the FIFO, and
 * extra bytes after it. */
static int load(struct uart *u, const uint8_t regs[9], const char *fifo, size_t extra)
{
	uint8_t blob[9 + 2 + 16 + 4] = { 0 };
	size_t n = strlen(fifo), len = 9 + 2 + n + extra;
	struct state_reader r;

	memcpy(blob, regs, 9);
	blob[9] = (uint8_t)n;
	memcpy(blob + 11, fifo, n);
	state_reader_init(&r, blob, len);
	return uart_load(u, &r);
}

static void test_save_load(void)
{
	static const uint8_t regs[9] = { 0x03, 0x03, 0x0b, 0x5a, 0x01, 0x00, 0xc1, 1, 1 };
	struct state_writer w;
	struct uart u;
	struct fake f;

	setup(&u, &f);
	CHECK_EQ(load(&u, regs, "hi", 0), 0);
	CHECK_EQ(f.level, 1); /* RDI enabled and bytes queued */
	state_writer_init(&w);
	uart_save(&u, &w);
	REQUIRE(w.len == 13);
	CHECK(!memcmp(w.buf, regs, 9));
	CHECK(!memcmp(w.buf + 11, "hi", 2));
	state_writer_free(&w);
	CHECK_EQ(rd(&u, RBR), 'h');
	CHECK_EQ(rd(&u, RBR), 'i');
}

/* What the model never holds is refused, not masked: uart_save() writes
 * none of it, so it can only come from a corrupt or hostile source. */
static void test_load_refuses_reserved_bits(void)
{
	static const uint8_t good[9] = { 0x0f, 0xff, 0x1f, 0xff, 0xff, 0xff, 0xc1, 1, 1 };
	static const struct { unsigned byte; uint8_t v; } bad[] = {
		{ 0, 0x10 }, /* IER: 4 bits */
		{ 2, 0x20 }, /* MCR: 5 bits */
		{ 6, 0x02 }, /* FCR: FIFO enable and trigger level only */
		{ 6, 0x3e },
		{ 7, 2 },    /* THRE pending: a flag */
		{ 8, 2 },    /* the IRQ line: a flag */
	};
	struct uart u;
	struct fake f;

	setup(&u, &f);
	CHECK_EQ(load(&u, good, "", 0), 0);
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint8_t regs[9];

		memcpy(regs, good, sizeof(regs));
		regs[bad[i].byte] = bad[i].v;
		setup(&u, &f);
		if (load(&u, regs, "", 0) != -EINVAL)
			unit_fail(__FILE__, __LINE__, "byte %u = %#x accepted", bad[i].byte, bad[i].v);
	}
}

/* A load that fails changes nothing, the receive FIFO included. */
static void test_load_failure_keeps_state(void)
{
	static const uint8_t regs[9] = { 0x01, 0, 0x08, 0, 0, 0, 0, 0, 0 };
	struct uart u;
	struct fake f;

	setup(&u, &f);
	wr(&u, SCR, 0x77);
	uart_receive(&u, (const uint8_t *)"abc", 3);
	CHECK_EQ(load(&u, regs, "xyz", 1), -EINVAL); /* a trailing byte after the FIFO */
	CHECK_EQ(rd(&u, SCR), 0x77);
	CHECK_EQ(rd(&u, RBR), 'a');
	CHECK_EQ(rd(&u, RBR), 'b');
	CHECK_EQ(rd(&u, RBR), 'c');
}

/* The loaded registers decide the IRQ line, down as well as up. */
static void test_load_moves_irq_line(void)
{
	static const uint8_t idle[9] = { 0, 0, 0x08, 0, 0, 0, 0, 0, 0 };
	static const uint8_t raised[9] = { 0x01, 0, 0x08, 0, 0, 0, 0, 0, 1 };
	struct uart u;
	struct fake f;

	setup(&u, &f);
	CHECK_EQ(load(&u, raised, "z", 0), 0);
	CHECK_EQ(f.level, 1);
	CHECK_EQ(load(&u, idle, "", 0), 0);
	CHECK_EQ(f.level, 0);
	CHECK_EQ(u.irq_level, 0);
}

int main(int argc, char **argv)
{
	unit_init(argc, argv);
	RUN(test_transmit);
	RUN(test_scratch);
	RUN(test_dlab);
	RUN(test_fifo_enable);
	RUN(test_thr_interrupt);
	RUN(test_receive);
	RUN(test_receive_full);
	RUN(test_loopback);
	RUN(test_save_load);
	RUN(test_load_refuses_reserved_bits);
	RUN(test_load_failure_keeps_state);
	RUN(test_load_moves_irq_line);
	RUN(test_bad_access);
	return unit_done();
}
