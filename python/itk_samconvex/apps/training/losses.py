"""SAM's contrastive losses (notes/algorithm.md §3): local and global InfoNCE.

Both losses compare the embeddings of two views of one volume. A query voxel of one view
is paired with the nearest voxel of the other view (in mm) when that voxel is close enough
(the positive); negatives are voxels of both views farther than an exclusion radius, mined
by similarity (the hardest first, then a random subset). The logits ``[pos, negs] / T``
go into a cross-entropy with the positive as the target, in both directions.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


@dataclass(frozen=True)
class LossSettings:
    """Published values; smaller counts suit CPU training.

    The local radii are those of the NIH-LN config that trained the released SAM.pth
    (positives within 2 mm, negatives beyond 20 mm). The "multisets" config's 5 mm / 3 mm
    lets a negative sit closer to the query than its positive; with the small candidate
    pools of CPU training that contradiction collapsed the embedding in our tests.
    """

    temperature: float = 0.5
    local_queries: int = 100  # positives kept per direction
    local_positive_mm: float = 2.0
    local_ignore_mm: float = 20.0
    local_hard: int = 2000
    local_negatives: int = 500
    global_positive_mm: float = 25.0
    global_z_mm: tuple[float, float] = (8.0, 6.0)
    global_ignore_mm: float = 5.0
    global_hard: int = 250
    global_negatives: int = 200
    global_batch_negatives: int = 300

    def scaled(self, factor: float) -> LossSettings:
        """The same recipe for a network fed at ``factor`` times the published 2 mm: every
        radius in mm grows with the embedding grids, so the same neighbours pair up."""
        return replace(
            self,
            local_positive_mm=self.local_positive_mm * factor,
            local_ignore_mm=self.local_ignore_mm * factor,
            global_positive_mm=self.global_positive_mm * factor,
            global_ignore_mm=self.global_ignore_mm * factor,
            global_z_mm=(self.global_z_mm[0] * factor, self.global_z_mm[1] * factor),
        )


def nearest_partner(
    positions: Tensor, corner: Tensor, spacing: Tensor, stride, offset, shape
) -> Tensor:
    """Flat index of the nearest voxel of another view's embedding grid for each position.

    Args:
        positions: (N, 3) mm, z y x. corner/spacing/stride/offset/shape describe the other
            grid (voxel j at ``corner + spacing * (stride * j + offset)``).
    """
    step = spacing * torch.tensor(stride, dtype=torch.float32)
    start = corner + spacing * torch.tensor(offset, dtype=torch.float32)
    index = torch.round((positions - start) / step).long()
    upper = torch.tensor(shape) - 1
    index = torch.minimum(index.clamp_min(0), upper)
    return (index[:, 0] * shape[1] + index[:, 1]) * shape[2] + index[:, 2]


def info_nce(query: Tensor, positive: Tensor, negatives: Tensor, temperature: float) -> Tensor:
    """Cross-entropy of ``[q.p, q.n_1..k] / T`` with target 0; all inputs unit vectors.

    Args:
        query, positive: (N, C); negatives: (N, K, C).
    """
    pos = (query * positive).sum(-1, keepdim=True)
    neg = torch.einsum("nc,nkc->nk", query, negatives)
    logits = torch.cat([pos, neg], 1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(query), dtype=torch.long))


def _mine(
    similarity: Tensor, excluded: Tensor, hard: int, keep: int, generator: torch.Generator
) -> Tensor:
    """Indices (N, keep) of negatives: the ``hard`` most similar allowed ones, then random."""
    similarity = similarity.masked_fill(excluded, float("-inf"))
    hard = min(hard, similarity.shape[1])
    top = similarity.topk(hard, dim=1).indices
    keep = min(keep, hard)
    choice = torch.rand(top.shape, generator=generator).argsort(1)[:, :keep]
    return top.gather(1, choice)


def directional_loss(
    query_emb: Tensor,
    query_pos: Tensor,
    query_mine: Tensor,
    other_emb: Tensor,
    other_pos: Tensor,
    other_mine: Tensor,
    other_grid: dict,
    positive_mm: float,
    ignore_mm: float,
    hard: int,
    keep: int,
    max_queries: int,
    temperature: float,
    generator: torch.Generator,
    z_limit_mm: float | None = None,
    extra_negatives: Tensor | None = None,
    hard_mining: bool = True,
) -> Tensor | None:
    """InfoNCE from one view's voxels to the other view (None if no positive pair exists).

    Args:
        query_emb, other_emb: (N, C) and (M, C) unit embeddings (flattened grids).
        query_pos, other_pos: (N, 3), (M, 3) positions in mm.
        query_mine, other_mine: (N, D), (M, D) unit vectors used to rank negatives (e.g. the
            local embedding concatenated with the upsampled global one).
        other_grid: the other grid's corner, spacing, stride, offset, shape (for pairing).
        extra_negatives: (E, C) embeddings from other volumes, appended to every query.
        hard_mining: rank negatives by similarity (else draw them uniformly among the
            allowed ones: the warm-up that keeps a randomly initialised network from
            collapsing onto a constant embedding).
    """
    partner = nearest_partner(query_pos, **other_grid)
    gap = query_pos - other_pos[partner]
    close = gap.norm(dim=1) <= positive_mm
    if z_limit_mm is not None:
        close &= gap[:, 0].abs() < z_limit_mm
    candidates = close.nonzero()[:, 0]
    if len(candidates) == 0:
        return None
    pick = candidates[torch.randperm(len(candidates), generator=generator)[:max_queries]]
    q, p = query_emb[pick], other_emb[partner[pick]]
    # negatives from both views, away from the query's position
    pool_emb = torch.cat([query_emb, other_emb])
    pool_pos = torch.cat([query_pos, other_pos])
    pool_mine = torch.cat([query_mine, other_mine])
    excluded = torch.cdist(query_pos[pick], pool_pos) < ignore_mm
    if hard_mining:
        similarity = query_mine[pick] @ pool_mine.t()
    else:
        similarity = torch.rand((len(pick), len(pool_pos)), generator=generator)
    chosen = _mine(similarity, excluded, hard, keep, generator)
    negatives = pool_emb[chosen]
    if extra_negatives is not None and len(extra_negatives):
        negatives = torch.cat([negatives, extra_negatives[None].expand(len(pick), -1, -1)], 1)
    return info_nce(q, p, negatives, temperature)
