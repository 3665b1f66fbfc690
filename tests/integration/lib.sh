# Helpers for the integration tests, sourced by each test script. Tests run
# where /dev/kvm works (natively or inside scripts/testhost) and print one
# PASS or FAIL line each. Every wait is bounded.

VMM=${VMM:-build/vmm}
KERNEL=${KERNEL:-build/guest/bzImage}
INITRD=${INITRD:-build/guest/initramfs.cpio.gz}
# Under nested emulation everything is ~100x slower than native.
if [ -n "${VMM_TESTHOST_NESTED:-}" ]; then
	SLOW=${SLOW:-12}
else
	SLOW=${SLOW:-1}
fi
BOOT_TIMEOUT=$((10 * SLOW))
WORK=$(mktemp -d /tmp/vmm-it.XXXXXX)
[ -n "${VMM_KEEP_WORK:-}" ] || trap 'rm -rf "$WORK"' EXIT
CMDLINE_BASE="console=ttyS0 reboot=k panic=1 pci=off quiet"

pass() { echo "PASS: $1"; }
fail() {
	echo "FAIL: $1"
	shift
	for line in "$@"; do echo "    $line"; done
}

# boot NAME TIMEOUT [vmm run args...]: runs a guest with our kernel and
# initramfs; output in $WORK/NAME.out, status in $WORK/NAME.rc.
boot() {
	local name=$1 t=$2
	shift 2
	timeout -k 5 "$t" "$VMM" run --kernel "$KERNEL" --initrd "$INITRD" "$@" \
		</dev/null >"$WORK/$name.out" 2>&1
	echo $? >"$WORK/$name.rc"
}

rc_of() { cat "$WORK/$1.rc"; }
out_of() { tr -d '\r' <"$WORK/$1.out"; }

# expect_rc TEST NAME STATUS: the run's exit status.
expect_status() {
	local test=$1 name=$2 want=$3 got
	got=$(rc_of "$name")
	if [ "$got" = "$want" ]; then return 0; fi
	fail "$test" "exit status $got, expected $want" "output:" "$(out_of "$name" | tail -15)"
	return 1
}

# expect_line TEST NAME REGEX: a line of the run's output matches.
expect_line() {
	local test=$1 name=$2 re=$3
	if out_of "$name" | grep -Eq -- "$re"; then return 0; fi
	fail "$test" "no output line matches '$re'" "output:" "$(out_of "$name" | tail -15)"
	return 1
}

# wait_for SECONDS CMD...: polls CMD every 0.2 s until it succeeds.
wait_for() {
	local deadline=$((SECONDS + $1))
	shift
	while [ $SECONDS -lt $deadline ]; do
		"$@" && return 0
		sleep 0.2
	done
	return 1
}

gone() { ! kill -0 "$1" 2>/dev/null; }

# stopped_cleanly TEST PID SOCKET [SIGNAL]: sends SIGNAL (default TERM) to
# PID, a vmm started in the background by this shell, and checks that it
# ends within a bounded wait with status 128+N and its socket file removed.
stopped_cleanly() {
	local test=$1 p=$2 sock=$3 sig=${4:-TERM} want rc
	want=$((128 + $(kill -l "$sig")))
	kill -s "$sig" "$p"
	if ! wait_for $((10 * SLOW)) gone "$p"; then
		kill -9 "$p" 2>/dev/null
		fail "$test" "still running $((10 * SLOW)) s after SIG$sig"
		return 1
	fi
	wait "$p"
	rc=$?
	if [ "$rc" = "$want" ] && [ ! -e "$sock" ]; then
		pass "$test"
		return 0
	fi
	fail "$test" "exit status $rc (expected $want), socket left: $([ -e "$sock" ] && echo yes || echo no)"
	return 1
}

# Whether something listens on the port, without connecting to it: a
# migration destination takes the first connection as its source.
port_open() {
	awk -v p="$(printf ':%04X' "$1")" '$2 ~ p"$" && $4 == "0A" { f = 1 } END { exit !f }' /proc/net/tcp
}

# reap_source PID RC: after `vmm migrate` returned RC, sets src_rc to how
# the source vmm PID ended: its exit status (a completed migration ends it;
# the wait is bounded), "still running", or 0 after a failed migration.
# Then the source is killed either way.
reap_source() {
	src_rc=0
	if [ "$2" -eq 0 ] && wait_for $((10 * SLOW)) gone "$1"; then
		wait "$1"
		src_rc=$?
	elif [ "$2" -eq 0 ]; then
		src_rc="still running"
	fi
	kill -9 "$1" 2>/dev/null
}

# guest_rss_mib PID MEM_MIB: resident MiB of vmm's guest-RAM mapping (the
# anonymous mapping whose size is the guest's memory).
guest_rss_mib() {
	local p=$1
	# start_guest runs vmm under timeout(1): measure its child.
	if [ "$(cat "/proc/$p/comm" 2>/dev/null)" = timeout ]; then
		p=$(cat "/proc/$p/task/$p/children" 2>/dev/null | awk '{print $1}')
	fi
	awk -v want=$(($2 * 1024)) '
		/^Size:/ { hit = ($2 == want) }
		/^Rss:/ && hit { print int($2 / 1024); found = 1; exit }
		END { if (!found) print -1 }' "/proc/$p/smaps" 2>/dev/null || echo -1
}

# json_field JSON KEY: a top-level or "stats" number from a vmm reply.
json_field() {
	/usr/bin/python3 -c '
import json, sys
d = json.loads(sys.argv[1])
v = d.get(sys.argv[2], d.get("stats", {}).get(sys.argv[2]))
print("" if v is None else v)' "$1" "$2"
}

# start_guest NAME MEM ARGS...: starts vmm in the background with an API
# socket at $WORK/NAME.sock; sets $pid. The caller kills it.
start_guest() {
	local name=$1 mem=$2
	shift 2
	timeout -k 5 $((60 * SLOW)) "$VMM" run --kernel "$KERNEL" --initrd "$INITRD" --mem "${mem}M" \
		--api-socket "$WORK/$name.sock" "$@" </dev/null >"$WORK/$name.out" 2>&1 &
	pid=$!
}

# last_value NAME KEY: the last "KEY VALUE" the guest printed.
last_value() {
	out_of "$1" | awk -v k="$2" '$1 == k { v = $2 } END { print v }'
}

# mke2fs, debugfs and e2fsck live in /sbin.
PATH=$PATH:/usr/sbin:/sbin

# make_rootfs IMG MIB: an ext4 image of MIB MiB holding what the test
# initramfs holds (our /init, the test programs, busybox), to boot with
# root=/dev/vda. mke2fs -d copies the tree, device nodes included.
make_rootfs() {
	local img=$1 mib=$2 dir
	dir=$(mktemp -d "$WORK/rootfs.XXXXXX")
	local out rc
	out=$( (cd "$dir" && gzip -dc "$OLDPWD/$INITRD" | cpio -id --quiet) 2>&1 &&
		mke2fs -q -t ext4 -d "$dir" -F "$img" "${mib}M" 2>&1)
	rc=$?
	[ $rc -eq 0 ] || echo "$out" >&2
	rm -rf "$dir"
	return $rc
}
