/* vmm: subcommand dispatch. */
#include <stdio.h>
#include <string.h>

#include "client.h"
#include "config.h"
#include "util.h"
#include "vm.h"

static const char usage[] =
	"usage: vmm COMMAND [ARGS]\n"
	"\n"
	"  run [OPTIONS]     boot a microVM (vmm run --help for the options)\n"
	"  status SOCKET     show the state of a running vmm\n"
	"  pause SOCKET      stop the vCPUs and devices; resume SOCKET starts them again\n"
	"  resume SOCKET --force\n"
	"                    run a guest that a migration with an unknown outcome left\n"
	"                    paused (only once it is sure not to run at the destination)\n"
	"  balloon SOCKET --set SIZE | --stats\n"
	"                    set the balloon's size (memory taken from the guest),\n"
	"                    or print its statistics as JSON\n"
	"  hint SOCKET       run one free page hint round; print ranges, bytes, time\n"
	"  migrate SOCKET URI [OPTIONS] | --cancel\n"
	"                    migrate the VM live to a vmm started with --incoming URI\n"
	"  --help            this text\n"
	"  --version         version\n";

static int run_main(int argc, char **argv)
{
	struct vm_config cfg;
	struct vm vm;
	char err[256];
	int rc = config_parse(&cfg, argc, argv, err, sizeof(err));

	if (rc == CONFIG_HELP) {
		fputs(config_usage, stdout);
		return 0;
	}
	if (rc == CONFIG_VERSION) {
		printf("vmm %s\n", VMM_VERSION);
		return 0;
	}
	if (rc < 0) {
		log_err("%s", err);
		return 2;
	}
	vm_create(&vm, &cfg);
	return vm_run(&vm);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fputs(usage, stderr);
		return 2;
	}
	if (!strcmp(argv[1], "run"))
		return run_main(argc - 1, argv + 1);
	if (!strcmp(argv[1], "status"))
		return client_status_main(argc - 1, argv + 1);
	if (!strcmp(argv[1], "pause") || !strcmp(argv[1], "resume"))
		return client_simple_main(argc - 1, argv + 1);
	if (!strcmp(argv[1], "balloon"))
		return client_balloon_main(argc - 1, argv + 1);
	if (!strcmp(argv[1], "migrate"))
		return client_migrate_main(argc - 1, argv + 1);
	if (!strcmp(argv[1], "hint"))
		return client_hint_main(argc - 1, argv + 1);
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		fputs(usage, stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
		printf("vmm %s\n", VMM_VERSION);
		return 0;
	}
	log_err("unknown command '%s' (try vmm --help)", argv[1]);
	return 2;
}
