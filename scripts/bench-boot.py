#!/usr/bin/python3
"""Boot-time and memory-overhead benchmark: vmm against QEMU microvm.

Run by scripts/bench-boot (inside scripts/testhost when this machine has no
usable /dev/kvm); run it with /usr/bin/python3.  Each run boots the same
bzImage and initramfs with the same kernel command line, 256 MiB and 1 vCPU,
once with vmm and once with QEMU (vmm and QEMU alternate), and measures:

  boot     time from just before the VMM process is spawned to the moment the
           guest's `vmm-guest: init` line arrives on the VMM's stdout (the
           serial console).  Same method for both VMMs.
  marker   vmm only: its own `--boot-timer` figure (vmm start to the guest's
           first write to port 0x502, which /init does just before printing
           `vmm-guest: init`).
  rss      once the guest sits idle in `sleep` (the job prints
           `vmm-bench: idle`, then we wait --settle seconds): the VMM's RSS
           (sum of Rss over /proc/PID/smaps) minus the Rss of its guest-RAM
           mapping (the anonymous mapping whose size is the guest memory
           size), i.e. what the VMM itself costs in host memory beyond the
           guest pages the guest touched.  Memory the kernel allocates for
           KVM (page tables, vCPU state) is not in any RSS and not counted.

Then the VMM is killed (SIGTERM, SIGKILL after 10 s).  Every wait is bounded
by --timeout.

--trace DIR: where the guest's boot time goes.  The command line gets
`initcall_debug printk.time=1` (the initcall lines go to the kernel's log
buffer only: `quiet` keeps them off the serial console, whose every byte
costs an exit), and the guest's job prints `dmesg` after init, before the
idle line, so the boot figure is the same measurement.  Each boot's console
goes to DIR/<vmm>-<kernel>-<run>.console, and a comparison is printed: when
the kernel reached the milestones of its log (its clock starts at 0 early
in boot; what the host measured before that is the VMM's set-up, the
decompression and the earliest boot), and the initcalls that took longest
under each VMM.
"""
import argparse
import datetime
import os
import re
import select
import signal
import statistics
import subprocess
import sys
import time

INIT_LINE = b"vmm-guest: init"
IDLE_LINE = b"vmm-bench: idle"
MARKER_RE = re.compile(rb"guest boot marker after ([0-9.]+) ms")
STEPS_RE = re.compile(rb"boot steps \(ms\): ([^\n]*)")
MAP_RE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def parse_smaps(pid):
    """[(size_bytes, perms, name, rss_kib)] for every mapping of pid."""
    maps = []
    with open(f"/proc/{pid}/smaps") as f:
        cur = None
        for line in f:
            m = MAP_RE.match(line)
            if m:
                cur = [int(m.group(2), 16) - int(m.group(1), 16), m.group(3), m.group(4).strip(), 0]
                maps.append(cur)
            elif line.startswith("Rss:") and cur is not None:
                cur[3] = int(line.split()[1])
    return maps


def sample_rss(pid, mem_bytes):
    """(total RSS KiB, guest-RAM mapping RSS KiB, note) of pid."""
    maps = parse_smaps(pid)
    total = sum(m[3] for m in maps)
    cands = [m for m in maps if m[0] == mem_bytes and "w" in m[1]
             and (m[2] == "" or m[2].startswith("[anon") or m[2].startswith("/memfd:"))]
    if not cands:
        big = sorted(maps, key=lambda m: -m[0])[:5]
        raise RuntimeError("no anonymous writable mapping of %d bytes; largest: %s" % (
            mem_bytes, ", ".join("%d KiB %s %r rss %d KiB" % (m[0] >> 10, m[1], m[2], m[3]) for m in big)))
    guest = max(cands, key=lambda m: m[3])
    note = "" if len(cands) == 1 else "%d mappings of guest size, took the largest Rss" % len(cands)
    return total, guest[3], note


def tail(buf, n=6000):
    s = buf[-n:].decode("utf-8", "replace")
    return s if len(buf) <= n else "..." + s


