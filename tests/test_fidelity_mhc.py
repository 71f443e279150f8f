"""The mHC family against numpy transcriptions of its reference code.

References (read-only mirrors; CI has no torch, so the PyTorch code is transcribed):
  LS = white-richard/latent-space at commit 8ebd8c1 (the code of its
       experiments/baseline_cifar10_002 runs), src/latent_space/...
  TB = tokenbender/mHC-manifold-constrained-hyper-connections (HEAD 088310e),
       hyper_connections/hyper_connections_mhc.py
Each test names the file and lines it transcribes.
"""

import math

import jax
import jax.numpy as jnp
import ml_collections
import ml_dtypes
import numpy as np
import pytest

from jaxlab.metrics.embedding import knn_accuracy, silhouette
from jaxlab.models.hyper_connections import HyperConnection, HyperSpec
from jaxlab.models.vit import ViT, latent_space_rope, rotate
from jaxlab.optim import schedules

# ---------------------------------------------------------------------------------------------
# mHC: Sinkhorn and the residual mix


def sinkhorn_log_np(logits, num_iters=10, tau=0.05):
  """LS models/mHC_util/hyper_connections_mhc.py lines 54-66 (= TB lines 45-57), float64."""
  z = np.asarray(logits, np.float64) / tau
  lse = lambda a, axis: np.log(np.sum(np.exp(a - a.max(axis, keepdims=True)), axis)) + a.max(axis)
  u = np.zeros(z.shape[:-1])
  v = np.zeros_like(u)
  for _ in range(num_iters):
    u = 0.0 - lse(z + v[..., None, :], -1)  # rows first (dim=-1)
    v = 0.0 - lse(z + u[..., :, None], -2)  # then columns (dim=-2)
  return np.exp(z + u[..., :, None] + v[..., None, :])


def static_hc_np(res_logits, pre_logits, post_logits, x, branch, tau=0.05, iters=10):
  """One static hyper-connection, LS hyper_connections_mhc.py `width_connection` and
  `depth_connection` (lines 226-291; TB lines 219-290): x [B, T, s, d] (the reference's
  "(b s) ... d" rearranged to "b ... s d").
    h_res = sinkhorn_log(H_res_logits)                                   (line 231)
    residuals_out = einsum(h_res, x, "s t, ... s d -> ... t d")          (line 232)
    branch_input = einsum(softmax(H_pre_logits), x, "v s, ... s d -> ... v d")  (234-235)
    output = einsum(branch(branch_input), softmax(H_post_logits), "b ... d, s -> b ... s d")
    residuals = output + residuals_out                                   (lines 283-291)
  """
  h_res = sinkhorn_log_np(res_logits, iters, tau)
  soft = lambda a: np.exp(a - a.max()) / np.exp(a - a.max()).sum()
  h_pre = soft(np.asarray(pre_logits, np.float64))
  h_post = soft(np.asarray(post_logits, np.float64))
  x = np.asarray(x, np.float64)
  residuals_out = np.einsum('st,...sd->...td', h_res, x)
  branch_input = np.einsum('s,...sd->...d', h_pre, x)
  y = branch(branch_input)
  return residuals_out + np.einsum('...d,s->...sd', y, h_post)


def _learned_logits(key, n):
  """Non-trivial logits: the reference init (0 / −8) moved by N(0, 0.1²) steps, as training
  moves them (τ = 0.05 turns 0.1 into 2 in the exponent)."""
  k1, k2, k3 = jax.random.split(key, 3)
  res = np.where(np.eye(n), 0.0, -0.3) + 0.1 * np.asarray(jax.random.normal(k1, (n, n)))
  pre = np.asarray(jax.random.normal(k2, (n,)))
  post = np.asarray(jax.random.normal(k3, (n,)))
  return res.astype(np.float32), pre.astype(np.float32), post.astype(np.float32)


@pytest.mark.parametrize('iterations', [10, 3])
def test_sinkhorn_matches_reference(iterations):
  from jaxlab.models.hyper_connections import sinkhorn
  res, _, _ = _learned_logits(jax.random.PRNGKey(0), 4)
  got = np.asarray(sinkhorn(jnp.asarray(res) / 0.05, iterations))
  want = sinkhorn_log_np(res, iterations, 0.05)
  np.testing.assert_allclose(got, want, atol=2e-6)
  # The last step normalises columns: they sum to 1; rows only approximately.
  np.testing.assert_allclose(got.sum(0), 1.0, atol=2e-6)


