/* What every libFuzzer target here shares: the entry point's prototype
 * (-Wmissing-prototypes) and ENSURE, a check whose failure the fuzzer
 * reports as a crash with the input that caused it. */
#ifndef VMM_FUZZ_H
#define VMM_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ENSURE(cond)                                                                       \
	do {                                                                               \
		if (!(cond))                                                               \
			__builtin_trap();                                                  \
	} while (0)

#endif
