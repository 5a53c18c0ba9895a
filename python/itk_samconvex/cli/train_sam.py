"""``samconvex train-sam CT_DIR --out sam.pt``: train the SAM embedding self-supervised."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import EXIT_OK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ct_dir", nargs="?", help="folder of CT images (searched recursively)")
    parser.add_argument("--out", required=True, help="checkpoint to write (and resume from)")
    parser.add_argument(
        "--export-weights",
        metavar="FILE",
        help="do not train: write the weights of --out to FILE for inference (no optimizer "
        "state, float16; what the package ships)",
    )
    parser.add_argument(
        "--loss-plot",
        metavar="PNG",
        help="do not train: plot the loss curve of --out (its OUT.log.csv) to PNG",
    )
    parser.add_argument(
        "--width",
        type=int,
        default=64,
        help="backbone base width (64 = published architecture; 16 or 24 train on a CPU)",
    )
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument(
        "--patch",
        type=int,
        nargs=3,
        default=[32, 96, 96],
        metavar=("Z", "Y", "X"),
        help="view size in voxels (z y x)",
    )
    parser.add_argument("--volumes-per-step", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=0.02)
    parser.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="MINUTES",
        help="stop (and save) after this many minutes",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-resume", action="store_true", help="start from scratch")
    parser.add_argument(
        "--hard-mining-start",
        type=int,
        default=2000,
        help="iterations with random negatives before hard-negative mining",
    )
    parser.add_argument(
        "--cpu-loss", action="store_true", help="smaller negative counts (fits CPU training)"
    )
    parser.add_argument(
        "--input-spacing",
        type=float,
        default=2.0,
        metavar="MM",
        help="isotropic spacing the network is fed (published: 2 mm); the loss radii scale with it",
    )
    parser.add_argument(
        "--snapshot-every",
        type=int,
        default=None,
        metavar="N",
        help="also keep a copy of the weights every N iterations (for choosing "
        "one on validation data)",
    )
    parser.add_argument(
        "--split", default=None, help="train on this split of CT_DIR/corpus.json only (e.g. train)"
    )


def run(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from ..apps.training.losses import LossSettings
    from ..apps.training.train import TrainSettings, train_sam

    if args.export_weights:
        from ..apps.training.checkpoints import export_weights

        written = export_weights(args.out, args.export_weights)
        if not args.quiet:
            print(f"wrote {written} ({written.stat().st_size / 1e6:.1f} MB)")
        return EXIT_OK
    if args.loss_plot:
        from ..apps.training.plot import plot_loss

        written = plot_loss(f"{args.out}.log.csv", args.loss_plot, overwrite=True)
        if not args.quiet:
            print(f"wrote {written}")
        return EXIT_OK
    if args.ct_dir is None:
        from ..errors import InputError

        raise InputError(
            "train-sam needs CT_DIR, the folder of CT images to train on (or "
            "--export-weights FILE to export a trained --out)."
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    loss = LossSettings()
    if args.cpu_loss:
        loss = dataclasses.replace(
            loss,
            local_queries=50,
            local_hard=500,
            local_negatives=128,
            global_hard=100,
            global_negatives=64,
            global_batch_negatives=100,
        )
    loss = loss.scaled(args.input_spacing / 2.0)
    settings = TrainSettings(
        width=args.width,
        patch=tuple(args.patch),
        volumes_per_step=args.volumes_per_step,
        input_spacing_mm=args.input_spacing,
        split=args.split,
        snapshot_every=args.snapshot_every,
        iterations=args.iterations,
        learning_rate=args.learning_rate,
        seed=args.seed,
        time_budget_s=None if args.time_budget is None else args.time_budget * 60.0,
        loss=loss,
        hard_mining_start=args.hard_mining_start,
    )
    if Path(args.out).exists() and args.no_resume:
        raise FileExistsError(
            f"{args.out} exists; remove it or drop --no-resume to continue training from it."
        )
    path = train_sam(
        args.ct_dir, args.out, settings, resume=not args.no_resume, progress=not args.quiet
    )
    if not args.quiet:
        print(f"wrote {path} (loss log: {path.name}.log.csv)")
    return EXIT_OK


__all__ = ["add_arguments", "run"]
