"""What a user waits for: whole processes, first calls and warm calls, side by side.

One run measures, on the same pair (default: head-neck pt4/pt13 of ``../shared/data``, no
pre-alignment, default preset), with ``--repeats`` repetitions and the median of each:

* ``samconvex register`` as a whole process (imports, reading, registration, scoring, writing
  every output);
* the same with ``--preset fast`` (fewer labels and 20 Adam steps: what a one-shot user who
  needs speed more than the last Dice points can ask for);
* a one-call Python script for ours (``import itk``; read; ``itk.samconvex_registration``);
* the same one-call script for ConvexAdam (``convex_adam_pt`` with its own defaults on the
  same NIfTI files, CPU);
* in one process: the first call and the second (warm) call of ``itk.samconvex_registration``,
  with the ITK wrapping modules the first call loaded;
* ``samconvex --help`` and a missing-file error (whole processes);
* the warm call with one of the cores kept busy by another process, for 1 and 2 torch threads
  and the default, against the idle warm call (the busy-core figure).

Wall time, CPU time (user + system of the process) and peak resident memory (the kernel's
high-water mark of the child) are reported per row. Times are *whole process* unless the row
says *first call* or *warm*. Usage::

    python benchmarks/process_time.py --out benchmarks/results/process_time [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"

ONE_CALL_OURS = """
import sys, time
start = time.perf_counter()
import itk
fixed = itk.imread(sys.argv[1]); moving = itk.imread(sys.argv[2])
transform = itk.samconvex_registration(fixed, moving)
print("call", time.perf_counter() - start)
"""

ONE_CALL_CONVEXADAM = """
import sys
import nibabel as nib
from convexAdam.convex_adam_MIND import convex_adam_pt
field = convex_adam_pt(img_fixed=nib.load(sys.argv[1]), img_moving=nib.load(sys.argv[2]))
print("field", field.shape)
"""

FIRST_AND_WARM = """
import json, sys, time
start = time.perf_counter()
import itk
import itk_samconvex  # noqa: F401
fixed = itk.imread(sys.argv[1]); moving = itk.imread(sys.argv[2])
imported = time.perf_counter() - start
def modules():
    return sorted(k[4:-6] for k in sys.modules if k.startswith("itk.ITK") and k.endswith("Python"))
before = modules()
reg = []
for call in range(3):
    tick = time.perf_counter()
    f = itk.SAMConvexRegistrationFilter.New(fixed, moving)
    f.Update()
    reg.append({"seconds": time.perf_counter() - tick, "stages": f.GetTimings()})
    if call == 0:
        after_first = modules()
print(json.dumps({"imports_and_reading": imported, "calls": reg,
                  "itk_modules_before": before,
                  "itk_modules_loaded_by_first_call": [m for m in after_first if m not in before]}))
"""

WARM_UNDER_LOAD = """
import json, sys, time
import itk, torch
fixed = itk.imread(sys.argv[1]); moving = itk.imread(sys.argv[2])
threads = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] != "default" else None
kwargs = {"num_threads": threads} if threads else {}
itk.samconvex_registration(fixed, moving, **kwargs)  # warm up
times = []
for _ in range(int(sys.argv[4]) if len(sys.argv) > 4 else 2):
    tick = time.perf_counter()
    itk.samconvex_registration(fixed, moving, **kwargs)
    times.append(time.perf_counter() - tick)
print(json.dumps({"warm": times, "torch_threads": threads or torch.get_num_threads()}))
"""


def run_process(argv: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a child; wall, CPU (user + sys) and peak RSS (MB) of that child alone."""
    start = time.perf_counter()
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
        text=True,
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    out = process.stdout.read()
    err = process.stderr.read()
    code = os.waitstatus_to_exitcode(status)
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_mb": usage.ru_maxrss / 1024.0,
        "exit": code,
        "stdout": out,
        "stderr": err[-2000:],
    }


def median_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("wall_s", "cpu_s", "peak_mb")
    return {
        **{k: statistics.median(r[k] for r in rows) for k in keys},
        "runs": [{k: round(r[k], 3) for k in keys} for r in rows],
        "exits": sorted({r["exit"] for r in rows}),
    }


