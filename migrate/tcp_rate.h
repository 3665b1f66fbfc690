/* The link's rate as TCP itself sees it, for `--compress auto`. */
#ifndef MIGRATE_TCP_RATE_H
#define MIGRATE_TCP_RATE_H

/* The kernel's latest delivery-rate sample on TCP socket fd (TCP_INFO's
 * tcpi_delivery_rate: bytes the peer acknowledged per second, the figure
 * BBR uses), in *bps: 0; -EAGAIN when the sample was limited by the
 * sender, not the path (it then says nothing about the link), or there is
 * none yet; -ENOTSUP when fd is not TCP or the kernel lacks the field. */
int tcp_delivery_rate(int fd, double *bps);

#endif
