#!/usr/bin/env bash
# The balloon's drop-cache extension (guest-kernel/patches, docs/balloon.md):
# the patched guest accepts feature bit 23; a plain hint round leaves its page
# cache alone; `vmm migrate --drop-guest-cache` makes it drop a 200 MiB file's
# page cache before the hint round, so the migration sends at least 150 MiB
# less, and the file still reads back intact afterwards; `vmm hint
# --drop-cache` drops it too. A stock kernel (build/guest/bzImage-stock) boots
# with the same balloon, does not negotiate the bit, and --drop-cache /
# --drop-guest-cache print a note and change nothing.
source "$(dirname "$0")/lib.sh"

STOCK_KERNEL=${STOCK_KERNEL:-build/guest/bzImage-stock}
BALLOON="--balloon free-page-hint"
PORT=$((46000 + RANDOM % 1000))
MIG_TIMEOUT=$((40 * SLOW))
FILE_MIB=200

# The guest: prints whether its balloon driver accepted bit 23 (character 24
# of the features string), mounts the disk and reads the file (when there is
# a disk), then every second prints its page cache and how many drops its
# driver logged, until the balloon takes memory away (the host's signal to
# go on: MemTotal falls); then it reads the file again, prints its md5 and
# how long that took, and goes back to printing. Single quotes only: the
# kernel's own parser splits its command line at double quotes. The kernel
# logs its command line, hence a pattern that does not match itself.
GUEST=$(cat <<'EOF'
for d in /sys/bus/virtio/devices/*; do [ $(cat $d/device) = 0x0005 ] && echo dropbit $(cut -c24 $d/features) && echo rangebit $(cut -c23 $d/features); done;
mi() { awk -v k=$1 '$1 == k { print $2 }' /proc/meminfo; };
st() { echo cached $(mi Cached:); echo droplog $(dmesg | grep -c 'dropped cache[s] ('); };
cs() { tr -d . </proc/uptime | cut -d' ' -f1; };
if [ -b /dev/vda ]; then mkdir -p /mnt; mount -t ext4 -o ro /dev/vda /mnt && cat /mnt/big >/dev/null && echo readdone; fi;
t=$(mi MemTotal:); while [ $(mi MemTotal:) -ge $((t - 2048)) ]; do st; sleep 1; done;
a=$(cs); s=$(md5sum /mnt/big); b=$(cs); echo md5 ${s%% *}; echo reread-ms $(((b - a) * 10));
while true; do st; sleep 1; done
EOF
)
# Flatten to one line for the kernel command line.
GUEST=$(echo "$GUEST" | tr '\n' ' ')
case "$GUEST" in *'"'*) echo "70-drop-cache.sh: the guest script must not contain double quotes" >&2; exit 1 ;; esac

next_port() { PORT=$((PORT + 1)); }
stats() { "$VMM" balloon "$WORK/$1.sock" --stats 2>/dev/null; }
seen() { [ -e "$WORK/$1.out" ] && out_of "$1" | grep -q "^$2"; }
value_below() { local v; v=$(last_value "$1" "$2"); [ -n "$v" ] && [ "$v" -lt "$3" ]; }
value_at_least() { local v; v=$(last_value "$1" "$2"); [ -n "$v" ] && [ "$v" -ge "$3" ]; }
cleanup() { kill -9 $src_pid $dst_pid 2>/dev/null; wait 2>/dev/null; src_pid= dst_pid=; }

# start_src NAME KERNEL [vmm args]: boots a source guest; sets $src_pid.
start_src() {
	local name=$1 kernel=$2
	shift 2
	"$VMM" run --kernel "$kernel" --initrd "$INITRD" --mem 512M $BALLOON "$@" \
		--api-socket "$WORK/$name.sock" --console "file:$WORK/$name.out" \
		--cmdline "$CMDLINE_BASE vmm.job=sh vmm.arg=\"$GUEST\"" </dev/null 2>"$WORK/$name.err" &
	src_pid=$!
}

# hop NAME TO [migrate args]: migrates the guest running as $src_pid
# (socket NAME) to a new destination TO; its JSON summary in $WORK/TO.json,
# stderr in $WORK/TO.migrate. 0 when the migration completed and the
# source exited 0; the destination becomes $src_pid.
hop() {
	local from=$1 to=$2 rc
	shift 2
	next_port
	"$VMM" run --incoming "tcp:127.0.0.1:$PORT" --mem 512M $BALLOON $DST_ARGS \
		--api-socket "$WORK/$to.sock" --console "file:$WORK/$to.out" </dev/null 2>"$WORK/$to.err" &
	dst_pid=$!
	wait_for $((5 * SLOW)) port_open "$PORT"
	timeout -k 5 "$MIG_TIMEOUT" "$VMM" migrate "$WORK/$from.sock" "tcp:127.0.0.1:$PORT" --json "$@" \
		>"$WORK/$to.json" 2>"$WORK/$to.migrate"
	rc=$?
	reap_source "$src_pid" $rc
	src_pid=$dst_pid
	dst_pid=
	# The destination's console file starts empty: its lines are the guest's from now on.
	[ $rc -eq 0 ] && [ "$src_rc" = 0 ] && return 0
	echo "vmm migrate: status $rc, source vmm: status $src_rc; $(tail -3 "$WORK/$to.migrate" | tr '\n' ' ')" \
		"destination: $(tail -3 "$WORK/$to.err" | tr '\n' ' ')" >"$WORK/$to.why"
	return 1
}
why() { cat "$WORK/$1.why" 2>/dev/null; }

echo "    (drop-cache tests: port $PORT, slow factor $SLOW)"

# --- The patched kernel, a 200 MiB file read from disk. ---
have_disk=0
if "$VMM" run --help 2>&1 | grep -q -- '--disk'; then
	have_disk=1
	mkdir -p "$WORK/fs"
	head -c $((FILE_MIB << 20)) /dev/urandom >"$WORK/fs/big"
	want_md5=$(md5sum "$WORK/fs/big" | cut -d' ' -f1)
	mkfs.ext4 -q -F -d "$WORK/fs" "$WORK/disk.img" $((FILE_MIB + 56))M >"$WORK/mkfs.out" 2>&1 ||
		{ fail drop_cache_disk_image "mkfs.ext4 failed" "$(cat "$WORK/mkfs.out")"; exit 0; }
	rm -f "$WORK/fs/big"
	DST_ARGS="--disk $WORK/disk.img,ro"
	start_src p0 "$KERNEL" --disk "$WORK/disk.img,ro"
	ready() { seen p0 readdone && seen p0 droplog; }
else
	DST_ARGS=
	start_src p0 "$KERNEL"
	ready() { seen p0 droplog; }
fi
if ! wait_for $((60 * SLOW)) ready; then
	fail drop_cache_negotiated "the patched guest never got going" "$(out_of p0 | tail -5)" "$(tail -3 "$WORK/p0.err")"
	cleanup
	exit 0
fi

st=$(stats p0)
if [ "$(json_field "$st" drop_cache_negotiated)" = True ] && [ "$(last_value p0 dropbit)" = 1 ]; then
	pass drop_cache_negotiated
else
	fail drop_cache_negotiated "guest's bit 23: '$(last_value p0 dropbit)'; stats: $st"
fi
if [ "$(json_field "$st" free_ranges_negotiated)" = True ] && [ "$(last_value p0 rangebit)" = 1 ]; then
	pass free_ranges_negotiated
else
	fail free_ranges_negotiated "guest's bit 22: '$(last_value p0 rangebit)'; stats: $st"
fi

# A plain hint round must not drop anything: the flag is off.
cached0=$(last_value p0 cached)
hint=$("$VMM" hint "$WORK/p0.sock" --json 2>&1)
sleep $((SLOW / 2 + 2))
if [ "$(json_field "$hint" drop_cache)" = False ] && [ "$(last_value p0 droplog)" = 0 ] &&
	[ "$(last_value p0 cached)" -ge $((cached0 * 9 / 10)) ]; then
	pass drop_cache_plain_hint_keeps_cache
else
	fail drop_cache_plain_hint_keeps_cache "hint: $hint" \
		"guest: cached ${cached0} -> $(last_value p0 cached) kB, drops logged: $(last_value p0 droplog)"
fi

if [ $have_disk = 0 ]; then
	# Without a disk there is little cache to drop, but the guest must still
	# drop when asked, and only then.
	hint=$("$VMM" hint "$WORK/p0.sock" --drop-cache --json 2>"$WORK/hint.err")
	if [ "$(json_field "$hint" drop_cache)" = True ] && [ ! -s "$WORK/hint.err" ] &&
		wait_for $((5 * SLOW)) value_at_least p0 droplog 1; then
		pass drop_cache_hint_drops
	else
		fail drop_cache_hint_drops "hint: $hint $(cat "$WORK/hint.err")" "drops logged: $(last_value p0 droplog)"
	fi
	for t in migrate_drop_guest_cache_saves drop_cache_file_intact; do
		fail "$t" "vmm run has no --disk (virtio-blk not merged yet): cannot fill the guest's page cache"
	done
	cleanup
else
	echo "    guest page cache after reading the file: $((cached0 / 1024)) MiB"
	# The same guest twice: without the drop, then with it.
	if hop p0 p1 --compress none && hop p1 p2 --compress none --drop-guest-cache; then
		b1=$(json_field "$(cat "$WORK/p1.json")" bytes)
		b2=$(json_field "$(cat "$WORK/p2.json")" bytes)
		d1=$(json_field "$(cat "$WORK/p1.json")" drop_guest_cache)
		d2=$(json_field "$(cat "$WORK/p2.json")" drop_guest_cache)
		wait_ms=$(json_field "$(cat "$WORK/p2.json")" drop_cache_wait_ms)
		echo "    sent without the drop: $((b1 >> 20)) MiB, with it: $((b2 >> 20)) MiB (waited ${wait_ms} ms for the round)"
		wait_for $((10 * SLOW)) seen p2 droplog
		if [ "$d1" = False ] && [ "$d2" = True ] && [ $((b1 - b2)) -ge $((150 << 20)) ] &&
			value_at_least p2 droplog 1 && [ ! -s "$WORK/p2.migrate" ]; then
			pass migrate_drop_guest_cache_saves
		else
			fail migrate_drop_guest_cache_saves "bytes ${b1} -> ${b2}, drop_guest_cache ${d1} -> ${d2}," \
				"drops logged on the destination: $(last_value p2 droplog), cached $(last_value p2 cached) kB" \
				"stderr: $(cat "$WORK/p2.migrate")"
		fi
		# Take 8 MiB: the guest reads the file again and prints its md5.
		"$VMM" balloon "$WORK/p2.sock" --set 8M >/dev/null
		if wait_for $((60 * SLOW)) seen p2 md5 && [ "$(last_value p2 md5)" = "$want_md5" ]; then
			pass drop_cache_file_intact
			echo "    re-reading the file after the migration took $(last_value p2 reread-ms) ms"
		else
			fail drop_cache_file_intact "md5 '$(last_value p2 md5)', expected $want_md5" "$(out_of p2 | tail -3)"
		fi
		# The cache is full again: a hint round with --drop-cache empties it.
		wait_for $((5 * SLOW)) value_at_least p2 cached $(((FILE_MIB - 10) * 1024))
		hint=$("$VMM" hint "$WORK/p2.sock" --drop-cache --json 2>"$WORK/hint.err")
		if [ "$(json_field "$hint" drop_cache)" = True ] && [ ! -s "$WORK/hint.err" ] &&
			wait_for $((5 * SLOW)) value_at_least p2 droplog 2 &&
			wait_for $((5 * SLOW)) value_below p2 cached $(((FILE_MIB - 150) * 1024)); then
			pass drop_cache_hint_drops
		else
			fail drop_cache_hint_drops "hint: $hint $(cat "$WORK/hint.err")" \
				"guest: cached $(last_value p2 cached) kB, drops logged: $(last_value p2 droplog)"
		fi
	else
		fail migrate_drop_guest_cache_saves "$(why p1) $(why p2)"
		fail drop_cache_file_intact "no migration"
	fi
	cleanup
fi

# --- A stock kernel: no bit 23 or 22; the options say so and change nothing. ---
if [ ! -e "$STOCK_KERNEL" ]; then
	fail stock_kernel_not_negotiated "$STOCK_KERNEL is missing (make guest)"
	exit 0
fi
DST_ARGS=
start_src s0 "$STOCK_KERNEL"
if ! wait_for $((60 * SLOW)) seen s0 droplog; then
	fail stock_kernel_not_negotiated "the stock guest never got going" "$(out_of s0 | tail -5)"
	cleanup
	exit 0
fi
st=$(stats s0)
if [ "$(json_field "$st" drop_cache_negotiated)" = False ] && [ "$(last_value s0 dropbit)" = 0 ] &&
	[ "$(json_field "$st" free_ranges_negotiated)" = False ] && [ "$(last_value s0 rangebit)" = 0 ]; then
	pass stock_kernel_not_negotiated
else
	fail stock_kernel_not_negotiated "guest's bits 23 and 22: '$(last_value s0 dropbit)' '$(last_value s0 rangebit)'; stats: $st"
fi

hint=$("$VMM" hint "$WORK/s0.sock" --drop-cache --json 2>"$WORK/hint.err")
rc=$?
if [ $rc -eq 0 ] && [ "$(json_field "$hint" drop_cache)" = False ] && [ "$(json_field "$hint" bytes)" -gt 0 ] &&
	grep -q "note: --drop-cache has no effect: the guest did not accept" "$WORK/hint.err"; then
	pass stock_kernel_hint_note
else
	fail stock_kernel_hint_note "status $rc: $hint" "stderr: $(cat "$WORK/hint.err")"
fi

if hop s0 s1 --drop-guest-cache; then
	if grep -q "note: --drop-guest-cache has no effect: the guest did not accept" "$WORK/s1.migrate" &&
		[ "$(json_field "$(cat "$WORK/s1.json")" drop_guest_cache)" = False ] &&
		wait_for $((10 * SLOW)) seen s1 droplog; then
		pass stock_kernel_migrate_note
	else
		fail stock_kernel_migrate_note "stderr: $(cat "$WORK/s1.migrate")" \
			"destination console: $(out_of s1 | tail -2 | tr '\n' ' ')"
	fi
else
	fail stock_kernel_migrate_note "$(why s1)"
fi
cleanup
exit 0
