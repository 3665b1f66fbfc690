#!/usr/bin/env bash
# Live migration between two test hosts (scripts/testhost-pair): a guest
# with the memory checker and a disk on the pair's shared storage goes from
# host 1 to host 2 over one connection, then back over four, with free-page
# skipping on (the default). After each hop: the source host's vmm is gone,
# the guest goes on at the destination (new memcheck passes, new disk log
# rounds, each read back from the disk and checked by the guest), and no
# check ever failed. Runs here, on the build machine; the hosts' consoles
# and the disk live in the shared directory, so they are read directly.
set -u
cd "$(dirname "$0")/../.."
[ -n "${VMM_PAIR_DIR:-}" ] || { echo "FAIL: pair_setup (run under scripts/testhost-pair)"; exit 1; }
source tests/integration/lib.sh # pass, fail, wait_for
SLOW=24 # two test hosts share this machine's CPUs
VMM=$PWD/build/vmm
KERNEL=$PWD/build/guest/bzImage
INITRD=$PWD/build/guest/initramfs.cpio.gz
W=$VMM_PAIR_SHARED/work-$$
mkdir -p "$W"
on() { scripts/testhost-pair exec "$@"; }
con() { tr -d '\r' <"$W/$1.out" 2>/dev/null; }
count() { con "$1" | grep -c -- "$2"; }
bad() { con "$1" | grep -E 'memcheck: FAIL|disklog: FAIL' | head -3; }
# A test host that ended (stalled, crashed) ends every wait at once: what
# ran on it cannot make progress, and scripts/testhost-pair reports why.
host_gone() {
	local h
	for h in 1 2; do
		[ -e "$VMM_PAIR_DIR/h$h/ended" ] && { echo "test host $h ended ($(cat "$VMM_PAIR_DIR/h$h/ended"))"; return 0; }
	done
	return 1
}

img=$W/disk.img
/sbin/mke2fs -q -t ext4 -F "$img" 64M >/dev/null 2>&1 || { fail pair_setup "mke2fs failed"; exit 1; }
# A second, read-only disk is the guest's mailbox: once it reads STOP
# there, it stops writing and unmounts, so the image can be checked.
mailbox=$W/mailbox.img
truncate -s 1M "$mailbox"
ARGS="--mem 160M --balloon free-page-hint,free-page-reporting --disk $img,id=shared --disk $mailbox,ro,id=mailbox"
GUEST="mkdir -p /mnt; mount /dev/vda /mnt || echo mount-failed; memcheck 32 250 & until echo 3 >/proc/sys/vm/drop_caches; head -c 4 /dev/vdb | grep -q STOP; do disklog write /mnt/log 30 10 | tail -1; done; umount /mnt && echo umounted; while true; do sleep 1; done"
CMDLINE="console=ttyS0 reboot=k panic=1 pci=off quiet vmm.job=sh vmm.arg=\"$GUEST\""

# start_src HOST NAME: the first guest, booted on HOST.
on 1 sh -c "$VMM run --kernel $KERNEL --initrd $INITRD $ARGS --api-socket /tmp/g0.sock \
	--console file:$W/g0.out --cmdline '$CMDLINE' </dev/null >$W/g0.err 2>&1 &"
running() { [ "$(count "$1" 'memcheck: PASS')" -gt "$2" ] && [ "$(count "$1" 'disklog: PASS')" -gt "$3" ]; }
# running_or_gone NAME M D: the wait's end; the caller tells which it was.
running_or_gone() { running "$@" || host_gone >/dev/null; }
if ! wait_for $((60 * SLOW)) running_or_gone g0 0 0 || ! running g0 0 0; then
	fail pair_guest_boots "no memcheck and disk log passes on host 1" "$(host_gone)" "$(con g0 | tail -8)" "$(cat "$W/g0.err")"
	exit 1
fi
pass pair_guest_boots

# hop TEST FROM TO SRC DST CONNECTIONS PORT
hop() {
	local test=$1 from=$2 to=$3 src=$4 dst=$5 conns=$6 port=$7 addr m0 d0 rc
	addr=$VMM_PAIR_H1
	[ "$to" = 2 ] && addr=$VMM_PAIR_H2
	on "$to" sh -c "$VMM run --incoming tcp:0.0.0.0:$port $ARGS --api-socket /tmp/$dst.sock \
		--console file:$W/$dst.out </dev/null >$W/$dst.err 2>&1 &"
	m0=$(count "$src" 'memcheck: PASS') d0=$(count "$src" 'disklog: PASS')
	on "$from" --timeout $((60 * SLOW)) "$VMM" migrate "/tmp/$src.sock" "tcp:$addr:$port" \
		--connections "$conns" >"$W/$test.migrate" 2>&1
	rc=$?
	sed 's/^/    /' "$W/$test.migrate" | head -4
	if [ $rc -ne 0 ]; then
		fail "$test" "vmm migrate status $rc" "$(cat "$W/$test.migrate")" \
			"source: $(tail -3 "$W/$src.err")" "destination: $(tail -3 "$W/$dst.err")"
		return 1
	fi
	# The source host's vmm ends once the destination runs the guest.
	if ! on "$from" sh -c "for i in \$(seq 100); do pgrep -f '[a]pi-socket /tmp/$src.sock' >/dev/null || exit 0; sleep 0.2; done; exit 1"; then
		fail "$test" "the source vmm on host $from still runs after the migration"
		return 1
	fi
	if ! wait_for $((30 * SLOW)) running_or_gone "$dst" "$m0" "$d0" || ! running "$dst" "$m0" "$d0"; then
		fail "$test" "the guest made no progress on host $to (memcheck passes before: $m0, disk log rounds: $d0)" \
			"$(host_gone)" "$(con "$dst" | tail -8)" "$(tail -3 "$W/$dst.err")"
		return 1
	fi
	if [ -n "$(bad "$dst")" ]; then
		fail "$test" "a check failed on host $to" "$(bad "$dst")"
		return 1
	fi
	pass "$test"
}
hop pair_migrate_1_to_2_one_connection 1 2 g0 g1 1 47101 &&
	hop pair_migrate_2_to_1_four_connections 2 1 g1 g2 4 47102
rc=$?
if [ $rc -eq 0 ]; then
	printf STOP | dd of="$mailbox" conv=notrunc status=none
	umounted() { grep -q '^umounted' "$W/g2.out"; }
	if ! wait_for $((30 * SLOW)) eval 'umounted || host_gone >/dev/null' || ! umounted; then
		fail pair_disk_image_intact "the guest did not unmount its disk" "$(host_gone)" "$(con g2 | tail -5)"
		rc=1
	fi
fi
on 1 pkill -f "$VMM run" >/dev/null 2>&1
on 2 pkill -f "$VMM run" >/dev/null 2>&1
sleep 2
[ $rc -eq 0 ] || exit 1
# The image, checked on this machine once no vmm has it open.
if /sbin/e2fsck -fn "$img" >"$W/fsck.out" 2>&1; then
	pass pair_disk_image_intact
else
	fail pair_disk_image_intact "$(tail -5 "$W/fsck.out")"
	exit 1
fi
rm -rf "$W"
