#!/usr/bin/env python3
"""Runs pulmo on every case of a fuzz corpus (scripts/fuzz_corpus.py) and classifies each run.

Usage: fuzz_run.py --bin PATH_TO_PULMO --corpus DIR [--jobs 2] [--timeout 20] [--mem-mb 4096]
                   [--sample N --seed S] [--family PREFIX ...] [--case ID ...] [--json OUT.json]
       fuzz_run.py --corpus DIR --reclassify OLD.json [--json NEW.json]

Plain Python 3 (standard library only). Each command a case lists in its case.json runs
with an address-space limit (prlimit --as, or setrlimit when prlimit is missing), a wall
time-out (the whole process group is killed), stdin closed, RUST_BACKTRACE=0, and its own
scratch folder for outputs (removed afterwards). Peak RSS is GNU time's %M (/usr/bin/time
wraps each run); without it, wait4's maxrss, which also counts the Python runner's pages
at the fork (a floor of some 30 MB).

Classes, first match wins:
  hang         killed at the time-out
  crash        stack overflow message, or killed by a signal other than SIGABRT
  alloc-abort  "memory allocation of N bytes failed", or SIGABRT without a panic message
  panic        exit 101 or "panicked at"
  silent-wrong exit 0 on a case marked expect_error_or_warning, with no "warning" on
               stderr (for `info`, whose report is its stdout, on stdout either); not
               applied to `load`, a timing command that prints no warnings at all
  ok           exit 0
  error        any other exit status
Flags on top: unclear (an error whose stderr names none of the inputs, or is empty),
repeated-cause (the same cause printed twice in a row, "X: X"), generic-codec (a codec
error that ends in "Could not decode pixel data" with no reason), reason-on-stdout (`info`
failed with only "no series could be loaded" on stderr, the reason being on stdout), gap (a
case marked expect_ok did not exit 0).

Prints counts per class and per family, the first 3 examples of each bad class and flag,
the largest peak RSS and the worst ratios of peak RSS to the input's size (and to the
voxel bytes a case honestly claims); --json writes every run. Exits 1 if any run is a
panic, crash, alloc-abort, hang or silent-wrong, else 0.

--sample N takes N cases, the same for the same --seed and corpus: families in turn, each
family's cases in a seeded shuffle, so every family is represented (for CI: a few minutes
with a debug binary on 2 cores is about --sample 300).
"""

import argparse
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

BAD = ("panic", "crash", "alloc-abort", "hang", "silent-wrong")
CLASSES = ("ok", "error") + BAD
FLAGS = ("unclear", "repeated-cause", "generic-codec", "reason-on-stdout", "gap")
TAIL = 4096


def load_cases(corpus: Path):
    cases = []
    for d in sorted(corpus.iterdir()):
        f = d / "case.json"
        if d.name.startswith((".", "_")) or not f.is_file():
            continue
        m = json.loads(f.read_text())
        m["_dir"] = str(d)
        cases.append(m)
    return cases


def sample_cases(cases, n, seed):
    by_family = {}
    for c in cases:
        by_family.setdefault(c["family"], []).append(c)
    rng = random.Random(seed)
    queues = []
    for fam in sorted(by_family):
        lst = list(by_family[fam])
        rng.shuffle(lst)
        queues.append(lst)
    out = []
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop())
    return sorted(out, key=lambda c: c["id"])


def substitute(args, case_dir, corpus, tmp):
    return [a.replace("{case}", case_dir).replace("{corpus}", corpus).replace("{tmp}", tmp) for a in args]


def tail_of(path, n=TAIL):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - n))
            return f.read().decode("utf-8", "replace"), size
    except OSError:
        return "", 0


