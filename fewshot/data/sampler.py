"""N-way K-shot episode sampling, vectorised over the batch.

Semantics follow the original (torchmeta's `ClassSplitter` as used by
IDSIA/modern-srwm, with its fork's shuffled support order):

* each episode draws ``N`` distinct classes (episodes are independent);
* labels ``0..N-1`` are assigned to the classes in a random order;
* each class gives ``K`` support examples (and ``F`` "future" ones, for
  bootstrapping) and the queries, all distinct images;
* the support set is in random order (not grouped by class);
* ``Q`` queries per episode: query ``q`` of the episode takes class
  ``perm[q mod N]`` for a random permutation ``perm`` of the ``N`` labels, and
  the queries are then shuffled. ``Q = 1`` is one query from a uniformly random
  class (the original draws one query per class and keeps the first of a
  shuffled list, which is the same distribution); ``Q = m N`` gives ``m`` per
  class (torchmeta's ``test_shots = m``).

Randomness is a pure function of ``(seed, step)`` (NumPy's ``SeedSequence``),
so a resumed run sees the same batches; fixed evaluation episodes are a pure
function of their own seed, never of global RNG state.

Shapes: ``B`` episodes, ``N`` ways, ``K`` shots, ``F`` future shots per class,
``Q`` queries, ``S`` image side, ``C`` channels.
"""

from __future__ import annotations

import collections
import concurrent.futures
import math
from collections.abc import Iterator

import numpy as np

from .core import ClassImages

# Leading words of the SeedSequence entropy, one per random stream. (NumPy
# ignores trailing zero words, so the stream id must come first.)
_TRAIN_STREAM = 0x7A41
_FIXED_STREAM = 0xF1ED
# Fixed episodes are drawn in blocks of this many from seed (seed, block), so
# the first n episodes of fixed_episodes(m, seed) do not depend on m.
FIXED_BLOCK = 64


def choose_distinct(rng: np.random.Generator, n: np.ndarray, m: int) -> np.ndarray:
    """int64 ``[R, m]``: per row ``r``, ``m`` distinct integers in ``[0, n[r])``,
    a uniformly random subset in uniformly random order.

    Floyd's algorithm (Bentley & Floyd, CACM 1987) vectorised over rows: ``m``
    steps of ``O(R m)`` work, independent of ``n``.
    """
    n = np.asarray(n, dtype=np.int64)
    rows = n.shape[0]
    out = np.empty((rows, m), dtype=np.int64)
    uniform = rng.random((m, rows))
    for i in range(m):
        j = n - m + i
        # Uniform integer in [0, j] (float bias < 2^-52 j; much faster than
        # Generator.integers with an array of bounds).
        t = np.minimum((uniform[i] * (j + 1)).astype(np.int64), j)
        taken = (out[:, :i] == t[:, None]).any(axis=1)
        out[:, i] = np.where(taken, j, t)
    # Floyd's subset is uniform but its order is not.
    order = np.argsort(rng.random((rows, m)), axis=1)
    return np.take_along_axis(out, order, axis=1)


def _shuffle_rows(rng, *arrays):
    """Applies one random permutation per row to every ``[R, L]`` array."""
    order = np.argsort(rng.random(arrays[0].shape), axis=1)
    return tuple(np.take_along_axis(a, order, axis=1) for a in arrays)


