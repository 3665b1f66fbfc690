#!/usr/bin/env bash
# virtio-blk: an ext4 image built here boots as the root file system, and
# what the guest writes and syncs is in the image after vmm exits; a
# read-only disk refuses writes; malformed requests from a guest program
# (tests/guest/blkgarbage, with the kernel's driver unbound) get error
# statuses while vmm and the guest go on.
source "$(dirname "$0")/lib.sh"

# --- Root file system on a disk. ---
root=$WORK/root.img
if ! make_rootfs "$root" 64; then
	fail blk_root_boot "cannot build the ext4 image (mke2fs -d)"
else
	# Remounting read-only flushes ext4's journal, so the host sees the
	# files in place without a journal replay.
	script='mount | grep " / "; echo blk-was-here > /written.txt; sync; fstrim -v /; mount -o remount,ro / && echo remounted; cat /written.txt'
	# No double quotes in vmm.arg: the kernel's parser counts them.
	script=${script//\"/\'}
	# No --initrd: the kernel mounts the disk and starts its /init.
	timeout -k 5 $((60 * SLOW)) "$VMM" run --kernel "$KERNEL" --mem 128M --disk "$root,id=rootdisk" \
		--cmdline "$CMDLINE_BASE root=/dev/vda rw rootfstype=ext4 init=/init vmm.job=sh vmm.arg=\"$script\"" \
		</dev/null >"$WORK/root.out" 2>&1
	echo $? >"$WORK/root.rc"
	if expect_status blk_root_boot root 0 &&
		expect_line blk_root_boot root '^/dev/root on / type ext4|^/dev/vda on / type ext4' &&
		expect_line blk_root_boot root '^/: [1-9][0-9]* bytes trimmed' &&
		expect_line blk_root_boot root '^remounted' &&
		expect_line blk_root_boot root '^blk-was-here'; then
		pass blk_root_boot
	fi
	got=$(debugfs -R 'cat /written.txt' "$root" 2>/dev/null)
	fsck=$(e2fsck -fn "$root" 2>&1)
	fsck_rc=$?
	if [ "$got" = blk-was-here ] && [ $fsck_rc -eq 0 ]; then
		pass blk_data_persisted
	else
		fail blk_data_persisted "debugfs cat /written.txt: '$got'" "e2fsck -fn: status $fsck_rc" \
			"$(echo "$fsck" | tail -5)"
	fi
fi

# --- A read-only disk. ---
ro=$WORK/ro.img
printf 'ro-content' >"$ro"
truncate -s 8M "$ro"
sum_before=$(md5sum <"$ro")
script='cat /sys/block/vda/ro; head -c 10 /dev/vda; echo; dd if=/dev/zero of=/dev/vda bs=512 count=1 oflag=direct 2>&1; echo dd-rc $?; echo x > /dev/vda; echo echo-rc $?'
boot ro $((30 * SLOW)) --mem 128M --disk "$ro,ro" \
	--cmdline "$CMDLINE_BASE vmm.job=sh vmm.arg=\"$script\""
if expect_status blk_read_only ro 0 && expect_line blk_read_only ro '^1$' &&
	expect_line blk_read_only ro '^ro-content$' && expect_line blk_read_only ro '^dd-rc [1-9]' &&
	expect_line blk_read_only ro '^echo-rc [1-9]'; then
	if [ "$(md5sum <"$ro")" = "$sum_before" ]; then
		pass blk_read_only
	else
		fail blk_read_only "the read-only image changed"
	fi
fi

# --- Malformed requests from the guest. ---
rw=$WORK/garbage-rw.img
ro2=$WORK/garbage-ro.img
truncate -s 1M "$rw" "$ro2"
sock=$WORK/garbage.sock
d=/sys/bus/virtio/drivers/virtio_blk
script="for v in $d/virtio*; do [ -e \$v ] && echo \${v##*/} > $d/unbind; done; blkgarbage 0xd0000000 rw grw; echo bg-rc rw \$?; blkgarbage 0xd0001000 ro gro; echo bg-rc ro \$?; echo blkgarbage-all-done; i=0; while [ \$i -lt 900 ]; do i=\$((i+1)); echo alive \$i; sleep 1; done"
timeout -k 5 $((40 * SLOW)) "$VMM" run --kernel "$KERNEL" --initrd "$INITRD" --mem 128M \
	--disk "$rw,id=grw" --disk "$ro2,ro,id=gro" --api-socket "$sock" \
	--cmdline "$CMDLINE_BASE vmm.job=sh vmm.arg=\"$script\"" </dev/null >"$WORK/garbage.out" 2>&1 &
pid=$!
has() { out_of garbage | grep -Eq -- "$1"; }
if ! wait_for $((30 * SLOW)) has 'blkgarbage-all-done|vmm-guest: debug-exit'; then
	fail blk_garbage "the guest never finished the blkgarbage runs" "$(out_of garbage | tail -20)"
else
	for m in rw ro; do
		if has "^bg-rc $m 0$"; then
			pass "blk_garbage_$m"
		else
			fail "blk_garbage_$m" "$(out_of garbage | grep -E '^blkgarbage: |^bg-rc|vmm:' | grep -v ' ok$' | tail -20)"
		fi
	done
	# What framed_write put at sector 8 of the rw disk: bytes i * 7 + 3.
	want=$(/usr/bin/python3 -c 'print(bytes((i * 7 + 3) & 255 for i in range(512)).hex())')
	got=$(dd if="$rw" bs=512 skip=8 count=1 2>/dev/null | od -An -tx1 -v | tr -d ' \n')
	# What write_zeroes_ok zeroed: sectors 32-39, after write_for_zeroes wrote 0xab.
	zeroed=$(dd if="$rw" bs=512 skip=32 count=8 2>/dev/null | tr -d '\0' | wc -c)
	if [ "$got" = "$want" ] && [ "$zeroed" = 0 ] &&
		has '^blkgarbage: write_zeroes_ok status=0 len=1 .* ok$'; then
		pass blk_garbage_data_written
	else
		fail blk_garbage_data_written "sector 8 of the image: ${got:0:64}..." \
			"non-zero bytes in sectors 32-39: $zeroed" \
			"$(out_of garbage | grep -E 'write_zeroes|features' | head -4)"
	fi
	alive_after() { out_of garbage | sed -n '/^blkgarbage-all-done/,$p' | grep -c '^alive [0-9]'; }
	alive_twice() { [ "$(alive_after)" -ge 2 ]; }
	if kill -0 $pid 2>/dev/null && "$VMM" status "$sock" 2>&1 | grep -q '"state": "running"' &&
		wait_for $((5 * SLOW)) alive_twice; then
		pass blk_garbage_alive
	else
		fail blk_garbage_alive "vmm or the guest stopped" "$(out_of garbage | tail -10)"
	fi
fi
kill -TERM $pid 2>/dev/null
wait $pid 2>/dev/null

exit 0
