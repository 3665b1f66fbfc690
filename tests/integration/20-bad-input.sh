#!/usr/bin/env bash
# Bad input: every case ends vmm with a one-line error and a non-zero
# status, never a crash or a hang.
source "$(dirname "$0")/lib.sh"

# bad NAME WANT_STATUS REGEX [vmm args...]: vmm must exit with WANT_STATUS
# and print exactly one line on stderr, matching REGEX.
bad() {
	local name=$1 want=$2 re=$3 rc lines
	shift 3
	timeout -k 5 20 "$@" </dev/null >"$WORK/$name.stdout" 2>"$WORK/$name.stderr"
	rc=$?
	lines=$(wc -l <"$WORK/$name.stderr")
	if [ "$rc" -ne "$want" ]; then
		fail "$name" "exit status $rc, expected $want" "stderr: $(head -3 "$WORK/$name.stderr")"
	elif [ "$lines" -ne 1 ]; then
		fail "$name" "expected one line on stderr, got $lines:" "$(head -5 "$WORK/$name.stderr")"
	elif ! grep -Eq -- "$re" "$WORK/$name.stderr"; then
		fail "$name" "stderr does not match '$re':" "$(cat "$WORK/$name.stderr")"
	else
		pass "$name"
	fi
}

run() { echo "$VMM" run "$@"; }

head -c 8192 /dev/urandom >"$WORK/garbage"
: >"$WORK/empty"
truncate -s 200M "$WORK/huge.initrd"
# A real bzImage whose header claims it needs 1 GiB (init_size at 0x260).
cp "$KERNEL" "$WORK/greedy.bzImage"
printf '\x00\x00\x00\x40' | dd of="$WORK/greedy.bzImage" bs=1 seek=$((0x260)) conv=notrunc status=none
# The ELF vmlinux cut short: its headers are there, its segments are not.
head -c 100000 "${KERNEL%/*}/vmlinux" >"$WORK/short.vmlinux"

bad missing_kernel 1 "cannot open kernel /nonexistent/bzImage: No such file" $(run --kernel /nonexistent/bzImage)
bad kernel_is_directory 1 "kernel /tmp is not a regular file" $(run --kernel /tmp)
bad kernel_not_bzimage 1 "not a bzImage" $(run --kernel "$WORK/garbage")
bad kernel_elf_truncated 1 "kernel: ELF segment extends past the end of the file" $(run --kernel "$WORK/short.vmlinux")
bad kernel_empty 1 "not a bzImage" $(run --kernel "$WORK/empty")
bad kernel_too_big 1 "kernel does not fit in guest memory" $(run --kernel "$WORK/greedy.bzImage" --mem 128M)
bad initrd_too_big 1 "initrd .* does not fit" $(run --kernel "$KERNEL" --initrd "$WORK/huge.initrd" --mem 128M)
bad missing_initrd 1 "cannot open initrd" $(run --kernel "$KERNEL" --initrd /nonexistent)
bad cmdline_too_long 1 "command line too long" $(run --kernel "$KERNEL" --cmdline "$(printf 'x%.0s' $(seq 3000))")
bad mem_malformed 2 "--mem: '12Q' is not a size" $(run --kernel "$KERNEL" --mem 12Q)
bad mem_too_small 2 "--mem: 1M is out of range" $(run --kernel "$KERNEL" --mem 1M)
bad cpus_zero 2 "--cpus: 0 is out of range" $(run --kernel "$KERNEL" --cpus 0)
bad cpus_too_many 2 "--cpus: 300 is out of range" $(run --kernel "$KERNEL" --cpus 300)
bad cpus_malformed 2 "--cpus: 'two' is not a number" $(run --kernel "$KERNEL" --cpus two)
bad console_bad 2 "--console: 'tty' is not" $(run --kernel "$KERNEL" --console tty)
bad unknown_option 2 "unknown option '--bogus'" $(run --kernel "$KERNEL" --bogus)
bad no_kernel 2 "--kernel is required" $(run --mem 128M)
bad unknown_command 2 "unknown command 'fly'" "$VMM" fly
bad migrate_bad_compress 2 "--compress: 'lz4' is not auto, zstd or none" \
	"$VMM" migrate /nonexistent.sock tcp:127.0.0.1:1 --compress lz4
