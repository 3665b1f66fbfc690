/* LD_PRELOAD shim for the bad-input tests: makes KVM_CHECK_EXTENSION report
 * the capability named by VMM_FAKE_MISSING_CAP (a number) as absent, so the
 * test can check vmm's message for a missing capability on a real KVM. */
#include <dlfcn.h>
#include <linux/kvm.h>
#include <stdarg.h>
#include <stdlib.h>

int ioctl(int fd, unsigned long request, ...);

int ioctl(int fd, unsigned long request, ...)
{
	static int (*real_ioctl)(int, unsigned long, ...);
	const char *missing = getenv("VMM_FAKE_MISSING_CAP");
	va_list ap;
	void *arg;

	va_start(ap, request);
	arg = va_arg(ap, void *);
	va_end(ap);
	if (!real_ioctl)
		real_ioctl = (int (*)(int, unsigned long, ...))dlsym(RTLD_NEXT, "ioctl");
	if (missing && request == KVM_CHECK_EXTENSION && (long)arg == atol(missing))
		return 0;
	return real_ioctl(fd, request, arg);
}
