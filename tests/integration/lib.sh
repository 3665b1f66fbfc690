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
	local test=$1
	echo "FAIL: $1"
	shift
	for line in "$@"; do echo "    $line"; done
	emulator_evidence "$test"
}

# Emulation faults (docs/testhost.md): QEMU's emulated SVM now and then
# hands a guest the test host's own CPU state. A guest caught with its RIP
# inside a function of one of the test host's kernel modules (kvm_amd's
# __svm_vcpu_run, every time so far) cannot be vmm's doing: our guests
# load no modules, and vmm cannot see the test host's kernel. After a
# failure, emulator_evidence TEST looks at the RIP of every triple fault
# the test's vmms reported, of every vmm still alive (debug-vcpus) and of
# the guest exits the test host's kvm_exit trace kept since this script
# began (scripts/testhost.d/init: every shutdown, and exits at a module
# address; on AMD the RIP vmm reports for a triple fault is always the
# reset vector, so only the trace has the one the guest had), and when one
# is such an address prints it with a marker line; tests/run then runs that
# script once more (and only when each of its failures has one).
KVM_EXIT_TRACE=${VMM_KVM_EXIT_TRACE:-/sys/kernel/tracing/trace}
# A record from an earlier script is not this one's evidence.
[ -n "${VMM_TESTHOST_NESTED:-}" ] && [ -w "$KVM_EXIT_TRACE" ] && : >"$KVM_EXIT_TRACE"
# kvm_exit_rips [REASON]: the guest RIPs of the traced exits (of that
# reason only, when given), one per line.
kvm_exit_rips() {
	[ -r "$KVM_EXIT_TRACE" ] || return 0
	sed -n "s/.* kvm_exit: .*reason ${1:-[A-Za-z_0-9]*} rip \(0x[0-9a-f]*\) .*/\1/p" "$KVM_EXIT_TRACE"
}
emulator_evidence() {
	local rips s
	[ -r "${VMM_KALLSYMS:-/proc/kallsyms}" ] || return 0
	rips=$({
		grep -rhoE --include='*.err' --include='*.out' --include='*.migrate' \
			'triple fault at rip 0x[0-9a-f]+' "$WORK" 2>/dev/null | awk '{print $NF}'
		for s in "$WORK"/*.sock; do
			[ -S "$s" ] && timeout 10 /usr/bin/python3 -c "$VCPU_RIPS" "$s"
		done
		kvm_exit_rips
	} | sort -u)
	[ -n "$rips" ] || return 0
	# shellcheck disable=SC2086
	/usr/bin/python3 -c "$HOST_SYMBOL" $rips | while read -r rip what; do
		echo "    emulator fault: a guest's rip $rip is $what of the test host's own kernel"
		echo "EMULATOR-FAULT: $1"
	done | awk '!seen[$0]++'
}

# Python for the scripts below: debug_vcpus(SOCKET), the vCPUs a vmm's
# control socket reports (debug-vcpus); OSError or ValueError if none.
DEBUG_VCPUS='
import json, socket, sys
def debug_vcpus(path):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(8)
    s.connect(path)
    s.sendall(b"{\"cmd\": \"debug-vcpus\"}\n")
    b = b""
    while not b.endswith(b"\n"):
        c = s.recv(1 << 20)
        if not c:
            break
        b += c
    return json.loads(b).get("vcpus", [])
'

# vcpu_brief SOCKET: one line per vCPU of a guest that stopped making
# progress (debug-vcpus): where it is, whether it halts, and its LAPIC
# timer (a halted guest whose deadline lies far past its TSC never wakes),
# so a failure says which kind of freeze it was.
vcpu_brief() {
	[ -S "$1" ] || return 0
	timeout 10 /usr/bin/python3 -c "$DEBUG_VCPUS"'
try:
    for v in debug_vcpus(sys.argv[1]):
        l, t = v.get("lapic", {}), v.get("timer", {})
        left = (t.get("tsc_deadline") or 0) - (t.get("tsc") or 0)
        print("vCPU %s: %s rip %s cr3 %s if=%s timer %s masked=%s deadline-tsc %d (%.0f ms) irr %s isr %s exc %s" % (
            v["id"], v.get("mp_state"), v.get("rip"), v.get("cr3"), v.get("interrupts_enabled"),
            l.get("timer_mode"), l.get("timer_masked"), left,
            left / max(t.get("tsc_khz") or 1, 1), l.get("irr"), l.get("isr"),
            v.get("events", {}).get("exception")))
except (OSError, ValueError, KeyError) as e:
    print("debug-vcpus: %s" % e)
' "$1"
}

# python3 -c "$VCPU_RIPS" SOCKET: each vCPU's rip, from debug-vcpus.
VCPU_RIPS=$DEBUG_VCPUS'
try:
    for v in debug_vcpus(sys.argv[1]):
        print(v["rip"])
except (OSError, ValueError, KeyError):
    pass
'

# python3 -c "$HOST_SYMBOL" RIP...: "RIP SYMBOL+OFF [MODULE]" for each RIP
# that lies in a text symbol of a loaded module (up to the next symbol).
HOST_SYMBOL='
import bisect, os, sys
syms = []
with open(os.environ.get("VMM_KALLSYMS", "/proc/kallsyms")) as f:
    for line in f:
        p = line.split()
        if len(p) == 4 and p[1] in "tT" and int(p[0], 16):
            syms.append((int(p[0], 16), p[2], p[3]))
syms.sort()
addrs = [a for a, _, _ in syms]
for arg in sys.argv[1:]:
    rip = int(arg, 16)
    i = bisect.bisect_right(addrs, rip) - 1
    if i < 0 or i + 1 >= len(syms) or rip - addrs[i] > 0x10000:
        continue
    a, name, mod = syms[i]
    if addrs[i + 1] > rip:
        print("%s %s+%#x %s" % (arg, name, rip - a, mod))
'

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

# wait_progress SECONDS STALL FILE CMD...: like wait_for, but also gives up
# once FILE (a guest's console) has not grown for STALL seconds: a guest
# that stops printing mid-task is frozen, and the failure (with
# emulator_evidence) should come now, not when SECONDS run out.
wait_progress() {
	local deadline=$((SECONDS + $1)) stall=$2 file=$3 size last=-1 since=$SECONDS
	shift 3
	while [ $SECONDS -lt $deadline ]; do
		"$@" && return 0
		size=$(stat -c %s "$file" 2>/dev/null || echo 0)
		if [ "$size" != "$last" ]; then
			last=$size
			since=$SECONDS
		elif [ $((SECONDS - since)) -ge "$stall" ]; then
			echo "    $file has not grown for $stall s"
			return 1
		fi
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
