"""Where the scan backward of the delta rule spent its time (issue 27), by timing its pieces.

    PYTHONPATH=. python benchmarks/scan_backward_profile.py

Times (best CPU ms, one XLA thread) the forward, forward+backward, and, multiplied by the
number of chunks, the pieces of a per-chunk backward: the recompute scan that outputs every
S_{t-1} of the chunk as a stacked [C, B, H, dk, dv] array (what the first hand-derived
backward did), the reverse scan over G, the batched contractions over the stack, and single
per-step primitives (a mat-vec as einsum or as multiply+sum, an outer-product update).
"""
# ruff: noqa: E402, E501, E702, E731  (a measuring script kept as it was run)
import os
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
import jax
import jax.numpy as jnp
from jax import lax
import srwm_jax
from benchmarks.ops import delta_args
def best(f, *a, n=5):
    jax.block_until_ready(f(*a)); ts=[]
    for _ in range(n):
        t=time.process_time(); jax.block_until_ready(f(*a)); ts.append(time.process_time()-t)
    return 1e3*min(ts)
HI=lax.Precision.HIGHEST
for (B,T,H,d) in [(128,26,16,16),(1,1024,4,64)]:
    q,k,v,beta,S0 = delta_args(B,T,H,d,jax.random.key(0))
    N=B*H; C=min(T,max(d,16))
    tm=lambda a: jnp.swapaxes(a,0,1)
    Q,K,V,Bt = tm(q)[:C],tm(k)[:C],tm(v)[:C],tm(beta)[:C]
    dY = V
    fwd = jax.jit(lambda *a: srwm_jax.delta_rule(*a, impl="scan"))
    r = {}
    r['fwd'] = best(fwd, q,k,v,beta,S0)
    r['fwd+bwd'] = best(jax.jit(jax.grad(lambda *a: jnp.sum(srwm_jax.delta_rule(*a,impl="scan")[0]), argnums=(0,1,2,3,4))), q,k,v,beta,S0)
    nch = -(-T//C)
    # per chunk pieces, times number of chunks
    def recompute(S, k, v, b):
        def body(s, st):
            k_t,v_t,b_t = st
            ins = b_t[...,None]*(v_t-jnp.einsum("bhi,bhio->bho",k_t,s,precision=HI))
            return s + k_t[...,:,None]*ins[...,None,:], s
        return lax.scan(body, S, (k,v,b))[1]
    sp = jax.jit(recompute)(S0,K,V,Bt)
    r['chunk: recompute S_{t-1} scan'] = nch*best(jax.jit(recompute), S0,K,V,Bt)
    def rev(G, q,k,b,dy,ins):
        def body(g, st):
            q_t,k_t,b_t,dy_t,ins_t = st
            g = g + q_t[...,:,None]*dy_t[...,None,:]
            di = jnp.einsum("bhi,bhio->bho",k_t,g,precision=HI)
            dk = jnp.einsum("bhio,bho->bhi",g,ins_t,precision=HI)
            g = g - k_t[...,:,None]*(b_t[...,None]*di)[...,None,:]
            return g,(di,dk)
        return lax.scan(body, G, (q,k,b,dy,ins), reverse=True)
    r['chunk: reverse G scan'] = nch*best(jax.jit(rev), S0,Q,K,Bt,dY,V)
    r['chunk: batched contractions'] = nch*best(jax.jit(lambda sp,a,b: jnp.einsum("tbhio,tbhox->tbhix", sp, jnp.stack([a,b],-1), precision=HI)), sp, dY, V)
    r['one step matvec einsum x C'] = best(jax.jit(lambda S,K: lax.scan(lambda s,k_t: (s, jnp.einsum("bhi,bhio->bho",k_t,s,precision=HI)), S, K)[1]), S0, K)*nch
    r['one step matvec mul+sum x C'] = best(jax.jit(lambda S,K: lax.scan(lambda s,k_t: (s, jnp.sum(k_t[...,:,None]*s,-2)), S, K)[1]), S0, K)*nch
    r['one step outer add x C'] = best(jax.jit(lambda S,K,V: lax.scan(lambda s,kv: (s + kv[0][...,:,None]*kv[1][...,None,:], None), S, (K,V))[0]), S0, K, V)*nch
    print((B,T,H,d), {a: round(b,2) for a,b in r.items()}, flush=True)
