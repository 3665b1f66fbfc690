#!/usr/bin/python3
"""A small QMP client for driving QEMU from shell scripts (standard library only).

  qmp.py SOCKET cmd NAME [JSON-ARGS]   one command; prints its return value as JSON
  qmp.py SOCKET hmp 'TEXT'             one human monitor command; prints its text
  qmp.py SOCKET wait STATUS            polls query-status until it is STATUS
  qmp.py SOCKET migrate URI [--cap NAME=on|off]... [--param NAME=VALUE]...
                                       sets capabilities and parameters, starts the
                                       migration and polls query-migrate until it
                                       completes, fails or is cancelled

Common options (before SOCKET): --timeout S bounds the whole call (default 60;
for `migrate`, the migration); --connect-timeout S bounds waiting for the
socket to accept (QEMU creates it at start-up; default 30).

`migrate` prints a summary whose first two lines have the form of `vmm
migrate`'s ("migration completed in T ms (setup S ms, downtime D ms)", "  on
the wire: X MiB, R Mbit/s, N iterations, dirty rate P pages/s"), then the
pages sent, the highest auto-converge throttle seen while polling, and the
capabilities and parameters in force; with --json FILE, the last
query-migrate reply goes to FILE.  A --param VALUE that reads as an integer
is sent as one, `on`/`off`/`true`/`false` as booleans.  On timeout it
cancels the migration (migrate_cancel).

Exit status: 0 done (completed, the status reached), 1 failed or refused
(one line on stderr), 2 usage, 124 timeout.
"""
import argparse
import json
import socket
import sys
import time


class QMPError(RuntimeError):
    pass


class QMP:
    def __init__(self, path, connect_timeout, timeout):
        """path: a unix socket, or tcp:HOST:PORT (QEMU -qmp tcp:...)."""
        deadline = time.monotonic() + connect_timeout
        if path.startswith("tcp:"):
            host, port = path[4:].rsplit(":", 1)
            family, addr = socket.AF_INET, (host, int(port))
        else:
            family, addr = socket.AF_UNIX, path
        while True:
            try:
                self.s = socket.socket(family, socket.SOCK_STREAM)
                self.s.settimeout(timeout)
                self.s.connect(addr)
                break
            except OSError as e:
                self.s.close()
                if time.monotonic() >= deadline:
                    raise QMPError("cannot connect to %s: %s" % (path, e))
                time.sleep(0.2)
        self.buf = b""
        greeting = self._read()
        if "QMP" not in greeting:
            raise QMPError("no QMP greeting from %s: %r" % (path, greeting))
        self.cmd("qmp_capabilities")

    def _read(self):
        while b"\n" not in self.buf:
            data = self.s.recv(65536)
            if not data:
                raise QMPError("QEMU closed the QMP socket")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name, **args):
        req = {"execute": name}
        if args:
            req["arguments"] = args
        self.s.sendall(json.dumps(req).encode() + b"\n")
        while True:
            r = self._read()
            if "event" in r:
                continue
            if "error" in r:
                raise QMPError("%s: %s" % (name, r["error"].get("desc", r["error"])))
            return r.get("return")

    def close(self):
        self.s.close()


def value(text):
    if text in ("on", "true"):
        return True
    if text in ("off", "false"):
        return False
    try:
        return int(text)
    except ValueError:
        return text


def pairs(items, what):
    out = []
    for item in items:
        name, sep, val = item.partition("=")
        if not sep or not name:
            raise QMPError("%s '%s' is not NAME=VALUE" % (what, item))
        out.append((name, value(val)))
    return out


