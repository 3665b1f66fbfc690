/* libFuzzer target for the destination's handling of a whole migration
 * stream (migrate/incoming.c and receiver.c, on top of stream.c): the
 * input is what a source sends on connection 0, fed through a socketpair
 * into migrate_incoming_fd() with a small VM built without KVM (1 vCPU,
 * 1 MiB of RAM, the UART, no virtio devices: device set "uart").
 *
 * It reaches HELLO and its checks, JOIN refusals (no further connections
 * can come), SYNC answers, RAM records written into guest memory
 * (RAW, ZERO, ZSTD, SKIP), ITER, PRECOPY_DONE, STATE sections (the UART's
 * loads; the VM's and vCPU's parse, then fail at their first KVM ioctl on
 * fd -1), END with its tallies and the completeness checks, and COMMIT.
 * Invariants: no crash or sanitizer report, and a stream that does not
 * carry every page and section is never committed (the VM's and vCPU's
 * state cannot load here, so migrate_incoming_fd() must always refuse). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "migrate/migration.h"
#include "vmm/util.h"
#include "vmm/vcpu.h"
#include "vmm/vm.h"
#include "tests/fuzz/fuzz.h"

#define RAM (1u << 20)

static void no_irq(void *opaque, int level)
{
	(void)opaque;
	(void)level;
}

static void no_output(void *opaque, uint8_t byte)
{
	(void)opaque;
	(void)byte;
}

static const struct uart_ops uart_ops = { .set_irq = no_irq, .output = no_output };

static struct vm *fake_vm(void)
{
	static struct vm vm;
	static struct vcpu vcpu;
	static bool made;

	if (made)
		return &vm;
	if (guest_mem_alloc(&vm.mem, RAM))
		abort();
	vm.fd = -1;
	vm.signal_fd = -1;
	vm.ncpus = 1;
	vcpu.fd = -1;
	vcpu.vm = &vm;
	vm.vcpus = &vcpu;
	uart_init(&vm.uart, &uart_ops, &vm);
	made = true;
	return &vm;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vm *vm = fake_vm();
	int sv[2], sndbuf = 1 << 20;

	if (size > (100u << 10)) /* what a socket buffer takes at once */
		return 0;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		abort();
	setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &sndbuf, sizeof(sndbuf));
	if (size && write_all(sv[1], data, size))
		abort();
	/* End of stream: the destination sees the source go after the input. */
	shutdown(sv[1], SHUT_WR);
	if (migrate_incoming_fd(vm, sv[0]) == 0)
		__builtin_trap(); /* committed without the VM's and vCPU's state */
	close(sv[1]);
	return 0;
}
