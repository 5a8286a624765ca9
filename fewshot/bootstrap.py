"""Bootstrapped few-shot learning (Irie & Schmidhuber, ICLR 2023 workshop, "Accelerating Neural
Self-Improvement via Bootstrapping"; the original's main_few_shot_sync_bootstrapping.py).

Per class: K support and F "future" examples, plus the query (the original scores one query per
episode; config.train_queries = Q > 1 scores Q distinct queries in training, each read on its
own from the same state, as in fewshot.models). All images distinct. Four passes, chained
through the recurrent state of the sequence model (each a separate model call, so in training
BatchNorm uses the statistics of each call's own images, as the original's separate forwards):

  1. support pass (N*K labelled images)         -> state S
  2. query from S (label input one_hot(0))      -> K-shot logits      (student)
  3. future pass (N*F labelled images) from S   -> state S'
  4. query from S'                              -> (K+F)-shot logits  (teacher)

loss = main_w * CE(K-shot) + bootstrap_w * KL(teacher || student) + future_w * CE(K+F-shot)

with KL = torch KLDivLoss(reduction="batchmean", log_target=True)(log_softmax(student),
log_softmax(teacher).detach()) = sum_b sum_n p_t (log p_t - log p_s) / B. Only the teacher
inside the KL term is detached; the (K+F)-shot CE still trains the teacher pass. The original's
default without --use_kl_loss (an MSE between detached fast-weight states) is not implemented.

Legend: B episodes, N ways, K shots, F future shots.
"""
import jax
import jax.numpy as jnp
import optax

from .models import first_queries, query_label_inputs, repeat_per_query


def bootstrap_objective(student_logits, teacher_logits, target, main_weight=1.0,
                        bootstrap_weight=10.0, future_weight=1.0):
    """student_logits, teacher_logits [B, N] (K-shot and (K+F)-shot query predictions), target int
    [B] -> (loss, terms dict)."""
    student_logits = student_logits.astype(jnp.float32)
    teacher_logits = teacher_logits.astype(jnp.float32)
    main_ce = optax.softmax_cross_entropy_with_integer_labels(student_logits, target).mean()
    future_ce = optax.softmax_cross_entropy_with_integer_labels(teacher_logits, target).mean()
    log_student = jax.nn.log_softmax(student_logits, axis=-1)
    log_teacher = jax.lax.stop_gradient(jax.nn.log_softmax(teacher_logits, axis=-1))
    # KLDivLoss "batchmean": summed over classes and batch, divided by the batch size.
    kl = jnp.sum(jnp.exp(log_teacher) * (log_teacher - log_student)) / student_logits.shape[0]
    loss = main_weight * main_ce + bootstrap_weight * kl + future_weight * future_ce
    return loss, {"kshot_loss": main_ce, "future_loss": future_ce, "bootstrap_kl": kl}


def bootstrap_passes(model, config, params, batch_stats, batch, key, train, num_queries=1):
    """The four chained passes
    -> (K-shot logits [B, Q, N], (K+F)-shot logits [B, Q, N], batch_stats).

    batch: support_images [B, NK, ...], support_labels [B, NK], future_images [B, NF, ...],
    future_labels [B, NF], query_images [B, Q', ...]. The first Q = num_queries queries are
    used (the original: 1); each reads the support (or support + future) state on its own, as a
    one-step sequence from a copy of that state, so queries never see one another."""
    n = config.n_way
    query_images = first_queries(batch, num_queries)
    B, Q = query_images.shape[:2]
    query_images = query_images.reshape((B * Q, 1) + query_images.shape[2:])
    query_inputs = query_label_inputs(config.query_label, (B * Q, 1), n)
    keys = jax.random.split(key, 4)

    def call(stats, images, label_inputs, state, k):
        variables = {"params": params, "batch_stats": stats}
        if train:
            (logits, new_state), updates = model.apply(
                variables, images, label_inputs, train=True, state=state, mutable=["batch_stats"],
                rngs={"dropout": k})
            return logits, new_state, updates["batch_stats"]
        logits, new_state = model.apply(variables, images, label_inputs, train=False, state=state)
        return logits, new_state, stats

    # Running BatchNorm averages are updated by each call in turn, as the original's forwards.
    _, support_state, batch_stats = call(batch_stats, batch["support_images"],
                                         jax.nn.one_hot(batch["support_labels"], n), None, keys[0])
    student, _, batch_stats = call(batch_stats, query_images, query_inputs,
                                   repeat_per_query(support_state, Q), keys[1])
    _, future_state, batch_stats = call(batch_stats, batch["future_images"],
                                        jax.nn.one_hot(batch["future_labels"], n), support_state,
                                        keys[2])
    teacher, _, batch_stats = call(batch_stats, query_images, query_inputs,
                                   repeat_per_query(future_state, Q), keys[3])
    return student.reshape(B, Q, n), teacher.reshape(B, Q, n), batch_stats


def bootstrap_loss(model, config, params, batch_stats, batch, key, train):
    """Loss of one batch of bootstrapping episodes, every term averaged over the B x Q queries
    (Q = config.train_queries in training, 1 otherwise). Returns (loss, (metrics, batch_stats))."""
    Q = config.train_queries if train else 1
    student, teacher, batch_stats = bootstrap_passes(model, config, params, batch_stats, batch, key,
                                                     train, Q)
    n = student.shape[-1]
    student, teacher = student.reshape(-1, n), teacher.reshape(-1, n)
    target = batch["query_labels"][:, :Q].reshape(-1)
    loss, terms = bootstrap_objective(student, teacher, target, config.bootstrap_main_weight,
                                      config.bootstrap_weight, config.bootstrap_future_weight)
    terms["accuracy"] = jnp.mean(jnp.argmax(student, -1) == target)  # K-shot (the evaluated model)
    terms["future_accuracy"] = jnp.mean(jnp.argmax(teacher, -1) == target)
    return loss, (terms, batch_stats)