def _apply_hc(spec, res, pre, post, x, branch_fn):
  hc = HyperConnection(spec, index=1)
  params = hc.init(jax.random.PRNGKey(1), x, branch_fn)['params']
  params = dict(params, res_logits=jnp.asarray(res), pre_logits=jnp.asarray(pre),
                post_logits=jnp.asarray(post))
  return np.asarray(hc.apply({'params': params}, x, branch_fn))


def test_static_hres_applied_transposed_as_reference():
  n, d = 4, 6
  res, pre, post = _learned_logits(jax.random.PRNGKey(2), n)
  x = jax.random.normal(jax.random.PRNGKey(3), (2, 3, n, d))
  w = np.asarray(jax.random.normal(jax.random.PRNGKey(4), (d, d))) / np.sqrt(d)
  branch_np = lambda h: np.tanh(h @ w)
  branch_jx = lambda h: jnp.tanh(h @ jnp.asarray(w, jnp.float32))
  want = static_hc_np(res, pre, post, np.asarray(x), branch_np)
  got = _apply_hc(HyperSpec(kind='static', streams=n), res, pre, post, x, branch_jx)
  np.testing.assert_allclose(got, want, atol=1e-5)
  # res_apply='direct' (H_res · x) is a different map once the logits are learned.
  direct = _apply_hc(HyperSpec(kind='static', streams=n, res_apply='direct'), res, pre, post, x,
                     branch_jx)
  assert np.max(np.abs(direct - want)) > 1e-2


def test_static_identical_at_init_either_way():
  """At the reference init (0 on the diagonal, −8 off it) H_res is the identity to 1e-7, so
  both orientations agree there: only learned logits tell them apart."""
  n, d = 4, 5
  x = jax.random.normal(jax.random.PRNGKey(5), (1, 2, n, d))
  branch = lambda h: 2.0 * h
  outs = []
  for how in ('transpose', 'direct'):
    hc = HyperConnection(HyperSpec(kind='static', streams=n, res_apply=how), index=0)
    p = hc.init(jax.random.PRNGKey(0), x, branch)
    outs.append(np.asarray(hc.apply(p, x, branch)))
  np.testing.assert_allclose(outs[0], outs[1], atol=1e-6)


def test_dynamic_hres_applied_transposed():
  """The dynamic variant has no reference code (the mHC paper's per-token maps); it applies
  its per-token H_res the reference's way: new stream t = Σ_s H_res[s, t] x_s, so each new
  stream is a convex combination of the old (H_res's columns sum to 1 exactly)."""
  n, d = 4, 6
  x = jax.random.normal(jax.random.PRNGKey(6), (2, 3, n, d))
  branch = lambda h: jnp.sin(h)
  hc = HyperConnection(HyperSpec(kind='dynamic', streams=n, iterations=20), index=0)
  params = hc.init(jax.random.PRNGKey(7), x, branch)['params']
  # Learned-looking maps: gates well away from 0.01, biases off the identity.
  params = dict(params)
  params['res_gate'] = jnp.asarray(0.5)
  params['res_bias'] = params['res_bias'] + 0.5 * jax.random.normal(jax.random.PRNGKey(8), (n * n,))
  out, inter = hc.apply({'params': params}, x, branch, mutable=['intermediates'])
  h_pre, h_post, h_res = (np.asarray(m, np.float64) for m in inter['intermediates']['maps'][0])
  xn = np.asarray(x, np.float64)
  y = np.sin(np.einsum('btj,btjd->btd', h_pre, xn))
  want = np.einsum('btsu,btsd->btud', h_res, xn)  # new stream u = Σ_s H_res[s, u] x_s
  want = want + h_post[..., None] * y[:, :, None, :]
  np.testing.assert_allclose(np.asarray(out), want, atol=1e-5)
  np.testing.assert_allclose(h_res.sum(-2), 1.0, atol=1e-5)
  assert np.max(np.abs(h_res.sum(-1) - 1.0)) > 1e-4  # rows are not exact: orientation matters


