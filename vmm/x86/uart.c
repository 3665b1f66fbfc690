/* 16550A register model; see uart.h. */
#include "uart.h"

#include <errno.h>
#include <string.h>

#include "migrate/state.h"

enum { RBR_THR = 0, IER = 1, IIR_FCR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7 };

#define IER_RDI  0x01
#define IER_THRI 0x02
#define IIR_NONE 0x01
#define IIR_THRI 0x02
#define IIR_RDI  0x04
#define IIR_FIFO 0xc0
#define FCR_FIFO_ENABLE 0x01
#define FCR_CLEAR_RX    0x02
#define LCR_DLAB 0x80
#define MCR_LOOP 0x10
#define LSR_DR   0x01
#define LSR_THRE 0x20
#define LSR_TEMT 0x40
#define MSR_CTS  0x10
/* What the model keeps of a register write; uart_load refuses the rest. */
#define IER_KEPT 0x0f
#define MCR_KEPT 0x1f
#define FCR_KEPT (FCR_FIFO_ENABLE | 0xc0) /* the trigger level bits */
#define MSR_DSR  0x20
#define MSR_DCD  0x80

void uart_init(struct uart *u, const struct uart_ops *ops, void *opaque)
{
	memset(u, 0, sizeof(*u));
	pthread_mutex_init(&u->lock, NULL);
	u->ops = ops;
	u->opaque = opaque;
	u->mcr = 0x08; /* OUT2 */
}

static uint8_t pending_iir(const struct uart *u)
{
	if ((u->ier & IER_RDI) && u->rx_count)
		return IIR_RDI;
	if ((u->ier & IER_THRI) && u->thr_int_pending)
		return IIR_THRI;
	return IIR_NONE;
}

static void update_irq(struct uart *u)
{
	int level = pending_iir(u) != IIR_NONE;

	if (level != u->irq_level) {
		u->irq_level = level;
		u->ops->set_irq(u->opaque, level);
	}
}

static void rx_push(struct uart *u, uint8_t byte)
{
	if (u->rx_count == UART_RX_FIFO)
		return; /* overrun: the byte is lost, as on hardware */
	u->rx[(u->rx_head + u->rx_count) % UART_RX_FIFO] = byte;
	u->rx_count++;
}

static uint8_t rx_pop(struct uart *u)
{
	uint8_t byte;

	if (!u->rx_count)
		return 0;
	byte = u->rx[u->rx_head];
	u->rx_head = (u->rx_head + 1) % UART_RX_FIFO;
	u->rx_count--;
	return byte;
}

static uint8_t modem_status(const struct uart *u)
{
	if (!(u->mcr & MCR_LOOP))
		return MSR_DCD | MSR_DSR | MSR_CTS;
	/* Loopback wires DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD. */
	return (uint8_t)(((u->mcr & 0x01) << 5) | ((u->mcr & 0x02) << 3) |
			 ((u->mcr & 0x04) << 4) | ((u->mcr & 0x08) << 4));
}

static void write_reg(struct uart *u, unsigned reg, uint8_t v)
{
	bool dlab = u->lcr & LCR_DLAB;

	switch (reg) {
	case RBR_THR:
		if (dlab) {
			u->dll = v;
		} else if (u->mcr & MCR_LOOP) {
			rx_push(u, v);
			u->thr_int_pending = true;
		} else {
			u->ops->output(u->opaque, v);
			u->thr_int_pending = true;
		}
		break;
	case IER:
		if (dlab) {
			u->dlm = v;
			break;
		}
		/* Enabling THRI while the transmitter is empty raises it at once. */
		if ((v & IER_THRI) && !(u->ier & IER_THRI))
			u->thr_int_pending = true;
		u->ier = v & IER_KEPT;
		break;
	case IIR_FCR:
		u->fcr = v & FCR_KEPT;
		if (v & FCR_CLEAR_RX)
			u->rx_count = 0;
		break;
	case LCR: u->lcr = v; break;
	case MCR: u->mcr = v & MCR_KEPT; break;
	case SCR: u->scr = v; break;
	default: break; /* LSR and MSR are read-only */
	}
}