bad migrate_bad_connections 2 "--connections: 17 is out of range \\(1-16\\)" \
	"$VMM" migrate /nonexistent.sock tcp:127.0.0.1:1 --connections 17
bad migrate_bad_compress_threads 2 "--compress-threads: 17 is out of range \\(0-16\\)" \
	"$VMM" migrate /nonexistent.sock tcp:127.0.0.1:1 --compress-threads 17
bad migrate_bad_option 2 "unknown or incomplete option '--fast'" \
	"$VMM" migrate /nonexistent.sock tcp:127.0.0.1:1 --fast
bad migrate_no_socket 1 "migrate: cannot connect to /nonexistent.sock" \
	"$VMM" migrate /nonexistent.sock tcp:127.0.0.1:1
bad incoming_bad_uri 1 "bad migration URI 'tcp:nohost'" $(run --incoming tcp:nohost)

mkdir -p "$WORK/dir.img"
: >"$WORK/empty.img"
truncate -s 1M "$WORK/disk.img"
bad disk_missing 1 "--disk /nonexistent.img: No such file" $(run --kernel "$KERNEL" --disk /nonexistent.img)
bad disk_directory 1 "--disk .*dir.img: (Is a directory|not a regular file)" \
	$(run --kernel "$KERNEL" --disk "$WORK/dir.img")
bad disk_directory_ro 1 "--disk .*dir.img: not a regular file" \
	$(run --kernel "$KERNEL" --disk "$WORK/dir.img,ro")
bad disk_empty 1 "smaller than one 512-byte sector" $(run --kernel "$KERNEL" --disk "$WORK/empty.img")
bad disk_bad_option 2 "--disk: unknown option 'rw'" $(run --kernel "$KERNEL" --disk "$WORK/disk.img,rw")
bad disk_bad_id 2 "--disk: id 'a/b' is not" $(run --kernel "$KERNEL" --disk "$WORK/disk.img,id=a/b")
bad disk_too_many 2 "--disk: at most 8 disks" \
	$(run --kernel "$KERNEL" $(for i in $(seq 9); do echo --disk "$WORK/disk.img"; done))
# tmpfs has no O_DIRECT before Linux 6.6: where that holds, say so clearly.
if ! dd if=/dev/zero of="$WORK/direct-probe" bs=4096 count=1 oflag=direct status=none 2>/dev/null; then
	bad disk_no_o_direct 1 "does the file system support O_DIRECT" \
		$(run --kernel "$KERNEL" --disk "$WORK/disk.img,direct")
fi

if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null; then
	bad no_dev_kvm 1 "/dev/kvm does not exist" \
		unshare -m sh -c "mount -t tmpfs none /dev && exec $VMM run --kernel $KERNEL"
	# A private 0600 node keeps the test independent of the host's /dev/kvm mode.
	mknod -m 600 "$WORK/kvm" c 10 232
	chmod 755 "$WORK"
	bad no_kvm_permission 1 "no permission to open /dev/kvm" \
		unshare -m sh -c "mount --bind $WORK/kvm /dev/kvm && exec setpriv --reuid=65534 --regid=65534 --clear-groups $VMM run --kernel $KERNEL"
else
	echo "SKIP: no_dev_kvm, no_kvm_permission (need root and unshare)"
fi

if [ -f build/tests/fakecap.so ]; then
	# 32 is KVM_CAP_IRQFD.
	bad missing_capability 1 "KVM lacks KVM_CAP_IRQFD" \
		env LD_PRELOAD="$PWD/build/tests/fakecap.so" VMM_FAKE_MISSING_CAP=32 $(run --kernel "$KERNEL")
else
	fail missing_capability "build/tests/fakecap.so is missing (make unit builds it)"
fi

exit 0
