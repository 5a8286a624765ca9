"""V-trace against a hand-computed example and against the recursive/sum definition (float64)."""

import jax
import numpy as np
import pytest

from rl import vtrace


def _vtrace_by_definition(log_rhos, discounts, rewards, values, bootstrap, rho_bar=1.0, c_bar=1.0):
    """IMPALA Eq. (1), written as the explicit sum (float64, no recursion):

    v_s = V(x_s) + Σ_{t=s}^{T-1} (Π_{i=s}^{t-1} γ_i) (Π_{i=s}^{t-1} c_i) ρ_t
                   (r_t + γ_t V(x_{t+1}) - V(x_t))
    """
    log_rhos, discounts, rewards, values, bootstrap = (
        np.asarray(a, np.float64) for a in (log_rhos, discounts, rewards, values, bootstrap))
    T = len(rewards)
    rhos = np.exp(log_rhos)
    clipped, cs = np.minimum(rhos, rho_bar), np.minimum(rhos, c_bar)
    values_next = np.concatenate([values[1:], bootstrap[None]])
    vs = []
    for s in range(T):
        v = values[s].copy()
        for t in range(s, T):
            v += (np.prod(discounts[s:t], axis=0) * np.prod(cs[s:t], axis=0) * clipped[t]
                  * (rewards[t] + discounts[t] * values_next[t] - values[t]))
        vs.append(v)
    vs = np.stack(vs)
    vs_next = np.concatenate([vs[1:], bootstrap[None]])
    pg_adv = np.minimum(rhos, rho_bar) * (rewards + discounts * vs_next - values)
    return vs, pg_adv


def test_hand_computed_on_policy():
    # On-policy (ρ = c = 1), T = 2, γ = 0.5, B = 1:
    #   v_1 = r_1 + γ V_boot = 2 + 0.5*4 = 4
    #   v_0 = r_0 + γ v_1    = 1 + 0.5*4 = 3
    #   pg_0 = r_0 + γ v_1 - V_0 = 1 + 2 - 1 = 2 ; pg_1 = r_1 + γ V_boot - V_1 = 2 + 2 - 3 = 1
    out = vtrace.vtrace_from_importance_weights(
        log_rhos=np.zeros((2, 1)), discounts=np.full((2, 1), 0.5),
        rewards=np.array([[1.0], [2.0]]), values=np.array([[1.0], [3.0]]),
        bootstrap_value=np.array([4.0]))
    np.testing.assert_allclose(out.vs[:, 0], [3.0, 4.0], rtol=1e-6)
    np.testing.assert_allclose(out.pg_advantages[:, 0], [2.0, 1.0], rtol=1e-6)


def test_hand_computed_off_policy_clipping():
    # ρ_0 = 0.5 (not clipped), ρ_1 = e ≈ 2.72 (clipped to 1), γ = 0.9, V = 0, bootstrap 10:
    #   δ_1 = 1 * (1 + 0.9*10 - 0) = 10       → v_1 = 10
    #   δ_0 = 0.5 * (1 + 0.9*0 - 0) = 0.5     → v_0 = 0.5 + 0.9 * c_0 * (v_1 - V_1)
    #                                               = 0.5 + 0.9*0.5*10 = 5
    #   pg_0 = ρ_0 (r_0 + γ v_1 - V_0) = 0.5 * (1 + 9) = 5 ; pg_1 = 1 * (1 + 9) = 10
    out = vtrace.vtrace_from_importance_weights(
        log_rhos=np.log(np.array([[0.5], [np.e]])), discounts=np.full((2, 1), 0.9),
        rewards=np.ones((2, 1)), values=np.zeros((2, 1)), bootstrap_value=np.array([10.0]))
    np.testing.assert_allclose(out.vs[:, 0], [5.0, 10.0], rtol=1e-5)
    np.testing.assert_allclose(out.pg_advantages[:, 0], [5.0, 10.0], rtol=1e-5)


@pytest.mark.parametrize("T,B", [(1, 1), (5, 3), (17, 4)])
def test_matches_definition(T, B):
    rng = np.random.default_rng(T * 100 + B)
    log_rhos = rng.normal(0, 1.0, (T, B))          # ρ on both sides of ρ̄ = 1
    discounts = 0.99 * (rng.uniform(size=(T, B)) > 0.2)  # some episode ends inside
    rewards = rng.normal(size=(T, B))
    values = rng.normal(size=(T, B))
    bootstrap = rng.normal(size=B)
    ref_vs, ref_pg = _vtrace_by_definition(log_rhos, discounts, rewards, values, bootstrap)
    out = jax.jit(vtrace.vtrace_from_importance_weights)(
        *(np.float32(a) for a in (log_rhos, discounts, rewards, values, bootstrap)))
    # float32 scan vs float64 sum: errors ~1e-6 relative on O(1-10) values.
    np.testing.assert_allclose(out.vs, ref_vs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.pg_advantages, ref_pg, rtol=1e-5, atol=1e-5)


def test_from_logits_and_no_gradient():
    rng = np.random.default_rng(0)
    T, B, A = 4, 2, 5
    behaviour = np.float32(rng.normal(size=(T, B, A)))
    target = np.float32(rng.normal(size=(T, B, A)))
    actions = rng.integers(0, A, (T, B))
    args = dict(discounts=np.full((T, B), 0.9, np.float32),
                rewards=np.float32(rng.normal(size=(T, B))),
                values=np.float32(rng.normal(size=(T, B))),
                bootstrap_value=np.float32(rng.normal(size=B)))
    out = vtrace.vtrace_from_logits(behaviour, target, actions, **args)
    log_softmax = lambda x: x - np.log(np.exp(x).sum(-1, keepdims=True))  # noqa: E731
    pick = lambda lp: np.take_along_axis(lp, actions[..., None], -1)[..., 0]  # noqa: E731
    log_rhos = pick(log_softmax(np.float64(target))) - pick(log_softmax(np.float64(behaviour)))
    ref_vs, ref_pg = _vtrace_by_definition(log_rhos, **{k: v for k, v in args.items()
                                                        if k != "bootstrap_value"},
                                           bootstrap=args["bootstrap_value"])
    np.testing.assert_allclose(out.vs, ref_vs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.pg_advantages, ref_pg, rtol=1e-5, atol=1e-5)
    grad = jax.grad(lambda v: vtrace.vtrace_from_logits(behaviour, target, actions,
                                                        args["discounts"], args["rewards"], v,
                                                        args["bootstrap_value"]).vs.sum())(args["values"])
    np.testing.assert_array_equal(grad, 0.0)