def one_boot(name, argv, args):
    """Boot once; return a dict with the figures or with 'error'."""
    res = {"vmm": name}
    out, err = b"", b""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, start_new_session=True)
    deadline = t0 + args.timeout
    fds = {p.stdout.fileno(): "out", p.stderr.fileno(): "err"}
    t_init = t_idle = None
    try:
        while True:
            now = time.monotonic()
            if t_idle is not None and now >= t_idle + args.settle:
                break
            if now >= deadline:
                res["error"] = "timed out after %d s (%s)" % (
                    args.timeout, "no `vmm-guest: init`" if t_init is None else "no `vmm-bench: idle`")
                break
            if not fds:
                p.wait()
                res["error"] = "exited with status %s before %s" % (
                    p.returncode, "`vmm-guest: init`" if t_init is None else "the sample")
                break
            wait = deadline - now
            if t_idle is not None:
                wait = min(wait, t_idle + args.settle - now)
            ready, _, _ = select.select(list(fds), [], [], max(wait, 0))
            now = time.monotonic()
            for fd in ready:
                data = os.read(fd, 65536)
                if not data:
                    del fds[fd]
                    continue
                if fds[fd] == "out":
                    out += data
                    if t_init is None and INIT_LINE in out:
                        t_init = now
                        res["boot_ms"] = (now - t0) * 1000
                    if t_init is not None and t_idle is None and IDLE_LINE in out:
                        t_idle = now
                else:
                    err += data
        if "error" not in res:
            try:
                total, guest, note = sample_rss(p.pid, args.mem << 20)
                res.update(rss_kib=total, guest_kib=guest, overhead_kib=total - guest)
                if note:
                    res["note"] = note
            except (OSError, RuntimeError) as e:
                res["error"] = "RSS sample failed: %s" % e
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        # Collect what is left in the pipes (the exit message, if any).
        for fd in list(fds):
            try:
                while True:
                    r, _, _ = select.select([fd], [], [], 1)
                    if not r:
                        break
                    data = os.read(fd, 65536)
                    if not data:
                        break
                    if fds[fd] == "out":
                        out += data
                    else:
                        err += data
            except OSError:
                pass
        p.stdout.close()
        p.stderr.close()
    m = MARKER_RE.search(err)
    if m:
        res["marker_ms"] = float(m.group(1))
    m = STEPS_RE.search(err)
    if m:
        res["steps"] = m.group(1).decode("utf-8", "replace")
    res["status"] = p.returncode
    if args.trace:
        res["stdout"] = out
    if "error" in res:
        res["stdout_tail"] = tail(out)
        res["stderr_tail"] = tail(err)
    return res


PRINTK_RE = re.compile(r"^\[\s*(\d+\.\d+)\] (.*)$", re.M)
INITCALL_RE = re.compile(r"initcall (\S+?)(?:\+0x[0-9a-f]+/0x[0-9a-f]+)? returned -?\d+ after (\d+) usecs")
MILESTONES = (("first message", None), ("ACPI", "ACPI: "), ("TSC calibrated", "tsc: Detected"),
              ("clocksource tsc", "clocksource: Switched to clocksource"),
              ("console", "printk: console [ttyS0] enabled"), ("initramfs unpacked", "Trying to unpack rootfs"),
              ("freeing init memory", "Freeing unused kernel"), ("run /init", "Run /init"),
              ("dmesg ran", ""))


def trace_report(results, names, trace_dir):
    """The guest's own view of each first successful boot: milestones of
    its log and the slowest initcalls, side by side."""
    logs = {}
    for n in names:
        for i, r in enumerate(results[n]):
            if "stdout" not in r:
                continue
            text = r["stdout"].decode("utf-8", "replace").replace("\r\n", "\n")
            with open(os.path.join(trace_dir, "%s-%d.console" % (n.replace(" ", "-"), i + 1)), "w") as f:
                f.write(text)
            if n not in logs and "error" not in r:
                logs[n] = (r, PRINTK_RE.findall(text))
    print("Where the boot time goes (--trace; the first successful boot of each, times in ms "
          "of the guest's clock; consoles in %s):" % trace_dir)
    print()
    shown = [n for n in names if n in logs]
    print("| milestone | %s |" % " | ".join(shown))
    print("|---|%s" % ("---|" * len(shown)))
    print("| host: boot to init | %s |" % " | ".join("%.0f" % logs[n][0]["boot_ms"] for n in shown))
    for label, pat in MILESTONES:
        cells = []
        for n in shown:
            lines = logs[n][1]
            t = None
            if pat is None and lines:
                t = float(lines[0][0])
            elif pat == "" and lines:
                t = max(float(x[0]) for x in lines)
            else:
                t = next((float(ts) for ts, msg in lines if pat in msg), None)
            cells.append("—" if t is None else "%.0f" % (t * 1000))
        print("| %s | %s |" % (label, " | ".join(cells)))
    calls = {n: {} for n in shown}
    for n in shown:
        for _, msg in logs[n][1]:
            m = INITCALL_RE.search(msg)
            if m:
                calls[n][m.group(1)] = calls[n].get(m.group(1), 0) + int(m.group(2))
    print("| all initcalls, sum | %s |" % " | ".join("%.0f" % (sum(calls[n].values()) / 1000) for n in shown))
    print()
    top = sorted({f for n in shown for f in calls[n]},
                 key=lambda f: -max(calls[n].get(f, 0) for n in shown))[:25]
    print("Slowest initcalls (ms):")
    print()
    print("| initcall | %s |" % " | ".join(shown))
    print("|---|%s" % ("---|" * len(shown)))
    for f in top:
        print("| `%s` | %s |" % (f, " | ".join(
            "%.1f" % (calls[n][f] / 1000) if f in calls[n] else "—" for n in shown)))
    print()