static uint8_t read_reg(struct uart *u, unsigned reg)
{
	bool dlab = u->lcr & LCR_DLAB;
	uint8_t iir;

	switch (reg) {
	case RBR_THR: return dlab ? u->dll : rx_pop(u);
	case IER: return dlab ? u->dlm : u->ier;
	case IIR_FCR:
		iir = pending_iir(u);
		/* Reading IIR while it reports THRE acknowledges that interrupt. */
		if (iir == IIR_THRI)
			u->thr_int_pending = false;
		return iir | ((u->fcr & FCR_FIFO_ENABLE) ? IIR_FIFO : 0);
	case LCR: return u->lcr;
	case MCR: return u->mcr;
	case LSR: return LSR_THRE | LSR_TEMT | (u->rx_count ? LSR_DR : 0);
	case MSR: return modem_status(u);
	case SCR: return u->scr;
	}
	return 0xff;
}

void uart_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
	struct uart *u = opaque;

	if (offset >= UART_NREGS || len != 1) {
		if (!is_write)
			memset(data, 0xff, len);
		return;
	}
	pthread_mutex_lock(&u->lock);
	if (is_write)
		write_reg(u, (unsigned)offset, data[0]);
	else
		data[0] = read_reg(u, (unsigned)offset);
	update_irq(u);
	pthread_mutex_unlock(&u->lock);
}

size_t uart_receive(struct uart *u, const uint8_t *buf, size_t len)
{
	size_t n = 0;

	pthread_mutex_lock(&u->lock);
	while (n < len && u->rx_count < UART_RX_FIFO)
		rx_push(u, buf[n++]);
	update_irq(u);
	pthread_mutex_unlock(&u->lock);
	return n;
}

void uart_save(struct uart *u, struct state_writer *w)
{
	const uint8_t regs[] = { u->ier, u->lcr, u->mcr, u->scr, u->dll, u->dlm, u->fcr,
				 u->thr_int_pending, (uint8_t)u->irq_level };

	pthread_mutex_lock(&u->lock);
	state_put_bytes(w, regs, sizeof(regs));
	state_put_le16(w, (uint16_t)u->rx_count);
	for (unsigned i = 0; i < u->rx_count; i++)
		state_put_bytes(w, &u->rx[(u->rx_head + i) % UART_RX_FIFO], 1);
	pthread_mutex_unlock(&u->lock);
}

/* Refuses what the model never holds (reserved bits of IER, MCR and FCR,
 * flags other than 0 or 1): uart_save() writes none of it. Nothing changes
 * unless the whole section is good, and the FIFO is copied under the lock
 * (the console thread may be queueing input meanwhile). The IRQ line
 * follows the loaded registers, lowered as well as raised. */
int uart_load(struct uart *u, struct state_reader *r)
{
	uint8_t regs[9], rx[UART_RX_FIFO];
	uint16_t n;

	if (state_get_bytes(r, regs, sizeof(regs)) || state_get_le16(r, &n) || n > UART_RX_FIFO ||
	    state_get_bytes(r, rx, n) || state_reader_left(r))
		return -EINVAL;
	if ((regs[0] & ~IER_KEPT) || (regs[2] & ~MCR_KEPT) || (regs[6] & ~FCR_KEPT) ||
	    regs[7] > 1 || regs[8] > 1)
		return -EINVAL;
	pthread_mutex_lock(&u->lock);
	u->ier = regs[0];
	u->lcr = regs[1];
	u->mcr = regs[2];
	u->scr = regs[3];
	u->dll = regs[4];
	u->dlm = regs[5];
	u->fcr = regs[6];
	u->thr_int_pending = regs[7];
	memcpy(u->rx, rx, n);
	u->rx_head = 0;
	u->rx_count = n;
	update_irq(u);
	pthread_mutex_unlock(&u->lock);
	return 0;
}
