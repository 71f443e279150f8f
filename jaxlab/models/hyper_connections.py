"""Manifold-constrained hyper-connections (mHC): n residual streams mixed by doubly-stochastic maps.

The residual stream x [..., n, D] holds n copies. A branch F (attention or MLP,
each wrapped on its own) reads a mix of the streams and writes back into all
of them while the streams mix:

    x_next = H_resᵀ · x + H_postᵀ · F(H_pre · x)      (res_apply='transpose', the default)

with H_res projected onto the doubly-stochastic matrices (the Birkhoff
polytope) by Sinkhorn–Knopp in log space (per-token maps in its linear form, `sinkhorn`):
row, then column normalisation, so the columns of H_res sum to 1 to rounding and its rows only
to within the method's convergence. tokenbender/mHC-manifold-constrained-hyper-connections
(hyper_connections/hyper_connections_mhc.py, `sinkhorn_log` and
einsum(h_res, x, "s t, ... s d -> ... t d"); copied unchanged into
white-richard/latent-space src/latent_space/models/mHC_util/hyper_connections_mhc.py)
contracts the FIRST index of H_res: stream t receives Σ_s H_res[s, t] x_s, i.e. H_resᵀ · x,
whose rows (H_res's columns) are the exactly normalised ones: each new stream is a convex
combination of the old. res_apply='direct' applies H_res · x (the paper's formula read
literally; its rows sum to 1 only to within the Sinkhorn convergence, 0.97–1.02 after 10
iterations at τ = 0.05 with learned logits). Two variants:

  static   (tokenbender's reference) learned logits, shared by all tokens:
           H_res = Sinkhorn(logits / τ), logits 0 on the diagonal and −8 off it;
           H_pre = softmax(logits), −8 except 0 at stream (branch index mod n);
           H_post = softmax(zeros).
  dynamic  (the mHC paper) per token, from the RMS-normed flattened streams:
           H̃ = α·(x̂ φ) + b with a learned scalar gate α (init 0.01) on each
           map and static biases b; H_pre = σ(H̃_pre), H_post = 2σ(H̃_post),
           H_res = Sinkhorn(exp(H̃_res)). b_res starts at 0 on the diagonal and
           −8 off it (H_res ≈ identity), b_pre and b_post at 0.

After the last block the streams are summed and THEN normed (final_norm='after_reduce',
latent-space vision_transformer.py: reduce_stream before self.norm); 'per_stream' norms each
stream and sums the normed streams.

With n = 1 every H of the static variant is exactly 1 and the network is the
plain residual one. The dynamic variant's sigmoid gates make H_pre = σ(·) < 1
even then, so it is not the plain network at n = 1, but it has no second
stream to mix either: both are warned about (see `HyperSpec.warn_if_trivial`).
"""

import dataclasses
import functools
import operator
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlab.models import autodiff

KINDS = ('static', 'dynamic')
RES_APPLY = ('transpose', 'direct')
FINAL_NORMS = ('after_reduce', 'per_stream')
OFF_DIAGONAL = -8.0


def _normalise(x, axis):
  """x − logsumexp(x) along `axis`; the max shift is stop-gradiented (it cancels exactly)."""
  top = jax.lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
  return x - top - jnp.log(jnp.sum(jnp.exp(x - top), axis=axis, keepdims=True))


def sinkhorn(log_matrix, iterations):
  """exp(log_matrix) scaled to a doubly-stochastic matrix by `iterations` Sinkhorn–Knopp rounds.

  Works in log space (row, then column normalisation by logsumexp) on the last
  two axes, in float32. After the final column step the columns sum to 1 up to
  rounding; the rows to within the method's convergence.

  Per-token matrices [..., n, n] (the dynamic variant's) go to `_sinkhorn_tokens`: the same
  rounds in linear space, every sum over n written out as n elementwise terms over whole rows
  of tokens. A single matrix is iterated as it is, [n, n], in log space under a loop: unrolled,
  its rounds (2 × `iterations` tiny reductions, forward and backward, in each of a network's
  hyper-connections) doubled the compile time of a static mHC training step.
  """
  x = log_matrix.astype(jnp.float32)
  n = x.shape[-1]
  lead = x.shape[:-2]
  if not lead:
    # A loop, not unrolled: compiles once whatever the iteration count.
    x = jax.lax.fori_loop(0, iterations, lambda _, x: _normalise(_normalise(x, -1), -2), x)
    return jnp.exp(x)
  x = jnp.moveaxis(x.reshape(-1, n, n), 0, -1)  # [n, n, tokens]
  return jnp.moveaxis(_sinkhorn_tokens(x, iterations), -1, 0).reshape(*lead, n, n)


