/* Parses `vmm run` options into a struct vm_config. Nothing else reads argv
 * for `run`, so every check on user input lives here and is unit-tested. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dirty_ring.h"
#include "util.h"

const char config_usage[] =
	"usage: vmm run --kernel PATH [options]\n"
	"\n"
	"  --kernel PATH        bzImage or ELF vmlinux to boot (Linux x86-64 boot protocol)\n"
	"  --initrd PATH        initial ramdisk\n"
	"  --cmdline STR        kernel command line (default: \"console=ttyS0 reboot=k panic=1 pci=off\")\n"
	"  --mem SIZE           guest RAM, e.g. 512M or 4G (default 256M)\n"
	"  --cpus N             vCPUs, 1 to 254 (default 1)\n"
	"  --console KIND       stdio, file:PATH or none (default stdio)\n"
	"  --api-socket PATH    JSON control socket, created with mode 0600\n"
	"  --balloon [OPTS]     virtio-balloon; OPTS is a comma-separated subset of\n"
	"                       stats=SECONDS, deflate-on-oom, free-page-hint,\n"
	"                       free-page-reporting (default: inflate/deflate only)\n"
	"  --disk PATH[,ro][,direct][,id=NAME]\n"
	"                       virtio-blk on a raw image file (repeatable, up to 8):\n"
	"                       ro: read-only; direct: O_DIRECT, bypassing the host\n"
	"                       page cache; id: the disk's serial (up to 20 characters)\n"
	"  --boot-timer         print the time to the guest's boot marker on stderr\n"
	"  --incoming URI       wait for a live migration on tcp:HOST:PORT,\n"
	"                       tcp:[IPV6%IF]:PORT or unix:PATH instead of booting;\n"
	"                       memory, vCPUs and devices must match the source\n"
	"  --dirty-ring N       track dirty pages through a KVM dirty ring of N entries\n"
	"                       per vCPU (a power of two, 256 to 65536; 4096 is a good\n"
	"                       size) instead of KVM's dirty bitmaps, when migrating\n"
	"  -h, --help           this text\n"
	"  -V, --version        version\n"
	"\n"
	"On the console, Ctrl-A x quits and Ctrl-A Ctrl-A sends Ctrl-A.\n";

enum { OPT_KERNEL = 256, OPT_INITRD, OPT_CMDLINE, OPT_MEM, OPT_CPUS, OPT_CONSOLE,
       OPT_API_SOCKET, OPT_BOOT_TIMER, OPT_BALLOON, OPT_INCOMING, OPT_DISK, OPT_DIRTY_RING };

static const struct option run_options[] = {
	{ "kernel", required_argument, NULL, OPT_KERNEL },
	{ "initrd", required_argument, NULL, OPT_INITRD },
	{ "cmdline", required_argument, NULL, OPT_CMDLINE },
	{ "mem", required_argument, NULL, OPT_MEM },
	{ "cpus", required_argument, NULL, OPT_CPUS },
	{ "console", required_argument, NULL, OPT_CONSOLE },
	{ "api-socket", required_argument, NULL, OPT_API_SOCKET },
	{ "boot-timer", no_argument, NULL, OPT_BOOT_TIMER },
	{ "balloon", optional_argument, NULL, OPT_BALLOON },
	{ "incoming", required_argument, NULL, OPT_INCOMING },
	{ "disk", required_argument, NULL, OPT_DISK },
	{ "dirty-ring", required_argument, NULL, OPT_DIRTY_RING },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, 'V' },
	{ NULL, 0, NULL, 0 },
};

void config_defaults(struct vm_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->cmdline = "console=ttyS0 reboot=k panic=1 pci=off";
	cfg->mem_size = 256ULL << 20;
	cfg->cpus = 1;
	cfg->console = CONSOLE_STDIO;
	cfg->api_idle_s = CONFIG_API_IDLE_S;
}

/* Not an option: only tests want another idle timeout (see config.h). */
static int parse_env(struct vm_config *cfg, char *err, size_t errlen)
{
	const char *s = getenv("VMM_CONTROL_IDLE_S");
	uint64_t v;

	if (!s)
		return 0;
	if (parse_uint(s, 1, 86400, &v)) {
		snprintf(err, errlen, "VMM_CONTROL_IDLE_S: '%s' is not 1 to 86400 (seconds)", s);
		return -EINVAL;
	}
	cfg->api_idle_s = (unsigned)v;
	return 0;
}

static int parse_mem(struct vm_config *cfg, const char *arg, char *err, size_t errlen)
{
	uint64_t v;
	int rc = parse_size(arg, &v);

	if (rc == -EINVAL) {
		snprintf(err, errlen, "--mem: '%s' is not a size (examples: 512M, 4G)", arg);
		return -EINVAL;
	}
	if (rc || v < CONFIG_MIN_MEM || v > CONFIG_MAX_MEM) {
		snprintf(err, errlen, "--mem: %s is out of range (32M to 1T)", arg);
		return -EINVAL;
	}
	if (v % MiB) {
		snprintf(err, errlen, "--mem: %s is not a multiple of 1M", arg);
		return -EINVAL;
	}
	cfg->mem_size = v;
	return 0;
}

