"""Few-shot data: datasets in memory, episode samplers, the delayed-label stream.

    from . import load_split, EpisodeSampler
    ds = load_split("omniglot", "../shared/data/omniglot", "train")
    sampler = EpisodeSampler(ds, n_way=5, k_shot=1, num_queries=1, seed=0)
    batch = sampler.sample(128, step)
"""

from .core import ClassImages, DatasetError
from .loading import DATASETS, clear_cache, load_split
from .sampler import EpisodeSampler
from .sequential_stream import SequentialStream

__all__ = [
    "ClassImages",
    "DATASETS",
    "DatasetError",
    "EpisodeSampler",
    "SequentialStream",
    "clear_cache",
    "load_split",
]
