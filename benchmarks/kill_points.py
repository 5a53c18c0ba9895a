"""Kill ``samconvex register`` with SIGKILL at five points, then re-run: nothing is lost.

The points: while it reads the fixed image, during the registration, and during each of three
writes (``transform.h5``, ``warped.nii.gz``, ``report.json``: the moment a temporary sibling of
that output appears in the output folder). After each kill the command is run again, once
without and once with ``--overwrite``. Checked every time:

* the output folder holds only complete outputs: every file there opens; after the re-run
  with ``--overwrite`` it is the full set listed in ``report.json``; the re-run without it
  completes a folder the killed run left empty and refuses (exit 2, naming the files) one
  where the killed run had already written outputs;
* no temporary file of ours (``.samconvex-tmp.*``) is left after the re-run;
* every input is byte-identical to what it was before.

Usage: ``python benchmarks/kill_points.py [--out benchmarks/results/kill_points]`` (a phantom
pair is written to disk first; nothing of ``../shared`` is needed). Writes ``results.json`` and
prints a table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

POINTS = (
    "reading",
    "registration",
    "write transform.h5",
    "write warped.nii.gz",
    "write report.json",
)
TEMP = ".samconvex-tmp."


def _digest(paths: list[Path]) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def _command(inputs: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "itk_samconvex.cli",
        "register",
        str(inputs["fixed"]),
        str(inputs["moving"]),
        "-o",
        str(out),
        "--moving-labels",
        str(inputs["moving_labels"]),
        "--fixed-labels",
        str(inputs["fixed_labels"]),
        "--set",
        "working_spacing_mm=4.0",
        "-q",
        *extra,
    ]


def _has_open(pid: int, path: Path) -> bool:
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                    return True
            except OSError:
                continue
    except OSError:
        pass
    return False


def _stopped(pid: int) -> bool:
    """The process stopped itself (state T): its temporary file is complete, not renamed."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
    except (OSError, IndexError):
        return False


def _kill_at(point: str, inputs: dict[str, Path], out: Path, registration_at: float) -> dict:
    """Start a run and SIGKILL it at ``point``; return what was seen.

    A write point is hit when a temporary sibling of that output appears (caught while the
    bytes are being written) or, for a write too fast to catch, when the process stops
    itself with the temporary complete and not yet renamed
    (``SAMCONVEX_STOP_BEFORE_RENAME``, see ``edge/io/atomic.py``).
    """
    start = time.perf_counter()
    env = dict(os.environ)
    if point.startswith("write "):
        env["SAMCONVEX_STOP_BEFORE_RENAME"] = point.split(" ", 1)[1]
    process = subprocess.Popen(
        _command(inputs, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    how = None
    killed_at = None
    while process.poll() is None:
        now = time.perf_counter() - start
        if point == "reading":
            hit = _has_open(process.pid, inputs["fixed"].resolve())
        elif point == "registration":
            hit = now >= registration_at
        else:
            name = point.split(" ", 1)[1]
            if _stopped(process.pid):
                hit, how = True, "temporary complete, before the rename"
            else:
                hit = out.is_dir() and any(
                    p.name.startswith(TEMP) and p.name.endswith(name) for p in out.iterdir()
                )
                how = "while writing the temporary" if hit else None
        if hit:
            os.kill(process.pid, signal.SIGKILL)
            killed_at = now
            break
        time.sleep(0.0005)
    process.wait()
    left = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    return {
        "point": point,
        "killed_at_s": killed_at,
        "killed_how": how,
        "exit": process.returncode,
        "left_after_kill": left,
    }


def _complete(out: Path) -> tuple[bool, str]:
    report = out / "report.json"
    if not report.is_file():
        return False, "no report.json"
    listed = json.loads(report.read_text())["outputs"]
    missing = [k for k, v in listed.items() if not Path(v).is_file()]
    if missing:
        return False, f"missing {missing}"
    import itk

    itk.transformread(str(out / "transform.h5"))
    itk.imread(str(out / "warped.nii.gz"))
    return True, "complete"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results/kill_points")
    args = parser.parse_args()
    out_root = Path(args.out)
    out_root.mkdir(parents=True, exist_ok=True)
    from itk_samconvex.apps.phantom import make_phantom_pair
    from itk_samconvex.edge.io import write_image, write_json

    inputs_dir = out_root / "inputs"
    inputs_dir.mkdir(exist_ok=True)
    pair = make_phantom_pair()
    inputs = {}
    for name in ("fixed", "moving", "fixed_labels", "moving_labels"):
        inputs[name] = inputs_dir / f"{name}.nii.gz"
        write_image(getattr(pair, name), inputs[name], overwrite=True)
    before = _digest(list(inputs.values()))
    # a clean run tells when the registration is under way
    clean = out_root / "clean"
    subprocess.run(_command(inputs, clean, "--overwrite"), check=True)
    timings = json.loads((clean / "report.json").read_text())["timings_s"]
    registration_at = (
        timings["startup"]
        + timings.get("arguments", 0)
        + timings["imports"]
        + timings["reading"]
        + 0.5 * timings["registration"]
    )
    rows = []
    for index, point in enumerate(POINTS):
        for rerun in ("without --overwrite", "with --overwrite"):
            out = out_root / f"run{index}-{'overwrite' if 'with ' in rerun else 'plain'}"
            if out.exists():
                import shutil

                shutil.rmtree(out)
            row = _kill_at(point, inputs, out, registration_at)
            extra = ("--overwrite",) if "with " in rerun else ()
            if row["killed_at_s"] is None:
                raise RuntimeError(f"the run ended before it could be killed at {point}")
            again = subprocess.run(_command(inputs, out, *extra), capture_output=True, text=True)
            complete, how = _complete(out)
            outputs_left = [n for n in row["left_after_kill"] if not n.startswith(TEMP)]
            # expected: a complete folder, except a plain re-run over outputs the killed run
            # had already renamed into place, which must refuse (exit 2) and name them
            if extra or not outputs_left:
                as_expected = complete and again.returncode == 0
            else:
                as_expected = again.returncode == 2 and all(n in again.stderr for n in outputs_left)
                how = f"refused, naming {', '.join(outputs_left)}" if as_expected else how
            temps = [p.name for p in out.iterdir() if p.name.startswith(TEMP)]
            row.update(
                rerun=rerun,
                rerun_exit=again.returncode,
                rerun_error=again.stderr.strip()[-300:],
                complete=complete,
                detail=how,
                stale_temps=temps,
                inputs_unchanged=_digest(list(inputs.values())) == before,
                as_expected=as_expected,
            )
            rows.append(row)
            print(
                f"{point:22s} {rerun:22s} killed at {row['killed_at_s']:6.2f} s"
                f"{' (' + row['killed_how'] + ')' if row['killed_how'] else ''}, "
                f"left {len(row['left_after_kill'])} file(s) ({', '.join(row['left_after_kill'])});"
                f" re-run exit {again.returncode}: {how}, stale temps {temps}, inputs "
                f"{'unchanged' if row['inputs_unchanged'] else 'CHANGED'}"
            )
    ok = all(r["as_expected"] and not r["stale_temps"] and r["inputs_unchanged"] for r in rows)
    print(f"{len(rows)} kill/re-run cases: {'all as expected' if ok else 'FAILURES above'}")
    write_json(
        out_root / "results.json",
        {"points": list(POINTS), "rows": rows, "all_as_expected": ok},
        overwrite=True,
    )


if __name__ == "__main__":
    main()
