/* TCP_INFO's delivery rate (see tcp_rate.h). Apart from transport.c:
 * <linux/tcp.h> has the fields glibc's <netinet/tcp.h> lacks, and the two
 * headers do not mix.
 *
 * Why not time the socket: a send completes once the kernel has copied
 * the bytes into the socket's buffer, and that buffer (megabytes, with
 * autotuning, plus the queues of the NIC and any shaper below) takes a
 * burst in at memory speed. A lane that timed its sends then saw a
 * 100 Mbit/s link as fast as memory and sent raw pages that zstd would
 * have shrunk seven-fold (docs/BENCHMARKS.md). The delivery rate comes from
 * the peer's ACKs, so it is the path's, once the sender keeps it busy. */
#include "migrate/tcp_rate.h"

#include <errno.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>

int tcp_delivery_rate(int fd, double *bps)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	memset(&ti, 0, sizeof(ti));
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
		return errno == EOPNOTSUPP || errno == ENOPROTOOPT || errno == ENOTSOCK ? -ENOTSUP
											 : -errno;
	if (len < offsetof(struct tcp_info, tcpi_delivery_rate) + sizeof(ti.tcpi_delivery_rate))
		return -ENOTSUP;
	if (!ti.tcpi_delivery_rate || ti.tcpi_delivery_rate_app_limited)
		return -EAGAIN;
	*bps = (double)ti.tcpi_delivery_rate;
	return 0;
}
