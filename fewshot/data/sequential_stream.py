"""Batches for the delayed-label sequential task (two domains, one sequence).

As in the original's ``main_few_shot_delayed_multi_sequential.py``: every
sequence is one segment from dataset A followed by one from dataset B, or B
then A. A segment is a 5-way episode with ``shots`` examples per class in random
order (the labels of each segment are its own random permutation). In
training, which dataset comes first is random per batch and each segment drops
its last ``randint(0, max_trim)`` positions (one draw per segment and batch, so
all sequences of a batch have the same length and need no padding); in
evaluation the order alternates with the batch index (even: A first) and
nothing is trimmed.

The original's ``batch_size`` 32 meant 16 Omniglot + 16 Mini-ImageNet
episodes joined into 16 sequences; here ``batch_size`` counts sequences.

Shapes: ``B`` sequences, ``T`` = the two segment lengths summed, ``S`` image
side, ``C`` channels.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .core import ClassImages
from .sampler import EpisodeSampler, prefetch_steps

_SEQUENCE_STREAM = 0x5E9A


def occurrence_index(labels: np.ndarray, n_way: int) -> np.ndarray:
    """int32 ``[B, L]``: how many earlier positions of the row have the same label
    (0 for a class's first appearance)."""
    seen = np.cumsum(labels[..., None] == np.arange(n_way), axis=1, dtype=np.int32)
    return np.take_along_axis(seen, labels[..., None].astype(np.int64), axis=2)[..., 0] - 1


class SequentialStream:
    """Two-domain delayed-label sequences.

    Args:
      ds_a, ds_b: the two domains (segment id 0 and 1), with equal image shapes
        (e.g. ``load_split("omniglot", d, "train", image_size=84, channels=3)``
        and ``load_split("omniglot_transformed", d, "train")`` or Mini-ImageNet).
      n_way: classes per segment (5 in the original).
      shots: examples per class per segment (15 in the original: 75 steps).
      max_trim: training drops ``randint(0, max_trim)`` (inclusive) positions
        from the end of each segment (60 in the original).
      seed: stream seed; ``sample(B, step, train)`` is a pure function of
        ``(seed, step, train)``.
      normalize: normalise each segment with its dataset's mean/std (the
        original does: Omniglot 0.922/0.084, Mini-ImageNet ImageNet statistics).
      image_dtype: ``np.float32`` or ``np.uint8`` (4x less to copy and move to
        the device; normalise there with ``ds.mean``/``ds.std``).
    """

    def __init__(
        self,
        ds_a: ClassImages,
        ds_b: ClassImages,
        n_way: int = 5,
        shots: int = 15,
        max_trim: int = 60,
        seed: int = 0,
        *,
        normalize: bool = False,
        image_dtype=np.float32,
    ):
        if ds_a.images.shape[1:] != ds_b.images.shape[1:]:
            raise ValueError(
                f"both domains need the same image shape, got {ds_a.images.shape[1:]} "
                f"and {ds_b.images.shape[1:]}"
            )
        if not 0 <= max_trim < n_way * shots:
            raise ValueError(f"max_trim must be in [0, n_way * shots) = [0, {n_way * shots})")
        self.samplers = tuple(
            EpisodeSampler(ds, n_way, shots, num_queries=0, normalize=normalize,
                           image_dtype=image_dtype)
            for ds in (ds_a, ds_b)
        )
        self.n_way, self.shots, self.max_trim, self.seed = n_way, shots, max_trim, int(seed)
        self.segment_length = n_way * shots

    def sample(self, batch_size: int, step: int, train: bool = True) -> dict:
        """One batch of ``batch_size`` sequences.

        Returns numpy arrays:
          ``images`` float32 (or uint8) ``[B, T, S, S, C]``;
          ``labels`` int32 ``[B, T]`` in ``[0, n_way)`` (targets; the model's
          label input at step t is ``labels[:, t - 1]``, one_hot(0) at t = 0);
          ``segment_ids`` int32 ``[B, T]``: 0 where the image is from ``ds_a``, 1 from ``ds_b``;
          ``occurrence`` int32 ``[B, T]``: 0-based index of this occurrence of
          its class within its segment (instance-level accuracy columns
          1st/2nd/3rd/5th/10th are occurrence 0/1/2/4/9);
          ``mask`` bool ``[B, T]``: all True (trimming is per batch, no padding);
          ``first_segment`` int: 0 if ``ds_a`` comes first, else 1.
        """
        rng = np.random.default_rng([_SEQUENCE_STREAM, self.seed, int(step), int(train)])
        parts = [s.sample_indices_from_rng(rng, batch_size) for s in self.samplers]
        if train:
            first = int(rng.integers(2))
            lengths = [self.segment_length - int(rng.integers(0, self.max_trim + 1)) for _ in parts]
        else:
            first = int(step) % 2
            lengths = [self.segment_length] * 2
        order = (first, 1 - first)
        images, labels, segment_ids, occurrence = [], [], [], []
        for seg in order:
            length = lengths[seg]
            lab = parts[seg]["support_labels"]
            images.append(self.samplers[seg].gather(parts[seg]["support_index"][:, :length]))
            labels.append(lab[:, :length])
            occurrence.append(occurrence_index(lab, self.n_way)[:, :length])
            segment_ids.append(np.full((batch_size, length), seg, dtype=np.int32))
        labels = np.concatenate(labels, axis=1).astype(np.int32)
        return {
            "images": np.concatenate(images, axis=1),
            "labels": labels,
            "segment_ids": np.concatenate(segment_ids, axis=1),
            "occurrence": np.concatenate(occurrence, axis=1).astype(np.int32),
            "mask": np.ones(labels.shape, dtype=bool),
            "first_segment": first,
        }

    def iterate(
        self,
        batch_size: int,
        start_step: int = 0,
        *,
        train: bool = True,
        num_steps: int | None = None,
        prefetch: int = 4,
        num_threads: int = 1,
    ) -> Iterator[tuple[int, dict]]:
        """Yields ``(step, sample(batch_size, step, train))`` made ahead in
        background threads (see :meth:`EpisodeSampler.iterate`)."""
        return prefetch_steps(
            lambda step: self.sample(batch_size, step, train), start_step, num_steps, prefetch,
            num_threads
        )
