"""SAM: the self-supervised anatomical embedding network of SAMConvex (notes/algorithm.md §2).

Architecture (input (N, 1, Z, Y, X), z first; ``w`` = base width, 64 as published):

* stem: 3x7x7 conv (padding 1, 3, 3) + BN + ReLU, 1 -> w channels, stride 1;
* layer1: 2 BasicBlocks with 1x3x3 convs, w channels, first stride (1, 2, 2);
  then a 2x1x1 max-pool with stride (2, 1, 1) -> ``out0`` at stride (2, 2, 2);
* layer2: 2 BasicBlocks 1x3x3, 2w channels, first stride (1, 2, 2) -> stride (2, 4, 4);
* layer3: 2 BasicBlocks 3x3x3 (I3D-inflated), 4w channels, first stride (1, 2, 2) -> (2, 8, 8);
* layer4: 2 BasicBlocks 3x3x3, 8w channels, first stride (2, 2, 2) -> (4, 16, 16);
* neck (FPN on out0..out2): 1x1x1 laterals to 2w channels, nearest top-down upsampling and
  sums, one 3x3x3 conv on the finest sum -> **local** embedding, stride (2, 2, 2);
* read-out head on out3: 1x1x1 lateral 8w -> 2w, one 3x3x3 conv -> **global** embedding,
  stride (4, 16, 16).

Both embeddings are L2-normalised over channels. BasicBlock: conv-BN-ReLU, conv-BN, plus the
(1x1x1 conv + BN when the shape changes) shortcut, ReLU; backbone convs have no bias. Module
names follow the published checkpoints (mmcv ``ConvModule``: ``.conv`` and ``.bn``), so the
published ``state_dict`` loads key for key (see ``sam_checkpoint.py``).
"""

from __future__ import annotations

import dataclasses
import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import FeatureMap

Tensor = torch.Tensor
logger = logging.getLogger(__name__)

PUBLISHED_WIDTH = 64
PUBLISHED_INPUT_SPACING_MM = 2.0
LOCAL_STRIDE = (2, 2, 2)
GLOBAL_STRIDE = (4, 16, 16)
# Centres of output voxel 0 in input voxels: z comes from a 2x1x1 max-pool (first pair of
# slices, centre 0.5); y and x from stride-2 3x3 convolutions with padding 1 (centre 0).
LOCAL_OFFSET = (0.5, 0.0, 0.0)
GLOBAL_OFFSET = (0.5, 0.0, 0.0)
HU_RANGE = (-1024.0, 3071.0)


class ConvModule(nn.Module):
    """conv (+ BN) (+ ReLU), named like mmcv's ConvModule (``conv``, ``bn``)."""

    def __init__(
        self, cin: int, cout: int, kernel, stride=1, padding=0, norm: bool = True, relu: bool = True
    ) -> None:
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, kernel, stride, padding, bias=not norm)
        self.bn = nn.BatchNorm3d(cout, eps=1e-5) if norm else None
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x, inplace=True) if self.relu else x


class BasicBlock(nn.Module):
    def __init__(
        self, cin: int, cout: int, kernel: tuple[int, int, int], stride: tuple[int, int, int]
    ) -> None:
        super().__init__()
        padding = tuple(k // 2 for k in kernel)
        self.conv1 = ConvModule(cin, cout, kernel, stride, padding)
        self.conv2 = ConvModule(cout, cout, kernel, 1, padding, relu=False)
        self.downsample = None
        if cin != cout or any(s != 1 for s in stride):
            self.downsample = ConvModule(cin, cout, 1, stride, 0, relu=False)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(self.conv2(self.conv1(x)) + shortcut, inplace=True)


class ResNet3d18(nn.Module):
    """The SAM backbone (ResNet-18 with I3D-style inflation of layer3 and layer4)."""

    def __init__(self, width: int = PUBLISHED_WIDTH) -> None:
        super().__init__()
        w = width
        self.conv1 = ConvModule(1, w, (3, 7, 7), 1, (1, 3, 3))
        flat, inflated = (1, 3, 3), (3, 3, 3)
        self.layer1 = self._layer(w, w, flat, (1, 2, 2))
        self.layer2 = self._layer(w, 2 * w, flat, (1, 2, 2))
        self.layer3 = self._layer(2 * w, 4 * w, inflated, (1, 2, 2))
        self.layer4 = self._layer(4 * w, 8 * w, inflated, (2, 2, 2))

    @staticmethod
    def _layer(cin: int, cout: int, kernel, stride) -> nn.Sequential:
        return nn.Sequential(
            BasicBlock(cin, cout, kernel, stride), BasicBlock(cout, cout, kernel, (1, 1, 1))
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.layer1(self.conv1(x))
        out0 = F.max_pool3d(x, (2, 1, 1), (2, 1, 1))
        out1 = self.layer2(out0)
        out2 = self.layer3(out1)
        out3 = self.layer4(out2)
        return [out0, out1, out2, out3]


class FPN3d(nn.Module):
    """Lateral 1x1x1 convs, nearest top-down sums, one 3x3x3 conv on the finest level."""

    def __init__(self, in_channels: list[int], out_channels: int) -> None:
        super().__init__()
        self.lateral_convs = nn.ModuleList(
            ConvModule(c, out_channels, 1, norm=False, relu=False) for c in in_channels
        )
        self.fpn_convs = nn.ModuleList(
            [ConvModule(out_channels, out_channels, 3, 1, 1, norm=False, relu=False)]
        )

    def forward(self, inputs: list[Tensor]) -> Tensor:
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs, strict=True)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[2:], mode="nearest"
            )
        return self.fpn_convs[0](laterals[0])


