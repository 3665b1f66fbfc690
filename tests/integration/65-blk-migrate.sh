#!/usr/bin/env bash
# Live migration with a disk attached (shared storage: both vmm open the
# same image). On an ext4 disk the guest appends 4 KiB records to a file
# with an fsync after each (tests/guest/disklog write) and, at the same
# time, keeps reading another file with O_DIRECT into buffers only the
# device writes, checking them all after each read (disklog read: a write
# the VMM forgot to mark dirty arrives stale), while it is migrated; on
# the destination both go on and the writer checks every record on the
# disk. After vmm exits the host checks the image. A destination whose
# disk differs is refused with a clear error.
source "$(dirname "$0")/lib.sh"

PORT=$((46000 + RANDOM % 1000))
img=$WORK/data.img
RECORDS=300
ARGS="--mem 128M --balloon free-page-hint,free-page-reporting --disk $img,id=data"
GUEST="mkdir -p /mnt; mount /dev/vda /mnt; disklog write /mnt/a 200 1000 | tail -1; (disklog read /mnt/a 200 50 60; echo reader-rc \$?) & disklog write /mnt/log $RECORDS 10; echo disklog-rc \$?; wait; umount /mnt && echo umounted; while true; do sleep 1; done"

out() { tr -d '\r' 2>/dev/null <"$WORK/$1.out"; }
has() { out "$1" | grep -Eq -- "$2"; }
wrote() { out "$1" | awk '$1 == "disklog:" && $2 == "wrote" { v = $3 } END { print v + 0 }'; }
wrote_past() { [ "$(wrote "$1")" -gt "$2" ]; }

start_dst() {
	local name=$1
	shift
	PORT=$((PORT + 1))
	"$VMM" run --incoming "tcp:127.0.0.1:$PORT" "$@" --api-socket "$WORK/$name.sock" \
		--console "file:$WORK/$name.out" </dev/null 2>"$WORK/$name.err" &
	dst_pid=$!
	wait_for $((5 * SLOW)) port_open "$PORT"
}
cleanup() { kill -9 $src_pid $dst_pid 2>/dev/null; wait 2>/dev/null; }

mke2fs -q -t ext4 -F "$img" 64M >/dev/null 2>&1 || { fail blk_migrate "mke2fs failed"; exit 0; }
"$VMM" run --kernel "$KERNEL" --initrd "$INITRD" $ARGS --api-socket "$WORK/src.sock" \
	--console "file:$WORK/src.out" \
	--cmdline "$CMDLINE_BASE vmm.job=sh vmm.arg=\"$GUEST\"" </dev/null 2>"$WORK/src.err" &
src_pid=$!
dst_pid=

both_running() { wrote_past src 10 && has src '^disklog: reading'; }
src_ready() { both_running || has src 'rc [0-9]' || gone "$src_pid"; }
if ! wait_for $((60 * SLOW)) src_ready || ! both_running; then
	fail blk_migrate "the source guest never wrote its log" "$(out src | tail -25)" "$(cat "$WORK/src.err")"
	cleanup
	exit 0
fi

# The real hop, while the guest writes.
start_dst dst $ARGS
at=$(wrote src)
timeout -k 5 $((30 * SLOW)) "$VMM" migrate "$WORK/src.sock" "tcp:127.0.0.1:$PORT" \
	>"$WORK/hop.migrate" 2>&1
rc=$?
if [ $rc -ne 0 ] || ! wait_for $((10 * SLOW)) gone "$src_pid"; then
	fail blk_migrate "vmm migrate status $rc" "$(cat "$WORK/hop.migrate")" \
		"source: $(tail -3 "$WORK/src.err")" "destination: $(tail -3 "$WORK/dst.err")"
	cleanup
	exit 0
fi
echo "    blk_migrate: $(head -3 "$WORK/hop.migrate" | tr '\n' ' ')"
both_done() { has dst '^disklog-rc ' && has dst '^reader-rc '; }
# The guest prints a line every 10 records or 100 reads: 20 * SLOW s
# without one is a frozen guest (run 26 waited out the whole bound on one).
if wait_progress $((120 * SLOW)) $((20 * SLOW)) "$WORK/dst.out" both_done &&
	has dst '^disklog: PASS records=300$' &&
	has dst '^disklog-rc 0$' && has dst '^disklog: reader PASS$' && has dst '^reader-rc 0$' &&
	! has dst 'FAIL' && wrote_past dst "$at"; then
	pass blk_migrate
else
	fail blk_migrate "the files did not check out on the destination (wrote $at before the hop)" \
		"$(out dst | grep -v '^disklog: wrote\|reader ok' | tail -8)" "last: $(out dst | tail -1)"
fi

# From the destination, now running the guest, to one whose disk has
# another size: refused at HELLO with both device sets named, and the
# guest goes on.
vm_pid=$dst_pid
other=$WORK/other.img
truncate -s 32M "$other"
start_dst refused --mem 128M --balloon free-page-hint,free-page-reporting --disk "$other,id=data"
timeout -k 5 $((30 * SLOW)) "$VMM" migrate "$WORK/dst.sock" "tcp:127.0.0.1:$PORT" \
	>"$WORK/refused.migrate" 2>&1
rc=$?
wait_for $((10 * SLOW)) gone "$dst_pid"
kill -9 $dst_pid 2>/dev/null
wait $dst_pid 2>/dev/null
dst_pid=$vm_pid
if [ $rc -ne 0 ] && grep -Eq "incompatible source: devices 'uart,balloon:free-page-hint:free-page-reporting,blk0:33554432(:discard)?:id=data' here, 'uart,balloon:free-page-hint:free-page-reporting,blk0:67108864(:discard)?:id=data' there" "$WORK/refused.err" &&
	kill -0 $vm_pid && "$VMM" status "$WORK/dst.sock" 2>&1 | grep -q '"state": "running"'; then
	pass blk_migrate_other_disk_refused
else
	fail blk_migrate_other_disk_refused "vmm migrate status $rc" "$(cat "$WORK/refused.migrate")" \
		"destination: $(cat "$WORK/refused.err")" "status: $("$VMM" status "$WORK/dst.sock" 2>&1)"
fi

# After vmm exits: the image holds every record, and the file system is clean.
wait_for $((30 * SLOW)) has dst '^umounted'
cleanup
fsck=$(e2fsck -fn "$img" 2>&1)
fsck_rc=$?
check=$(debugfs -R 'cat /log' "$img" 2>/dev/null | /usr/bin/python3 -c '
import struct, sys
data = sys.stdin.buffer.read()
n = int(sys.argv[1])
if len(data) != n * 4096:
    print("size %d, want %d" % (len(data), n * 4096)); sys.exit()
for i in range(n):
    want = b"".join(struct.pack("<Q", ((i << 32) | w) ^ 0x9e3779b97f4a7c15) for w in range(512))
    if data[i * 4096:(i + 1) * 4096] != want:
        print("record %d differs" % i); sys.exit()
print("ok")' "$RECORDS")
if [ "$check" = ok ] && [ $fsck_rc -eq 0 ]; then
	pass blk_migrate_image_intact
else
	fail blk_migrate_image_intact "log in the image: $check" "e2fsck -fn: status $fsck_rc" \
		"$(echo "$fsck" | tail -4)"
fi
exit 0
