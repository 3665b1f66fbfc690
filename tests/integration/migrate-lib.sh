# Helpers for the migration tests (50-migrate.sh, 52-migrate-faults.sh),
# sourced after lib.sh. The caller sets ARGS (vmm run options both sides
# share) and GUEST (the guest's shell job).

PORT=$((45000 + RANDOM % 1000))

next_port() { PORT=$((PORT + 1)); }

# start_src NAME [extra vmm args]: boots the source guest; sets $src_pid.
start_src() {
	local name=$1
	shift
	"$VMM" run --kernel "$KERNEL" --initrd "$INITRD" $ARGS "$@" --api-socket "$WORK/$name.sock" \
		--console "file:$WORK/$name.out" \
		--cmdline "$CMDLINE_BASE vmm.job=sh vmm.arg=\"$GUEST\"" </dev/null 2>"$WORK/$name.err" &
	src_pid=$!
}

# start_dst NAME [extra vmm args]: a destination on $PORT; sets $dst_pid.
start_dst() {
	local name=$1
	shift
	"$VMM" run --incoming "tcp:127.0.0.1:$PORT" $ARGS "$@" --api-socket "$WORK/$name.sock" \
		--console "file:$WORK/$name.out" </dev/null 2>"$WORK/$name.err" &
	dst_pid=$!
	wait_for $((5 * SLOW)) port_open "$PORT"
}

passes() {
	local n
	n=$(grep -c '^memcheck: PASS' "$WORK/$1.out" 2>/dev/null)
	echo "${n:-0}"
}
passes_past() { [ "$(passes "$1")" -gt "$2" ]; }
last_uptime() { awk '$1 == "uptime" { v = $2 } END { print v + 0 }' "$WORK/$1.out" 2>/dev/null; }
up_past() { awk -v a="$(last_uptime "$1")" -v b="$2" 'BEGIN { exit !(a > b) }'; }
guest_up() { passes_past "$1" 0; }
cleanup() { kill -9 $src_pid $dst_pid 2>/dev/null; wait 2>/dev/null; }

# expect_refusal TEST REGEX: the destination exits non-zero (bounded wait)
# with one line on stderr that matches.
expect_refusal() {
	local test=$1 re=$2 rc
	wait_for $((10 * SLOW)) gone "$dst_pid"
	kill -9 $dst_pid 2>/dev/null
	wait $dst_pid
	rc=$?
	if [ $rc -ne 0 ] && [ "$(wc -l <"$WORK/$test.err")" -eq 1 ] && grep -Eq "$re" "$WORK/$test.err"; then
		pass "$test"
	else
		fail "$test" "status $rc" "$(cat "$WORK/$test.err")"
	fi
}

# Either side of a stream, in Python: records with correct checksums.
PYREC='
import socket, struct, sys, xxhash
def rec(t, p):
    h = struct.pack("<HHI", t, 0, len(p))
    n = len(p)
    if t == 3 and n >= 4 and p[0] == 1:  # RAW RAM: the pages are not covered
        n = min(n, 4 + 12 * struct.unpack_from("<H", p, 2)[0])
    c = xxhash.xxh3_64_intdigest(p[:n], seed=struct.unpack("<Q", h)[0]) & 0xffffffff
    return h + struct.pack("<I", c) + p
# HELLO: magic, version, flags (ZSTD), page size, vCPUs, RAM, connections,
# stripe shift (4 MiB), session, devices (by default those of 50-migrate:
# --balloon stats=1,free-page-hint,free-page-reporting).
def hello(version, ram, conns=1, session=7,
          dev=b"uart,balloon:stats:free-page-hint:free-page-reporting"):
    return rec(1, struct.pack("<IHHIIQHHQH", 0x47494d56, version, 1, 4096, 1, ram, conns, 22,
                              session, len(dev)) + dev)
def join(session, index, conns):
    return rec(9, struct.pack("<QHH", session, index, conns))
def ack(phase):
    return rec(2, struct.pack("<HHI", phase, 0, 0))
def read_rec(s):
    b = b""
    while len(b) < 12:
        c = s.recv(12 - len(b))
        if not c:
            raise EOFError
        b += c
    n = struct.unpack_from("<I", b, 4)[0]
    while len(b) < 12 + n:
        c = s.recv(12 + n - len(b))
        if not c:
            raise EOFError
        b += c
    return struct.unpack_from("<H", b)[0], b[12:]
'

# monitor_status SOCK: polls migrate-status every 20 ms as a monitoring
# tool would, until the socket goes (run it in the background).
monitor_status() {
	/usr/bin/python3 -c '
import json, socket, sys, time
while True:
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(sys.argv[1])
        s.sendall(b"{\"cmd\": \"migrate-status\"}\n")
        s.recv(65536)
        s.close()
    except OSError:
        if not __import__("os").path.exists(sys.argv[1]):
            break
    time.sleep(0.02)
' "$1"
}