def migrate(q, a, deadline):
    caps = pairs(a.cap, "--cap")
    for name, on in caps:
        if not isinstance(on, bool):
            raise QMPError("--cap %s: the value must be on or off" % name)
    if caps:
        q.cmd("migrate-set-capabilities",
              capabilities=[{"capability": n, "state": v} for n, v in caps])
    params = dict(pairs(a.param, "--param"))
    if params:
        q.cmd("migrate-set-parameters", **params)
    in_force = q.cmd("query-migrate-parameters")
    caps_on = [c["capability"] for c in q.cmd("query-migrate-capabilities") if c.get("state")]
    q.cmd("migrate", uri=a.uri)
    st, throttle = {}, 0
    while True:
        st = q.cmd("query-migrate")
        throttle = max(throttle, st.get("cpu-throttle-percentage", 0))
        if st.get("status") in ("completed", "failed", "cancelled"):
            break
        if time.monotonic() >= deadline:
            try:
                q.cmd("migrate_cancel")
            except QMPError:
                pass
            if a.json:
                with open(a.json, "w") as f:
                    json.dump(st, f, indent=2)
            print("qmp: the migration did not end within %g s (status %s); cancelled"
                  % (a.timeout, st.get("status")), file=sys.stderr)
            return 124
        time.sleep(0.2)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(st, f, indent=2)
    ram = st.get("ram", {})
    mib = 1 << 20
    print("migration %s in %s ms (setup %s ms, downtime %s ms)"
          % (st.get("status"), st.get("total-time", "?"), st.get("setup-time", "?"),
             st.get("downtime", "?")))
    print("  on the wire: %.1f MiB, %.0f Mbit/s, %d iterations, dirty rate %d pages/s"
          % (ram.get("transferred", 0) / mib, ram.get("mbps", 0), ram.get("dirty-sync-count", 0),
             ram.get("dirty-pages-rate", 0)))
    print("  pages sent: %d normal, %d zero; %d pages of %.0f MiB RAM"
          % (ram.get("normal", 0), ram.get("duplicate", 0), ram.get("total", 0) // 4096,
             ram.get("total", 0) / mib))
    print("  auto-converge throttle up to %d%%" % throttle)
    print("  capabilities on: %s" % (", ".join(caps_on) or "none"))
    print("  parameters: max-bandwidth %s, downtime-limit %s ms, cpu-throttle-initial %s, "
          "cpu-throttle-increment %s, max-cpu-throttle %s"
          % tuple(in_force.get(k) for k in ("max-bandwidth", "downtime-limit", "cpu-throttle-initial",
                                             "cpu-throttle-increment", "max-cpu-throttle")))
    if st.get("status") != "completed":
        print("qmp: migration %s: %s" % (st.get("status"), st.get("error-desc", "no reason given")),
              file=sys.stderr)
        return 1
    return 0


def main():
    ap = argparse.ArgumentParser(description="A small QMP client (see the docstring).")
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--connect-timeout", type=float, default=30)
    ap.add_argument("socket")
    sub = ap.add_subparsers(dest="what", required=True)
    c = sub.add_parser("cmd")
    c.add_argument("name")
    c.add_argument("args", nargs="?", default="{}")
    h = sub.add_parser("hmp")
    h.add_argument("text")
    w = sub.add_parser("wait")
    w.add_argument("status")
    m = sub.add_parser("migrate")
    m.add_argument("uri")
    m.add_argument("--cap", action="append", default=[], metavar="NAME=on|off")
    m.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    m.add_argument("--json", metavar="FILE")
    a = ap.parse_args()
    deadline = time.monotonic() + a.timeout
    q = None
    try:
        # Each reply must come within the whole call's bound (a stuck QEMU
        # fails the call; it never hangs it).
        q = QMP(a.socket, a.connect_timeout, max(a.timeout, 10))
        if a.what == "cmd":
            args = json.loads(a.args)
            if not isinstance(args, dict):
                raise QMPError("JSON-ARGS must be an object")
            print(json.dumps(q.cmd(a.name, **args), indent=2))
        elif a.what == "hmp":
            sys.stdout.write(q.cmd("human-monitor-command", **{"command-line": a.text}))
        elif a.what == "wait":
            while True:
                st = q.cmd("query-status").get("status")
                if st == a.status:
                    break
                if time.monotonic() >= deadline:
                    print("qmp: status %s, not %s, after %g s" % (st, a.status, a.timeout), file=sys.stderr)
                    return 124
                time.sleep(0.2)
        else:
            return migrate(q, a, deadline)
        return 0
    except (QMPError, OSError, ValueError) as e:
        print("qmp: %s" % e, file=sys.stderr)
        return 1
    finally:
        if q:
            q.close()


if __name__ == "__main__":
    sys.exit(main())
