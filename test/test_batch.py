"""``samconvex batch`` / ``register_many`` on a real Dask ``LocalCluster`` of worker processes.

The cluster tests share one module-scoped cluster (2 worker processes, 1 thread each) so the
per-process import cost of ITK and torch is paid once per worker. Pairs are small phantoms
(40 x 36 x 32 voxels at 8 mm) registered with the ``fast`` preset at 8 mm working spacing and
5 Adam steps, about a second each once a worker is warm.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import shutil
import sys
from pathlib import Path

import itk
import numpy as np
import pytest

from itk_samconvex.apps.batch import cached_extractor, commit_attempt, is_complete, register_many
from itk_samconvex.apps.batch.commit import TMP_DIR, OutputLock
from itk_samconvex.apps.batch.manifest import ManifestError, load_pairs
from itk_samconvex.apps.outputs import OUTPUT_NAMES
from itk_samconvex.apps.phantom import make_phantom_pair
from itk_samconvex.cli import main
from itk_samconvex.edge.io import read_landmarks
from itk_samconvex.edge.space import Grid
from itk_samconvex.errors import InputError, SAMConvexError
from itk_samconvex.solver.config import preset_config

distributed = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")

# hooks defined here run on the workers, which cannot import this test module
cloudpickle.register_pickle_by_value(sys.modules[__name__])

FAST = {"working_spacing_mm": 8, "io_iterations": 5}
ALL_OUTPUTS = {
    "transform.h5",
    "warped.nii.gz",
    "warped_labels.nii.gz",
    "qc.png",
    "qc.html",
    "report.json",
}
IMAGES = ("fixed", "moving", "fixed_labels", "moving_labels")


# ------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """Four phantom pairs on disk (seeds 0..3) and landmarks for pair 0."""
    folder = tmp_path_factory.mktemp("batch_inputs")
    for k in range(4):
        pair = make_phantom_pair(size=(40, 36, 32), spacing=(8.0, 8.0, 8.0), seed=k)
        for name in IMAGES:
            itk.imwrite(getattr(pair, name), str(folder / f"{name}{k}.nii.gz"), compression=True)
        if k == 0:
            truth = pair.truth
    # landmarks: the 6 fixed voxel centres that move most; moving points = p + u(p)
    magnitude = np.linalg.norm(truth, axis=-1)
    flat = np.argsort(magnitude, axis=None)[-6:]
    zyx = np.stack(np.unravel_index(flat, magnitude.shape), axis=1)
    matrix = Grid.of(itk.imread(str(folder / "fixed0.nii.gz"))).index_to_physical
    fixed_pts = (matrix @ np.c_[zyx[:, ::-1], np.ones(len(zyx))].T).T[:, :3]
    moving_pts = fixed_pts + truth[zyx[:, 0], zyx[:, 1], zyx[:, 2]]
    for name, pts in (("fixed_landmarks0.csv", fixed_pts), ("moving_landmarks0.csv", moving_pts)):
        np.savetxt(folder / name, pts, delimiter=",", header="x,y,z", comments="")
    return {"folder": folder, "tre_before": float(magnitude.flat[flat].mean())}


@pytest.fixture(scope="module")
def client():
    """A real LocalCluster: 2 worker processes with 1 thread each.

    Started without the ``samconvex_pair`` resource on purpose: ``register_many`` must add it
    through its worker plugin, as on an existing cluster.
    """
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def write_csv(path: Path, rows: list[dict]) -> Path:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def pair_row(folder: Path, k: int, name: str, fixed: Path | None = None) -> dict:
    row = {
        "fixed": str(fixed or folder / f"fixed{k}.nii.gz"),
        "moving": str(folder / f"moving{k}.nii.gz"),
        "fixed_labels": str(folder / f"fixed_labels{k}.nii.gz"),
        "moving_labels": str(folder / f"moving_labels{k}.nii.gz"),
        "output": name,
        **FAST,
    }
    return row


def mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


# hooks (run on the workers) -------------------------------------------------------------


def fail_once(marker: str, target: str, name: str, stage: str, folder: Path) -> None:
    """Raise a transient MemoryError the first time ``target`` starts."""
    if name == target and stage == "start" and not os.path.exists(marker):
        Path(marker).write_text("failed once", encoding="utf-8")
        raise MemoryError("injected: not enough memory for this pair right now")


def kill_worker_once(marker: str, target: str, name: str, stage: str, folder: Path) -> None:
    """Kill this worker process when ``target``'s outputs are written but not committed."""
    if name == target and stage == "before_commit" and not os.path.exists(marker):
        from distributed import get_worker

        Path(marker).write_text(
            json.dumps(
                {
                    "worker": get_worker().address,
                    "pid": os.getpid(),
                    "files": sorted(os.listdir(folder)),
                }
            ),
            encoding="utf-8",
        )
        os._exit(1)


