"""``samconvex train-sam CT_DIR --out ckpt.pt``: the SAM self-supervised recipe.

Per step: ``volumes_per_step`` volumes, two randomly scaled and cropped views each
(``views.sample_view_pair``); the network embeds all views; local InfoNCE on the stride-2
grid and global InfoNCE on the (4, 16, 16) grid (``losses``), both directions, with
hard-negative mining (ranked by the local + upsampled global embedding) and, for the global
loss, random negatives from the other volumes of the step. SGD (lr 0.02, momentum 0.9,
weight decay 1e-4) with a linear warm-up. Seeded, resumable from its own checkpoint (model,
optimizer, iteration, random states, loss log), checkpoints in the published key layout
plus the architecture in ``meta`` so ``load_sam`` reads them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...edge.io import write_text
from ...errors import InputError
from ...solver.features.sam import (
    GLOBAL_OFFSET,
    GLOBAL_STRIDE,
    LOCAL_OFFSET,
    LOCAL_STRIDE,
    PUBLISHED_WIDTH,
    SAMNetwork,
    preprocess,
)
from .checkpoints import save_sam
from .losses import LossSettings, directional_loss
from .views import Volume, embedding_positions, find_ct_files, load_volume, sample_view_pair

logger = logging.getLogger(__name__)


@dataclass
class TrainSettings:
    """Training parameters; defaults are the published recipe (width 64, 32x96x96 views)."""

    width: int = PUBLISHED_WIDTH
    patch: tuple[int, int, int] = (32, 96, 96)  # z, y, x voxels at ~input_spacing_mm
    # isotropic spacing the network is fed (published: 2 mm); the loss radii in mm scale
    # with it (LossSettings.scaled), so the recipe is the same in voxels
    input_spacing_mm: float = 2.0
    split: str | None = None  # corpus.json split to train on (None: every CT found)
    volumes_per_step: int = 3
    iterations: int = 20000
    learning_rate: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup: int = 500
    warmup_ratio: float = 1e-3
    # Random negatives before this iteration, hard-mined ones after. Not in the published
    # recipe, which starts from ImageNet-inflated weights: from a random initialisation the
    # hardest negatives are more similar than the positives, and the easiest way down is a
    # constant embedding (loss ln(K + 1)); random negatives first avoid that collapse.
    hard_mining_start: int = 2000
    seed: int = 0
    checkpoint_every: int = 50
    snapshot_every: int | None = None  # also keep ``out`` as ``<stem>.iterN<suffix>`` every N
    time_budget_s: float | None = None
    loss: LossSettings = field(default_factory=LossSettings)


def _lr(settings: TrainSettings, iteration: int) -> float:
    if iteration >= settings.warmup:
        return settings.learning_rate
    ratio = settings.warmup_ratio + (1 - settings.warmup_ratio) * iteration / settings.warmup
    return settings.learning_rate * ratio


def _flat(x: torch.Tensor) -> torch.Tensor:
    """(C, Z, Y, X) -> (Z*Y*X, C)."""
    return x.flatten(1).t()


def step_loss(
    network: SAMNetwork,
    pairs,
    settings: TrainSettings,
    generator: torch.Generator,
    hard_mining: bool = True,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss of one step over view pairs (list of ``ViewPair``)."""
    images = torch.cat([p.images for p in pairs])  # (2V, 1, Z, Y, X), views interleaved
    local, glob = network(preprocess(images))
    lshape, gshape = tuple(local.shape[2:]), tuple(glob.shape[2:])
    up = F.normalize(F.interpolate(glob, size=lshape, mode="trilinear", align_corners=False), dim=1)
    mine_local = F.normalize(torch.cat([local, up], 1), dim=1)
    ls = settings.loss
    local_terms, global_terms = [], []
    flat_glob = [_flat(glob[i]) for i in range(len(images))]
    for v, pair in enumerate(pairs):
        grids = []
        for view in (0, 1):
            i = 2 * v + view
            corner, spacing = pair.corners[view], pair.spacings[view]
            grids.append(
                {
                    "local": (
                        _flat(local[i]),
                        _flat(mine_local[i]),
                        embedding_positions(
                            corner, spacing, lshape, LOCAL_STRIDE, LOCAL_OFFSET
                        ).reshape(-1, 3),
                        {
                            "corner": corner,
                            "spacing": spacing,
                            "stride": LOCAL_STRIDE,
                            "offset": LOCAL_OFFSET,
                            "shape": lshape,
                        },
                    ),
                    "global": (
                        flat_glob[i],
                        flat_glob[i],
                        embedding_positions(
                            corner, spacing, gshape, GLOBAL_STRIDE, GLOBAL_OFFSET
                        ).reshape(-1, 3),
                        {
                            "corner": corner,
                            "spacing": spacing,
                            "stride": GLOBAL_STRIDE,
                            "offset": GLOBAL_OFFSET,
                            "shape": gshape,
                        },
                    ),
                }
            )
        others = [flat_glob[j] for j in range(len(images)) if j // 2 != v]
        extra = None
        if others:
            pool = torch.cat(others)
            pick = torch.randperm(len(pool), generator=generator)[: ls.global_batch_negatives]
            extra = pool[pick]
        for a, b in ((0, 1), (1, 0)):
            qe, qm, qp, _ = grids[a]["local"]
            oe, om, op, og = grids[b]["local"]
            term = directional_loss(
                qe,
                qp,
                qm,
                oe,
                op,
                om,
                og,
                ls.local_positive_mm,
                ls.local_ignore_mm,
                ls.local_hard,
                ls.local_negatives,
                ls.local_queries,
                ls.temperature,
                generator,
                hard_mining=hard_mining,
            )
            if term is not None:
                local_terms.append(term)
            qe, qm, qp, _ = grids[a]["global"]
            oe, om, op, og = grids[b]["global"]
            term = directional_loss(
                qe,
                qp,
                qm,
                oe,
                op,
                om,
                og,
                ls.global_positive_mm,
                ls.global_ignore_mm,
                ls.global_hard,
                ls.global_negatives,
                ls.local_queries,
                ls.temperature,
                generator,
                z_limit_mm=ls.global_z_mm[a],
                extra_negatives=extra,
                hard_mining=hard_mining,
            )
            if term is not None:
                global_terms.append(term)
    zero = local.sum() * 0.0
    local_loss = torch.stack(local_terms).mean() if local_terms else zero
    global_loss = torch.stack(global_terms).mean() if global_terms else zero
    return local_loss + global_loss, {
        "local": float(local_loss.detach()),
        "global": float(global_loss.detach()),
    }


def _load_resume(
    path: Path, network: SAMNetwork, optimizer: torch.optim.Optimizer, settings: TrainSettings
) -> tuple[int, list[dict], dict | None]:
    state = torch.load(path, map_location="cpu", weights_only=False)
    meta = state.get("meta", {})
    width = meta.get("architecture", {}).get("width")
    if width != settings.width:
        raise InputError(
            f"{path} holds a width-{width} SAM; resume with --width {width} or "
            "choose another --out."
        )
    spacing = meta.get("architecture", {}).get("input_spacing_mm", 2.0)
    if float(spacing) != settings.input_spacing_mm:
        raise InputError(
            f"{path} was trained at --input-spacing {spacing}; resume with that "
            "spacing or choose another --out."
        )
    network.load_state_dict(state["state_dict"])
    if "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    return int(meta.get("iteration", 0)), list(meta.get("loss_log", [])), state.get("rng")


def training_files(ct_dir: str | Path, split: str | None) -> list[Path]:
    """CT files to train on: all under ``ct_dir``, or one split of its ``corpus.json``.

    ``corpus.json`` (as in ``shared/data/corpus/openkbp``) lists ``volumes`` with ``ct`` (a
    file name relative to ``ct_dir``) and ``split``.
    """
    if split is None:
        return find_ct_files(ct_dir)
    import json

    index = Path(ct_dir) / "corpus.json"
    if not index.is_file():
        raise InputError(
            f"--split {split} needs {index} (a corpus index with 'volumes', each "
            "with 'ct' and 'split'); drop --split to train on every CT found."
        )
    entries = json.loads(index.read_text(encoding="utf-8")).get("volumes", [])
    files = [Path(ct_dir) / e["ct"] for e in entries if e.get("split") == split]
    if not files:
        splits = sorted({str(e.get("split")) for e in entries})
        raise InputError(f"{index} has no volume in split {split!r}; its splits are {splits}.")
    return files


def train_sam(
    ct_dir: str | Path,
    out: str | Path,
    settings: TrainSettings | None = None,
    resume: bool = True,
    progress: bool = True,
) -> Path:
    """Train SAM on the CT images under ``ct_dir``; write ``out`` (and ``out``.log.csv)."""
    settings = settings or TrainSettings()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    volumes: list[Volume] = [
        v
        for p in training_files(ct_dir, settings.split)
        if (v := load_volume(p, spacing_mm=settings.input_spacing_mm))
    ]
    if not volumes:
        raise InputError(
            f"no CT volume found under {ct_dir} (images with HU values); point "
            "CT_DIR at a folder of CT scans."
        )
    logger.info("training SAM width %d on %d volumes", settings.width, len(volumes))
    torch.manual_seed(settings.seed)
    network = SAMNetwork(settings.width, settings.input_spacing_mm).train()
    optimizer = torch.optim.SGD(
        network.parameters(),
        lr=settings.learning_rate,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
    )
    start, log, rng_state = 0, [], None
    if resume and out.is_file():
        start, log, rng_state = _load_resume(out, network, optimizer, settings)
        logger.info("resuming %s at iteration %d", out, start)
    rng = np.random.default_rng(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    if rng_state is not None:
        rng.bit_generator.state = rng_state["numpy"]
        generator.set_state(rng_state["torch"])
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=settings.iterations, initial=start, desc="train-sam", unit="it", file=sys.stderr
        )
    began = time.perf_counter()

    def save(iteration: int) -> None:
        meta = {
            "iteration": iteration,
            "loss_log": log,
            "seed": settings.seed,
            "settings": _settings_dict(settings),
            "volumes": [v.name for v in volumes],
        }
        save_sam(
            network,
            out,
            meta,
            optimizer=optimizer.state_dict(),
            rng={"numpy": rng.bit_generator.state, "torch": generator.get_state()},
        )
        _write_log(out, log)

    iteration = start
    for iteration in range(start, settings.iterations):
        for group in optimizer.param_groups:
            group["lr"] = _lr(settings, iteration)
        count = min(settings.volumes_per_step, len(volumes))
        chosen = rng.choice(len(volumes), size=count, replace=False)
        pairs = [sample_view_pair(volumes[i], settings.patch, rng) for i in chosen]
        loss, parts = step_loss(
            network, pairs, settings, generator, hard_mining=iteration >= settings.hard_mining_start
        )
        optimizer.zero_grad(set_to_none=True)
        if loss.requires_grad:
            loss.backward()
            optimizer.step()
        log.append(
            {
                "iteration": iteration + 1,
                "loss": float(loss.detach()),
                **parts,
                "seconds": time.perf_counter() - began,
            }
        )
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        done = iteration + 1
        budget_over = (
            settings.time_budget_s is not None
            and time.perf_counter() - began > settings.time_budget_s
        )
        if done % settings.checkpoint_every == 0 or done == settings.iterations or budget_over:
            save(done)
        if settings.snapshot_every and done % settings.snapshot_every == 0:
            save_sam(
                network,
                out.with_name(f"{out.stem}.iter{done}{out.suffix}"),
                {"iteration": done, "seed": settings.seed, "settings": _settings_dict(settings)},
            )
        if budget_over:
            logger.info("time budget reached at iteration %d", done)
            break
    else:
        save(settings.iterations)
    if bar is not None:
        bar.close()
    return out


def _settings_dict(settings: TrainSettings) -> dict:
    data = dataclasses.asdict(settings)
    data["patch"] = list(settings.patch)
    data["loss"]["global_z_mm"] = list(settings.loss.global_z_mm)
    return data


def _write_log(out: Path, log: list[dict]) -> None:
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=["iteration", "loss", "local", "global", "seconds"])
    writer.writeheader()
    writer.writerows(log)
    write_text(out.with_name(out.name + ".log.csv"), buffer.getvalue(), overwrite=True)
