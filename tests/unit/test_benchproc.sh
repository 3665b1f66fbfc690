#!/usr/bin/env bash
# scripts/benchproc.py's entry points, which bench-migrate --pair runs on
# test host 2 through `testhost-pair exec 2`: `--spawn PORT ERR -- CMD`
# starts CMD in its own session, waits until it listens on PORT and prints
# its pid; `--cpu PID` prints the process's and its vCPU threads' CPU ms.
# Run here with a local listener: no test host needed.
set -u
cd "$(dirname "$0")/../.."
py=/usr/bin/python3
work=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
bad=0
check() { # NAME OK WHY
	if [ "$2" = 0 ]; then echo "PASS: benchproc_$1"; else echo "FAIL: benchproc_$1 ($3)"; bad=1; fi
}

# A port nothing listens on: the kernel picks one.
free_port() { "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
out=$("$py" scripts/benchproc.py --spawn "$port" "$work/err" -- \
	"$py" -c "import socket, time; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', $port)); s.listen(); time.sleep(60)" 2>&1)
rc=$?
pid=$(tail -n1 <<<"$out")
ok=1
[ $rc = 0 ] && [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && ok=0
check spawn_prints_pid_of_listener $ok "status $rc, output '$out'"

out=$("$py" scripts/benchproc.py --cpu "${pid:-0}" 2>&1)
rc=$?
ok=1
[ $rc = 0 ] && [[ "$out" =~ ^[0-9]+\ [0-9]+$ ]] && ok=0
check cpu_prints_two_figures $ok "status $rc, output '$out'"

# Nothing may listen on the port of this case: not the listener above.
[ -n "$pid" ] && kill "$pid" 2>/dev/null
pid=
port2=$(free_port)
out=$("$py" scripts/benchproc.py --spawn "$port2" "$work/err2" -- false 2>&1)
rc=$?
ok=1
[ $rc != 0 ] && grep -q "not listening on port $port2" <<<"$out" && ok=0
check spawn_fails_when_nothing_listens $ok "status $rc, output '$out'"

# A vCPU thread that ends before its process (a vmm source's do) keeps
# its figure: 300 ms of its own CPU, then it idles (a paused vCPU) and
# ends, and the process spends 200 ms more.
out=$(cd scripts && "$py" -c '
import subprocess, sys
from benchproc import VcpuWatch, reap_cpu_ms
child = """
import threading, time
def spin(s):
    t = time.thread_time()
    while time.thread_time() - t < s:
        pass
def vcpu():
    with open("/proc/self/task/%d/comm" % threading.get_native_id(), "w") as f:
        f.write("vcpu0")
    spin(0.3)
    time.sleep(1)
t = threading.Thread(target=vcpu)
t.start()
t.join()
spin(0.2)
"""
p = subprocess.Popen([sys.executable, "-c", child])
w = VcpuWatch(p.pid)
total = reap_cpu_ms(p, 60)
print("%.0f %.0f" % (w.stop() or 0, total or 0))' 2>&1)
read -r vcpu total <<<"$out"
ok=1
[[ "$vcpu" =~ ^[0-9]+$ ]] && [ "$vcpu" -ge 250 ] && [ "$((total - vcpu))" -ge 150 ] && ok=0
check vcpu_thread_keeps_its_figure $ok "output '$out': vCPU ms, process ms"

out=$("$py" scripts/benchproc.py 2>&1)
rc=$?
ok=1
[ $rc = 2 ] && grep -q usage <<<"$out" && ok=0
check usage $ok "status $rc, output '$out'"
exit $bad
