"""Other image and patch sizes: position-embedding resampling and FlexiViT's patch-kernel resize.

Independent truths: analytic values of a linear grid, jax.image.resize (its own bilinear,
scale-and-translate implementation), PyTorch's F.interpolate and timm's resamplers when they
are importable, and FlexiViT's defining property ⟨x, w⟩ = ⟨resize(x), resize(w)⟩.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import hybrid
from jaxlab.experiments import peft
from jaxlab.io.pretrained import (patch_resize_matrix, read_safetensors, resample_patch_kernel,
                                  resample_pos_embed, timm_to_params)
from jaxlab.models.vit import ViT
from jaxlab.params import flatten, unflatten
from jaxlab.peft.api import vit_with_peft

TINY = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures',
                    'timm_vit_tiny.safetensors')  # timm ViT: 32 px, patch 8, width 128, depth 2


def random_pos(grid, width=5, prefix=1, seed=0, dtype=np.float64):
  return np.random.default_rng(seed).normal(size=(1, prefix + grid * grid, width)).astype(dtype)


def jax_bilinear(grid_hwd, new):
  """jax.image.resize's bilinear (half-pixel centres, no antialias) of an [h, w, D] grid."""
  return np.asarray(jax.image.resize(jnp.asarray(grid_hwd, jnp.float32),
                                     (new, new, grid_hwd.shape[-1]), 'linear', antialias=False))


def test_same_size_is_the_identity():
  pos = random_pos(4)
  assert resample_pos_embed(pos, 4) is pos
  kernel = np.random.default_rng(1).normal(size=(8, 8, 3, 6)).astype(np.float32)
  assert resample_patch_kernel(kernel, 8) is kernel
  np.testing.assert_array_equal(resample_pos_embed(jnp.asarray(pos, jnp.float32), 4),
                                pos.astype(np.float32))


@pytest.mark.parametrize('prefix', [1, 2])
def test_prefix_tokens_are_kept(prefix):
  pos = random_pos(4, prefix=prefix, dtype=np.float32)
  out = resample_pos_embed(pos, 7, num_prefix=prefix)
  assert out.shape == (1, prefix + 49, 5) and out.dtype == np.float32
  np.testing.assert_array_equal(out[:, :prefix], pos[:, :prefix])


@pytest.mark.parametrize('old,new', [(5, 9), (8, 3), (14, 24), (14, 8)])
def test_linear_grid_gives_the_analytic_values(old, new):
  """A grid linear in (row, col) resamples to that linear function at the new sample points
  (j + ½)·old/new − ½, clamped to the grid: bilinear interpolation is exact on linear data."""
  rng = np.random.default_rng(old * new)
  a, b, c = rng.normal(size=(3, 4))
  rows, cols = np.meshgrid(np.arange(old), np.arange(old), indexing='ij')
  grid = rows[..., None] * a + cols[..., None] * b + c  # [old, old, 4], token 1 + r·old + col
  pos = np.concatenate([rng.normal(size=(1, 1, 4)), grid.reshape(1, old * old, 4)], axis=1)
  out = resample_pos_embed(pos, new)
  src = np.clip((np.arange(new) + 0.5) * old / new - 0.5, 0, old - 1)
  want = src[:, None, None] * a + src[None, :, None] * b + c
  np.testing.assert_allclose(out[0, 1:].reshape(new, new, 4), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize('old,new', [(4, 7), (14, 24), (14, 8), (7, 2)])
def test_matches_jax_image_resize(old, new):
  pos = random_pos(old, width=6, seed=old + new)
  out = resample_pos_embed(pos, new)[0, 1:].reshape(new, new, 6)
  np.testing.assert_allclose(out, jax_bilinear(pos[0, 1:].reshape(old, old, 6), new), atol=1e-5)


def test_token_order_is_the_vits_row_major_grid():
  """jaxlab's ViT puts the patch in row r, column c at token 1 + r·g + c; resampling an
  embedding that varies along rows only keeps it varying along rows only."""
  g, width = 4, 8
  model = ViT(num_classes=2, image_size=g * 4, patch=4, width=width, depth=1, heads=2, mlp_dim=16)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))['params']
  # All zero but the LayerNorm scales: a token is non-zero after norm1 iff its input is.
  params = unflatten({k: np.full(v.shape, k.endswith('/scale'), np.float32)
                      for k, v in flatten(shapes).items()})
  kernel = np.zeros((4, 4, 3, width), np.float32)
  kernel[..., 0] = 1.0  # channel 0 of a token = the sum of its patch's pixels
  params.update(patch_embed={'kernel': kernel, 'bias': np.zeros(width, np.float32)},
                pos_embed=np.zeros((1, 1 + g * g, width), np.float32),
                cls_token=np.zeros((1, 1, width), np.float32))
  image = np.zeros((1, 16, 16, 3), np.float32)
  r, c = 1, 3
  image[0, 4 * r:4 * r + 4, 4 * c:4 * c + 4] = 1.0
  _, state = jax.jit(lambda p, x: model.apply(
      {'params': p}, x, capture_intermediates=lambda m, _: m.name == 'norm1'))(params, image)
  (tokens,) = state['intermediates']['blocks_0']['norm1']['__call__']
  lit = np.flatnonzero(np.abs(np.asarray(tokens[0])).sum(-1))
  assert lit.tolist() == [1 + r * g + c]

  rows = np.repeat(np.arange(g, dtype=np.float64), g)  # token 1 + r·g + c holds r
  pos = np.concatenate([[0.0], rows])[None, :, None]
  out = resample_pos_embed(pos, 7)[0, 1:, 0].reshape(7, 7)
  assert np.ptp(out, axis=1).max() < 1e-12 and np.ptp(out[:, 0]) > 1