# How far below its row's largest logit an entry may sit in `_sinkhorn_tokens` (e^−80 ≈ 2e−35,
# above float32's smallest normal number): lower ones are raised to it, so that no row or
# column of exp(logits) is all zeros.
LINEAR_FLOOR = -80.0


def _sinkhorn_tokens(x, iterations):
  """Sinkhorn–Knopp on per-token logits x [n, n, tokens] in linear space: K = exp(x − row max),
  then `iterations` rounds of row scalings a = 1 / (K b) and column scalings b = 1 / (Kᵀ a),
  and H = diag(a) K diag(b). The same rounds as the log-space ones (a and b are exp of its row
  and column potentials), so the same matrix to float32 rounding, with n² exponentials in all
  instead of 2n² a round: each round is a few multiply-adds and 2n reciprocals a token, in
  one elementwise pass (autodiff differentiates it): value and gradient at 4,160 tokens
  (ViT-Ti/4, batch 64) in 3.7 ms against the log-space loop's 14.5 on two CPU cores.
  Against the log-space rounds in float64 (tests/test_hyper_connections.py): maps within
  4e-7, like the float32 log-space loop's;
  gradients within 8e-5 of their largest (the log-space loop's: 2e-6), far inside bfloat16's
  rounding. The one difference is LINEAR_FLOOR: entries more than 80 below their row's largest
  logit, which log space keeps and float32's exp would lose; the dynamic variant's logits
  (biases 0 / −8 plus gated projections of RMS-normed streams) do not come near it."""
  n = x.shape[0]
  top = jax.lax.stop_gradient(jnp.max(x, axis=1, keepdims=True))
  k = jnp.exp(jnp.maximum(x - top, LINEAR_FLOOR))  # K[i, j, token]
  columns, rows = [k[:, j] for j in range(n)], [k[i] for i in range(n)]  # [n, tokens] each

  def round_(_, scalings):
    _, b = scalings  # a, b: [n, tokens]
    a = 1.0 / _sum(columns[j] * b[j] for j in range(n))  # a_i = 1 / Σ_j K_ij b_j
    b = 1.0 / _sum(rows[i] * a[i] for i in range(n))  # b_j = 1 / Σ_i K_ij a_i
    return a, b
  ones = jnp.ones((n, k.shape[-1]), k.dtype)
  a, b = jax.lax.fori_loop(0, iterations, round_, (ones, ones))
  return a[:, None, :] * k * b[None, :, :]


def _sum(terms):
  """The terms added left to right (Python's sum starts from a 0 that XLA would add too)."""
  return functools.reduce(operator.add, terms)


def identity_logits(n):
  """n×n logits 0 on the diagonal and −8 off it: Sinkhorn of them is ≈ the identity."""
  return jnp.where(jnp.eye(n, dtype=bool), 0.0, OFF_DIAGONAL)


