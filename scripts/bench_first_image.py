"""Time from starting `pulmo PATH` to its first image, measured from outside the process.

Usage: python3 scripts/bench_first_image.py SERIES_DIR BINARY [BINARY ...] [--repeat N]

Each run starts the binary with PULMO_BENCH_FIRST_IMAGE=1 (the viewer prints
"first image after ..." once the frame after the first one showing the study has been
presented, then quits) and measures the wall time from just before the process is
started to that line: process start-up (dynamic loading included), window and device
creation, reading the series, texture upload and the first frames. Binaries are run
interleaved (A B A B ...) so drift of this noisy machine hits them alike; medians,
ranges and the ratio to the first binary are printed. Needs a display (Xvfb is fine).
"""

import os
import statistics
import subprocess
import sys
import time


def one_run(binary, series):
    env = dict(os.environ, PULMO_BENCH_FIRST_IMAGE="1")
    t0 = time.perf_counter()
    p = subprocess.Popen(
        [binary, series], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True
    )
    inside = None
    for line in p.stdout:
        if line.startswith("first image after"):
            wall = time.perf_counter() - t0
            inside = float(line.split()[3])
            break
    else:
        p.wait()
        raise SystemExit(f"{binary}: no first-image line (exit {p.returncode})")
    p.wait(timeout=60)
    return wall, inside


def main():
    args = sys.argv[1:]
    repeat = 9
    if "--repeat" in args:
        i = args.index("--repeat")
        repeat = int(args[i + 1])
        del args[i : i + 2]
    if len(args) < 2:
        raise SystemExit(__doc__)
    series, binaries = args[0], args[1:]
    walls = {b: [] for b in binaries}
    insides = {b: [] for b in binaries}
    one_run(binaries[0], series)  # warm the page cache
    for _ in range(repeat):
        for b in binaries:
            w, m = one_run(b, series)
            walls[b].append(w)
            insides[b].append(m)
    base = statistics.median(walls[binaries[0]])
    for b in binaries:
        w = walls[b]
        med = statistics.median(w)
        print(
            f"{b}: first image {med:.3f} s median from exec (range {min(w):.3f}-{max(w):.3f}, "
            f"{len(w)} runs; from main {statistics.median(insides[b]):.3f} s); "
            f"ratio to {binaries[0]}: {med / base:.2f}"
        )


if __name__ == "__main__":
    main()
