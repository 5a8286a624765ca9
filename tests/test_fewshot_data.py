"""Tests for fewshot.data: readers (real Omniglot + on-disk-format fixtures),
episode invariants, determinism, prefetch and the delayed-label stream.

Real data is read from ../shared/data (relative to the repository root); the
tests that need it are skipped with a reason when it is absent.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import OMNIGLOT_DIR

from fewshot.data import (
    ClassImages,
    DatasetError,
    EpisodeSampler,
    SequentialStream,
    load_split,
)
from fewshot.data import omniglot
from fewshot.data.core import add_rotated_classes
from fewshot.data.fc100 import FC100_SUPERCLASSES
from fewshot.data.sampler import choose_distinct
from fewshot.data.sequential_stream import occurrence_index

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
OMNIGLOT = DATA / "omniglot"
needs_omniglot = pytest.mark.skipif(
    not (OMNIGLOT / "omniglot.npz").is_file(),
    reason=f"real Omniglot data not found at {OMNIGLOT} (see shared/data/README.md)",
)
SPLIT_SIZES = {"train": 1028, "val": 172, "test": 423}


def _raw_omniglot():
    """The npz decoded exactly as its README says (independent of fewshot.data)."""
    d = np.load(OMNIGLOT / "omniglot.npz")
    bits = np.unpackbits(d["images"], axis=-1, count=105)
    names = [f"{a}/{c}" for a, c in zip(d["alphabet"], d["character"])]
    return bits, d["labels"], names


def _toy_dataset(num_classes=12, per_class=20, size=6, channels=1, seed=0) -> ClassImages:
    """Every image is filled with its own global index (mod 256) so tests can
    read back which image was gathered."""
    sizes = np.full(num_classes, per_class)
    n = int(sizes.sum())
    images = np.broadcast_to(
        (np.arange(n) % 256).astype(np.uint8)[:, None, None, None], (n, size, size, channels)
    ).copy()
    return ClassImages(
        images=images,
        class_start=np.concatenate([[0], np.cumsum(sizes)]),
        name="toy",
        split="train",
        class_names=tuple(f"c{i}" for i in range(num_classes)),
        mean=(0.5,) * channels,
        std=(0.25,) * channels,
    )


# --- real Omniglot -------------------------------------------------------------


@needs_omniglot
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_omniglot_counts_with_rotations(split):
    ds = load_split("omniglot", OMNIGLOT, split)
    n = SPLIT_SIZES[split]
    assert ds.num_classes == 4 * n
    assert ds.images.shape == (4 * n * 20, 28, 28, 1) and ds.images.dtype == np.uint8
    assert np.all(ds.class_sizes == 20)
    assert ds.class_names[n] == ds.class_names[0] + "/rot90"
    # Class c + n is class c rotated by 90 degrees (counter-clockwise).
    np.testing.assert_array_equal(
        ds.class_images(n + 3), np.rot90(ds.class_images(3), 1, axes=(1, 2))
    )


@needs_omniglot
@pytest.mark.parametrize("split", ["val", "test"])
def test_omniglot_counts_without_rotations(split):
    n = SPLIT_SIZES[split]
    for rotations in ("none", "train_only"):
        ds = load_split("omniglot", OMNIGLOT, split, rotations=rotations)
        assert ds.num_classes == n and ds.num_images == 20 * n
    with open(OMNIGLOT / "splits.json") as f:
        assert list(ds.class_names) == json.load(f)[split]
    if split == "val":  # the parent folder works too
        assert load_split("omniglot", DATA, split, rotations="none").num_classes == n


@needs_omniglot
def test_omniglot_pixels_ink_is_one_and_match_pil_pipeline():
    ds = load_split("omniglot", OMNIGLOT, "test")
    batch = EpisodeSampler(ds, 5, 5, seed=1).sample(64, 0)
    x = batch["support_images"]
    assert x.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0
    # Ink is the minority and bright: mean ~ the ink fraction (0.08 per the data README).
    assert 0.06 < float(ds.images.mean()) / 255 < 0.10
    assert np.median(x) == 0.0
    # Exact pixels of the original pipeline: ink = 255 (torchmeta's inverted
    # PNGs), PIL Resize(28) bilinear, ToTensor = x / 255 in float32.
    bits, labels, names = _raw_omniglot()
    c = names.index(ds.class_names[7])
    raw = bits[labels == c][2] * np.uint8(255)
    expected = np.asarray(Image.fromarray(raw, mode="L").resize((28, 28), Image.BILINEAR))
    np.testing.assert_array_equal(ds.class_images(7)[2, :, :, 0], expected)
    np.testing.assert_array_equal(
        EpisodeSampler(ds, 5, 1).gather(np.array([ds.class_start[7] + 2]))[0, :, :, 0],
        expected.astype(np.float32) / np.float32(255),
    )


@needs_omniglot
def test_omniglot_84px_rgb_and_transformed_domain():
    plain = load_split("omniglot", OMNIGLOT, "val", image_size=84, channels=3, rotations="none")
    assert plain.images.shape == (172 * 20, 84, 84, 3) and plain.images.strides[-1] == 0
    np.testing.assert_array_equal(plain.images[5, ..., 0], plain.images[5, ..., 2])
    assert plain.mean == (0.922,) * 3 and plain.std == (0.084,) * 3

    tr = load_split("omniglot_transformed", OMNIGLOT, "val", cache=False)
    assert tr.images.shape == (172 * 20, 84, 84, 3) and tr.num_classes == 172
    assert tr.class_names == plain.class_names
    # Dark ink on light, coloured backgrounds: a different domain.
    assert tr.images.mean() / 255 > 0.6
    assert not np.array_equal(tr.images[0, ..., 0], tr.images[0, ..., 1])
    # Colours are a fixed function of (class name, drawing), not of the run.
    bg, ink = omniglot._image_colours(tr.class_names[:3], [20] * 3)
    bg2, ink2 = omniglot._image_colours(tr.class_names[:3], [20] * 3)
    np.testing.assert_array_equal(bg, bg2)
    assert np.all(bg.min(axis=1) > ink.max(axis=1)) and len(np.unique(bg[:, 0])) == 60
    # Grey level of the first image's background pixel = its background colour.
    np.testing.assert_allclose(tr.images[0, 0, 0] / 255, bg[0], atol=1 / 255)


# --- episode invariants -----------------------------------------------------------


@pytest.mark.parametrize("n_way,k_shot,num_queries", [(5, 1, 1), (5, 5, 1), (3, 2, 7), (4, 3, 8)])
def test_episode_invariants(n_way, k_shot, num_queries):
    ds = _toy_dataset()
    sampler = EpisodeSampler(ds, n_way, k_shot, num_queries=num_queries, seed=3)
    B = 200
    idx = sampler.sample_indices(B, step=11)
    batch = sampler.batch_from_indices(idx)
    assert batch["support_images"].shape == (B, n_way * k_shot, 6, 6, 1)
    assert batch["query_images"].shape == (B, num_queries, 6, 6, 1)
    assert batch["support_labels"].dtype == np.int32 and batch["query_labels"].dtype == np.int32
    class_of = np.repeat(np.arange(ds.num_classes), ds.class_sizes)
    sorted_count = 0
    for b in range(B):
        classes = idx["episode_classes"][b]
        assert len(set(classes.tolist())) == n_way
        sup, sup_lab = idx["support_index"][b], idx["support_labels"][b]
        assert np.all(np.bincount(sup_lab, minlength=n_way) == k_shot)
        np.testing.assert_array_equal(class_of[sup], classes[sup_lab])
        q, q_lab = idx["query_index"][b], idx["query_labels"][b]
        assert np.all((0 <= q_lab) & (q_lab < n_way))
        np.testing.assert_array_equal(class_of[q], classes[q_lab])
        # Queries spread over classes as evenly as possible.
        counts = np.bincount(q_lab, minlength=n_way)
        assert counts.max() - counts.min() <= 1
        assert len(set(sup.tolist()) | set(q.tolist())) == sup.size + q.size  # all distinct
        sorted_count += bool(np.all(np.diff(sup_lab) >= 0))
    # Support order is shuffled, not class-grouped.
    assert sorted_count < B // 4
    # Labels are randomly permuted: the label of the smaller class id varies.
    first = idx["episode_classes"].argmin(axis=1)
    assert len(np.unique(first)) == n_way
    # Images are the indexed ones (toy image value = index mod 256).
    np.testing.assert_array_equal(
        batch["support_images"][:, :, 0, 0, 0],
        (idx["support_index"] % 256).astype(np.float32) / 255,
    )


def test_single_query_class_is_uniform_and_episode_classes_cover_pool():
    ds = _toy_dataset(num_classes=7)
    idx = EpisodeSampler(ds, 5, 1).sample_indices(7000, step=0)
    counts = np.bincount(idx["query_labels"][:, 0], minlength=5)
    assert np.all(np.abs(counts - 1400) < 150)
    pool = np.bincount(idx["episode_classes"].ravel(), minlength=7)
    assert np.all(np.abs(pool - 5000) < 300)


def test_choose_distinct_is_uniform_over_subsets_and_orders():
    # 6 choose 3 = 20 subsets, 120 ordered triples: compare with exact 1/120.
    x = choose_distinct(np.random.default_rng(0), np.full(60000, 6), 3)
    assert np.all(np.sort(x, axis=1)[:, :-1] < np.sort(x, axis=1)[:, 1:])
    counts = np.bincount(x[:, 0] * 36 + x[:, 1] * 6 + x[:, 2], minlength=216)
    counts = counts[counts > 0]
    assert counts.size == 120
    assert np.all(np.abs(counts - 500) < 5 * np.sqrt(500))  # 5 sigma, binomial


def test_future_shots_and_uint8_and_normalize():
    ds = _toy_dataset(channels=3)
    s = EpisodeSampler(ds, 5, 2, num_queries=5, future_shots=3, seed=0)
    idx = s.sample_indices(16, 0)
    assert idx["future_index"].shape == (16, 15)
    for b in range(16):
        all_idx = np.concatenate(
            [idx["support_index"][b], idx["future_index"][b], idx["query_index"][b]]
        )
        assert len(set(all_idx.tolist())) == all_idx.size
        assert np.all(np.bincount(idx["future_labels"][b], minlength=5) == 3)
    raw = EpisodeSampler(ds, 5, 2, image_dtype=np.uint8).sample(4, 0)["support_images"]
    flt = EpisodeSampler(ds, 5, 2).sample(4, 0)["support_images"]
    norm = EpisodeSampler(ds, 5, 2, normalize=True).sample(4, 0)["support_images"]
    assert raw.dtype == np.uint8
    np.testing.assert_array_equal(raw / np.float32(255), flt)
    np.testing.assert_allclose(norm, (flt - 0.5) / 0.25, rtol=1e-6, atol=1e-6)


def test_broadcast_channels_gather_like_a_real_copy():
    ds1 = _toy_dataset(channels=1)
    view = np.broadcast_to(ds1.images, (*ds1.images.shape[:3], 3))
    fields = dict(
        class_start=ds1.class_start, name="toy", split="train", class_names=ds1.class_names
    )
    ds_view = ClassImages(images=view, mean=(0.5,) * 3, std=(0.25,) * 3, **fields)
    ds_copy = ClassImages(images=view.copy(), mean=(0.5,) * 3, std=(0.25,) * 3, **fields)
    for kw in ({}, {"normalize": True}, {"image_dtype": np.uint8}):
        _assert_batches_equal(
            EpisodeSampler(ds_view, 5, 2, **kw).sample(8, 3),
            EpisodeSampler(ds_copy, 5, 2, **kw).sample(8, 3),
        )


def test_sampler_rejects_impossible_episodes():
    ds = _toy_dataset(num_classes=4, per_class=3)
    with pytest.raises(ValueError, match="classes"):
        EpisodeSampler(ds, 5, 1)
    with pytest.raises(ValueError, match="distinct images per class"):
        EpisodeSampler(ds, 2, 3, num_queries=1)


# --- determinism --------------------------------------------------------------------


def _assert_batches_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_sample_is_a_function_of_seed_and_step():
    ds = _toy_dataset()
    a = EpisodeSampler(ds, 5, 1, seed=7)
    b = EpisodeSampler(ds, 5, 1, seed=7)
    np.random.seed(0)
    x = a.sample(32, 100)
    np.random.seed(1)
    _assert_batches_equal(x, b.sample(32, 100))
    assert not np.array_equal(x["support_images"], a.sample(32, 101)["support_images"])
    assert not np.array_equal(
        x["support_images"], EpisodeSampler(ds, 5, 1, seed=8).sample(32, 100)["support_images"]
    )
    # step 0 must differ from step 10 etc. (NumPy drops trailing zero seed words).
    assert not np.array_equal(
        a.sample(8, 0)["support_images"],
        EpisodeSampler(ds, 5, 1, seed=0).sample(8, 7)["support_images"],
    )


def test_fixed_episodes_identical_across_calls_instances_and_seeds():
    ds = _toy_dataset()
    a = EpisodeSampler(ds, 5, 2, seed=0)
    b = EpisodeSampler(ds, 5, 2, seed=123)  # training seed must not matter
    np.random.seed(5)
    x = a.fixed_episodes(150, seed=42)
    np.random.seed(6)
    _assert_batches_equal(x, b.fixed_episodes(150, seed=42))
    _assert_batches_equal(x, a.fixed_episodes(150, seed=42))
    assert x["support_images"].shape[0] == 150
    # Prefix-stable and equal to the batched iterator.
    _assert_batches_equal({k: v[:70] for k, v in x.items()}, a.fixed_episodes(70, seed=42))
    parts = list(a.iterate_fixed(150, seed=42, batch_size=40))
    assert [p["support_images"].shape[0] for p in parts] == [40, 40, 40, 30]
    _assert_batches_equal(x, {k: np.concatenate([p[k] for p in parts]) for k in x})
    assert not np.array_equal(x["support_images"], a.fixed_episodes(150, seed=43)["support_images"])
    # Not the training stream.
    assert not np.array_equal(x["support_images"][:16], a.sample(16, 42)["support_images"])


def test_iterate_prefetch_matches_sample():
    ds = _toy_dataset()
    s = EpisodeSampler(ds, 5, 1, seed=2)
    got = list(s.iterate(8, start_step=5, num_steps=6, prefetch=3, num_threads=2))
    assert [step for step, _ in got] == list(range(5, 11))
    for step, batch in got:
        _assert_batches_equal(batch, s.sample(8, step))
    it = s.iterate(8, start_step=0)  # endless; closing stops the workers
    assert next(it)[0] == 0 and next(it)[0] == 1
    it.close()


@needs_omniglot
def test_real_omniglot_episodes_query_not_in_support():
    ds = load_split("omniglot", OMNIGLOT, "val")
    s = EpisodeSampler(ds, 5, 1)
    idx = s.sample_indices(128, 0)
    batch = s.batch_from_indices(idx)
    for b in range(128):
        assert idx["query_index"][b, 0] not in idx["support_index"][b]
        assert idx["query_labels"][b, 0] in batch["support_labels"][b]
        same = batch["support_images"][b] == batch["query_images"][b, 0]
        assert not np.any(np.all(same, axis=(1, 2, 3)))


# --- rotations ------------------------------------------------------------------------


def test_rotation_matches_pil_counter_clockwise():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(1, 9, 9, 1), dtype=np.uint8)
    out, starts, names = add_rotated_classes(img, np.array([0, 1]), ["a"])
    assert names == ("a", "a/rot90", "a/rot180", "a/rot270") and starts.tolist() == [0, 1, 2, 3, 4]
    for k in range(4):
        pil = np.asarray(Image.fromarray(img[0, :, :, 0]).rotate(90 * k))
        np.testing.assert_array_equal(out[k, :, :, 0], pil)


# --- readers on fixtures -------------------------------------------------------------


def _write_png_omniglot(root: Path, classes: list[str], images_per_class=4):
    """Writes real Omniglot characters as mode-'1' black-on-white PNGs."""
    bits, labels, names = _raw_omniglot()
    for i, name in enumerate(classes):
        folder = "images_background" if i % 2 == 0 else "images_evaluation"
        alphabet, character = name.split("/")
        d = root / folder / alphabet / character
        d.mkdir(parents=True)
        imgs = bits[labels == names.index(name)][:images_per_class]
        for j, im in enumerate(imgs):
            Image.fromarray((1 - im).astype(bool)).save(d / f"{9000 + i:04d}_{j + 1:02d}.png")
    return {"train": classes[:3], "val": classes[3:4], "test": classes[4:]}


FIXTURE_CLASSES = ["Latin/character01", "Greek/character05", "Korean/character10",
                   "Bengali/character02", "Gurmukhi/character42",
                   "Tengwar/character03"]  # fmt: skip


@needs_omniglot
def test_png_omniglot_reader_matches_npz(tmp_path):
    splits = _write_png_omniglot(tmp_path / "png", FIXTURE_CLASSES)
    split_file = tmp_path / "my_splits.json"
    split_file.write_text(json.dumps(splits))
    # No splits.json in the PNG folder and none given: a clear error.
    with pytest.raises(DatasetError, match="splits.json"):
        load_split("omniglot", tmp_path / "png", "train", cache=False)
    png = load_split("omniglot", tmp_path / "png", "train", splits_file=split_file, cache=False)
    (tmp_path / "png" / "splits.json").write_text(json.dumps(splits))
    png2 = load_split("omniglot", tmp_path / "png", "train", source="png", cache=False)
    npz = load_split("omniglot", OMNIGLOT, "train", splits_file=split_file, cache=False)
    assert png.num_classes == 12 and png.class_names[:3] == tuple(splits["train"])
    # PNG folders hold 4 drawings per class here, the npz 20: compare the first 4.
    np.testing.assert_array_equal(png.images, png2.images)
    for c in range(png.num_classes):
        np.testing.assert_array_equal(png.class_images(c), npz.class_images(c)[:4])
    test = load_split("omniglot", tmp_path / "png", "test", rotations="none", cache=False)
    assert test.class_names == tuple(splits["test"])


@needs_omniglot
def test_torchmeta_split_folder_is_accepted():
    folder = OMNIGLOT / "vinyals_split_modern-srwm"
    if not folder.is_dir():
        pytest.skip(f"{folder} not present")
    ds = load_split("omniglot", OMNIGLOT, "val", splits_file=folder, rotations="none", cache=False)
    assert sorted(ds.class_names) == sorted(
        load_split("omniglot", OMNIGLOT, "val", rotations="none").class_names
    )


@needs_omniglot
def test_tfds_reader_with_fake_module(tmp_path, monkeypatch):
    bits, labels, names = _raw_omniglot()
    alphabets = sorted({n.split("/")[0] for n in FIXTURE_CLASSES})

    def examples(classes):
        for name in classes:
            alphabet, character = name.split("/")
            for im in bits[labels == names.index(name)][:3]:
                rgb = np.repeat(((1 - im) * 255).astype(np.uint8)[..., None], 3, axis=2)
                yield {"image": rgb, "alphabet": alphabets.index(alphabet),
                       "alphabet_char_id": int(character[9:]) - 1, "label": 0}  # fmt: skip

    fake = types.ModuleType("tensorflow_datasets")
    calls = []

    def load(name, split, data_dir, with_info):
        calls.append((name, split, data_dir))
        info = types.SimpleNamespace(features={"alphabet": types.SimpleNamespace(names=alphabets)})
        return [list(examples(FIXTURE_CLASSES[::2])), list(examples(FIXTURE_CLASSES[1::2]))], info

    fake.load, fake.as_numpy = load, lambda ds: ds
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    splits = {
        "train": FIXTURE_CLASSES[:4], "val": FIXTURE_CLASSES[4:5], "test": FIXTURE_CLASSES[5:]
    }
    (tmp_path / "splits.json").write_text(json.dumps(splits))
    ds = load_split("omniglot", tmp_path, "train", rotations="none", cache=False)
    assert calls and calls[0][0] == "omniglot"
    npz = load_split("omniglot", OMNIGLOT, "train", splits_file=tmp_path / "splits.json",
                     rotations="none", cache=False)  # fmt: skip
    assert ds.class_names == tuple(splits["train"])
    for c in range(4):
        np.testing.assert_array_equal(ds.class_images(c), npz.class_images(c)[:3])


def _mini_fixture(num_classes=4, per_class=5, size=84, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(num_classes * per_class, size, size, 3), dtype=np.uint8)
    order = rng.permutation(len(images))  # class rows interleaved in the file
    class_dict = {f"n0{i:07d}": sorted(order[i * per_class : (i + 1) * per_class].tolist())
                  for i in range(num_classes)}  # fmt: skip
    return images, class_dict


def test_miniimagenet_pkl_reader(tmp_path):
    images, class_dict = _mini_fixture()
    d = tmp_path / "miniimagenet"
    d.mkdir()
    for split in ("train", "val", "test"):
        with open(d / f"mini-imagenet-cache-{split}.pkl", "wb") as f:
            pickle.dump({"image_data": images, "class_dict": class_dict}, f)
    ds = load_split("miniimagenet", tmp_path, "val", cache=False)
    assert ds.num_classes == 4 and ds.images.shape == (20, 84, 84, 3)
    for c, name in enumerate(sorted(class_dict)):
        assert ds.class_names[c] == name
        np.testing.assert_array_equal(ds.class_images(c), images[class_dict[name]])
    assert ds.mean == (0.485, 0.456, 0.406)
    small = load_split("miniimagenet", d, "train", image_size=32, cache=False)
    assert small.images.shape == (20, 32, 32, 3)
    b = EpisodeSampler(ds, 3, 2, num_queries=3).sample(4, 0)
    assert b["support_images"].shape == (4, 6, 84, 84, 3)


def test_miniimagenet_folder_reader(tmp_path):
    images, class_dict = _mini_fixture(num_classes=3, per_class=3)
    for name, rows in class_dict.items():
        (tmp_path / "test" / name).mkdir(parents=True)
        for j, r in enumerate(rows):
            Image.fromarray(images[r]).save(tmp_path / "test" / name / f"{name}_{j:04d}.png")
    # A JPEG of another size is decoded and squashed to 84 x 84.
    Image.fromarray(images[0][:60]).save(tmp_path / "test" / "n00000000" / "zz.jpg")
    ds = load_split("miniimagenet", tmp_path, "test", cache=False)
    assert ds.num_classes == 3 and ds.class_sizes.tolist() == [4, 3, 3]
    np.testing.assert_array_equal(ds.class_images(1), images[class_dict["n00000001"]])
    assert ds.images.shape[1:] == (84, 84, 3)
    with pytest.raises(DatasetError, match="mini-imagenet-cache-train.pkl"):
        load_split("miniimagenet", tmp_path, "train", cache=False)


def _write_cifar(root: Path, per_class=(3, 1), seed=0):
    rng = np.random.default_rng(seed)
    fine_to_coarse = rng.permutation(np.repeat(np.arange(20), 5))
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    out = {}
    for fname, n in zip(("train", "test"), per_class):
        fine = rng.permutation(np.repeat(np.arange(100), n))
        data = rng.integers(0, 256, size=(fine.size, 3072), dtype=np.uint8)
        raw = {
            b"data": data,
            b"fine_labels": fine.tolist(),
            b"coarse_labels": fine_to_coarse[fine].tolist(),
        }
        with open(d / fname, "wb") as f:
            pickle.dump(raw, f)
        out[fname] = (data, fine)
    return fine_to_coarse, out


def test_fc100_reader(tmp_path):
    fine_to_coarse, files = _write_cifar(tmp_path)
    seen = set()
    for split, n_classes in (("train", 60), ("val", 20), ("test", 20)):
        ds = load_split("fc100", tmp_path, split, cache=False)
        assert ds.num_classes == n_classes and ds.images.shape == (n_classes * 4, 32, 32, 3)
        fines = [int(n.split("fine")[1]) for n in ds.class_names]
        assert {int(fine_to_coarse[f]) for f in fines} == set(FC100_SUPERCLASSES[split])
        seen |= set(fines)
    assert seen == set(range(100))
    # Pixel layout: row = R plane, G plane, B plane of 32 x 32; train images first.
    data, fine = files["train"]
    c = fines[0]
    first = data[np.flatnonzero(fine == c)[0]]
    np.testing.assert_array_equal(
        ds.class_images(0)[0], first.reshape(3, 32, 32).transpose(1, 2, 0)
    )
    test_data, test_fine = files["test"]
    np.testing.assert_array_equal(
        ds.class_images(0)[3],
        test_data[np.flatnonzero(test_fine == c)[0]].reshape(3, 32, 32).transpose(1, 2, 0),
    )


# --- errors -----------------------------------------------------------------------------


def test_missing_data_raises_one_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_split("omniglot", tmp_path / "nope", "train")
    with pytest.raises(DatasetError, match="expected omniglot.npz"):
        load_split("omniglot", tmp_path, "train", source="npz")
    with pytest.raises(DatasetError, match="Mini-ImageNet not found"):
        load_split("miniimagenet", tmp_path, "train")
    with pytest.raises(DatasetError, match="cifar-100-python/train"):
        load_split("fc100", tmp_path, "train")
    with pytest.raises(ValueError, match="unknown dataset"):
        load_split("imagenet", tmp_path, "train")
    with pytest.raises(ValueError, match="split"):
        load_split("omniglot", tmp_path, "validation")
    assert issubclass(DatasetError, ValueError)


def test_malformed_data_raises_dataset_error(tmp_path):
    (tmp_path / "omniglot.npz").write_bytes(b"not a zip file")
    (tmp_path / "splits.json").write_text(json.dumps({"train": [], "val": [], "test": []}))
    with pytest.raises(DatasetError, match="empty"):
        load_split("omniglot", tmp_path, "train", cache=False)
    (tmp_path / "splits.json").write_text(
        json.dumps({"train": ["Latin/character01"], "val": [], "test": []})
    )
    with pytest.raises(DatasetError, match="omniglot.npz is truncated or corrupt"):
        load_split("omniglot", tmp_path, "train", cache=False)
    (tmp_path / "splits.json").write_text("{broken")
    with pytest.raises(DatasetError, match="split file"):
        load_split("omniglot", tmp_path, "train", cache=False)

    mini = tmp_path / "mini"
    mini.mkdir()
    with open(mini / "mini-imagenet-cache-train.pkl", "wb") as f:
        pickle.dump({"images": np.zeros((2, 84, 84, 3), np.uint8)}, f)
    with pytest.raises(DatasetError, match="malformed Mini-ImageNet pickle"):
        load_split("miniimagenet", mini, "train", cache=False)
    with open(mini / "mini-imagenet-cache-val.pkl", "wb") as f:
        pickle.dump(
            {"image_data": np.zeros((2, 84, 84, 3), np.uint8), "class_dict": {"a": [0, 5]}}, f
        )
    with pytest.raises(DatasetError, match="outside image_data"):
        load_split("miniimagenet", mini, "val", cache=False)

    cifar = tmp_path / "cifar" / "cifar-100-python"
    cifar.mkdir(parents=True)
    for name in ("train", "test"):
        with open(cifar / name, "wb") as f:
            pickle.dump({b"data": np.zeros((4, 100), np.uint8), b"fine_labels": [0] * 4}, f)
    with pytest.raises(DatasetError, match="malformed CIFAR-100 pickle"):
        load_split("fc100", tmp_path / "cifar", "train", cache=False)


def _truncate_copy(src, dst, fraction=0.5):
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[:int(len(data) * fraction)])


@pytest.mark.omniglot
def test_truncated_data_files_are_one_line_naming_the_file_and_the_remedy(tmp_path):
    """Issue 24 kind 8: every format we read (npz, PNG, Mini-ImageNet pickle and images, CIFAR
    pickle), cut short as an interrupted download or copy leaves it."""
    from fewshot.data.metadata import class_sizes  # noqa: PLC0415

    omni = tmp_path / "omniglot"
    omni.mkdir()
    shutil.copy(OMNIGLOT_DIR / "splits.json", omni / "splits.json")
    _truncate_copy(OMNIGLOT_DIR / "omniglot.npz", omni / "omniglot.npz")
    checks = [(lambda: class_sizes("omniglot", omni, "train"), omni / "omniglot.npz", "delete it"),
              (lambda: load_split("omniglot", omni, "train", cache=False), omni / "omniglot.npz",
               "delete it")]

    png_root = tmp_path / "png"
    good = png_root / "images_background" / "Latin" / "character01"
    good.mkdir(parents=True)
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((105, 105), np.uint8)).save(buffer, format="PNG")
    (good / "a.png").write_bytes(buffer.getvalue())
    (good / "b.png").write_bytes(buffer.getvalue()[:40])
    (png_root / "splits.json").write_text(json.dumps({"train": ["Latin/character01"], "val": [],
                                                      "test": []}))
    checks.append((lambda: load_split("omniglot", png_root, "train", source="png", cache=False),
                   good / "b.png", "delete or replace it"))

    mini = tmp_path / "mini"
    mini.mkdir()
    with open(mini / "full.pkl", "wb") as f:
        pickle.dump({"image_data": np.arange(4 * 84 * 84 * 3, dtype=np.uint8).reshape(4, 84, 84, 3),
                     "class_dict": {"a": [0, 1], "b": [2, 3]}}, f)
    _truncate_copy(mini / "full.pkl", mini / "mini-imagenet-cache-train.pkl")
    checks.append((lambda: load_split("miniimagenet", mini, "train", cache=False),
                   mini / "mini-imagenet-cache-train.pkl", "delete it"))
    folder = tmp_path / "mini_folder" / "train" / "n01"
    folder.mkdir(parents=True)
    (folder / "x.png").write_bytes(buffer.getvalue()[:40])
    checks.append((lambda: load_split("miniimagenet", tmp_path / "mini_folder", "train",
                                      source="folder", cache=False),
                   folder / "x.png", "delete or replace it"))

    cifar = tmp_path / "cifar" / "cifar-100-python"
    cifar.mkdir(parents=True)
    with open(tmp_path / "full", "wb") as f:
        pickle.dump({b"data": np.zeros((4, 3072), np.uint8), b"fine_labels": [0] * 4,
                     b"coarse_labels": [0] * 4}, f)
    for name in ("train", "test"):
        _truncate_copy(tmp_path / "full", cifar / name)
    checks.append((lambda: load_split("fc100", tmp_path / "cifar", "train", cache=False),
                   cifar / "train", "delete it"))

    for load, path, remedy in checks:
        with pytest.raises(DatasetError) as info:
            load()
        message = str(info.value)
        assert f"{path} is truncated or corrupt" in message and remedy in message, message
        assert "\n" not in message and len(message) < 500, message


# --- delayed-label sequential stream ------------------------------------------------------


def test_occurrence_index_against_loop():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=(6, 40))
    expected = np.zeros_like(labels)
    for b in range(6):
        counts = {}
        for t, lab in enumerate(labels[b]):
            expected[b, t] = counts.get(lab, 0)
            counts[lab] = counts.get(lab, 0) + 1
    np.testing.assert_array_equal(occurrence_index(labels, 5), expected)


def test_sequential_stream():
    ds_a = _toy_dataset(num_classes=8, per_class=16, size=5, channels=3)
    ds_b = ClassImages(images=ds_a.images[::-1].copy(), class_start=ds_a.class_start, name="toy_b",
                       split="train", class_names=ds_a.class_names)  # fmt: skip
    stream = SequentialStream(ds_a, ds_b, n_way=5, shots=3, max_trim=10, seed=1)
    lengths, firsts = set(), set()
    for step in range(40):
        x = stream.sample(6, step)
        T = x["labels"].shape[1]
        assert x["images"].shape == (6, T, 5, 5, 3) and x["mask"].all()
        assert 30 - 20 <= T <= 30
        seg = x["segment_ids"]
        first = x["first_segment"]
        # One contiguous segment per dataset, the first one as reported.
        assert np.all(seg[:, 0] == first) and np.all(seg[:, -1] == 1 - first)
        assert np.all(np.diff(seg, axis=1) * (1 - 2 * first) >= 0)
        for s in (0, 1):
            m = seg[0] == s
            lab = x["labels"][:, m]
            np.testing.assert_array_equal(x["occurrence"][:, m], occurrence_index(lab, 5))
            assert lab.max() < 5 and x["occurrence"][:, m].max() < 3
        lengths.add(T)
        firsts.add(first)
    assert len(lengths) > 3 and firsts == {0, 1}
    # Evaluation: no trimming, order alternates with the batch index.
    for step in range(4):
        x = stream.sample(4, step, train=False)
        assert x["labels"].shape == (4, 30) and x["first_segment"] == step % 2
        assert np.all(np.bincount(x["labels"][0, :15], minlength=5) == 3)
    _assert_batches_equal(
        {k: v for k, v in stream.sample(4, 9).items() if k != "first_segment"},
        {
            k: v
            for k, v in SequentialStream(ds_a, ds_b, 5, 3, 10, seed=1).sample(4, 9).items()
            if k != "first_segment"
        },
    )
    raw = SequentialStream(ds_a, ds_b, 5, 3, 10, seed=1, image_dtype=np.uint8).sample(4, 9)
    np.testing.assert_array_equal(raw["images"] / np.float32(255), stream.sample(4, 9)["images"])
    got = list(stream.iterate(4, start_step=2, num_steps=3, train=False))
    assert [s for s, _ in got] == [2, 3, 4]
    np.testing.assert_array_equal(got[1][1]["images"], stream.sample(4, 3, train=False)["images"])