def run_one(binary, argv, timeout, mem_bytes, prlimit, tmp_root, gnu_time):
    scratch = tempfile.mkdtemp(prefix="pulmo-fuzz-", dir=tmp_root)
    out_p, err_p = os.path.join(scratch, ".stdout"), os.path.join(scratch, ".stderr")
    rss_p = os.path.join(scratch, ".rusage")
    argv = [a.replace("{tmp}", scratch) for a in argv]
    env = dict(os.environ, RUST_BACKTRACE="0", RUST_LIB_BACKTRACE="0")
    if prlimit:
        cmd = [prlimit, f"--as={mem_bytes}", "--", binary] + argv
        pre = None
    else:
        cmd = [binary] + argv

        def pre():
            resource.setrlimit(resource.RLIMIT_AS, (mem_bytes, mem_bytes))
    if gnu_time:
        # GNU time forks pulmo from a small process, so its %M is pulmo's own peak; wait4's
        # maxrss of a child exec'd from Python also counts Python's pages at the fork.
        cmd = [gnu_time, "-f", "%M", "-o", rss_p] + cmd
    t0 = time.monotonic()
    with open(out_p, "wb") as so, open(err_p, "wb") as se:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=so, stderr=se, cwd=scratch, env=env,
                             start_new_session=True, preexec_fn=pre)
    timed_out = False
    status, ru = None, None
    delay = 0.002
    while True:
        pid, st, r = os.wait4(p.pid, os.WNOHANG)
        if pid:
            status, ru = st, r
            break
        if time.monotonic() - t0 > timeout:
            timed_out = True
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _, status, ru = os.wait4(p.pid, 0)
            break
        time.sleep(delay)
        delay = min(delay * 1.5, 0.05)
    wall = time.monotonic() - t0
    p.returncode = 0  # reaped by wait4; keep Popen from waiting again
    try:  # stragglers in the group (none expected)
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    stdout, _ = tail_of(out_p)
    with open(out_p, "rb") as f:  # the whole report (first 4 MB), for its warnings
        stdout_warns = b"warning" in f.read(4 << 20).lower()
    stderr, err_size = tail_of(err_p)
    timing, _ = tail_of(rss_p) if gnu_time else ("", 0)
    shutil.rmtree(scratch, ignore_errors=True)
    if os.WIFSIGNALED(status):
        rc, sig = None, os.WTERMSIG(status)
    else:
        rc, sig = os.WEXITSTATUS(status), None
    peak = ru.ru_maxrss if ru else None
    rss_source = "wait4"
    lines = [l.strip() for l in timing.splitlines() if l.strip()]
    if lines and lines[-1].isdigit():
        peak, rss_source = int(lines[-1]), "gnu-time"
        for l in lines:
            if l.startswith("Command terminated by signal"):
                rc, sig = None, int(l.split()[-1])
    return {
        "argv": argv, "rc": rc, "signal": sig, "timed_out": timed_out, "wall_s": round(wall, 3),
        "peak_rss_kb": peak, "rss_source": rss_source, "stdout_tail": stdout[-1500:],
        "stdout_warns": stdout_warns,
        "stderr_tail": stderr[-TAIL:], "stderr_bytes": err_size,
    }


def last_line(text):
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    lines = [l for l in lines if not l.startswith("note: run with `RUST_BACKTRACE")]
    return lines[-1] if lines else ""


def panic_line(text):
    lines = text.splitlines()
    for i, l in enumerate(lines):
        if "panicked at" in l:
            msg = l.strip()
            if msg.endswith(":") and i + 1 < len(lines):
                msg += " " + lines[i + 1].strip()
            return msg
    return ""


def key_line(r):
    if r["class"] == "panic":
        return panic_line(r["stderr_tail"]) or last_line(r["stderr_tail"])
    if r["class"] == "hang":
        return f"(killed after {r['wall_s']:.0f} s) " + last_line(r["stderr_tail"])
    if r["class"] == "silent-wrong":
        return "(exit 0, no warning) " + last_line(r["stdout_tail"])
    return last_line(r["stderr_tail"])