@pytest.mark.parametrize('old,new', [(4, 8), (6, 10), (3, 16), (8, 8)])
def test_pi_resize_keeps_the_patch_embedding_when_upsampling(old, new):
  """FlexiViT: ⟨x, w⟩ = ⟨resize(x), ŵ⟩ for every patch x when the patch grows."""
  rng = np.random.default_rng(old * new)
  x = rng.normal(size=(5, old, old, 3))
  w = rng.normal(size=(old, old, 3, 7)).astype(np.float32)
  x_up = np.asarray(jax.image.resize(jnp.asarray(x, jnp.float32), (5, new, new, 3), 'linear',
                                     antialias=False), np.float64)
  w_new = resample_patch_kernel(w, new)
  assert w_new.shape == (new, new, 3, 7) and w_new.dtype == np.float32
  want = np.einsum('nhwc,hwcd->nd', x, w.astype(np.float64))
  got = np.einsum('nhwc,hwcd->nd', x_up, w_new.astype(np.float64))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize('old,new', [(16, 4), (8, 6)])
def test_pi_resize_downsampling_is_the_least_squares_kernel(old, new):
  """Shrinking, ŵ minimises ‖Rᵀŵ − w‖ (R: the resize of a patch, here built from
  jax.image.resize of the basis patches): the normal equations R(Rᵀŵ − w) = 0 hold, and ŵ
  beats the plain bilinear resize of the kernel rescaled by (old/new)²."""
  basis = np.eye(old * old).reshape(-1, old, old, 1)
  resize = np.asarray(jax.image.resize(jnp.asarray(basis, jnp.float32), (old * old, new, new, 1),
                                       'linear', antialias=False), np.float64)
  r = resize.reshape(old * old, new * new).T  # [new², old²]
  np.testing.assert_allclose(r, patch_resize_matrix(old, new), atol=1e-6)
  w = np.random.default_rng(0).normal(size=(old, old, 1, 3))
  w_new = resample_patch_kernel(w, new).reshape(new * new, 3)
  residual = r.T @ w_new - w.reshape(old * old, 3)
  np.testing.assert_allclose(r @ residual, 0, atol=1e-5)  # r is float32-exact only
  naive = np.asarray(jax.image.resize(w[..., 0, :], (new, new, 3), 'linear', antialias=False),
                     np.float64).reshape(new * new, 3) * (old / new) ** 2
  assert np.linalg.norm(residual) < np.linalg.norm(r.T @ naive - w.reshape(old * old, 3))


