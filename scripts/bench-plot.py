#!/usr/bin/python3
"""Charts for scripts/bench-migrate --pair: PNG files from its JSON rows.

  bench-plot.py [--out DIR] FILE.json...

Each FILE is one link setting's rows (bench-migrate.py --json-out). Draws:
  migrate-time.png   total time per case and VMM configuration, one group
                     of bars per link setting, the seed's figures beside;
  migrate-bytes.png  bytes sent, likewise;
  migrate-link.png   total time against the link rate (with a shaped rate
                     and another setting: a point per shaped rate, lines
                     between them, unshaped rows as dotted lines).
Failed rows are drawn as missing bars and named in the legend.
"""
import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# The seed's figures (2016 patch set, 8 GB guest, 10 GbE): QEMU without and
# with free-page skipping.
SEED = {
    "idle": {"total_ms": (1894, 421), "bytes": (None, None)},
    "touched": {"total_ms": (7436, 552), "bytes": (8.1e9, 361e6)},
}
CASES = {"idle": "idle, just booted", "touched": "after a memory-hungry workload",
         "dirty": "dirtying memory during the migration"}


def config(r):
    if r["vmm"] == "vmm":
        return "vmm skip %s, %s" % ("on" if r["skip"] else "off", r["compress"])
    return "QEMU hint %s" % ("on" if r["skip"] else "off")


def load(paths):
    sets = []
    for p in paths:
        with open(p) as f:
            d = json.load(f)
        sets.append(d)
    return sets


def bars(sets, key, scale, ylabel, title, path):
    cases = [c for c in CASES if any(r["case"] == c for d in sets for r in d["rows"])]
    fig, axes = plt.subplots(1, len(cases), figsize=(6.5 * len(cases), 6), squeeze=False)
    for ax, case in zip(axes[0], cases):
        labels = ["link: %s" % (d["label"] or "run") for d in sets]
        configs = []
        for d in sets:
            for r in d["rows"]:
                if r["case"] == case and config(r) not in configs:
                    configs.append(config(r))
        series = [(c, [next((r.get(key) for r in d["rows"] if r["case"] == case and config(r) == c
                             and "error" not in r), None) for d in sets]) for c in configs]
        seed = SEED.get(case, {}).get(key, (None, None))
        groups = len(sets)
        if any(seed):
            # The seed's figures as a group of their own.
            labels.append("seed (8 GB, 10 GbE)")
            groups += 1
            series = [(c, vals + [None]) for c, vals in series]
            series.append(("seed: QEMU 2016, no skipping", [None] * len(sets) + [seed[0]]))
            series.append(("seed: QEMU 2016, skipping free pages", [None] * len(sets) + [seed[1]]))
        width = 0.8 / max(1, len(series))
        for i, (name, vals) in enumerate(series):
            xs = [j + i * width for j in range(groups)]
            ys = [v / scale if v is not None else 0 for v in vals]
            if not name.startswith("seed"):
                missing = [labels[j] for j in range(len(sets)) if vals[j] is None]
                if missing:
                    name += " (failed or not run: %s)" % ", ".join(missing)
            ax.bar(xs, ys, width, label=name, hatch="//" if name.startswith("seed") else None)
        ax.set_yscale("log")
        ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(groups)])
        ax.set_xticklabels(labels)
        ax.set_ylabel(ylabel + " (log scale)")
        ax.set_title("%s (%d MiB guest)" % (CASES[case], sets[0].get("mem_mib", 0)))
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def link_plot(sets, path):
    def rate(label):
        for unit, mult in (("gbit", 1000), ("mbit", 1), ("kbit", 0.001)):
            if label.endswith(unit):
                return float(label[:-len(unit)]) * mult
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    shaped = sorted((rate(d["label"]), d) for d in sets if rate(d["label"]))
    unshaped = [d for d in sets if rate(d["label"]) is None]
    for case in CASES:
        configs = sorted({config(r) for d in sets for r in d["rows"] if r["case"] == case})
        for c in configs:
            xs, ys = [], []
            for x, d in shaped:
                v = next((r["total_ms"] for r in d["rows"] if r["case"] == case and config(r) == c
                          and "error" not in r), None)
                if v is not None:
                    xs.append(x)
                    ys.append(v / 1000)
            line = ax.plot(xs, ys, marker="o", label="%s: %s" % (case, c))[0] if xs else None
            for d in unshaped:
                v = next((r["total_ms"] for r in d["rows"] if r["case"] == case and config(r) == c
                          and "error" not in r), None)
                if v is not None:
                    ax.axhline(v / 1000, linestyle=":", color=line.get_color() if line else None, linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("link rate, Mbit/s (tc tbf); dotted: unshaped")
    ax.set_ylabel("total time, s")
    ax.set_title("Total migration time against the link")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="docs/bench")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    try:
        sets = load(a.files)
    except (OSError, ValueError) as e:
        print("bench-plot: %s" % e, file=sys.stderr)
        return 1
    os.makedirs(a.out, exist_ok=True)
    bars(sets, "total_ms", 1000, "total time, s", "vmm migrate and QEMU 7.2: total time",
         os.path.join(a.out, "migrate-time.png"))
    bars(sets, "bytes", 1 << 20, "MiB sent", "vmm migrate and QEMU 7.2: bytes on the wire",
         os.path.join(a.out, "migrate-bytes.png"))
    written = ["migrate-time.png", "migrate-bytes.png"]
    # One shaped rate is a point per row, the unshaped link a dotted line.
    if len(sets) >= 2 and any(d["label"] != "unshaped" for d in sets):
        link_plot(sets, os.path.join(a.out, "migrate-link.png"))
        written.append("migrate-link.png")
    print("bench-plot: wrote %s in %s" % (", ".join(written), a.out), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