def stats(vals, fmt="%.0f"):
    if not vals:
        return "n/a"
    return (fmt + " (" + fmt + "–" + fmt + ")") % (statistics.median(vals), min(vals), max(vals))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--timeout", type=int, default=300, help="bound on each boot, seconds (default 300)")
    ap.add_argument("--settle", type=float, default=3.0,
                    help="seconds to let the guest idle before sampling RSS (default 3)")
    ap.add_argument("--mem", type=int, default=256, help="guest memory, MiB (default 256)")
    ap.add_argument("--vmm", default="build/vmm")
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--kernel", default="build/guest/bzImage")
    ap.add_argument("--vmlinux", default="build/guest/vmlinux",
                    help="the same kernel uncompressed ('' to skip those runs)")
    ap.add_argument("--initrd", default="build/guest/initramfs.cpio.gz")
    ap.add_argument("--max-failures", type=int, default=2,
                    help="stop running a VMM after this many failed boots (default 2)")
    ap.add_argument("--trace", default="",
                    help="directory: initcall_debug, the guest's log kept and compared (see above)")
    args = ap.parse_args()

    cmdline = ('console=ttyS0 reboot=k panic=1 pci=off quiet vmm.job=sh '
               'vmm.arg="echo vmm-bench: idle; sleep 600"')
    if args.trace:
        os.makedirs(args.trace, exist_ok=True)
        # The idle line must not be in the command line, which dmesg
        # prints: the shell puts it together.
        cmdline = ('console=ttyS0 reboot=k panic=1 pci=off quiet initcall_debug printk.time=1 '
                   'log_buf_len=1M vmm.job=sh vmm.arg="dmesg; echo vmm-bench: $(echo idle); sleep 600"')

    def vmm(kernel):
        return [args.vmm, "run", "--kernel", kernel, "--initrd", args.initrd,
                "--mem", "%dM" % args.mem, "--cpus", "1", "--cmdline", cmdline, "--boot-timer"]

    def qemu(kernel):
        return [args.qemu, "-M", "microvm,acpi=off", "-accel", "kvm", "-cpu", "host",
                "-m", "%dM" % args.mem, "-smp", "1", "-nodefaults", "-no-user-config",
                "-nographic", "-serial", "stdio", "-kernel", kernel, "-initrd", args.initrd,
                "-append", cmdline]

    # Each VMM boots the kernel both ways: the bzImage (which decompresses
    # itself in the guest) and the same build's uncompressed vmlinux (vmm
    # enters its 64-bit entry; QEMU boots it through the PVH note).
    argvs = {"vmm bzImage": vmm(args.kernel), "QEMU bzImage": qemu(args.kernel)}
    if args.vmlinux and os.path.exists(args.vmlinux):
        argvs["vmm vmlinux"] = vmm(args.vmlinux)
        argvs["QEMU vmlinux"] = qemu(args.vmlinux)
    names = list(argvs)
    for name, argv in argvs.items():
        log("bench-boot: %s: %s" % (name, subprocess.list2cmdline(argv)))

    results = {n: [] for n in names}
    failures = {n: 0 for n in names}
    for i in range(args.runs):
        for name in names:
            if failures[name] >= args.max_failures:
                continue
            t = time.monotonic()
            r = one_boot(name.split()[0], argvs[name], args)
            results[name].append(r)
            if "error" in r:
                failures[name] += 1
                log("bench-boot: run %d/%d %s: FAILED after %.1f s: %s (exit status %s)" % (
                    i + 1, args.runs, name, time.monotonic() - t, r["error"], r["status"]))
                log("  stdout tail: %r" % r["stdout_tail"])
                log("  stderr tail: %r" % r["stderr_tail"])
                if failures[name] >= args.max_failures:
                    log("bench-boot: %s failed %d times, skipping its remaining runs" % (name, failures[name]))
            else:
                log("bench-boot: run %d/%d %s: boot to init %.0f ms%s, RSS %.1f MiB - guest RAM %.1f MiB"
                    " = overhead %.2f MiB%s" % (
                        i + 1, args.runs, name, r["boot_ms"],
                        ", boot marker %.0f ms" % r["marker_ms"] if "marker_ms" in r else "",
                        r["rss_kib"] / 1024, r["guest_kib"] / 1024, r["overhead_kib"] / 1024,
                        " (%s)" % r["note"] if "note" in r else ""))
                if "steps" in r:
                    log("  vmm's boot steps, ms since it started: %s" % r["steps"])

    ok = {n: [r for r in rs if "error" not in r] for n, rs in results.items()}
    boot = {n: [r["boot_ms"] for r in rs] for n, rs in ok.items()}
    over = {n: [r["overhead_kib"] / 1024 for r in rs] for n, rs in ok.items()}
    guest = {n: [r["guest_kib"] / 1024 for r in rs] for n, rs in ok.items()}
    marker = {n: [r["marker_ms"] for r in rs if "marker_ms" in r] for n, rs in ok.items()}

    print()
    print("Figures: median (min–max) over the successful runs.")
    print()
    print("| VMM, kernel | runs ok | boot to `vmm-guest: init`, ms | vmm boot marker, ms | RSS overhead, MiB | guest RAM touched, MiB |")
    print("|---|---|---|---|---|---|")
    for n in names:
        print("| %s | %d/%d | %s | %s | %s | %s |" % (
            n, len(ok[n]), args.runs, stats(boot[n]), stats(marker[n]) if marker[n] else "n/a",
            stats(over[n], "%.2f"), stats(guest[n], "%.1f")))
    print()

    def med(n):
        return statistics.median(boot[n]) if boot.get(n) else None

    def best(vmm_name):
        got = [(med(n), n) for n in names if n.startswith(vmm_name) and med(n) is not None]
        return min(got) if got else (None, None)

    for n in ("bzImage", "vmlinux"):
        a, b = med("vmm " + n), med("QEMU " + n)
        if a is not None and b is not None:
            print("Boot time ratio vmm/QEMU, both with the %s (medians): %.3f" % (n, a / b))
    (bv, bvn), (bq, bqn) = best("vmm"), best("QEMU")
    if bv is not None and bq is not None:
        ratio = bv / bq
        print("Boot time ratio, each VMM's fastest way (%s / %s): %.3f" % (bvn, bqn, ratio))
        print("Target boot ≤ 0.5× QEMU: %s" % ("met" if ratio <= 0.5 else "NOT met"))
    else:
        print("Boot time ratio vmm/QEMU: n/a (a VMM had no successful run)")
        print("Target boot ≤ 0.5× QEMU: not measured")
    vo = [o for n in names if n.startswith("vmm") for o in over[n]]
    if vo:
        o = statistics.median(vo)
        print("Target vmm RSS overhead ≤ 3 MiB: %s (median %.2f MiB)" % ("met" if o <= 3 else "NOT met", o))
    else:
        print("Target vmm RSS overhead ≤ 3 MiB: not measured")
    print()
    if args.trace:
        trace_report(results, names, args.trace)
    print("Per run (in order):")
    for i in range(args.runs):
        for n in names:
            if i < len(results[n]):
                r = results[n][i]
                if "error" in r:
                    print("- run %d %s: FAILED: %s (exit status %s)" % (i + 1, n, r["error"], r["status"]))
                else:
                    print("- run %d %s: boot %.0f ms%s, RSS %d KiB, guest RAM %d KiB, overhead %d KiB" % (
                        i + 1, n, r["boot_ms"],
                        ", marker %.0f ms" % r["marker_ms"] if "marker_ms" in r else "",
                        r["rss_kib"], r["guest_kib"], r["overhead_kib"]))
    for n in names:
        for r in results[n]:
            if "error" in r:
                print()
                print("First %s failure (%s; exit status %s%s), output as received:" % (
                    n, r["error"], r["status"],
                    ": stopped by the harness's SIGTERM" if r["status"] in (143, -15) else ""))
                for what in ("stdout", "stderr"):
                    print()
                    print("%s:" % what)
                    print("```")
                    print(r[what + "_tail"].replace("\r\n", "\n").rstrip("\n") or "(nothing)")
                    print("```")
                break
    print()
    print("Finished %s" % datetime.datetime.now().astimezone().isoformat(timespec="seconds"))
    return 0 if ok["vmm bzImage"] and ok["QEMU bzImage"] else 1


if __name__ == "__main__":
    sys.exit(main())