def test_matches_torch_interpolate():
  torch = pytest.importorskip('torch')
  pos = random_pos(14, width=6, dtype=np.float32)
  for new in (24, 8):
    grid = torch.from_numpy(pos[0, 1:].reshape(14, 14, 6)).permute(2, 0, 1)[None]
    want = torch.nn.functional.interpolate(grid, size=(new, new), mode='bilinear',
                                           align_corners=False)[0].permute(1, 2, 0).numpy()
    got = resample_pos_embed(pos, new)[0, 1:].reshape(new, new, 6)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_matches_timm_resamplers():
  torch = pytest.importorskip('torch')
  layers = pytest.importorskip('timm.layers')
  pos = random_pos(14, width=6, dtype=np.float32)
  want = layers.resample_abs_pos_embed(torch.from_numpy(pos), [24, 24], num_prefix_tokens=1,
                                       interpolation='bilinear', antialias=False).numpy()
  np.testing.assert_allclose(resample_pos_embed(pos, 24), want, atol=1e-5)
  kernel = np.random.default_rng(0).normal(size=(16, 16, 3, 4)).astype(np.float32)  # HWIO
  for new in (4, 24):
    oihw = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
    want = layers.resample_patch_embed(oihw, [new, new], interpolation='bilinear',
                                       antialias=False).numpy().transpose(2, 3, 1, 0)
    np.testing.assert_allclose(resample_patch_kernel(kernel, new), want, rtol=1e-3, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# end to end: the same tiny timm weights at 32 px / patch 4 and at 64 px / patch 8


@pytest.mark.parametrize('image_size,patch', [(32, 4), (64, 8)])
def test_peft_forward_at_other_sizes(image_size, patch):
  model, params, labels = vit_with_peft(TINY, 10, method='lora', rank=2, image_size=image_size,
                                        patch=patch)
  grid = image_size // patch
  assert params['pos_embed'].shape == (1, 1 + grid * grid, 128)
  assert params['patch_embed']['kernel'].shape == (patch, patch, 3, 128)
  _, ref = timm_to_params(read_safetensors(TINY))
  np.testing.assert_array_equal(params['pos_embed'][:, 0], ref['pos_embed'][:, 0])
  np.testing.assert_allclose(params['pos_embed'], resample_pos_embed(ref['pos_embed'], grid))
  np.testing.assert_allclose(params['patch_embed']['kernel'],
                             resample_patch_kernel(ref['patch_embed']['kernel'], patch))
  np.testing.assert_array_equal(params['blocks_1']['mlp']['fc1']['kernel'],
                                ref['blocks_1']['mlp']['fc1']['kernel'])
  images = np.random.default_rng(0).uniform(-1, 1, (2, image_size, image_size, 3))
  logits = jax.jit(model.apply)({'params': params}, images.astype(np.float32))
  assert logits.shape == (2, 10) and np.isfinite(np.asarray(logits)).all()


def test_config_path_resamples_and_refuses_another_width():
  """load_pretrained takes weights of another image size and patch (make_task grafts them
  with jaxlab.peft.api.graft, as vit_with_peft above); another width is refused."""
  c = hybrid.get_config('quick')
  c.pretrained.update(source='timm', path=TINY)
  c.model.update(image_size=32, patch=4, width=128, depth=2, heads=2, mlp_dim=256)
  model = ViT(num_classes=10, **{k: c.model[k] for k in ('image_size', 'patch', 'width', 'depth',
                                                       'heads', 'mlp_dim')})
  fresh = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))['params']
  params = flatten(peft.graft(fresh, peft.load_pretrained(c)))
  assert params['pos_embed'].shape == (1, 65, 128)
  assert params['patch_embed/kernel'].shape == (4, 4, 3, 128)
  c.model.width = 64
  with pytest.raises(ValueError, match='width'):
    peft.load_pretrained(c)
