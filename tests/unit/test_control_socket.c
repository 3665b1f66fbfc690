/* The control socket server (vmm/control.c) on a real socket and event
 * loop, without KVM: a hint round whose reply is deferred leaves the loop
 * free for other clients, ends with the guest's STOP, its timeout or the
 * client hanging up; idle clients are closed, and one client too many is
 * told why in one JSON line. The balloon is set up with balloon_init and
 * made to look as if its driver accepted free page hinting. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "tests/unit/unit.h"
#include "virtio/balloon.h"
#include "vmm/control.h"
#include "vmm/util.h"
#include "vmm/vm.h"

#define IDLE_S 1

static struct vm vm;
static struct balloon balloon;
static struct loop loop;
static struct control ctl;
static char dir[] = "/tmp/vmm-test-control.XXXXXX";
static char path[64];

static int setup(void)
{
	struct balloon_options o = { .enabled = true, .free_page_hint = true };
	char err[256] = "";

	memset(&vm, 0, sizeof(vm));
	vm.ncpus = 1;
	guest_mem_layout(&vm.mem, NULL, 64ULL << 20);
	if (balloon_init(&vm, &balloon, &o, err, sizeof(err)))
		return -1;
	balloon.q_hint = 2; /* as balloon_activate leaves it for this driver */
	balloon.dev.status = VIRTIO_STATUS_DRIVER_OK;
	vm.balloon = &balloon;
	snprintf(path, sizeof(path), "%s/api.sock", dir);
	if (loop_init(&loop) ||
	    control_open(&ctl, path, IDLE_S, &loop, &vm, err, sizeof(err))) {
		fprintf(stderr, "setup: %s\n", err);
		return -1;
	}
	return 0;
}

static void teardown(void)
{
	control_close(&ctl);
	loop_close(&loop);
	balloon_destroy(&balloon);
}

static int client(void)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static void send_line(int fd, const char *line)
{
	CHECK_EQ(write_all(fd, line, strlen(line)), 0);
}

/* Runs the loop for up to ms, or until fd has something to read (or
 * hung up); returns what read() gave into buf: > 0, 0 for EOF, -1 for
 * nothing yet. */
static ssize_t spin_read(int fd, char *buf, size_t size, int ms)
{
	uint64_t deadline = now_ns() + (uint64_t)ms * 1000000ULL;

	do {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		loop_run_once(&loop, 10);
		if (fd >= 0 && poll(&p, 1, 0) == 1) {
			n = read(fd, buf, size - 1);
			if (n >= 0) {
				buf[n] = '\0';
				return n;
			}
		}
	} while (now_ns() < deadline);
	return -1;
}

static void spin(int ms)
{
	char buf[8];

	(void)spin_read(-1, buf, sizeof(buf), ms);
}

static bool hint_idle(void)
{
	return balloon.hint_state == HINT_IDLE;
}

/* While a hint round waits for the guest, another client is served at
 * once; the guest's STOP then sends the deferred reply. */
static void test_hint_defers(void)
{
	char buf[4096];
	int a, b;

	REQUIRE(setup() == 0);
	a = client();
	b = client();
	REQUIRE(a >= 0 && b >= 0);
	send_line(a, "{\"cmd\":\"hint\",\"timeout_ms\":60000}\n");
	CHECK_EQ(spin_read(a, buf, sizeof(buf), 200), -1);
	CHECK_EQ(balloon.hint_state, HINT_REQUESTED);
	send_line(b, "{\"cmd\":\"status\"}\n");
	CHECK(spin_read(b, buf, sizeof(buf), 1000) > 0);
	CHECK_CONTAINS(buf, "\"state\":\"running\"");
	/* The round ends (the guest's STOP looks the same to the waiter). */
	balloon_hint_stop(&balloon);
	CHECK(spin_read(a, buf, sizeof(buf), 1000) > 0);
	CHECK_CONTAINS(buf, "\"ok\":true");
	CHECK_CONTAINS(buf, "\"ranges\":0");
	CHECK(hint_idle());
	/* The client goes on: the next request on it is served. */
	send_line(a, "{\"cmd\":\"status\"}\n");
	CHECK(spin_read(a, buf, sizeof(buf), 1000) > 0);
	CHECK_CONTAINS(buf, "\"ok\":true");
	close(a);
	close(b);
	teardown();
}

