/* `vmm run` options: argv becomes a struct vm_config here and nowhere else. */
#ifndef VMM_CONFIG_H
#define VMM_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "virtio/balloon.h"
#include "virtio/blk.h"

#define VMM_VERSION "0.1.0"

#define CONFIG_MIN_MEM (32ULL << 20)
#define CONFIG_MAX_MEM (1ULL << 40)
/* APIC ids are 8-bit without x2APIC and 255 is the broadcast id; the
 * IOAPIC takes the id after the last vCPU. */
#define CONFIG_MAX_CPUS 254
/* A control socket client that sends no complete request for this long is
 * closed; the environment variable VMM_CONTROL_IDLE_S (1 to 86400)
 * overrides it, which tests use to stay short. */
#define CONFIG_API_IDLE_S 30

enum console_kind { CONSOLE_STDIO, CONSOLE_FILE, CONSOLE_NONE };

struct vm_config {
	const char *kernel;
	const char *initrd;
	const char *cmdline;
	uint64_t mem_size;
	unsigned cpus;
	enum console_kind console;
	const char *console_path;
	const char *api_socket;
	unsigned api_idle_s; /* control clients idle this long are closed */
	bool boot_timer;
	struct balloon_options balloon;
	struct blk_options disks[BLK_MAX_DISKS]; /* --disk, in order */
	unsigned ndisks;
	const char *incoming; /* --incoming URI: receive the guest instead of booting one */
	uint32_t dirty_ring;  /* --dirty-ring: entries per vCPU ring, 0 without one */
};

enum config_result {
	CONFIG_OK = 0,
	CONFIG_HELP = 1,
	CONFIG_VERSION = 2,
	/* Errors are negative: -EINVAL with a message in err. */
};

void config_defaults(struct vm_config *cfg);
/* argv[0] is the subcommand name ("run"). On error returns -EINVAL and
 * writes a one-line reason to err. */
int config_parse(struct vm_config *cfg, int argc, char **argv, char *err, size_t errlen);
extern const char config_usage[];

#endif