def busy_core() -> subprocess.Popen:
    """Another process keeping one core busy."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results/process_time")
    parser.add_argument("--fixed", default=str(DATA / "headneck" / "okbp_pt4_ct.nii.gz"))
    parser.add_argument("--moving", default=str(DATA / "headneck" / "okbp_pt13_ct.nii.gz"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-convexadam", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    samconvex = [py, "-m", "itk_samconvex.cli"]
    fixed, moving = args.fixed, args.moving
    results: dict[str, Any] = {"pair": [fixed, moving], "repeats": args.repeats}
    sys.path.insert(0, str(HERE))
    from common import machine_info, machine_line

    results["machine"] = machine_info()
    rows: dict[str, list[dict[str, Any]]] = {
        k: []
        for k in (
            "help",
            "missing_file",
            "register",
            "register_fast",
            "one_call_ours",
            "one_call_convexadam",
        )
    }
    with tempfile.TemporaryDirectory(prefix="samconvex-process-time-") as scratch:
        for repeat in range(args.repeats):
            # side by side: one of each per repetition
            rows["help"].append(run_process([*samconvex, "--help"]))
            rows["missing_file"].append(
                run_process(
                    [
                        *samconvex,
                        "register",
                        str(Path(scratch) / "nope.nii.gz"),
                        moving,
                        "-o",
                        str(Path(scratch) / "x"),
                    ]
                )
            )
            folder = Path(scratch) / f"register{repeat}"
            rows["register"].append(
                run_process([*samconvex, "register", fixed, moving, "-o", str(folder), "-q"])
            )
            report = json.loads((folder / "report.json").read_text())
            rows["register"][-1]["timings_s"] = report["timings_s"]
            folder = Path(scratch) / f"register_fast{repeat}"
            fast = ["-q", "--preset", "fast"]
            rows["register_fast"].append(
                run_process([*samconvex, "register", fixed, moving, "-o", str(folder), *fast])
            )
            rows["one_call_ours"].append(run_process([py, "-c", ONE_CALL_OURS, fixed, moving]))
            if not args.skip_convexadam:
                rows["one_call_convexadam"].append(
                    run_process([py, "-c", ONE_CALL_CONVEXADAM, fixed, moving])
                )
            print(
                f"repetition {repeat + 1}: register {rows['register'][-1]['wall_s']:.2f} s, "
                f"register --preset fast {rows['register_fast'][-1]['wall_s']:.2f} s, "
                f"one-call ours {rows['one_call_ours'][-1]['wall_s']:.2f} s"
                + (
                    ""
                    if args.skip_convexadam
                    else f", ConvexAdam {rows['one_call_convexadam'][-1]['wall_s']:.2f} s"
                ),
                flush=True,
            )
    results["processes"] = {k: median_of(v) for k, v in rows.items() if v}
    results["register_timings_s"] = [r["timings_s"] for r in rows["register"]]
    first = run_process([py, "-c", FIRST_AND_WARM, fixed, moving])
    results["first_and_warm"] = json.loads(first["stdout"])
    idle = json.loads(
        run_process([py, "-c", WARM_UNDER_LOAD, fixed, moving, "default", "3"])["stdout"]
    )
    results["warm_idle"] = idle
    busy = {}
    spinner = busy_core()
    try:
        time.sleep(1.0)
        for threads in ("default", "1", "2"):
            busy[threads] = json.loads(
                run_process([py, "-c", WARM_UNDER_LOAD, fixed, moving, threads, "3"])["stdout"]
            )
    finally:
        spinner.kill()
        spinner.wait()
    results["warm_one_core_busy"] = busy

    # summary
    procs = results["processes"]
    calls = results["first_and_warm"]["calls"]
    warm = statistics.median(c["seconds"] for c in calls[1:])
    idle_warm = statistics.median(idle["warm"])
    summary = {
        "first_call_s": calls[0]["seconds"],
        "warm_call_s": warm,
        "first_over_warm": calls[0]["seconds"] / warm,
        "register_whole_process_s": procs["register"]["wall_s"],
        "register_over_warm": procs["register"]["wall_s"] / warm,
        "one_call_ours_s": procs["one_call_ours"]["wall_s"],
        "help_s": procs["help"]["wall_s"],
        "missing_file_s": procs["missing_file"]["wall_s"],
        "busy_over_idle": {k: statistics.median(v["warm"]) / idle_warm for k, v in busy.items()},
    }
    if "one_call_convexadam" in procs:
        ca = procs["one_call_convexadam"]["wall_s"]
        summary.update(
            convexadam_one_call_s=ca,
            register_over_convexadam=procs["register"]["wall_s"] / ca,
            one_call_ours_over_convexadam=procs["one_call_ours"]["wall_s"] / ca,
            register_fast_over_convexadam=procs["register_fast"]["wall_s"] / ca,
        )
    results["summary"] = summary
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        f"# Whole processes, first and warm calls ({Path(fixed).name} <- "
        f"{Path(moving).name}, median of {args.repeats})",
        "",
        f"Machine: {machine_line(results['machine'])}",
        "",
        "| what | kind | wall s | CPU s | peak MB |",
        "|---|---|---|---|---|",
    ]
    for key, kind in (
        ("register", "whole process"),
        ("register_fast", "whole process"),
        ("one_call_ours", "whole process"),
        ("one_call_convexadam", "whole process"),
        ("help", "whole process"),
        ("missing_file", "whole process"),
    ):
        if key in procs:
            p = procs[key]
            lines.append(
                f"| {key.replace('_', ' ')} | {kind} | {p['wall_s']:.2f} | "
                f"{p['cpu_s']:.2f} | {p['peak_mb']:.0f} |"
            )
    lines.append(f"| itk.samconvex_registration | first call | {calls[0]['seconds']:.2f} | | |")
    lines.append(f"| itk.samconvex_registration | warm call | {warm:.2f} | | |")
    lines += [
        "",
        "Ratios: "
        + ", ".join(
            f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
            for k, v in summary.items()
            if k.endswith(("over_warm", "over_convexadam"))
        ),
        "",
        "Busy core (warm time with one core busy / idle warm time): "
        + ", ".join(f"threads {k}: {v:.2f}" for k, v in summary["busy_over_idle"].items()),
        "",
        "ITK modules loaded by the first call: "
        + ", ".join(results["first_and_warm"]["itk_modules_loaded_by_first_call"] or ["none"]),
    ]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
