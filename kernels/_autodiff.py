"""Derivatives of a kernel op to any order: kernels for the first, the reference beyond.

`jax.grad` cannot differentiate a `pallas_call`, and a `jax.custom_vjp` whose backward is a
kernel can be differentiated only once: grad-of-grad would differentiate the kernels
themselves. `kernel_op` wires three custom VJPs so that every derivative a user can take is
defined:

  op(args, aux)            forward kernel; its VJP is `backward` (the backward kernel)
  _with_residuals          the forward kernel that also returns the residuals; used by op's
                           VJP so that the outputs stay differentiable when the VJP itself is
                           differentiated (second order)
  _grads                   `backward`; its own VJP differentiates the *reference's* VJP
                           (`jax.vjp` of `reference`), so reverse-over-reverse gradients equal
                           those of the reference (the `lax.scan` path in `srwm_jax`)

First-order use costs what it did before (one forward kernel, one backward kernel). Second
order runs the kernels for the values and the reference for the second derivatives.
`aux` holds non-differentiable arrays (the reset mask); it gets no cotangent.
"""
import jax


def kernel_op(forward, forward_with_residuals, backward, reference):
    """Builds op(args, aux) -> outputs.

    forward(args, aux) -> outputs;  forward_with_residuals(args, aux) -> (outputs, residuals)
    backward(args, aux, residuals, output_cotangents) -> cotangents shaped like args
    reference(args, aux) -> outputs, differentiable by plain `jax.vjp` (any order).
    args: pytree of float arrays; aux: pytree of arrays (no gradient) or None.
    """

    @jax.custom_vjp
    def grads(args, aux, residuals, cotangents):
        return backward(args, aux, residuals, cotangents)

    def grads_fwd(args, aux, residuals, cotangents):
        return backward(args, aux, residuals, cotangents), (args, aux, cotangents)

    def grads_bwd(saved, g):
        args, aux, cotangents = saved

        def reference_vjp(args, cotangents):
            return jax.vjp(lambda a: reference(a, aux), args)[1](cotangents)[0]

        d_args, d_cotangents = jax.vjp(reference_vjp, args, cotangents)[1](g)
        # The residuals are functions of args; the reference's derivative already is the
        # total derivative w.r.t. args, so they get none.
        return d_args, None, None, d_cotangents

    grads.defvjp(grads_fwd, grads_bwd)

    @jax.custom_vjp
    def with_residuals(args, aux):
        return forward_with_residuals(args, aux)

    def with_residuals_fwd(args, aux):
        outputs, residuals = forward_with_residuals(args, aux)
        return (outputs, residuals), (args, aux, residuals)

    def with_residuals_bwd(saved, cotangents):
        args, aux, residuals = saved
        # The residuals' cotangents are zero: `grads_bwd` gives them none.
        return grads(args, aux, residuals, cotangents[0]), None

    with_residuals.defvjp(with_residuals_fwd, with_residuals_bwd)

    @jax.custom_vjp
    def op(args, aux):
        return forward(args, aux)

    def op_fwd(args, aux):
        outputs, residuals = with_residuals(args, aux)
        return outputs, (args, aux, residuals)

    def op_bwd(saved, cotangents):
        args, aux, residuals = saved
        return grads(args, aux, residuals, cotangents), None

    op.defvjp(op_fwd, op_bwd)
    return op