class EpisodeSampler:
    """Draws batches of N-way K-shot episodes from a :class:`ClassImages`.

    Args:
      ds: the split to sample from.
      n_way: classes per episode ``N``.
      k_shot: support examples per class ``K``.
      num_queries: queries per episode ``Q`` (see the module docstring); 0
        gives support-only episodes.
      seed: training stream seed; ``sample(B, step)`` depends on (seed, step).
      future_shots: extra labelled examples per class ``F`` (bootstrapping's
        "future" set), returned as ``future_images``/``future_labels``.
      normalize: subtract ``ds.mean`` and divide by ``ds.std`` after scaling
        to [0, 1] (as torchvision's ``Normalize``).
      image_dtype: ``np.float32`` (values in [0, 1]) or ``np.uint8`` (raw,
        4x smaller to move to the device; ``normalize`` must be False).

    Example::

      ds = load_split("omniglot", "../shared/data/omniglot", "train")
      sampler = EpisodeSampler(ds, n_way=5, k_shot=1)
      batch = sampler.sample(128, step=0)
      batch["support_images"].shape  # (128, 5, 28, 28, 1)
    """

    def __init__(
        self,
        ds: ClassImages,
        n_way: int,
        k_shot: int,
        num_queries: int = 1,
        seed: int = 0,
        *,
        future_shots: int = 0,
        normalize: bool = False,
        image_dtype=np.float32,
    ):
        if n_way < 1 or k_shot < 0 or num_queries < 0 or future_shots < 0:
            raise ValueError("need n_way >= 1 and k_shot, num_queries, future_shots >= 0")
        if n_way > ds.num_classes:
            raise ValueError(f"n_way={n_way} but {ds.name} {ds.split} has {ds.num_classes} classes")
        self.ds = ds
        self.n_way, self.k_shot, self.num_queries = int(n_way), int(k_shot), int(num_queries)
        self.future_shots = int(future_shots)
        self.seed = int(seed)
        self.max_queries_per_class = math.ceil(self.num_queries / self.n_way)
        self.examples_per_class = self.k_shot + self.future_shots + self.max_queries_per_class
        smallest = int(ds.class_sizes.min())
        if self.examples_per_class > smallest:
            raise ValueError(
                f"episodes need {self.examples_per_class} distinct images per class "
                f"(k_shot + future_shots + ceil(num_queries / n_way)) but a class of "
                f"{ds.name} {ds.split} has only {smallest}"
            )
        self.image_dtype = np.dtype(image_dtype)
        if self.image_dtype not in (np.float32, np.uint8):
            raise ValueError("image_dtype must be float32 or uint8")
        if normalize and (self.image_dtype == np.uint8 or ds.mean is None):
            raise ValueError("normalize needs image_dtype=float32 and a dataset with mean/std")
        self.normalize = bool(normalize)
        self._class_start = ds.class_start[:-1]
        self._class_sizes = ds.class_sizes
        images = ds.images
        # Omniglot repeated to 3 channels is a stride-0 broadcast view: gather
        # the single stored channel and broadcast while converting.
        self._source = images[..., :1] if images.strides[-1] == 0 else images
        self._channels = ds.channels
        if self.normalize:
            self._mean = np.asarray(ds.mean, dtype=np.float32)
            self._std = np.asarray(ds.std, dtype=np.float32)

    # --- indices -------------------------------------------------------------

    def sample_indices_from_rng(self, rng: np.random.Generator, batch_size: int) -> dict:
        """Image indices (into ``ds.images``) and labels of ``batch_size`` episodes.

        Returns int arrays: ``support_index`` ``[B, N K]``, ``support_labels``
        ``[B, N K]``, ``query_index``/``query_labels`` ``[B, Q]``,
        ``future_index``/``future_labels`` ``[B, N F]`` when ``F > 0``, and
        ``episode_classes`` ``[B, N]`` (the dataset class of each label).
        """
        B, N, K, F, Q = batch_size, self.n_way, self.k_shot, self.future_shots, self.num_queries
        classes = choose_distinct(rng, np.full(B, self.ds.num_classes), N)  # label l -> class
        local = choose_distinct(
            rng, self._class_sizes[classes].reshape(-1), self.examples_per_class
        ).reshape(B, N, self.examples_per_class)
        index = self._class_start[classes][..., None] + local  # [B, N, K + F + Qc]

        out = {"episode_classes": classes}
        labels = np.broadcast_to(np.arange(N, dtype=np.int32)[None, :, None], (B, N, K + F))
        sup_idx, sup_lab = _shuffle_rows(
            rng, index[:, :, :K].reshape(B, N * K), labels[:, :, :K].reshape(B, N * K)
        )
        out["support_index"], out["support_labels"] = sup_idx, sup_lab
        if F:
            fut_idx, fut_lab = _shuffle_rows(
                rng, index[:, :, K : K + F].reshape(B, N * F), labels[:, :, K:].reshape(B, N * F)
            )
            out["future_index"], out["future_labels"] = fut_idx, fut_lab
        q = np.arange(Q)
        query_labels = np.argsort(rng.random((B, N)), axis=1)[:, q % N].astype(np.int32)
        query_index = np.take_along_axis(
            index.reshape(B, -1), query_labels * self.examples_per_class + (K + F + q // N), axis=1
        )
        if Q > N:  # for Q <= N the class order is already a random permutation
            query_index, query_labels = _shuffle_rows(rng, query_index, query_labels)
        out["query_index"], out["query_labels"] = query_index, query_labels
        return out

    def sample_indices(self, batch_size: int, step: int) -> dict:
        """:meth:`sample_indices_from_rng` with the generator of ``(seed, step)``."""
        return self.sample_indices_from_rng(self._step_rng(step), batch_size)

    def _step_rng(self, step: int) -> np.random.Generator:
        return np.random.default_rng([_TRAIN_STREAM, self.seed, int(step)])

    # --- images --------------------------------------------------------------

    def gather(self, index: np.ndarray) -> np.ndarray:
        """Images ``[*index.shape, S, S, C]`` (``image_dtype``) of ``index``."""
        src = self._source
        raw = np.take(src, index.reshape(-1), axis=0)  # [M, S, S, 1 or C] uint8
        channels = self._channels
        if raw.shape[-1] != channels:
            # One channel at a time: NumPy is slow when the innermost loop runs
            # over a length-3 axis.
            full = np.empty((*raw.shape[:-1], channels), dtype=np.uint8)
            for c in range(channels):
                full[..., c] = raw[..., 0]
            raw = full
        shape = (*index.shape, *raw.shape[1:])
        if self.image_dtype == np.uint8:
            return raw.reshape(shape)
        out = np.empty(raw.shape, dtype=np.float32)
        # Same arithmetic as torchvision's ToTensor (float32 x / 255) and Normalize.
        np.divide(raw, np.float32(255), out=out)
        if self.normalize:
            # Per-channel constants tiled along one image row, so the inner
            # loop runs over S C contiguous values.
            rows = out.reshape(-1, raw.shape[2] * channels)
            rows -= np.tile(self._mean, raw.shape[2])
            rows /= np.tile(self._std, raw.shape[2])
        return out.reshape(shape)

    def batch_from_indices(self, indices: dict) -> dict:
        """The image batch for :meth:`sample_indices` output."""
        batch = {
            "support_images": self.gather(indices["support_index"]),
            "support_labels": indices["support_labels"].astype(np.int32),
            "query_images": self.gather(indices["query_index"]),
            "query_labels": indices["query_labels"].astype(np.int32),
        }
        if "future_index" in indices:
            batch["future_images"] = self.gather(indices["future_index"])
            batch["future_labels"] = indices["future_labels"].astype(np.int32)
        return batch

    def sample_from_rng(self, rng: np.random.Generator, batch_size: int) -> dict:
        return self.batch_from_indices(self.sample_indices_from_rng(rng, batch_size))

    def sample(self, batch_size: int, step: int, rows: slice | None = None) -> dict:
        """A batch of ``batch_size`` episodes; a pure function of ``(seed, step)``.

        Returns numpy arrays: ``support_images`` ``[B, N K, S, S, C]`` in random
        order, ``support_labels`` int32 ``[B, N K]`` in ``[0, N)``,
        ``query_images`` ``[B, Q, S, S, C]``, ``query_labels`` int32 ``[B, Q]``
        (plus ``future_images``/``future_labels`` ``[B, N F, ...]`` if ``F > 0``).

        ``rows``: only these episodes of the batch (a process's share in multi-process
        training): the indices of all ``B`` are drawn, only the rows' images gathered, so
        the shares of several processes are disjoint and together the whole batch.
        """
        indices = self.sample_indices(batch_size, step)
        if rows is not None:
            indices = {k: v[rows] for k, v in indices.items()}
        return self.batch_from_indices(indices)

    # --- fixed evaluation episodes --------------------------------------------

    def fixed_indices(self, num_episodes: int, seed: int) -> dict:
        """Indices of the fixed episode set of ``seed`` (see :meth:`fixed_episodes`)."""
        blocks = []
        for block in range(math.ceil(num_episodes / FIXED_BLOCK)):
            rng = np.random.default_rng([_FIXED_STREAM, int(seed), block])
            blocks.append(self.sample_indices_from_rng(rng, FIXED_BLOCK))
        return {k: np.concatenate([b[k] for b in blocks])[:num_episodes] for k in blocks[0]}

    def fixed_episodes(self, num_episodes: int, seed: int) -> dict:
        """A deterministic episode set: same ``(num_episodes, seed)`` -> same
        episodes for every model, sampler instance and training seed.

        Depends only on ``seed``, the dataset's class sizes and ``N, K, F, Q``
        (not on the sampler's ``seed`` or any global RNG). The first ``n``
        episodes of ``fixed_episodes(m, seed)`` are the same for every
        ``m >= n``. Same dict layout as :meth:`sample` with batch dim
        ``num_episodes``; for large sets use :meth:`iterate_fixed`.
        """
        return self.batch_from_indices(self.fixed_indices(num_episodes, seed))

    def iterate_fixed(self, num_episodes: int, seed: int, batch_size: int) -> Iterator[dict]:
        """:meth:`fixed_episodes` in batches of ``batch_size`` (last one smaller),
        gathering images one batch at a time to bound memory."""
        indices = self.fixed_indices(num_episodes, seed)
        for lo in range(0, num_episodes, batch_size):
            yield self.batch_from_indices({k: v[lo : lo + batch_size] for k, v in indices.items()})

    # --- background prefetch ---------------------------------------------------

    def iterate(
        self,
        batch_size: int,
        start_step: int = 0,
        *,
        num_steps: int | None = None,
        prefetch: int = 4,
        num_threads: int = 1,
        rows: slice | None = None,
    ) -> Iterator[tuple[int, dict]]:
        """Yields ``(step, sample(batch_size, step, rows))`` for ``step = start_step, ...``.

        Batches are made ahead in ``num_threads`` background threads (NumPy
        releases the GIL while gathering and converting) and come out in step
        order, up to ``prefetch`` of them ready ahead. Endless unless
        ``num_steps`` is given; closing the generator (or leaving a ``for``
        loop) stops the workers. Output is identical to calling :meth:`sample`.
        """
        return prefetch_steps(
            lambda step: self.sample(batch_size, step, rows), start_step, num_steps, prefetch,
            num_threads
        )


def prefetch_steps(make, start_step, num_steps, prefetch, num_threads):
    """Generator over ``(step, make(step))`` with ``make`` run ahead in threads."""
    if prefetch < 1 or num_threads < 1:
        raise ValueError("prefetch and num_threads must be >= 1")
    end = None if num_steps is None else start_step + num_steps
    pool = concurrent.futures.ThreadPoolExecutor(num_threads, thread_name_prefix="episodes")
    pending: collections.deque = collections.deque()
    next_step = start_step

    def gen():
        nonlocal next_step
        try:
            while True:
                while len(pending) < prefetch and (end is None or next_step < end):
                    pending.append((next_step, pool.submit(make, next_step)))
                    next_step += 1
                if not pending:
                    return
                step, future = pending.popleft()
                yield step, future.result()
        finally:
            for _, future in pending:
                future.cancel()
            pool.shutdown(wait=False, cancel_futures=True)

    return gen()