class SAMNetwork(nn.Module):
    """SAM: backbone + neck (local embedding) + read-out head (global embedding)."""

    def __init__(
        self, width: int = PUBLISHED_WIDTH, input_spacing_mm: float = PUBLISHED_INPUT_SPACING_MM
    ) -> None:
        super().__init__()
        self.width = width
        self.embedding_dim = 2 * width
        # the isotropic spacing the network was trained on (an inference convention, kept in
        # the checkpoint's meta; the published weights use 2 mm)
        self.input_spacing_mm = float(input_spacing_mm)
        self.backbone = ResNet3d18(width)
        self.neck = FPN3d([width, 2 * width, 4 * width], 2 * width)
        self.read_out_head = FPN3d([8 * width], 2 * width)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(N, 1, Z, Y, X) preprocessed intensities -> (local, global) unit embeddings."""
        outs = self.backbone(x)
        local = F.normalize(self.neck(outs[:3]), dim=1, eps=1e-6)
        glob = F.normalize(self.read_out_head([outs[3]]), dim=1, eps=1e-6)
        return local, glob


def preprocess(hu: Tensor) -> Tensor:
    """Hounsfield units -> SAM input: clamp to [-1024, 3071], map to [0, 255], minus 50."""
    low, high = HU_RANGE
    return (hu.clamp(low, high) - low) * (255.0 / (high - low)) - 50.0


def local_shape(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """Local embedding size for an input (Z, Y, X): (floor(Z/2), ceil(Y/2), ceil(X/2))."""
    z, y, x = shape
    return z // 2, math.ceil(y / 2), math.ceil(x / 2)


# ------------------------------------------------------------------------------- inference


def _z_tiles(nz: int, tile: int, margin: int) -> list[tuple[int, int, int, int]]:
    """Input z-ranges with margins and the part of each to keep, aligned to the stride 4.

    Returns (in_start, in_stop, keep_start, keep_stop) in input voxels.
    """
    tiles = []
    start = 0
    while start < nz:
        stop = min(nz, start + tile)
        if nz - stop < 4:  # do not leave a sliver
            stop = nz
        in_start = max(0, start - margin)
        in_stop = min(nz, stop + margin)
        tiles.append((in_start, in_stop, start, stop))
        start = stop
    return tiles


@torch.no_grad()
def embed(
    network: SAMNetwork,
    hu: Tensor,
    tile_z: int | None = None,
    margin: int = 32,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """SAM embeddings of a (1, 1, Z, Y, X) HU volume on a 2 mm grid.

    Args:
        network: a SAMNetwork in eval mode.
        hu: Hounsfield units, z first.
        tile_z: process overlapping slabs of this many z-slices (a multiple of 4) to bound
            memory; None = whole volume. Slabs overlap by ``margin`` slices on each side
            (a multiple of 4); only the interior of each slab's output is kept.
        autocast_dtype: e.g. torch.float16/bfloat16 on CUDA.

    Returns:
        local (1, C, floor(Z/2), ceil(Y/2), ceil(X/2)) and global (1, C, Zg, Yg, Xg) unit
        embeddings (float32).
    """
    x = preprocess(hu)
    nz = x.shape[2]

    def run(chunk: Tensor) -> tuple[Tensor, Tensor]:
        if autocast_dtype is not None and chunk.is_cuda:
            with torch.autocast("cuda", dtype=autocast_dtype):
                local, glob = network(chunk)
            return (
                F.normalize(local.float(), dim=1, eps=1e-6),
                F.normalize(glob.float(), dim=1, eps=1e-6),
            )
        return network(chunk)

    if tile_z is None or tile_z + 2 * margin >= nz:
        return run(x)
    if tile_z % 4 or margin % 4:
        raise ValueError("tile_z and margin must be multiples of 4 (the z stride of layer4)")
    locals_, globals_ = [], []
    for in_start, in_stop, keep_start, keep_stop in _z_tiles(nz, tile_z, margin):
        local, glob = run(x[:, :, in_start:in_stop])
        # local: z stride 2 (floor); global: z stride 4 (repeated halving)
        l0 = (keep_start - in_start) // 2
        l1 = l0 + (keep_stop // 2 - keep_start // 2)
        locals_.append(local[:, :, l0:l1])
        g0 = (keep_start - in_start) // 4
        g1 = g0 + (_global_z(keep_stop, nz) - keep_start // 4)
        globals_.append(glob[:, :, g0:g1])
    return torch.cat(locals_, 2), torch.cat(globals_, 2)


def _global_z(stop: int, nz: int) -> int:
    """Number of global z-rows produced up to input slice ``stop`` of an nz-slice volume."""
    if stop >= nz:
        return math.ceil((nz // 2) / 2)
    return stop // 4


class SAMExtractor:
    """Feature backend ``"sam"`` (optionally ``"sam+mind"``): SAM local + global maps.

    The image (on the working grid, spacing ``working_spacing_mm``) is block-averaged by
    ``k = max(1, round(network.input_spacing_mm / working_spacing_mm))`` to reach the
    network's input spacing (2 mm for the published weights, 4 mm for the packaged ones), so
    the local map has stride ``2k`` and the global one ``(4k, 16k, 16k)`` working voxels.

    ``channels``: after both images of a pair are embedded, :meth:`harmonize` projects each
    SAM map of both onto the first ``channels`` principal components of their joint
    embeddings (one basis per pair, so both images share it) and renormalises: the cost volumes
    then cost about ``2 * channels`` instead of ``4 * width`` channels. ``weight`` scales the
    squared-distance cost of the SAM maps against MIND's.
    """

    def __init__(
        self,
        network: SAMNetwork,
        device: torch.device | str = "cpu",
        tile_z: int | None = None,
        with_mind: bool = False,
        mind=None,
        working_spacing_mm: float = 2.0,
        channels: int | None = None,
        weight: float = 1.0,
    ) -> None:
        self.network = network.eval().to(device)
        self.device = torch.device(device)
        self.tile_z = tile_z
        self.with_mind = with_mind
        self.mind = mind
        self.name = "sam+mind" if with_mind else "sam"
        self.autocast = torch.float16 if self.device.type == "cuda" else None
        self.factor = 1
        self.set_working_spacing(working_spacing_mm)
        self.channels = channels
        self.weight = float(weight)

    def set_working_spacing(self, spacing_mm: float) -> None:
        """The working grid's spacing (it may grow to fit the voxel budget): sets the pooling
        factor that brings images to the network's input spacing."""
        self.factor = max(1, round(self.network.input_spacing_mm / spacing_mm))

    def _maps(self, local: Tensor, glob: Tensor) -> list[FeatureMap]:
        k = self.factor

        # pooled voxel j sits on working index k j + (k - 1) / 2
        def working(stride, offset):
            return (tuple(k * s for s in stride), tuple(k * o + (k - 1) / 2.0 for o in offset))

        ls, lo = working(LOCAL_STRIDE, LOCAL_OFFSET)
        gs, go = working(GLOBAL_STRIDE, GLOBAL_OFFSET)
        return [
            FeatureMap(local, ls, "local", True, lo, source="sam"),
            FeatureMap(glob, gs, "global", True, go, source="sam"),
        ]

    def __call__(self, image: Tensor) -> list[FeatureMap]:
        x = image.to(self.device)
        if self.factor > 1:
            x = F.avg_pool3d(x, self.factor, self.factor, ceil_mode=True)
        local, glob = embed(self.network, x, self.tile_z, autocast_dtype=self.autocast)
        maps = self._maps(local, glob)
        if self.with_mind and self.mind is not None:
            maps.extend(self.mind(image))
        return maps

    def harmonize(
        self, fixed: list[FeatureMap], moving: list[FeatureMap]
    ) -> tuple[list[FeatureMap], list[FeatureMap]]:
        """Both images' maps with SAM channels reduced (shared PCA basis) and weighted."""
        out_f, out_m = [], []
        for f, m in zip(fixed, moving, strict=True):
            if f.source != "sam":
                out_f.append(f)
                out_m.append(m)
                continue
            vf, vm = f.values, m.values
            if self.channels is not None and self.channels < vf.shape[1]:
                basis = pca_basis(vf, vm, self.channels)
                vf, vm = project(vf, basis), project(vm, basis)
            if self.weight != 1.0:
                scale = self.weight**0.5
                vf, vm = vf * scale, vm * scale
            out_f.append(dataclasses.replace(f, values=vf, normalized=self.weight == 1.0))
            out_m.append(dataclasses.replace(m, values=vm, normalized=self.weight == 1.0))
        return out_f, out_m


def pca_basis(a: Tensor, b: Tensor, channels: int, samples: int = 200_000) -> Tensor:
    """(C, channels) leading principal directions of two (1, C, ...) maps' voxels together."""
    flat = torch.cat([a.flatten(2)[0], b.flatten(2)[0]], dim=1).t()  # (N, C)
    if len(flat) > samples:
        flat = flat[torch.linspace(0, len(flat) - 1, samples).long()]
    flat = flat - flat.mean(0, keepdim=True)
    covariance = flat.t() @ flat / max(len(flat) - 1, 1)
    _, vectors = torch.linalg.eigh(covariance.double())
    return vectors[:, -channels:].flip(1).to(a.dtype)


def project(values: Tensor, basis: Tensor) -> Tensor:
    """(1, C, ...) unit maps onto ``basis`` (C, K), renormalised to unit vectors."""
    projected = torch.einsum("nc...,ck->nk...", values, basis)
    return F.normalize(projected, dim=1, eps=1e-6)
