/* A 16550A UART as Linux's 8250 driver sees it: FIFOs, THRE and RX
 * interrupts, scratch and loopback for the driver's probes. Transmission is
 * instant; received bytes queue in a FIFO the console thread fills. */
#ifndef VMM_X86_UART_H
#define VMM_X86_UART_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define UART_COM1_BASE 0x3f8
#define UART_COM1_IRQ  4
#define UART_NREGS     8
#define UART_RX_FIFO   256

struct uart_ops {
	void (*set_irq)(void *opaque, int level);
	void (*output)(void *opaque, uint8_t byte);
};

struct uart {
	pthread_mutex_t lock;
	const struct uart_ops *ops;
	void *opaque;
	uint8_t ier, lcr, mcr, scr, dll, dlm, fcr;
	bool thr_int_pending;
	int irq_level;
	uint8_t rx[UART_RX_FIFO];
	unsigned rx_head, rx_count;
};

void uart_init(struct uart *u, const struct uart_ops *ops, void *opaque);
/* Bus handler for the 8 registers at the UART's base port. */
void uart_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write);
struct state_writer;
struct state_reader;
/* Register file and receive FIFO, for migration. load: 0 or -EINVAL. */
void uart_save(struct uart *u, struct state_writer *w);
int uart_load(struct uart *u, struct state_reader *r);

/* Queues input for the guest; returns how many bytes fitted. */
size_t uart_receive(struct uart *u, const uint8_t *buf, size_t len);

#endif