def repeated_cause(line):
    parts = [p.strip() for p in line.split(": ")]
    n = len(parts)
    for length in range(1, n // 2 + 1):
        for i in range(0, n - 2 * length + 1):
            a, b = parts[i:i + length], parts[i + length:i + 2 * length]
            if a == b and len(": ".join(a)) >= 6:
                return True
    return False


def input_names(case, argv, corpus):
    names = {case["_dir"]}
    for a in argv:
        if a.startswith(corpus) and os.path.lexists(a):
            names.add(a)
            base = os.path.basename(a.rstrip("/"))
            if os.path.isdir(a):
                k = 0
                for root, _, files in os.walk(a):
                    for f in files:
                        names.add(f)
                        k += 1
                    if k > 1000:
                        break
            elif base:
                names.add(base)
    for rel in case.get("inputs", []):
        p = os.path.join(case["_dir"], rel)
        if not os.path.isdir(p):
            names.add(os.path.basename(rel))
    return [n for n in names if n and n not in ("series", "case.json")]


def classify(r, case, corpus):
    err = r["stderr_tail"]
    low = err.lower()
    cmd = r["argv"][0] if r["argv"] else ""
    if r["timed_out"]:
        cls = "hang"
    elif "overflowed its stack" in err or "stack overflow" in low:
        cls = "crash"
    elif "memory allocation of" in err:
        cls = "alloc-abort"
    elif r["rc"] == 101 or "panicked at" in err:
        cls = "panic"
    elif r["signal"] is not None:
        cls = "alloc-abort" if r["signal"] == signal.SIGABRT else "crash"
    elif r["rc"] == 0:
        warned_on_stdout = r.get("stdout_warns", "warning" in r["stdout_tail"].lower())
        text = low + (" warning" if cmd == "info" and warned_on_stdout else "")
        if case.get("expect_error_or_warning") and cmd != "load" and "warning" not in text:
            cls = "silent-wrong"
        else:
            cls = "ok"
    else:
        cls = "error"
    flags = []
    if cls == "error":
        names = input_names(case, r["argv"], corpus)
        if not err.strip() or not any(n in err for n in names):
            flags.append("unclear")
        line = last_line(err)
        if repeated_cause(line):
            flags.append("repeated-cause")
        if line.rstrip(". ").endswith("Could not decode pixel data"):
            flags.append("generic-codec")
        if cmd == "info" and line.endswith("no series could be loaded"):
            flags.append("reason-on-stdout")
    if case.get("expect_ok") and cls != "ok":
        flags.append("gap")
    return cls, flags


def summarize(results, ncases, elapsed, binary, corpus, args):
    total = len(results)
    counts = {k: 0 for k in CLASSES}
    flag_counts = {k: 0 for k in FLAGS}
    fam = {}
    for r in results:
        counts[r["class"]] += 1
        row = fam.setdefault(r["family"], {**{k: 0 for k in CLASSES}, **{k: 0 for k in FLAGS}})
        row[r["class"]] += 1
        for f in r["flags"]:
            flag_counts[f] += 1
            row[f] += 1
    cols = list(CLASSES) + list(FLAGS)
    short = {"alloc-abort": "alloc", "silent-wrong": "silent", "repeated-cause": "repeat",
             "generic-codec": "codec", "unclear": "unclear", "reason-on-stdout": "stdout"}
    print(f"\n{ncases} cases, {total} runs in {elapsed:.0f} s ({args.jobs} jobs) on {binary}")
    print("class counts: " + ", ".join(f"{k} {counts[k]}" for k in CLASSES))
    print("flags: " + ", ".join(f"{k} {flag_counts[k]}" for k in FLAGS))
    w = max(len(f) for f in fam) + 1
    print("\n" + "family".ljust(w) + "".join(short.get(c, c).rjust(8) for c in cols))
    for f in sorted(fam):
        print(f.ljust(w) + "".join(str(fam[f][c] or ".").rjust(8) for c in cols))
    print("total".ljust(w) + "".join(str({**counts, **flag_counts}[c]).rjust(8) for c in cols))

    def show(title, rs):
        if not rs:
            return
        print(f"\n{title}: {len(rs)} run(s); first 3:")
        for r in rs[:3]:
            cmd = " ".join(["pulmo"] + r["argv"]).replace(corpus, "$CORPUS")
            print(f"  [{r['case']}] {r['description'][:110]}")
            print(f"    $ {cmd[:220]}")
            print(f"    -> {r['key_line'][:300]}")

    for cls in BAD:
        show(cls, [r for r in results if r["class"] == cls])
    for fl in FLAGS:
        show(f"flag {fl}", [r for r in results if fl in r["flags"]])

    # peak memory
    rss = [r for r in results if r["peak_rss_kb"] and r["class"] != "hang"]
    if rss:
        print("\nlargest peak RSS:")
        for r in sorted(rss, key=lambda r: -r["peak_rss_kb"])[:5]:
            print(f"  {r['peak_rss_kb'] / 1024:8.0f} MB  [{r['case']}] {r['argv'][0]} ({r['class']}, "
                  f"input {r['input_bytes'] / 1024:.0f} KB) {r['description'][:70]}")
        floor = min(r["peak_rss_kb"] for r in rss)
        big = [r for r in rss if r["input_bytes"] >= 16 * 1024]
        if big:
            print(f"worst (peak RSS - {floor / 1024:.0f} MB process floor) / input size (inputs >= 16 KB):")
            for r in sorted(big, key=lambda r: -(r["peak_rss_kb"] - floor) / r["input_bytes"])[:5]:
                print(f"  {(r['peak_rss_kb'] - floor) * 1024 / r['input_bytes']:8.1f} x  [{r['case']}] {r['argv'][0]} "
                      f"({r['class']}, {r['peak_rss_kb'] / 1024:.0f} MB for {r['input_bytes'] / 1024:.0f} KB) "
                      f"{r['description'][:60]}")
        vox = {}
        for r in rss:
            if r.get("claimed_voxel_bytes") and (r["case"] not in vox or r["peak_rss_kb"] > vox[r["case"]]["peak_rss_kb"]):
                vox[r["case"]] = r
        if vox:
            print("peak RSS / voxel bytes the header claims (worst command per case):")
            for r in sorted(vox.values(), key=lambda r: -r["peak_rss_kb"] * 1024 / r["claimed_voxel_bytes"])[:10]:
                print(f"  {r['peak_rss_kb'] * 1024 / r['claimed_voxel_bytes']:8.2f} x  [{r['case']}] {r['argv'][0]} "
                      f"({r['class']}, {r['peak_rss_kb'] / 1024:.0f} MB for {r['claimed_voxel_bytes'] >> 20} MB) "
                      f"{r['description'][:60]}")

    if args.json:
        out = {
            "binary": binary, "corpus": corpus, "jobs": args.jobs, "timeout_s": args.timeout,
            "mem_mb": args.mem_mb, "sample": args.sample, "seed": args.seed, "cases": ncases,
            "runs": total, "elapsed_s": round(elapsed, 1), "counts": counts, "flags": flag_counts,
            "families": fam,
            "results": [{k: v for k, v in r.items()} for r in results],
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
        print(f"\nwrote {args.json}")
    return 1 if any(counts[k] for k in BAD) else 0


def reclassify(args, corpus):
    old = json.loads(Path(args.reclassify).read_text())
    cases = {c["id"]: c for c in load_cases(Path(corpus))}
    results = old["results"]
    for r in results:
        c = cases.get(r["case"])
        if c is None:
            sys.exit(f"fuzz_run: case {r['case']} of {args.reclassify} is not in {corpus}")
        cls, flags = classify(r, c, corpus)
        r["class"], r["flags"] = cls, flags
        r["key_line"] = key_line(r)
    for k in ("jobs", "timeout", "mem_mb", "sample", "seed"):
        key = "timeout_s" if k == "timeout" else k
        if key in old:
            setattr(args, k, old[key])
    return summarize(results, len({r["case"] for r in results}), old.get("elapsed_s", 0), old["binary"], corpus, args)


def main():
    ap = argparse.ArgumentParser(description="Run pulmo on a fuzz corpus and classify every run.")
    ap.add_argument("--bin", help="the pulmo binary (required unless --reclassify)")
    ap.add_argument("--corpus", required=True, help="folder made by fuzz_corpus.py")
    ap.add_argument("--reclassify", metavar="OLD.json",
                    help="run nothing: classify the runs of an earlier --json again against the corpus's "
                         "current case.json files, print the summary (and write --json)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds per run")
    ap.add_argument("--mem-mb", type=int, default=4096, help="address-space limit per run")
    ap.add_argument("--sample", type=int, help="run only N cases (stratified by family)")
    ap.add_argument("--seed", type=int, default=1, help="seed for --sample")
    ap.add_argument("--family", action="append", help="only families starting with this (repeatable)")
    ap.add_argument("--case", action="append", help="only this case id (repeatable)")
    ap.add_argument("--tmp", default=None, help="where scratch folders go (default: the system temp folder)")
    ap.add_argument("--json", help="write every run here")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    ap.add_argument("--no-gnu-time", action="store_true",
                    help="take peak RSS from wait4 even where /usr/bin/time exists")
    args = ap.parse_args()

    corpus = os.path.abspath(args.corpus)
    if args.reclassify:
        return reclassify(args, corpus)
    if not args.bin:
        sys.exit("fuzz_run: --bin is required")
    binary = os.path.abspath(args.bin)
    if not os.access(binary, os.X_OK):
        sys.exit(f"fuzz_run: {binary} is not an executable")
    cases = load_cases(Path(corpus))
    if not cases:
        sys.exit(f"fuzz_run: no cases in {corpus} (make them with scripts/fuzz_corpus.py)")
    if args.family:
        cases = [c for c in cases if any(c["family"].startswith(f) for f in args.family)]
    if args.case:
        cases = [c for c in cases if c["id"] in args.case]
    if args.sample:
        cases = sample_cases(cases, args.sample, args.seed)
    prlimit = shutil.which("prlimit")
    gnu_time = None if args.no_gnu_time or not os.access("/usr/bin/time", os.X_OK) else "/usr/bin/time"
    mem = args.mem_mb << 20
    items = []
    for c in cases:
        for i, a in enumerate(c["commands"]):
            items.append((c, i, substitute(a, c["_dir"], corpus, "{tmp}")))
    total = len(items)
    if not args.quiet:
        print(f"fuzz_run: {len(cases)} cases, {total} runs, {args.jobs} jobs, time-out {args.timeout:g} s, "
              f"address space {args.mem_mb} MB ({'prlimit' if prlimit else 'setrlimit'})", file=sys.stderr)
    results = [None] * total
    lock = threading.Lock()
    done = [0]
    bad = [0]
    t0 = time.monotonic()

    def work(k):
        c, i, argv = items[k]
        r = run_one(binary, argv, args.timeout, mem, prlimit, args.tmp, gnu_time)
        cls, flags = classify(r, c, corpus)
        r.update(case=c["id"], family=c["family"], command_index=i, **{"class": cls}, flags=flags,
                 input_bytes=c.get("input_bytes", 0), claimed_voxel_bytes=c.get("claimed_voxel_bytes"),
                 description=c.get("description", ""))
        r["key_line"] = key_line(r)
        results[k] = r
        with lock:
            done[0] += 1
            if cls in BAD:
                bad[0] += 1
            if not args.quiet and (done[0] % 100 == 0 or done[0] == total):
                el = time.monotonic() - t0
                print(f"  {done[0]}/{total} runs, {el:.0f} s, {bad[0]} bad", file=sys.stderr)

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as ex:
        futures = [ex.submit(work, k) for k in range(total)]
        for f in as_completed(futures):
            f.result()
    elapsed = time.monotonic() - t0

    return summarize(results, len(cases), elapsed, binary, corpus, args)


if __name__ == "__main__":
    sys.exit(main())