def test_final_norm_after_reduce():
  """LS models/vision_transformer/vision_transformer.py lines 307-322: x = reduce_stream(x)
  (the sum over streams) and THEN x_norm = self.norm(x). With no blocks the n streams are n
  copies, so the normed sum is the plain network's normed class token (LayerNorm is scale
  invariant; eps made negligible here); norming each stream first would give n times it."""
  arch = dict(num_classes=3, image_size=8, patch=4, width=8, depth=0, heads=2, mlp_dim=16,
              pos='rope', rope_form='latent_space', weight_init='latent_space', ln_eps=1e-12)
  images = jax.random.normal(jax.random.PRNGKey(9), (2, 8, 8, 3))
  plain = ViT(**arch)
  params = jax.jit(plain.init)(jax.random.PRNGKey(0), images)['params']
  want = np.asarray(plain.apply({'params': params}, images, embed=True))
  for final_norm, factor in (('after_reduce', 1.0), ('per_stream', 4.0)):
    model = ViT(**arch, residual=HyperSpec(kind='static', streams=4, final_norm=final_norm))
    got = np.asarray(model.apply({'params': params}, images, embed=True))
    np.testing.assert_allclose(got, factor * want, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Axial RoPE


def rope_sincos_np(H, W, head_dim, base=100.0, dtype=np.float32):
  """LS models/vision_transformer/layers/rope_position_encoding.py: _init_weights lines 111-114
  (periods = base ** (2 * arange(D//4) / (D//2))) and forward lines 71-106 with
  normalize_coords='separate' and no shift/jitter/rescale (coords = arange(0.5, H)/H,
  meshgrid 'ij', flattened, 2c − 1; angles = 2π·coords[:, :, None]/periods, flattened
  [HW, 2·D/4], tiled twice to [HW, D]). In `dtype` with numpy's (ml_dtypes') per-op rounding,
  as torch computes bfloat16 ops (pos_embed_rope_dtype='bf16' in vision_transformer.py line
  110)."""
  t = lambda a: np.asarray(a, dtype)
  periods = t(base) ** (t(2) * t(np.arange(head_dim // 4)) / t(head_dim // 2))
  ch = t(np.arange(0.5, H)) / t(H)
  cw = t(np.arange(0.5, W)) / t(W)
  coords = np.stack(np.meshgrid(ch, cw, indexing='ij'), axis=-1).reshape(-1, 2)
  coords = t(2.0) * coords - t(1.0)
  angles = t(2 * math.pi) * coords[:, :, None] / periods[None, None, :]
  angles = np.tile(angles.reshape(H * W, -1), 2)
  return np.sin(angles), np.cos(angles)


def rope_apply_np(q, sin, cos, prefix=1):
  """LS models/vision_transformer/layers/attention.py lines 15-26 (rope_rotate_half,
  rope_apply) and 67-88 (apply_rope: q cast to the rope dtype, the `prefix` = class token left
  unrotated, cast back). q [T, heads, D]."""
  q_dtype = q.dtype
  q = q.astype(sin.dtype)
  rot_half = lambda x: np.concatenate([-x[..., x.shape[-1] // 2:], x[..., :x.shape[-1] // 2]], -1)
  body = q[prefix:]
  body = body * cos[:, None, :] + rot_half(body) * sin[:, None, :]
  return np.concatenate([q[:prefix], body]).astype(q_dtype)


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_rope_rotated_queries_match_reference(dtype):
  head_dim, grid = 8, 8
  q = np.asarray(jax.random.normal(jax.random.PRNGKey(10), (1 + grid * grid, 2, head_dim)),
                 np.float32) * 3.0
  np_dtype = ml_dtypes.bfloat16 if dtype == 'bfloat16' else np.float32
  sin, cos = rope_sincos_np(grid, grid, head_dim, 100.0, np_dtype)
  want = rope_apply_np(q, sin, cos).astype(np.float32)
  tables = latent_space_rope(grid, grid, head_dim, 100.0, dtype)
  # The tables themselves: jaxlab keeps one half ([T, D/2], the other half is the same).
  np.testing.assert_array_equal(np.asarray(tables[0][1:], np.float32),
                                np.asarray(cos[:, :head_dim // 2], np.float32))
  np.testing.assert_array_equal(np.asarray(tables[1][1:], np.float32),
                                np.asarray(sin[:, :head_dim // 2], np.float32))
  got = np.asarray(jax.jit(lambda x: rotate(x, *tables))(jnp.asarray(q)[None]))[0]
  if dtype == 'float32':
    np.testing.assert_allclose(got, want, atol=2e-6)
  else:  # within one bfloat16 rounding of the result (XLA may fuse the products)
    np.testing.assert_allclose(got, want, atol=2 ** -7 * np.abs(want).max())
  # The class token passes unrotated (but through the rope dtype, as the reference's).
  np.testing.assert_array_equal(got[0], q[0].astype(np_dtype).astype(np.float32))


# ---------------------------------------------------------------------------------------------
# Initialisation


def test_latent_space_init_statistics():
  """LS models/vision_transformer/layers/patch_embed.py lines 85-89 (PatchEmbed.reset_parameters:
  kernel and bias U(±sqrt(1/(in_chans·patch²)))), vision_transformer.py lines 76-80
  (init_weights_vit: nn.Linear trunc_normal_(std=0.02), a=-2, b=2 absolute; bias 0) and
  246-252 (init_weights: cls_token normal_(std=0.02))."""
  model = ViT(num_classes=10, image_size=32, patch=4, width=192, depth=1, heads=3, mlp_dim=768,
              pos='rope', rope_form='latent_space', weight_init='latent_space')
  p = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))['params']
  bound = 1.0 / math.sqrt(3 * 4 * 4)
  k, b = np.asarray(p['patch_embed']['kernel']), np.asarray(p['patch_embed']['bias'])
  assert np.abs(k).max() <= bound and np.abs(k).max() > 0.98 * bound
  assert abs(k.std() - bound / math.sqrt(3)) < 0.03 * bound  # U(±a) has std a/√3
  assert np.abs(b).max() <= bound and b.std() > 0.4 * bound  # not zero: U(±1/√48) too
  cls = np.asarray(p['cls_token'])
  assert 0.016 < cls.std() < 0.024  # N(0, 0.02), not N(0, 1e-6)
  fc1 = np.asarray(p['blocks_0']['mlp']['fc1']['kernel'])
  assert abs(fc1.std() - 0.02) < 0.0006  # std 0.02 exactly (no 0.88 shrink of a ±2σ cut)
  assert np.mean(np.abs(fc1) > 0.04) > 0.03  # ~4.6% beyond 2σ: the cut is at ±2, not ±2σ
  for leaf in ('qkv', 'proj'):
    assert np.all(np.asarray(p['blocks_0']['attn'][leaf]['bias']) == 0)
  assert np.all(np.asarray(p['head']['bias']) == 0)
  assert abs(np.asarray(p['head']['kernel']).std() - 0.02) < 0.002


# ---------------------------------------------------------------------------------------------
# Warm-hold-decay schedule


class WHDSchedulerNp:
  """LS schedulers/warm_hold_decay_scheduler.py lines 20-151 (WHDScheduler) as
  lightning/lightning_module.py lines 143-154 builds it: frac_decay default 0.2,
  init_div_factor 100, final_lr_factor 0.1, auto_trigger_cooldown=True; LambdaLR evaluates
  the multiplier at steps 0, 1, 2, ... in order (the trigger is a side effect)."""

  def __init__(self, n, frac_warmup=0.1, final=0.1, decay_type='1-sqrt', frac_decay=0.2):
    self.n, self.final, self.decay_type, self.frac_decay = n, final, decay_type, frac_decay
    self.n_warmup = int(frac_warmup * n)
    self.start = self.end = None
    planned = max(0.0, min(1.0, 1.0 - frac_decay))
    computed = max(0, min(max(0, n - 1), int(math.floor(planned * n))))
    self.auto = max(self.n_warmup, computed)

  def multiplier(self, step):
    if step >= self.n:
      return self.final
    if self.n_warmup > 0 and step < self.n_warmup:
      x = step / self.n_warmup
      return x + (1 - x) / 100.0
    if self.start is None and step >= self.auto:
      self.start = max(step, self.n_warmup)
      self.end = min(self.start + max(1, int(math.ceil(self.frac_decay * self.start))), self.n)
    if self.start is None or step < self.start:
      return 1.0
    if step >= self.end:
      return self.final
    t = min(max((step - self.start) / max(1, self.end - self.start), 0.0), 1.0)
    raw = {'1-sqrt': 1 - math.sqrt(t), 'linear': 1 - t,
           'cosine': (1 + math.cos(math.pi * t)) * 0.5}[self.decay_type]
    return self.final + (1.0 - self.final) * raw


@pytest.mark.parametrize('n,shape', [(1000, '1-sqrt'), (391, '1-sqrt'), (395, '1-sqrt'),
                                     (39200, '1-sqrt'), (391, 'linear'), (1000, 'cosine')])
def test_whd_multiplier_every_step(n, shape):
  cfg = ml_collections.ConfigDict(dict(schedule='whd_latent_space', warmup_epochs=0.0,
                                       warmup_fraction=0.1, lr_floor=0.1,
                                       decay_start_fraction=0.8, decay_shape=shape))
  lr = schedules.schedule_from_config(cfg, 1.0, n, 1)
  ref = WHDSchedulerNp(n, decay_type=shape)
  want = np.array([ref.multiplier(s) for s in range(n + 3)])
  got = np.asarray(jax.vmap(lr)(jnp.arange(n + 3)))
  np.testing.assert_allclose(got, want, atol=2e-6)
  assert want[0] == pytest.approx(0.01)  # the warm-up starts from lr/100


def test_whd_cooldown_steps_of_the_reference_run():
  """196 steps × 200 epochs: warm-up 3,920, cooldown 31,360 → 37,632, floor to 39,200."""
  assert schedules.latent_space_whd_steps(39200, 3920) == (3920, 31360, 37632)


# ---------------------------------------------------------------------------------------------
# kNN accuracy and silhouette


def knn_reference_np(x, y):
  """LS lightning/lightning_module.py lines 202-238 (knn_accuracy_in_embedding_space, k=1,
  euclidean): NearestNeighbors(n_neighbors=2) on the test embeddings themselves, the first
  column (the point itself) dropped, the nearest other point's label."""
  d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
  order = np.argsort(d, axis=1, kind='stable')
  return float(np.mean(y[order[:, 1]] == y))


def silhouette_reference_np(x, y):
  """LS lightning/lightning_module.py lines 276-293: sklearn silhouette_score(X, y,
  metric='euclidean') with the classes as clusters: s = (b − a)/max(a, b), a the mean
  distance to the own class (self excluded), b the smallest mean distance to another."""
  d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
  s = np.empty(len(x))
  for i in range(len(x)):
    own = (y == y[i])
    a = d[i, own].sum() / (own.sum() - 1)
    b = min(d[i, y == c].mean() for c in np.unique(y) if c != y[i])
    s[i] = (b - a) / max(a, b)
  return float(s.mean())


def test_knn_and_silhouette_match_reference():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 4, 120)
  x = rng.normal(size=(120, 6)) + 1.5 * y[:, None]
  assert knn_accuracy(x, y) == pytest.approx(knn_reference_np(x, y), abs=1e-12)
  assert silhouette(x, y) == pytest.approx(silhouette_reference_np(x, y), abs=1e-9)


# ---------------------------------------------------------------------------------------------
# Augmentation


def test_randaugment_geometric_ops_interpolate_nearest():
  """LS lightning/datamodule.py line 33 (transforms.RandAugment(): interpolation NEAREST, fill
  None = 0, on the PIL image): a sheared / rotated image holds only pixel values of the source
  (or the zero fill), never a bilinear blend."""
  from jaxlab.data.augment import RANDAUGMENT_OPS, randaugment_op
  image = jax.random.uniform(jax.random.PRNGKey(12), (8, 8, 3))
  values = set(np.asarray(image).ravel().tolist()) | {0.0}
  for name in ('ShearX', 'ShearY', 'Rotate'):
    index = RANDAUGMENT_OPS.index(name)
    nearest = np.asarray(randaugment_op(image, index, 0.3, order=0))
    assert set(nearest.ravel().tolist()) <= values, name
    bilinear = np.asarray(randaugment_op(image, index, 0.3, order=1))
    assert not set(bilinear.ravel().tolist()) <= values, name
  from configs import mhc as mhc_config
  assert mhc_config.get_config().augment.randaugment_interpolation == 'nearest'
