# vmm: a minimal KVM virtual machine monitor with live migration.
# `make` builds build/vmm; see README.md for the other targets.

CC      ?= cc
PREFIX  ?= /usr/local
DESTDIR ?=
BUILD   := build

WARNINGS := -Wall -Wextra -Werror -Wformat=2 -Wmissing-prototypes -Wstrict-prototypes \
	-Wsign-compare -Wundef -Wwrite-strings -Wshadow -Wpointer-arith -Wvla \
	-Wimplicit-fallthrough -Wmissing-declarations -Wold-style-definition
CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 $(WARNINGS) -D_GNU_SOURCE -MMD -MP -I.
LIBS    := -ljansson -lpthread -luring -lzstd -lxxhash
ifeq ($(STATIC),1)
LDFLAGS += -static
endif

SRCS     := $(wildcard vmm/*.c vmm/x86/*.c virtio/*.c migrate/*.c)
LIB_SRCS := $(filter-out vmm/main.c,$(SRCS))
OBJS     := $(SRCS:%.c=$(BUILD)/obj/%.o)
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%) \
	     $(patsubst tests/unit/%.sh,$(BUILD)/tests/%,$(wildcard tests/unit/test_*.sh))
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)

.PHONY: all guest test unit demo bench install clean deps fuzz

all: $(BUILD)/vmm

deps:
	@scripts/deps

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC    $<"
	@$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libvmm.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/vmm: $(BUILD)/obj/vmm/main.o $(BUILD)/libvmm.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/tests/%: tests/unit/%.c tests/unit/unit.h $(BUILD)/libvmm.a
	@mkdir -p $(dir $@) $(BUILD)/obj/tests
	@echo "  CC    $<"
	@$(CC) $(CFLAGS) -MF $(BUILD)/obj/tests/$*.d -o $@ $< $(BUILD)/libvmm.a $(LIBS)

# Tests of the test tooling itself are scripts; build/tests/../.. is the checkout.
$(BUILD)/tests/%: tests/unit/%.sh
	@mkdir -p $(dir $@)
	@install -m 755 $< $@

$(BUILD)/tests/fakecap.so: tests/integration/fakecap.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -Wall -Wextra -Werror -shared -fPIC -o $@ $< -ldl

unit: $(UNIT_BINS) $(BUILD)/tests/fakecap.so

guest: $(BUILD)/guest/bzImage $(BUILD)/guest/bzImage-stock $(BUILD)/guest/vmlinux \
	$(BUILD)/guest/initramfs.cpio.gz

# The kernel build caches by content outside the tree, so running it each
# time costs a hash; it rebuilds only when the fragment or patches change.
$(BUILD)/guest/bzImage: FORCE
	@mkdir -p $(dir $@)
	guest-kernel/build $@

# The same kernel without guest-kernel/patches (tests check that vmm works
# with it); one build makes both, so this one mostly hits the cache.
$(BUILD)/guest/bzImage-stock: $(BUILD)/guest/bzImage
	guest-kernel/build --stock $@

# The same kernel uncompressed: vmm boots an ELF vmlinux directly.
$(BUILD)/guest/vmlinux: $(BUILD)/guest/bzImage scripts/extract-vmlinux
	scripts/extract-vmlinux $< $@

$(BUILD)/guest/initramfs.cpio.gz: $(wildcard tests/guest/*) 
	@mkdir -p $(dir $@)
	tests/guest/mkinitramfs $@

FORCE:

test: deps
	$(MAKE) all unit kvmtests guest
	tests/run

fuzz: deps
	$(MAKE) all
	tests/fuzz/run --long

demo: deps
	$(MAKE) all guest
	scripts/demo

bench: deps
	$(MAKE) all guest
	scripts/bench-boot
	scripts/bench-balloon
	scripts/bench-migrate
	scripts/bench-disk

install: $(BUILD)/vmm
	install -D -m 0755 $(BUILD)/vmm $(DESTDIR)$(PREFIX)/bin/vmm

clean:
	rm -rf $(BUILD)

# Fuzzing (tests/fuzz/run; `make fuzz` runs it long). Each target is built
# from tests/fuzz/fuzz_NAME.c and the library sources it lists in
# FUZZ_LIB_fuzz_NAME, all compiled with the sanitizers; a target that lists
# none gets every library source and $(LIBS).
FUZZ_CC     ?= clang
FUZZ_CFLAGS ?= -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS += -std=gnu11 -D_GNU_SOURCE -I. -Wall -Wextra
FUZZ_BINS   := $(FUZZ_SRCS:tests/fuzz/%.c=$(BUILD)/fuzz/%)
FUZZ_HDRS   := $(wildcard vmm/*.h vmm/x86/*.h virtio/*.h migrate/*.h tests/fuzz/*.h)
FUZZ_LIB_fuzz_virtq := vmm/mem.c virtio/queue.c
FUZZ_LIB_fuzz_stream := migrate/stream.c migrate/stream_seq.c -lxxhash
FUZZ_LIB_fuzz_kernel := vmm/mem.c vmm/x86/boot.c vmm/x86/vmlinux.c vmm/x86/e820.c
FUZZ_LIB_fuzz_blk := vmm/mem.c virtio/queue.c virtio/blk_req.c
FUZZ_LIB_fuzz_state := migrate/state.c migrate/state_blob.c vmm/util.c vmm/x86/uart.c
# fuzz_devload and fuzz_mmio list none: they need the devices and most of
# the library behind them. fuzz_control too, with migrate_start() wrapped
# so that an accepted migrate request never connects anywhere.
FUZZ_LIB_fuzz_control := $(LIB_SRCS) $(LIBS) -Wl,--wrap=migrate_start

.PHONY: fuzz-build
fuzz-build: $(FUZZ_BINS)

# Any library source or header change rebuilds the targets (a second each).
$(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(LIB_SRCS) $(FUZZ_HDRS)
	@mkdir -p $(dir $@)
	@echo "  FUZZ  $<"
	@$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(or $(FUZZ_LIB_fuzz_$*),$(LIB_SRCS) $(LIBS))

-include $(OBJS:.o=.d)

# KVM self-tests (tests/kvm/test_*.c, in the style of the Linux KVM
# selftests): each creates its own VMs through the library and prints
# PASS:/FAIL: lines. They need real KVM: run them with
# `scripts/testhost build/kvmtests/test_NAME`.
KVM_TEST_SRCS := $(wildcard tests/kvm/test_*.c)
KVM_TEST_BINS := $(KVM_TEST_SRCS:tests/kvm/%.c=$(BUILD)/kvmtests/%)

.PHONY: kvmtests
kvmtests: $(KVM_TEST_BINS)

$(BUILD)/kvmtests/%: tests/kvm/%.c tests/unit/unit.h $(wildcard tests/kvm/*.h) $(BUILD)/libvmm.a
	@mkdir -p $(dir $@) $(BUILD)/obj/kvmtests
	@echo "  CC    $<"
	@$(CC) $(CFLAGS) -MF $(BUILD)/obj/kvmtests/$*.d -o $@ $< $(BUILD)/libvmm.a $(LIBS)
