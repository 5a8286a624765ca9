"""Delayed-label sequential multi-task few-shot learning (paper Sec. 4.2, Fig. 3, App. B.5).

A sequence is one 5-way segment from dataset A followed by one from dataset B (or B then A).
At step t the model sees image t and the correct label of step t-1 (step 0 gets one_hot(0);
the label of the last step of the first segment is fed at the first step of the second), and
predicts the label of image t at every step. Loss: cross-entropy averaged over all positions.

Evaluation (Tables 2/7, Figs. 4/6): per dataset and order, the total accuracy of its segment and
the instance-level accuracy of the k-th occurrence of each class (k = 1, 2, 3, 5, 10), and the
accuracy at every step across the task switch.

Legend: B sequences, T steps (both segments), P padded steps, N ways, S image side, C channels.
"""
import numpy as np
import jax
import jax.numpy as jnp
import optax

from .data import SequentialStream, load_split
from .data.sampler import prefetch_steps
from .steps import TrainState

# Occurrence indices (0-based) of the instance-level columns 1st, 2nd, 3rd, 5th, 10th.
INSTANCE_OCCURRENCES = (0, 1, 2, 4, 9)


def delayed_label_inputs(labels, n_way):
    """labels int [B, T] -> label inputs [B, T, N]: step t gets one_hot(labels[t-1]), step 0
    gets one_hot(0) (as the original, which feeds a dummy label 0 first)."""
    previous = jnp.concatenate([jnp.zeros_like(labels[:, :1]), labels[:, :-1]], axis=1)
    return jax.nn.one_hot(previous, n_way)


def sequence_loss(model, config, params, batch_stats, batch, key, train):
    """Mean cross-entropy over the unmasked positions. Returns (loss, (metrics, batch_stats)).

    batch: images [B, T, S, S, C], labels int [B, T], mask bool [B, T] (False on padding)."""
    labels = batch["labels"]
    label_inputs = delayed_label_inputs(labels, config.n_way)
    variables = {"params": params, "batch_stats": batch_stats}
    if train:
        (logits, _), updates = model.apply(variables, batch["images"], label_inputs, train=True,
                                           mutable=["batch_stats"], rngs={"dropout": key})
        batch_stats = updates["batch_stats"]
    else:
        logits, _ = model.apply(variables, batch["images"], label_inputs, train=False)
    logits = logits.astype(jnp.float32)
    mask = batch["mask"].astype(jnp.float32)
    count = jnp.maximum(mask.sum(), 1.0)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    loss = jnp.sum(ce * mask) / count
    accuracy = jnp.sum((jnp.argmax(logits, -1) == labels) * mask) / count
    return loss, ({"accuracy": accuracy}, batch_stats)


def init_state(model, optimizer, config, example_batch, key):
    """Fresh TrainState (step 0) from one example sequence batch (images [1, T, S, S, C])."""
    label_inputs = delayed_label_inputs(example_batch["labels"], config.n_way)
    variables = model.init({"params": key, "dropout": key}, example_batch["images"], label_inputs,
                           train=False)
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}),
                      opt_state=optimizer.init(params))


def make_eval_step(model, config):
    """-> eval_step(state, batch) -> bool [B, T] (see its docstring)."""
    def eval_step(state, batch):
        """-> bool [B, T]: whether each position's prediction is correct."""
        label_inputs = delayed_label_inputs(batch["labels"], config.n_way)
        logits, _ = model.apply({"params": state.params, "batch_stats": state.batch_stats},
                                batch["images"], label_inputs, train=False)
        return jnp.argmax(logits, -1) == batch["labels"]
    return eval_step


# --- data ----------------------------------------------------------------------------------