static int parse_cpus(struct vm_config *cfg, const char *arg, char *err, size_t errlen)
{
	uint64_t v;
	int rc = parse_uint(arg, 1, CONFIG_MAX_CPUS, &v);

	if (rc == -EINVAL) {
		snprintf(err, errlen, "--cpus: '%s' is not a number", arg);
		return -EINVAL;
	}
	if (rc) {
		snprintf(err, errlen, "--cpus: %s is out of range (1 to %d)", arg, CONFIG_MAX_CPUS);
		return -EINVAL;
	}
	cfg->cpus = (unsigned)v;
	return 0;
}

static int parse_console(struct vm_config *cfg, const char *arg, char *err, size_t errlen)
{
	if (!strcmp(arg, "stdio")) {
		cfg->console = CONSOLE_STDIO;
	} else if (!strcmp(arg, "none")) {
		cfg->console = CONSOLE_NONE;
	} else if (!strncmp(arg, "file:", 5) && arg[5]) {
		cfg->console = CONSOLE_FILE;
		cfg->console_path = arg + 5;
	} else {
		snprintf(err, errlen, "--console: '%s' is not stdio, file:PATH or none", arg);
		return -EINVAL;
	}
	return 0;
}

static int parse_disk(struct vm_config *cfg, const char *arg, char *err, size_t errlen)
{
	if (cfg->ndisks == BLK_MAX_DISKS) {
		snprintf(err, errlen, "--disk: at most %d disks", BLK_MAX_DISKS);
		return -EINVAL;
	}
	if (blk_parse_options(arg, &cfg->disks[cfg->ndisks], err, errlen))
		return -EINVAL;
	cfg->ndisks++;
	return 0;
}

/* Only what can be checked without KVM: the host's own bounds (its
 * maximum, the entries it keeps in reserve) are KVM's to check, in vm.c. */
static int parse_dirty_ring(struct vm_config *cfg, const char *arg, char *err, size_t errlen)
{
	uint64_t v = 0;
	int rc = parse_uint(arg, 0, UINT64_MAX, &v);

	if (rc == -EINVAL) {
		snprintf(err, errlen, "--dirty-ring: '%s' is not a number of entries", arg);
		return -EINVAL;
	}
	if (rc || !dirty_ring_entries_valid(v)) {
		snprintf(err, errlen, "--dirty-ring: %s is not a power of two from %u to %u", arg,
			 DIRTY_RING_MIN_ENTRIES, DIRTY_RING_MAX_ENTRIES);
		return -EINVAL;
	}
	cfg->dirty_ring = (uint32_t)v;
	return 0;
}

static int parse_one(struct vm_config *cfg, int opt, const char *arg, char *err, size_t errlen)
{
	switch (opt) {
	case OPT_KERNEL: cfg->kernel = arg; return 0;
	case OPT_INITRD: cfg->initrd = arg; return 0;
	case OPT_CMDLINE: cfg->cmdline = arg; return 0;
	case OPT_MEM: return parse_mem(cfg, arg, err, errlen);
	case OPT_CPUS: return parse_cpus(cfg, arg, err, errlen);
	case OPT_CONSOLE: return parse_console(cfg, arg, err, errlen);
	case OPT_API_SOCKET:
		if (!*arg) {
			snprintf(err, errlen, "--api-socket: empty path");
			return -EINVAL;
		}
		cfg->api_socket = arg;
		return 0;
	case OPT_BOOT_TIMER: cfg->boot_timer = true; return 0;
	case OPT_BALLOON: return balloon_parse_options(arg, &cfg->balloon, err, errlen);
	case OPT_DISK: return parse_disk(cfg, arg, err, errlen);
	case OPT_DIRTY_RING: return parse_dirty_ring(cfg, arg, err, errlen);
	case OPT_INCOMING:
		if (!*arg) {
			snprintf(err, errlen, "--incoming: empty URI");
			return -EINVAL;
		}
		cfg->incoming = arg;
		return 0;
	}
	snprintf(err, errlen, "internal error: option %d", opt);
	return -EINVAL;
}

int config_parse(struct vm_config *cfg, int argc, char **argv, char *err, size_t errlen)
{
	int opt, rc;

	config_defaults(cfg);
	optind = 0; /* 0, not 1: fully reinitialises getopt, so tests can parse twice */
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "+:hV", run_options, NULL)) != -1) {
		switch (opt) {
		case 'h': return CONFIG_HELP;
		case 'V': return CONFIG_VERSION;
		case ':':
			snprintf(err, errlen, "%s needs an argument", argv[optind - 1]);
			return -EINVAL;
		case '?':
			/* Inside a group of short options optind has not moved on yet. */
			if (strncmp(argv[optind - 1], "--", 2) && optopt > 0 && optopt < 128)
				snprintf(err, errlen, "unknown option '-%c' (try --help)", optopt);
			else
				snprintf(err, errlen, "unknown option '%s' (try --help)", argv[optind - 1]);
			return -EINVAL;
		}
		/* "--balloon OPTS" as well as "--balloon=OPTS" and a bare "--balloon". */
		if (opt == OPT_BALLOON && !optarg && optind < argc && argv[optind][0] != '-')
			optarg = argv[optind++];
		rc = parse_one(cfg, opt, optarg, err, errlen);
		if (rc)
			return rc;
	}
	if (optind < argc) {
		snprintf(err, errlen, "unexpected argument '%s' (try --help)", argv[optind]);
		return -EINVAL;
	}
	if (!cfg->kernel && !cfg->incoming) {
		snprintf(err, errlen, "--kernel is required (try --help)");
		return -EINVAL;
	}
	return parse_env(cfg, err, errlen) ? -EINVAL : CONFIG_OK;
}