@dataclasses.dataclass(frozen=True)
class HyperSpec:
  """How the residual streams are built: n streams, the variant and its Sinkhorn settings.

  reduce: how the streams become one, 'sum' or 'mean'.
  res_apply: 'transpose' (H_resᵀ · x, the reference code's einsum) | 'direct' (H_res · x).
  final_norm: 'after_reduce' (sum the streams, then the final LayerNorm: the reference ViT) |
    'per_stream' (the final LayerNorm on each stream, then reduce).
  """
  kind: str = 'static'
  streams: int = 4
  tau: float = 0.05
  iterations: int = 10
  reduce: str = 'sum'
  res_apply: str = 'transpose'
  final_norm: str = 'after_reduce'

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f'unknown hyper-connection kind {self.kind!r}; choose one of {KINDS}')
    if self.streams < 1:
      raise ValueError(f'hyper-connections need at least one stream (got {self.streams})')
    if self.reduce not in ('sum', 'mean'):
      raise ValueError(f"model.hc.reduce must be 'sum' or 'mean' (got {self.reduce!r})")
    if self.res_apply not in RES_APPLY:
      raise ValueError(f'model.hc.res_apply must be one of {RES_APPLY} (got {self.res_apply!r})')
    if self.final_norm not in FINAL_NORMS:
      raise ValueError(f'model.hc.final_norm must be one of {FINAL_NORMS} '
                       f'(got {self.final_norm!r})')

  def describe(self):
    extra = f', τ = {self.tau:g}' if self.kind == 'static' else ''
    res = 'H_resᵀ·x' if self.res_apply == 'transpose' else 'H_res·x'
    norm = 'then final norm' if self.final_norm == 'after_reduce' else 'after a norm per stream'
    return (f'mHC {self.kind}: n = {self.streams} streams, {self.iterations} Sinkhorn iterations'
            f'{extra}, {res}, reduce = {self.reduce} {norm}')

  def warn_if_trivial(self):
    """Warn (loudly) when n = 1: then there is nothing to mix and no real mHC to compare."""
    if self.streams == 1:
      warnings.warn(
          f'mHC ({self.kind}) is configured with n = 1 residual stream: every H is a scalar, the '
          'static variant is exactly the plain residual network and the dynamic one only adds '
          'scalar gates. Comparisons of "mHC vs regular" at n = 1 measure noise (the '
          'reference latent-space runs did this). Set --config.model.hc.streams=4.', UserWarning,
          stacklevel=2)


def expand(x, n):
  """[..., D] → [..., n, D]: n copies of the stream."""
  return jnp.repeat(x[..., None, :], n, axis=-2)


def reduce(x, how):
  """[..., n, D] → [..., D]."""
  return jnp.sum(x, axis=-2) if how == 'sum' else jnp.mean(x, axis=-2)


class _RMSScale(nn.Module):
  """The scale of the dynamic maps' RMSNorm, where nn.RMSNorm keeps it ('norm/scale', ones)."""
  features: int

  @nn.compact
  def __call__(self):
    return self.param('scale', nn.initializers.ones, (self.features,), jnp.float32)


class HyperConnection(nn.Module):
  """One branch wrapped by hyper-connections: x [B, T, n, D] → same shape.

  `index` is the branch's position in the network (attention of block i is
  2i, its MLP 2i + 1); the static H_pre starts reading stream index mod n.
  """
  spec: HyperSpec
  index: int

  def maps(self, x):
    """(H_pre [.., n], H_post [.., n], H_res [.., n, n]) in float32, per token or shared."""
    n = self.spec.streams
    if self.spec.kind == 'static':
      res = self.param('res_logits', lambda k: identity_logits(n))
      pre = self.param('pre_logits',
                       lambda k: jnp.where(jnp.arange(n) == self.index % n, 0.0, OFF_DIAGONAL))
      post = self.param('post_logits', nn.initializers.zeros, (n,))
      return (jax.nn.softmax(pre), jax.nn.softmax(post),
              sinkhorn(res / self.spec.tau, self.spec.iterations))
    flat = x.reshape(*x.shape[:-2], -1).astype(jnp.float32)
    # RMSNorm(flat) φ = rsqrt(mean(flat²) + ε) · (flat (scale ⊙ φ)): the scale and the gates α
    # are folded into one [n·D, 2n + n²] matrix, so the normalised streams are never
    # materialised and the three maps come from a single matmul.
    scale = _RMSScale(flat.shape[-1], name='norm')()
    fan_in = nn.initializers.variance_scaling(1.0, 'fan_in', 'normal')
    weights, biases = [], []
    for name, size, bias_init in (('pre', n, lambda k: jnp.zeros((n,))),
                                  ('post', n, lambda k: jnp.zeros((n,))),
                                  ('res', n * n, lambda k: identity_logits(n).reshape(-1))):
      phi = self.param(f'{name}_proj', fan_in, (flat.shape[-1], size))
      alpha = self.param(f'{name}_gate', nn.initializers.constant(0.01), ())
      biases.append(self.param(f'{name}_bias', bias_init))
      weights.append(alpha * phi)
    weight = scale[:, None] * jnp.concatenate(weights, axis=-1)
    inv_rms = jax.lax.rsqrt(jnp.mean(jnp.square(flat), axis=-1, keepdims=True) + 1e-6)
    logits = inv_rms * (flat @ weight) + jnp.concatenate(biases)
    pre, post, res = logits[..., :n], logits[..., n:2 * n], logits[..., 2 * n:]
    return (jax.nn.sigmoid(pre), 2.0 * jax.nn.sigmoid(post),
            sinkhorn(res.reshape(*res.shape[:-1], n, n), self.spec.iterations))

  @nn.compact
  def __call__(self, x, branch):
    h_pre, h_post, h_res = self.maps(x)
    # Readable with mutable=['intermediates'] (tests, diagnostics); free otherwise.
    self.sow('intermediates', 'maps', (h_pre, h_post, h_res))
    y = branch(premix(h_pre, x))
    # combine computes Σ_j A[i, j] x_j; the reference's einsum "s t, ... s d -> ... t d" is
    # A = H_resᵀ.
    applied = jnp.swapaxes(h_res, -1, -2) if self.spec.res_apply == 'transpose' else h_res
    return combine(applied, x, h_post, y)


