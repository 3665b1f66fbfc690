"""Processes of scripts/bench-migrate.py: waiting on them, stopping them,
and starting destinations here or, with --dest-host, on host 2 of
scripts/testhost-pair (Peer).  Run with /usr/bin/python3."""
import os
import re
import signal
import subprocess
import sys
import time

PAIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testhost-pair")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace").replace("\r\n", "\n")
    except OSError:
        return ""


def tail(text, n=1500):
    return text if len(text) <= n else "..." + text[-n:]


def port_listening(port):
    """Whether something listens on 127.0.0.1:port, without connecting (a
    destination takes the first connection as its source)."""
    want = ":%04X" % port
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[1].endswith(want) and fields[3] == "0A":
                        return True
        except OSError:
            pass
    return False


# vmm's vCPU threads and QEMU's: their CPU time is the guest's, not the
# migration's.
VCPU_THREAD = re.compile(r"^(vcpu\d+|CPU \d+/KVM)$")
TICK_MS = 1000.0 / os.sysconf("SC_CLK_TCK")


def _ticks(stat_path):
    with open(stat_path) as f:
        s = f.read()
    fields = s[s.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def vcpu_ms(pid):
    """{thread id: CPU ms} of the process's vCPU threads; None once it is gone."""
    try:
        return {tid: _ticks("/proc/%d/task/%s/stat" % (pid, tid)) * TICK_MS
                for tid in os.listdir("/proc/%d/task" % pid)
                if VCPU_THREAD.match(read("/proc/%d/task/%s/comm" % (pid, tid)).strip())}
    except (OSError, ValueError, IndexError):
        return None


def cpu_ms(pid):
    """(the process's CPU time, its vCPU threads' CPU time), user + system,
    in ms (clock-tick resolution); None once it is gone. The process's
    figure includes threads that already ended."""
    try:
        total = _ticks("/proc/%d/stat" % pid) * TICK_MS
    except (OSError, ValueError, IndexError):
        return None
    vcpus = vcpu_ms(pid)
    return None if vcpus is None else (total, sum(vcpus.values()))


class VcpuWatch:
    """Samples a local process's vCPU threads every 100 ms, so that their
    figure survives them (a vmm source exits when it is done, its vCPU
    threads first; they stopped running before that). Each thread keeps
    its last sample once it is gone."""

    def __init__(self, pid):
        import threading
        self.pid, self.seen, self.stop_ = pid, {}, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop_.is_set():
            v = vcpu_ms(self.pid)
            if v is None:
                return
            self.seen.update(v)
            self.stop_.wait(0.1)

    def stop(self):
        """The vCPU threads' CPU ms at their last samples, or None."""
        self.stop_.set()
        self.thread.join()
        return sum(self.seen.values()) if self.seen else None


def reap_cpu_ms(p, timeout):
    """Waits up to timeout s for the local child p to exit and reaps it:
    its whole CPU time (user + system, all threads) in ms, or None if it
    did not exit."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            return (ru.ru_utime + ru.ru_stime) * 1000
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def wait_until(pred, timeout, step=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def stop(p, grace=5):
    if p is None or p.poll() is not None:
        return
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
        p.wait()


def stop_any(p):
    if isinstance(p, RemoteProc):
        p.stop()
    else:
        stop(p)


class RemoteProc:
    """A process that `Peer.start` started on host 2."""

    def __init__(self, peer, pid):
        self.peer, self.pid = peer, pid

    def poll(self):
        """None while it runs, like Popen.poll (its status is not known here)."""
        r = self.peer.on2(["kill", "-0", str(self.pid)], 60)
        return None if r.returncode == 0 else "exited"

    def stop(self):
        self.peer.on2(["sh", "-c", "kill %d 2>/dev/null || exit 0; for i in $(seq 25); do "
                       "kill -0 %d 2>/dev/null || exit 0; sleep 0.2; done; kill -9 %d" % ((self.pid,) * 3)], 60)


class Peer:
    """Where the destinations run: here, or with --dest-host on host 2 of
    scripts/testhost-pair, reached through `testhost-pair exec 2`."""

    def __init__(self, a):
        self.host = a.dest_host

    def on2(self, argv, timeout):
        return subprocess.run([PAIR, "exec", "2", "--timeout", str(timeout)] + argv,
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout + 30)

    def listen(self):
        return "0.0.0.0" if self.host else "127.0.0.1"

    def addr(self):
        return self.host or "127.0.0.1"

    @staticmethod
    def sock(n, role):
        """A control socket: a unix socket in the /tmp of the host that runs
        the VMM (the work directory may be a 9p share, which cannot hold one)."""
        return "/tmp/vmm-bench-%d-%02d-%s.sock" % (os.getpid(), n, role)

    def start(self, argv, err_path, port, what):
        """Starts a destination and waits until it listens on port:
        (process, None) or (process or None, error)."""
        if not self.host:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=open(err_path, "wb"), start_new_session=True)
            if not wait_until(lambda: port_listening(port) or p.poll() is not None, 120) or p.poll() is not None:
                return p, "%s not listening on port %d (status %s): %r" % (what, port, p.poll(), tail(read(err_path)))
            return p, None
        r = self.on2(["/usr/bin/python3", os.path.abspath(__file__), "--spawn", str(port), err_path, "--"] + argv, 180)
        out = r.stdout.decode("utf-8", "replace").split()
        if r.returncode != 0 or not out or not out[-1].isdigit():
            return None, "%s on host 2 not listening on port %d: status %d, %r %r; stderr %r" % (
                what, port, r.returncode, tail(r.stdout.decode("utf-8", "replace")),
                tail(r.stderr.decode("utf-8", "replace")), tail(read(err_path)))
        return RemoteProc(self, int(out[-1])), None

    def cpu_ms(self, p):
        """cpu_ms() of a destination, here or on host 2."""
        if not isinstance(p, RemoteProc):
            return cpu_ms(p.pid) if p else None
        r = self.on2(["/usr/bin/python3", os.path.abspath(__file__), "--cpu", str(p.pid)], 60)
        out = r.stdout.decode("utf-8", "replace").split()
        try:
            return float(out[-2]), float(out[-1])
        except (IndexError, ValueError):
            return None

    def run(self, argv, timeout=30):
        """Runs a short command where the destinations run: (status, stdout, stderr)."""
        if self.host:
            r = self.on2(argv, timeout)
        else:
            r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


def spawn(argv):
    """--spawn PORT ERR -- CMD...: run on host 2 by Peer.start (this file's
    main). Starts CMD in
    its own session (so that it outlives this), its stderr to ERR; waits
    until it listens on PORT; prints its pid."""
    if len(argv) < 4 or argv[2] != "--" or not argv[0].isdigit():
        print("usage: benchproc.py --spawn PORT ERR -- CMD...", file=sys.stderr)
        return 2
    port, err = int(argv[0]), argv[1]
    p = subprocess.Popen(argv[3:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=open(err, "wb"), start_new_session=True)
    if not wait_until(lambda: port_listening(port) or p.poll() is not None, 120) or p.poll() is not None:
        print("not listening on port %d (status %s)" % (port, p.poll()), file=sys.stderr)
        stop(p)
        return 1
    print(p.pid)
    return 0


def print_cpu(argv):
    """--cpu PID: run on host 2 by Peer.cpu_ms. Prints cpu_ms(PID)."""
    c = cpu_ms(int(argv[0])) if argv and argv[0].isdigit() else None
    if c is None:
        return 1
    print("%.0f %.0f" % c)
    return 0


if __name__ == "__main__":
    # Peer runs this file on host 2: `--spawn PORT ERR -- CMD...` or `--cpu PID`.
    if sys.argv[1:2] == ["--spawn"]:
        sys.exit(spawn(sys.argv[2:]))
    if sys.argv[1:2] == ["--cpu"]:
        sys.exit(print_cpu(sys.argv[2:]))
    print("usage: benchproc.py --spawn PORT ERR -- CMD... | --cpu PID", file=sys.stderr)
    sys.exit(2)
