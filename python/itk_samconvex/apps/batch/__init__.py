"""Many pairs: :func:`register_many` (``samconvex batch``) on Dask distributed.

Each pair of a manifest (:mod:`.manifest`) is one Dask task (:mod:`.worker`) that writes
exactly what ``samconvex register`` writes into ``OUT/<name>/``, atomically
(:mod:`.commit`); :mod:`.schedule` runs them and keeps ``OUT/summary.csv`` and
``summary.json`` (:mod:`.summary`) up to date. Transforms map fixed physical points to
moving physical points (LPS mm), as everywhere in itk-samconvex.
"""

from .commit import commit_attempt, is_complete
from .manifest import ManifestError, PairSpec, load_pairs
from .schedule import register_many
from .summary import SUMMARY_COLUMNS, BatchSummary, report_stats
from .worker import RESOURCE, BatchWorkerSetup, PairTask, cached_extractor, run_pair

__all__ = [
    "RESOURCE",
    "SUMMARY_COLUMNS",
    "BatchSummary",
    "BatchWorkerSetup",
    "ManifestError",
    "PairSpec",
    "PairTask",
    "cached_extractor",
    "commit_attempt",
    "is_complete",
    "load_pairs",
    "register_many",
    "report_stats",
    "run_pair",
]