def pad_batch(batch, length):
    """Pads a (trimmed) stream batch at the end to `length` steps, masked out.

    The padded steps repeat the sequence's own images from its start, so that BatchNorm's
    training-mode batch statistics stay close to those of the unpadded batch (the original has
    no padding; it pays one compilation per length instead). The model is causal and the pad
    comes last, so the real positions' outputs are otherwise unchanged. Also turns the scalar
    `first_segment` into an int32 [B] array so the batch can be split over devices."""
    B, T = batch["labels"].shape
    out = dict(batch)
    out["first_segment"] = np.full((B,), int(np.asarray(batch["first_segment"]).reshape(-1)[0]),
                                   np.int32)
    if length is None or length == T:
        return out
    if length < T:
        raise ValueError(f"cannot pad a {T}-step batch to {length} steps")
    wrap = np.arange(length - T) % T
    out["images"] = np.concatenate([batch["images"], batch["images"][:, wrap]], axis=1)
    for name, fill in (("labels", 0), ("segment_ids", -1), ("occurrence", -1)):
        out[name] = np.concatenate([batch[name], np.full((B, length - T), fill, batch[name].dtype)],
                                   axis=1)
    out["mask"] = np.concatenate([batch["mask"], np.zeros((B, length - T), bool)], axis=1)
    return out


class SequentialEpisodeSampler:
    """The two-domain stream of `config` for one split, with the sampler interface that
    `fewshot.train` uses (`sample`, `iterate`) plus fixed evaluation batches.

    config fields: dataset (A), second_dataset (B), data_dir / second_data_dir, image_size,
    rotations, n_way, sequential_shots, max_trim, normalize, sequential_pad."""

    def __init__(self, config, split, seed):
        second_dir = config.second_data_dir or config.data_dir
        self.ds_a = load_split(config.dataset, config.data_dir, split, image_size=config.image_size,
                               channels=3, rotations=config.rotations, source=config.data_source)
        self.ds_b = load_split(config.second_dataset, second_dir, split,
                               image_size=config.image_size, channels=3)
        self.names = (config.dataset, config.second_dataset)
        self.stream = SequentialStream(self.ds_a, self.ds_b, n_way=config.n_way,
                                       shots=config.sequential_shots, max_trim=config.max_trim,
                                       seed=seed, normalize=config.normalize)
        self.length = 2 * config.n_way * config.sequential_shots
        self.pad = config.sequential_pad

    def sample(self, batch_size, step, train=True, rows=None):
        """Batch `step` of `batch_size` sequences (padded to the full length if
        config.sequential_pad).

        rows: keep only these sequences (a process's share; the whole batch is drawn)."""
        batch = pad_batch(self.stream.sample(batch_size, step, train),
                          self.length if self.pad else None)
        return batch if rows is None else {k: v[rows] for k, v in batch.items()}

    def iterate(self, batch_size, start_step=0, *, num_steps=None, prefetch=4, num_threads=1,
                rows=None):
        """Yields (step, sample(batch_size, step, rows=rows)) for step = start_step, ..., made
        ahead in background threads (see fewshot.data.EpisodeSampler.iterate)."""
        return prefetch_steps(lambda s: self.sample(batch_size, s, True, rows), start_step,
                              num_steps, prefetch, num_threads)

    def fixed_batches(self, num_sequences, batch_size):
        """Evaluation batches (untrimmed; order alternates with the batch index: even = A first).
        The stream's seed fixes them; every model sees the same sequences."""
        for i, lo in enumerate(range(0, num_sequences, batch_size)):
            yield pad_batch(self.stream.sample(min(batch_size, num_sequences - lo), i, train=False),
                            None)


# --- evaluation ----------------------------------------------------------------------------