# ------------------------------------------------------------------------------------------
# cluster tests


def test_failed_pair_is_isolated_then_resumed(inputs, client, tmp_path, capsys):
    folder = inputs["folder"]
    broken = tmp_path / "fixed2.nii.gz"
    good = (folder / "fixed2.nii.gz").read_bytes()
    broken.write_bytes(good[: len(good) // 2])  # truncated gzip: ITK alone reads it silently
    rows = [pair_row(folder, k, f"p{k}", broken if k == 2 else None) for k in range(4)]
    rows[0].update(
        fixed_landmarks=str(folder / "fixed_landmarks0.csv"),
        moving_landmarks=str(folder / "moving_landmarks0.csv"),
    )
    manifest = write_csv(tmp_path / "pairs.csv", rows)
    out = tmp_path / "out"
    hook = functools.partial(fail_once, str(tmp_path / "p1.failed-once"), "p1")

    summary = register_many(
        manifest, client, output_dir=out, preset="fast", retries=1, progress=False, pair_hook=hook
    )

    assert summary.counts == {"done": 3, "skipped": 0, "failed": 1}
    failed = summary["p2"]
    assert failed["status"] == "failed"
    assert failed["error"].startswith(
        f"InputError: fixed image {broken} is a damaged or truncated gzip file"
    )
    assert failed["attempts"] == 1  # bad input: never retried
    error_text = Path(failed["error_file"]).read_text(encoding="utf-8")
    assert "Traceback" in error_text and "EOFError" in error_text
    assert summary["p1"]["status"] == "done" and summary["p1"]["attempts"] == 2  # transient
    for name in ("p0", "p1", "p3"):
        row = summary[name]
        assert {p.name for p in (out / name).iterdir()} == ALL_OUTPUTS
        assert is_complete(out / name)
        report = json.loads((out / name / "report.json").read_text())
        assert report["outputs"]["transform"] == str(out / name / "transform.h5")
        assert report["parameters"]["io_iterations"] == 5
        assert report["parameters"]["working_spacing_mm"] == 8.0
        assert report["batch"]["torch_threads"] == 1  # worker threads / pairs per worker
        assert row["jacobian_min"] == report["evaluation"]["jacobian_deformable"]["min"] > 0
        assert row["jacobian_percent_nonpositive"] == 0.0
        assert 0 < row["sdlogj"] < 0.5
        mean = report["evaluation"]["labels"]["mean"]
        assert row["dice_mean_after"] == mean["dice_after"] > 0.6
        assert row["dice_mean_before_identity"] == mean["dice_before_identity"]
        assert row["worker"].startswith("tcp://")
        assert row["peak_rss_mb"] > 100
    tre = summary["p0"]
    assert tre["tre_mean_before_identity_mm"] == pytest.approx(inputs["tre_before"], abs=1e-6)
    assert tre["tre_mean_after_mm"] < tre["tre_mean_before_identity_mm"]
    assert summary["p1"]["tre_mean_after_mm"] is None
    assert not (out / TMP_DIR).exists()
    with open(out / "summary.csv", newline="") as handle:
        table = {r["name"]: r for r in csv.DictReader(handle)}
    assert [table[n]["status"] for n in ("p0", "p1", "p2", "p3")] == [
        "done",
        "done",
        "failed",
        "done",
    ]
    assert table["p2"]["error"] == failed["error"]
    assert json.loads((out / "summary.json").read_text())["counts"]["failed"] == 1

    # re-run through the CLI on the same cluster after repairing the input: only p2 runs
    before = {name: mtimes(out / name) for name in ("p0", "p1", "p3")}
    shutil.copyfile(folder / "fixed2.nii.gz", broken)
    code = main(
        [
            "batch",
            str(manifest),
            "-o",
            str(out),
            "--scheduler",
            client.scheduler.address,
            "--preset",
            "fast",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "batch: 1 done, 3 skipped, 0 failed" in captured.out
    again = json.loads((out / "summary.json").read_text())
    status = {row["name"]: (row["status"], row["attempts"], row["note"]) for row in again["pairs"]}
    assert status == {
        "p0": ("skipped", 0, None),
        "p1": ("skipped", 0, None),
        "p2": ("done", 1, None),
        "p3": ("skipped", 0, None),
    }
    assert {name: mtimes(out / name) for name in ("p0", "p1", "p3")} == before
    assert {p.name for p in (out / "p2").iterdir()} == ALL_OUTPUTS
    assert not (out / "failures").exists()


def test_killed_worker_loses_and_duplicates_nothing(inputs, client, tmp_path):
    folder = inputs["folder"]
    manifest = write_csv(tmp_path / "pairs.csv", [pair_row(folder, k, f"k{k}") for k in range(4)])
    out = tmp_path / "out"
    # leftovers of an earlier killed run: a partial pair folder and a stale attempt folder
    (out / "k2").mkdir(parents=True)
    (out / "k2" / "transform.h5").write_bytes(b"partial")
    (out / TMP_DIR / "k1.0123456789ab").mkdir(parents=True)
    (out / TMP_DIR / "k1.0123456789ab" / "report.json").write_text("{}")
    marker = tmp_path / "killed.json"
    hook = functools.partial(kill_worker_once, str(marker), "k0")

    summary = register_many(
        manifest, client, output_dir=out, preset="fast", progress=False, pair_hook=hook
    )

    killed = json.loads(marker.read_text())
    assert "report.json" in killed["files"]  # killed after writing, before the rename
    assert summary.counts == {"done": 4, "skipped": 0, "failed": 0}
    report = json.loads((out / "k0" / "report.json").read_text())
    assert report["batch"]["pid"] != killed["pid"]  # rerun by another worker process
    assert sorted(p.name for p in out.iterdir()) == [
        ".samconvex-batch.lock",
        "k0",
        "k1",
        "k2",
        "k3",
        "summary.csv",
        "summary.json",
    ]
    for k in range(4):
        assert {p.name for p in (out / f"k{k}").iterdir()} == ALL_OUTPUTS
        report = json.loads((out / f"k{k}" / "report.json").read_text())
        assert report["batch"]["name"] == f"k{k}"
    assert (
        itk.transformread(str(out / "k2" / "transform.h5"))[0].GetNameOfClass()
        == "DisplacementFieldTransform"
    )
    rows = json.loads((out / "summary.json").read_text())["pairs"]
    assert sorted(row["name"] for row in rows) == ["k0", "k1", "k2", "k3"]
    lost = summary["k0"]
    assert lost["attempts"] == 2  # the attempt that died with its worker counts
    assert "lost with its worker" in lost["retried_because"]
    assert f"(pid {killed['pid']})" in lost["retried_because"]
    assert all(summary[f"k{k}"]["attempts"] == 1 for k in (1, 2, 3))


@pytest.mark.slow
def test_cli_starts_its_own_local_cluster(inputs, tmp_path, capsys):
    folder = inputs["folder"]
    manifest = write_csv(tmp_path / "pairs.csv", [pair_row(folder, 3, "solo")])
    out = tmp_path / "out"
    code = main(
        [
            "batch",
            str(manifest),
            "-o",
            str(out),
            "--workers",
            "4",
            "--threads-per-worker",
            "2",
            "--dashboard-address",
            ":0",
            "--no-qc",
            "--preset",
            "fast",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "dask dashboard: http://" in captured.err
    assert "batch: 1 done, 0 skipped, 0 failed" in captured.out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["workers"] == 1  # never more workers than pairs to run
    report = json.loads((out / "solo" / "report.json").read_text())
    assert report["batch"]["torch_threads"] == 2
    assert {p.name for p in (out / "solo").iterdir()} == ALL_OUTPUTS - {"qc.png", "qc.html"}


# ------------------------------------------------------------------------------------------
# no cluster: manifests, commits, caches


def test_manifest_problems_are_reported_together(inputs, tmp_path):
    folder = inputs["folder"]
    good = pair_row(folder, 0, "a")
    missing = {**pair_row(folder, 1, "b"), "moving": "nope/moving.nii.gz"}
    manifest = write_csv(
        tmp_path / "pairs.csv",
        [
            good,
            missing,
            {**pair_row(folder, 2, "a")},
            {**pair_row(folder, 3, "c"), "io_iterations": "many"},
        ],
    )
    with pytest.raises(ManifestError) as caught:
        load_pairs(manifest)
    problems = caught.value.problems
    assert len(problems) == 3, problems
    assert problems[0] == (
        f"line 3: moving file {tmp_path / 'nope' / 'moving.nii.gz'} does "
        f"not exist; check the path (relative paths are relative to "
        f"{tmp_path})"
    )
    assert problems[1].startswith(
        "line 5: parameter io_iterations='many' has the wrong type (expected int)"
    )
    assert problems[2].startswith("line 2, line 4: output name 'a' is used by 2 pairs")
    assert str(caught.value).startswith(f"manifest {manifest} has 3 problem(s)")

    header = tmp_path / "header.csv"
    header.write_text("fixed,moving_image\nfixed0.nii.gz,moving0.nii.gz\n")
    with pytest.raises(ManifestError) as caught:
        load_pairs(header, check_files=False)
    assert caught.value.problems[0].startswith(
        "line 1 (header): missing required column(s) 'moving'"
    )
    assert "line 2: unknown key(s) ['moving_image']" in caught.value.problems[1]


def test_cli_reports_manifest_problems_with_exit_code_2(tmp_path, capsys):
    manifest = tmp_path / "pairs.csv"
    manifest.write_text("fixed,moving\nmissing_f.nii.gz,missing_m.nii.gz\n")
    code = main(["batch", str(manifest), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"manifest {manifest} has 2 problem(s)" in err
    assert f"line 2: fixed file {tmp_path / 'missing_f.nii.gz'} does not exist" in err
    assert not (tmp_path / "out").exists()  # nothing is created for a bad manifest


def test_an_input_inside_a_pairs_output_folder_is_refused(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "p").mkdir(parents=True)
    inside = out / "p" / "moving.nii.gz"  # the folder a commit or --overwrite replaces
    inside.write_bytes((inputs["folder"] / "moving0.nii.gz").read_bytes())
    before = inside.read_bytes()
    row = {**pair_row(inputs["folder"], 0, "p"), "moving": str(inside)}
    code = main(["batch", str(write_csv(tmp_path / "pairs.csv", [row])), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"moving {inside} lies inside the pair's output folder {out / 'p'}" in err
    assert "move the input elsewhere or choose another -o folder" in err
    assert inside.read_bytes() == before
    assert sorted(q.name for q in out.rglob("*")) == ["moving.nii.gz", "p"]


def test_json_manifest_defaults_relative_paths_and_overrides(inputs, tmp_path):
    folder = inputs["folder"]
    data = {
        "defaults": {"io_iterations": 7, "moving_labels": "moving_labels0.nii.gz"},
        "pairs": [
            {"fixed": "fixed0.nii.gz", "moving": "moving0.nii.gz"},
            {
                "fixed": "fixed1.nii.gz",
                "moving": "moving1.nii.gz",
                "io_iterations": 3,
                "instance_optimization": "false",
                "working_spacing_mm": 6,
            },
        ],
    }
    manifest = folder / "batch_test_manifest.json"
    manifest.write_text(json.dumps(data))
    try:
        pairs = load_pairs(manifest, preset_config("fast"))
    finally:
        manifest.unlink()
    assert [p.name for p in pairs] == ["fixed0__moving0", "fixed1__moving1"]
    assert pairs[0].files.moving_labels == str(folder / "moving_labels0.nii.gz")
    assert pairs[0].overrides == {"io_iterations": 7}
    assert pairs[1].overrides == {
        "io_iterations": 3,
        "instance_optimization": False,
        "working_spacing_mm": 6.0,
    }
    assert pairs[1].where == "pairs[1]"
    assert pairs[1].config(preset_config("fast")).working_spacing_mm == 6.0


def test_landmark_files(tmp_path):
    path = tmp_path / "points.csv"
    path.write_text("x,y,z\n1,2,3\n\n4.5,-5,6e1\n")
    assert read_landmarks(path).tolist() == [[1.0, 2.0, 3.0], [4.5, -5.0, 60.0]]
    path.write_text("1,2,3\n4,five,6\n")
    with pytest.raises(InputError, match=r"points\.csv has 2 numeric column\(s\) \(3 in all\)"):
        read_landmarks(path)


def _fake_outputs(folder: Path, tag: str) -> Path:
    folder.mkdir(parents=True)
    outputs = {}
    for key, name in OUTPUT_NAMES.items():
        if key != "report":
            (folder / name).write_text(tag)
            outputs[key] = str(folder / name)
    (folder / "report.json").write_text(json.dumps({"outputs": outputs, "tag": tag}))
    return folder


def test_racing_attempts_commit_exactly_once(tmp_path):
    final = tmp_path / "pair"
    tmp = tmp_path / TMP_DIR
    first = _fake_outputs(tmp / "pair.a", "first")
    second = _fake_outputs(tmp / "pair.b", "second")
    assert commit_attempt(first, final) is True
    assert commit_attempt(second, final) is False  # the loser discards its folder
    assert not second.exists() and not first.exists()
    assert json.loads((final / "report.json").read_text())["tag"] == "first"
    assert sorted(p.name for p in final.iterdir()) == sorted(OUTPUT_NAMES.values())
    # overwrite replaces the whole folder, leaving nothing aside
    third = _fake_outputs(tmp / "pair.c", "third")
    assert commit_attempt(third, final, overwrite=True) is True
    assert (final / "transform.h5").read_text() == "third"
    assert list(tmp.iterdir()) == []
    # an incomplete folder in the way is never taken for a finished pair
    shutil.rmtree(final)
    final.mkdir()
    (final / "transform.h5").write_text("partial")
    assert not is_complete(final)
    assert commit_attempt(_fake_outputs(tmp / "pair.d", "fourth"), final) is True
    assert (final / "transform.h5").read_text() == "fourth" and list(tmp.iterdir()) == []


def test_output_folder_lock_refuses_a_second_run(inputs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with (
        OutputLock(out),
        pytest.raises(SAMConvexError, match="another `samconvex batch` is writing"),
    ):
        register_many([pair_row(inputs["folder"], 0, "x")], output_dir=out, progress=False)


def test_extractor_is_cached_per_feature_setting():
    cfg = preset_config("fast")
    first = cached_extractor(cfg)
    assert cached_extractor(cfg.replace(io_iterations=3)) is first
    assert cached_extractor(cfg.replace(mind_radius=2)) is not first


# ------------------------------------------------------------------------------------------
# one scorer: register, batch and evaluate agree


def _scores_of_report(report: dict) -> dict:
    evaluation = report["evaluation"]
    labels = evaluation["labels"]
    return {
        "dice": {k: v["dice_after"] for k, v in labels["per_label"].items()},
        "dice_before_initial": labels["mean"]["dice_before_initial"],
        "dice_before_identity": labels["mean"]["dice_before_identity"],
        "tre": evaluation["landmarks"]["per_landmark_mm"]["after"],
        "tre_before_initial": evaluation["landmarks"]["tre_mm_before_initial"]["mean"],
    }


def test_register_batch_and_evaluate_report_the_same_scores(inputs, client, tmp_path):
    """Same pair, same transform file: every command gives the same Dice and TRE (one scorer,
    one landmark reader, the same three states)."""
    folder = inputs["folder"]
    shift = itk.TranslationTransform[itk.D, 3].New()
    shift.SetOffset([3.0, -2.0, 1.0])
    initial = tmp_path / "initial.tfm"
    itk.transformwrite([shift], str(initial))
    # the landmark files in a second convention the one reader must also accept: a header
    # naming the columns, an index column first
    for name in ("fixed_landmarks0.csv", "moving_landmarks0.csv"):
        points = np.loadtxt(folder / name, delimiter=",", skiprows=1)
        rows = "\n".join(f"{i},{p[0]},{p[1]},{p[2]}" for i, p in enumerate(points))
        (tmp_path / name).write_text(f"id,x,y,z\n{rows}\n")
    files = {
        "fixed": folder / "fixed0.nii.gz",
        "moving": folder / "moving0.nii.gz",
        "fixed_labels": folder / "fixed_labels0.nii.gz",
        "moving_labels": folder / "moving_labels0.nii.gz",
        "fixed_landmarks": tmp_path / "fixed_landmarks0.csv",
        "moving_landmarks": tmp_path / "moving_landmarks0.csv",
    }
    # samconvex register
    out = tmp_path / "register"
    argv = [
        "register",
        str(files["fixed"]),
        str(files["moving"]),
        "-o",
        str(out),
        "--no-qc",
        "--preset",
        "fast",
        "--set",
        "working_spacing_mm=8",
        "--set",
        "io_iterations=5",
        "--initial-transform",
        str(initial),
        "-q",
    ]
    for key in ("fixed_labels", "moving_labels", "fixed_landmarks", "moving_landmarks"):
        argv += [f"--{key.replace('_', '-')}", str(files[key])]
    assert main(argv) == 0
    registered = _scores_of_report(json.loads((out / "report.json").read_text()))
    # samconvex batch on the same pair
    row = {k: str(v) for k, v in files.items()}
    row.update(output="pair", initial_transform=str(initial), **FAST)
    summary = register_many(
        write_csv(tmp_path / "pairs.csv", [row]),
        client,
        preset="fast",
        output_dir=tmp_path / "batch",
        progress=False,
        qc=False,
    )
    batched_report = json.loads((tmp_path / "batch" / "pair" / "report.json").read_text())
    batched = _scores_of_report(batched_report)
    assert (
        summary["pair"]["dice_mean_after"]
        == batched_report["evaluation"]["labels"]["mean"]["dice_after"]
    )
    assert summary["pair"]["tre_mean_after_mm"] == pytest.approx(np.mean(batched["tre"]), abs=1e-12)
    # samconvex evaluate on each command's own transform file
    for folder_out, scores in ((out, registered), (tmp_path / "batch" / "pair", batched)):
        prefix = folder_out / "evaluation"
        argv = [
            "evaluate",
            str(files["fixed"]),
            str(folder_out / "transform.h5"),
            "--initial-transform",
            str(initial),
            "-o",
            str(prefix),
            "-q",
        ]
        for key in ("fixed_labels", "moving_labels", "fixed_landmarks", "moving_landmarks"):
            argv += [f"--{key.replace('_', '-')}", str(files[key])]
        assert main(argv) == 0
        evaluated = json.loads(prefix.with_suffix(".json").read_text())
        assert _scores_of_report({"evaluation": evaluated}) == scores
    # the pre-alignment states do not depend on the registration at all
    for key in ("dice_before_initial", "dice_before_identity", "tre_before_initial"):
        assert registered[key] == batched[key]
