"""Float64 per-step definitions of the operators, written from the paper's equations.

Independent of srwm_jax: plain jnp loops, run under float64 so that autodiff of these loops
gives reference gradients for the custom-VJP implementations.
"""
import jax
import jax.numpy as jnp
import numpy as np


def srwm_loop(x, Wy, Wq, Wk, Wb, input_softmax):
    """x [B,T,H,d]; W* [B,H,d,*] -> (y [B,T,H,dy], (Wy, Wq, Wk, Wb) at T)."""
    ys = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        if input_softmax:
            xt = jax.nn.softmax(xt, axis=-1)
        read = lambda W: jnp.einsum("bhi,bhio->bho", xt, W)  # noqa: E731
        ys.append(read(Wy))
        q = jax.nn.softmax(read(Wq), axis=-1)
        k = jax.nn.softmax(read(Wk), axis=-1)
        b = jax.nn.sigmoid(read(Wb))
        new = []
        for i, W in enumerate((Wy, Wq, Wk, Wb)):
            qW = jnp.einsum("bhi,bhio->bho", q, W)
            kW = jnp.einsum("bhi,bhio->bho", k, W)
            new.append(W + jnp.einsum("bhi,bho->bhio", k, b[..., i:i + 1] * (qW - kW)))
        Wy, Wq, Wk, Wb = new
    return jnp.stack(ys, axis=1), (Wy, Wq, Wk, Wb)


def delta_loop(q, k, v, beta, S):
    """q, k [B,T,H,dk]; v [B,T,H,dv]; beta [B,T,H]; S [B,H,dk,dv] -> (y [B,T,H,dv], S_T)."""
    ys = []
    for t in range(q.shape[1]):
        v_old = jnp.einsum("bhi,bhio->bho", k[:, t], S)
        S = S + jnp.einsum("bhi,bho->bhio", k[:, t], beta[:, t, :, None] * (v[:, t] - v_old))
        ys.append(jnp.einsum("bhi,bhio->bho", q[:, t], S))
    return jnp.stack(ys, axis=1), S


def srwm_scan64(x, Wy, Wq, Wk, Wb, input_softmax):
    """Same definition as srwm_loop, as a lax.scan (for long T)."""

    def step(W, xt):
        Wy, Wq, Wk, Wb = W
        if input_softmax:
            xt = jax.nn.softmax(xt, axis=-1)
        read = lambda M, v: jnp.einsum("bhi,bhio->bho", v, M)  # noqa: E731
        y = read(Wy, xt)
        q = jax.nn.softmax(read(Wq, xt), -1)
        k = jax.nn.softmax(read(Wk, xt), -1)
        b = jax.nn.sigmoid(read(Wb, xt))
        W = tuple(M + jnp.einsum("bhi,bho->bhio", k, b[..., i:i + 1] * (read(M, q) - read(M, k)))
                  for i, M in enumerate(W))
        return W, y

    W, ys = jax.lax.scan(step, (Wy, Wq, Wk, Wb), jnp.swapaxes(x, 0, 1))
    return jnp.swapaxes(ys, 0, 1), W


def delta_scan64(q, k, v, beta, S):
    """Same definition as delta_loop, as a lax.scan (for long T)."""

    def step(S, inputs):
        qt, kt, vt, bt = inputs
        v_old = jnp.einsum("bhi,bhio->bho", kt, S)
        S = S + jnp.einsum("bhi,bho->bhio", kt, bt[..., None] * (vt - v_old))
        return S, jnp.einsum("bhi,bhio->bho", qt, S)

    tm = lambda a: jnp.swapaxes(a, 0, 1)  # noqa: E731
    S, ys = jax.lax.scan(step, S, (tm(q), tm(k), tm(v), tm(beta)))
    return tm(ys), S


def to64(tree):
    return jax.tree.map(lambda a: jnp.asarray(np.asarray(a, np.float64)), tree)


def rel_err(a, b):
    """Relative L2 error of a against reference b."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))
