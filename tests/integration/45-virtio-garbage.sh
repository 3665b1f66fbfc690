#!/usr/bin/env bash
# A guest that writes garbage into a virtqueue leaves vmm running: with the
# kernel's balloon driver unbound, tests/guest/vqgarbage drives the balloon
# (device 0) itself and puts a looping chain, random bytes, an out-of-RAM
# buffer, an out-of-RAM ring and nested indirect tables into queue 0. Each
# time vmm must log one "queue N is malformed" line and set
# DEVICE_NEEDS_RESET, and both vmm and the guest must keep going.
source "$(dirname "$0")/lib.sh"

sock="$WORK/api.sock"
out="$WORK/garbage.out"
base=0xd0000000
modes="loop random oob badring indirect"

# No double quotes in here: the kernel's command-line parser counts them.
script='d=/sys/bus/virtio/drivers/virtio_balloon; for v in $d/virtio*; do [ -e $v ] && echo ${v##*/} > $d/unbind && echo unbound ${v##*/}; done; ls /sys/bus/virtio/devices; for m in '"$modes"'; do vqgarbage '"$base"' $m; echo vqg-rc $m $?; done; echo vqgarbage-all-done; i=0; while [ $i -lt 900 ]; do i=$((i+1)); echo alive $i; sleep 1; done'

timeout -k 5 $((40 * SLOW)) "$VMM" run --kernel "$KERNEL" --initrd "$INITRD" --mem 128M \
	--balloon --api-socket "$sock" \
	--cmdline "$CMDLINE_BASE vmm.job=sh vmm.arg=\"$script\"" \
	</dev/null >"$out" 2>&1 &
pid=$!

output() { tr -d '\r' <"$out"; }
has_line() { output | grep -Eq -- "$1"; }
finish() {
	[ -n "${VQG_VERBOSE:-}" ] && { echo "--- output:"; output | grep -v '^alive '; }
	kill -TERM $pid 2>/dev/null
	wait $pid 2>/dev/null
	exit 0
}

if ! wait_for $((30 * SLOW)) has_line 'vqgarbage-all-done|vmm-guest: debug-exit'; then
	fail virtio_garbage_ran "the guest never finished the vqgarbage runs" \
		"running: $(kill -0 $pid 2>/dev/null && echo yes || echo no)" "output:" \
		"$(output | tail -25)"
	finish
fi

# Why vmm should have called each queue malformed (random: any reason).
declare -A reason=(
	[loop]='descriptor loop'
	[random]='.'
	[oob]='buffer outside guest memory'
	[badring]='descriptor table outside guest memory'
	[indirect]='nested indirect descriptor'
)
for m in $modes; do
	res=$(output | grep -E "^vqgarbage: mode=$m status=" | tail -1)
	rc=$(output | grep -E "^vqg-rc $m " | tail -1)
	if [ "$rc" = "vqg-rc $m 0" ] && echo "$res" | grep -q 'needs_reset=1'; then
		pass "virtio_garbage_$m"
	else
		fail "virtio_garbage_$m" "result: ${res:-none}" "${rc:-no vqg-rc line}" "output:" \
			"$(output | grep -E "mode=$m |vqg-rc $m |malformed" | tail -10)"
	fi
done

# One malformed line per mode, in order, each with the expected reason.
logged=$(output | grep -E 'balloon: queue [0-9]+ is malformed \(.*\); device needs reset')
nlogged=$(printf '%s' "$logged" | grep -c .)
ok=1
i=1
for m in $modes; do
	if ! printf '%s\n' "$logged" | sed -n "${i}p" |
		grep -Eq "balloon: queue 0 is malformed \(.*${reason[$m]}.*\)"; then
		ok=0
	fi
	i=$((i + 1))
done
if [ $ok = 1 ] && [ "$nlogged" = 5 ]; then
	pass virtio_garbage_logged
else
	fail virtio_garbage_logged \
		"expected 5 malformed lines (loop random oob badring indirect, in order), got $nlogged:" \
		"$logged"
fi

if kill -0 $pid 2>/dev/null && wait_for $((2 * SLOW)) "$VMM" status "$sock" >/dev/null 2>&1 &&
	"$VMM" status "$sock" 2>&1 | grep -q '"state": "running"'; then
	pass virtio_garbage_vmm_alive
else
	fail virtio_garbage_vmm_alive "vmm is gone or its status does not answer" \
		"status: $("$VMM" status "$sock" 2>&1)" "output:" "$(output | tail -15)"
fi

# The guest goes on: two "alive" lines after the last vqgarbage run.
alive_after() { output | sed -n '/^vqgarbage-all-done/,$p' | grep -c '^alive [0-9]'; }
alive_twice() { [ "$(alive_after)" -ge 2 ]; }
if wait_for $((5 * SLOW)) alive_twice; then
	pass virtio_garbage_guest_alive
else
	fail virtio_garbage_guest_alive "no 'alive' lines after vqgarbage-all-done" "output:" \
		"$(output | tail -15)"
fi

finish

exit 0