/* A round the guest never ends gets the timeout's error, and is ended. */
static void test_hint_timeout(void)
{
	char buf[4096];
	int a;

	REQUIRE(setup() == 0);
	a = client();
	REQUIRE(a >= 0);
	send_line(a, "{\"cmd\":\"hint\",\"timeout_ms\":200}\n");
	CHECK(spin_read(a, buf, sizeof(buf), 2000) > 0);
	CHECK_CONTAINS(buf, "\"ok\":false");
	CHECK_CONTAINS(buf, "did not finish the hint round within 200 ms");
	CHECK(hint_idle());
	close(a);
	teardown();
}

/* A client that hangs up while its round runs, and vmm closing the socket
 * while one runs, both end the round. */
static void test_hint_cancelled(void)
{
	int a;

	REQUIRE(setup() == 0);
	a = client();
	REQUIRE(a >= 0);
	send_line(a, "{\"cmd\":\"hint\",\"timeout_ms\":60000}\n");
	spin(100);
	CHECK_EQ(balloon.hint_state, HINT_REQUESTED);
	close(a);
	spin(200);
	CHECK(hint_idle());

	a = client();
	REQUIRE(a >= 0);
	send_line(a, "{\"cmd\":\"hint\",\"timeout_ms\":60000}\n");
	spin(100);
	CHECK_EQ(balloon.hint_state, HINT_REQUESTED);
	teardown();
	CHECK(hint_idle());
	close(a);
}

/* With every slot held by idle clients, one more is refused in one JSON
 * line; the idle ones are closed after the idle timeout, and a new client
 * is served again. */
static void test_idle_clients(void)
{
	int fds[CONTROL_MAX_CONNS], extra, closed = 0;
	char buf[512];

	REQUIRE(setup() == 0);
	for (int i = 0; i < CONTROL_MAX_CONNS; i++) {
		fds[i] = client();
		REQUIRE(fds[i] >= 0);
		spin(5); /* accepted before the listen backlog fills */
	}
	spin(100);
	extra = client();
	REQUIRE(extra >= 0);
	CHECK(spin_read(extra, buf, sizeof(buf), 1000) > 0);
	CHECK_CONTAINS(buf, "{\"ok\":false,\"error\":\"too many control connections");
	CHECK(strchr(buf, '\n') == buf + strlen(buf) - 1);
	CHECK_EQ(spin_read(extra, buf, sizeof(buf), 1000), 0);
	close(extra);
	spin(IDLE_S * 1000 + 800);
	for (int i = 0; i < CONTROL_MAX_CONNS; i++) {
		closed += spin_read(fds[i], buf, sizeof(buf), 10) == 0;
		close(fds[i]);
	}
	CHECK_EQ(closed, CONTROL_MAX_CONNS);
	extra = client();
	REQUIRE(extra >= 0);
	send_line(extra, "{\"cmd\":\"status\"}\n");
	CHECK(spin_read(extra, buf, sizeof(buf), 1000) > 0);
	CHECK_CONTAINS(buf, "\"ok\":true");
	close(extra);
	teardown();
}

/* Requests keep a client alive; a last request without a newline before
 * the client shuts its side down is still answered. */
static void test_busy_client_stays(void)
{
	char buf[4096];
	int a;

	REQUIRE(setup() == 0);
	a = client();
	REQUIRE(a >= 0);
	/* 1.5 idle timeouts in all, a quarter of one between requests */
	for (int i = 0; i < 6; i++) {
		send_line(a, "{\"cmd\":\"status\"}\n");
		CHECK(spin_read(a, buf, sizeof(buf), 1000) > 0);
		spin(IDLE_S * 250);
	}
	send_line(a, "{\"cmd\":\"status\"}");
	shutdown(a, SHUT_WR);
	CHECK(spin_read(a, buf, sizeof(buf), 1000) > 0);
	CHECK_CONTAINS(buf, "\"ok\":true");
	CHECK_EQ(spin_read(a, buf, sizeof(buf), 1000), 0);
	close(a);
	teardown();
}

int main(int argc, char **argv)
{
	unit_init(argc, argv);
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	RUN(test_hint_defers);
	RUN(test_hint_timeout);
	RUN(test_hint_cancelled);
	RUN(test_idle_clients);
	RUN(test_busy_client_stays);
	rmdir(dir);
	return unit_done();
}