class SequentialAccuracy:
    """Accumulates per-position correctness into the Table 2/7 statistics and the accuracy curve.

    Indexed by order o (0: dataset A first, 1: B first), dataset d (0: A, 1: B)."""

    def __init__(self, length, max_occurrence=10):
        self.length, self.max_occurrence = length, max_occurrence
        self.curve_correct = np.zeros((2, length))   # [order, step]
        self.curve_count = np.zeros((2, length))
        self.occ_correct = np.zeros((2, 2, max_occurrence))  # [order, dataset, occurrence]
        self.occ_count = np.zeros((2, 2, max_occurrence))
        self.seg_correct = np.zeros((2, 2))
        self.seg_count = np.zeros((2, 2))

    def add(self, batch, correct):
        """Accumulates bool correct [B, T] of one evaluation batch."""
        correct = np.asarray(correct, np.float64)
        mask = np.asarray(batch["mask"], bool)
        for o in (0, 1):
            rows = np.asarray(batch["first_segment"]) == o
            if not rows.any():
                continue
            c, m = correct[rows], mask[rows]
            T = min(c.shape[1], self.length)
            self.curve_correct[o, :T] += (c * m).sum(0)[:T]
            self.curve_count[o, :T] += m.sum(0)[:T]
            seg, occ = np.asarray(batch["segment_ids"])[rows], np.asarray(batch["occurrence"])[rows]
            for d in (0, 1):
                in_seg = m & (seg == d)
                self.seg_correct[o, d] += c[in_seg].sum()
                self.seg_count[o, d] += in_seg.sum()
                for j in range(self.max_occurrence):
                    sel = in_seg & (occ == j)
                    self.occ_correct[o, d, j] += c[sel].sum()
                    self.occ_count[o, d, j] += sel.sum()

    def summary(self, names):
        """Dict: total accuracy, and per order "A_then_B"/"B_then_A" and dataset: total and
        instance-level accuracies (None where a column's occurrence never happens), and for both
        datasets pooled over the two orders."""
        def ratio(a, b):
            return float(a / b) if b else None

        def entry(sc, sn, oc, on):
            return {"total": ratio(sc, sn),
                    "instance": {f"{j + 1}": ratio(oc[j], on[j]) for j in INSTANCE_OCCURRENCES
                                 if j < self.max_occurrence}}
        out = {"total": ratio(self.seg_correct.sum(), self.seg_count.sum()), "orders": {},
               "pooled": {}}
        for o, order in enumerate((f"{names[0]}->{names[1]}", f"{names[1]}->{names[0]}")):
            out["orders"][order] = {names[d]: entry(self.seg_correct[o, d], self.seg_count[o, d],
                                                    self.occ_correct[o, d], self.occ_count[o, d])
                                    for d in (0, 1)}
        for d in (0, 1):
            out["pooled"][names[d]] = entry(self.seg_correct[:, d].sum(),
                                            self.seg_count[:, d].sum(),
                                            self.occ_correct[:, d].sum(0),
                                            self.occ_count[:, d].sum(0))
        return out

    def curves(self):
        """Accuracy per step [2 orders, T] (NaN where no sequence reaches a step)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.curve_correct / self.curve_count


def evaluate_sequences(eval_step, mesh, state, task, num_sequences, batch_size, max_occurrence=10):
    """Runs `eval_step` on the task's fixed evaluation sequences -> SequentialAccuracy."""
    acc = SequentialAccuracy(task.length, max_occurrence)
    for batch in task.fixed_batches(num_sequences, batch_size):
        padded, size = mesh.pad_batch(batch)
        correct = np.asarray(eval_step(state, mesh.put_batch(padded)))[:size]
        acc.add(batch, correct)
    return acc


def sequence_validation(eval_step, mesh, state, task, num_sequences, batch_size):
    """Validation scalars on `num_sequences` fixed sequences: "accuracy" over every position
    (the model-selection metric) and "occurrence_k", the accuracy on the k-th occurrence of a
    class (k = 1, 2, 3, 5, 10 where sequences are long enough), pooled over both datasets and
    orders: 2nd+ above 1st is the sign of learning from the delayed labels (paper Figs. 8/9)."""
    acc = evaluate_sequences(eval_step, mesh, state, task, num_sequences, batch_size)
    out = {"accuracy": acc.summary(task.names)["total"]}
    correct, count = acc.occ_correct.sum((0, 1)), acc.occ_count.sum((0, 1))
    for j in INSTANCE_OCCURRENCES:
        if j < acc.max_occurrence and count[j]:
            out[f"occurrence_{j + 1}"] = float(correct[j] / count[j])
    return out