# The two products of a hyper-connection, for maps shared by all tokens (static: H_pre [n],
# H_post [n], H_res [n, n]) or per token (dynamic: [..., n], [..., n], [..., n, n]), with
# backward passes of their own. On CPU, for n = 4, the sums over the n streams are cheapest
# written out as n broadcast products (one fused elementwise kernel each way); autodiff of
# the same forward, or of einsums, gives transposes, batched 4×4 matmuls and [..., n, n, D]
# broadcasts (3-5× the time). The maps (float32) are cast to the streams' dtype for the
# products; their gradients are per-token contractions over D accumulated in float32, summed
# over the tokens when the maps are shared.


def _contract(spec, a, b, like):
  """einsum(spec, a, b) in float32, summed over the tokens when `like` (a map) is shared."""
  return _sum_tokens(jnp.einsum(spec, a, b, preferred_element_type=jnp.float32), like)


def _sum_tokens(grad, shared):
  """A per-token map gradient [..., k] or [..., k, k] summed to the shared map's shape."""
  return jnp.sum(grad, axis=tuple(range(grad.ndim - shared.ndim))) if shared.ndim < grad.ndim \
      else grad


@jax.custom_vjp
def _premix(h_pre, x):
  """Σ_j H_pre[j] x[j]: the branch's input, [..., n, D] → [..., D]."""
  h_pre = h_pre.astype(x.dtype)
  return sum(h_pre[..., j, None] * x[..., j, :] for j in range(x.shape[-2]))


def _premix_fwd(h_pre, x):
  return _premix(h_pre, x), (h_pre, x)


def _premix_bwd(saved, g):
  h_pre, x = saved
  return (_contract('...jd,...d->...j', x, g, h_pre),
          h_pre.astype(x.dtype)[..., :, None] * g[..., None, :])


_premix.defvjp(_premix_fwd, _premix_bwd)
premix = autodiff.fast_or_plain(_premix, _premix.fun)


@jax.custom_vjp
def _combine(h_res, x, h_post, y):
  """H_res · x + H_postᵀ · y: the next residual streams [..., n, D]."""
  h_res, h_post = h_res.astype(x.dtype), h_post.astype(x.dtype)
  mixed = sum(h_res[..., :, j, None] * x[..., None, j, :] for j in range(x.shape[-2]))
  return mixed + h_post[..., :, None] * y[..., None, :]


def _combine_fwd(h_res, x, h_post, y):
  return _combine(h_res, x, h_post, y), (h_res, x, h_post, y)


def _combine_bwd(saved, g):
  h_res, x, h_post, y = saved
  n, dt = x.shape[-2], x.dtype
  d_res = _contract('...id,...jd->...ij', g, x, h_res)
  d_post = _contract('...id,...d->...i', g, y, h_post)
  h_res, h_post = h_res.astype(dt), h_post.astype(dt)
  d_x = sum(h_res[..., i, :, None] * g[..., None, i, :] for i in range(n))
  d_y = sum(h_post[..., i, None] * g[..., i, :] for i in range(n))
  # y may be narrower than the streams (bfloat16 branches on a float32 residual stream).
  return d_res, d_x.astype(x.dtype), d_post, d_y.astype(y.dtype)


_combine.defvjp(_combine_fwd, _combine_bwd)
combine = autodiff.fast_or_plain(_combine, _combine.fun)
