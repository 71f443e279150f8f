"""2-D convolution as patch matmuls over small batch chunks, for XLA:CPU.

XLA:CPU's convolutions, and above all their filter gradients, run several times slower than
its matmuls (LeNet-5's conv2 at batch 64, forward and both gradients: 143 ms as a convolution,
52 ms here, on 2 cores). Building the patch matrix of the whole batch at once costs as
much again in memory traffic (41 MB for conv2 at batch 64), so the patches are built, used and
dropped a few images at a time, inside a loop, where they stay in cache; the backward pass
rebuilds them instead of storing them. A layer with many input channels (LeNet-5's conv2: 5·64
columns per kernel row) goes a kernel row at a time instead ("rows"): the patch matrix of one
row of offsets, kw·C columns wide, multiplied by each of the kernel's kh rows and the products
added at their row offsets, so the matrix built is kh times smaller and each matmul still deep
enough to be fast (LeNet-5's step at batch 64 on 2 cores, JAXLAB_MALLOC=keep: 48 ms against
58 ms for whole patches at 4 images a trip; docs/benchmarks.md).
On GPUs and TPUs the library convolution is the fast one:
`Conv(impl='auto')` uses it there and the patch form only on the CPU. Both give the same
parameters (names and shapes of `flax.linen.Conv`), so checkpoints move between them; the
initialisers are PyTorch's defaults (param_init='torch') or flax's ('lecun').
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

IMPLS = ('auto', 'xla', 'patches')
# Images per loop iteration. LeNet-5 on a 2-core AVX-512 CPU (jax 0.10.2), step at batch 64 /
# 1024: chunk 8 52 / 835 ms against 58 / 912 ms at chunk 4; 16 no faster.
CHUNK = 8
# The row form (`_row_conv`) from this many columns per kernel row (kw·C) on; below it one
# patch matrix of all kh·kw·C columns (LeNet-5's conv1 has 5·3 per row: too shallow a matmul).
ROWS_MIN_WIDTH = 64
FORMS = ('auto', 'patches', 'rows')


def _offsets(kh, kw):
  return [(i, j) for i in range(kh) for j in range(kw)]


def _patches(x, kh, kw):
  """(B, H, W, C) → (B, H-kh+1, W-kw+1, kh·kw·C), feature order (i, j, c) as in an HWIO kernel.
  Columns first, then rows: two small concatenations compile in half the time of one of kh·kw."""
  h, w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
  rows = jnp.concatenate([x[:, :, j:j + w, :] for j in range(kw)], axis=-1)
  return jnp.concatenate([rows[:, i:i + h] for i in range(kh)], axis=-1)


def _fold(dp, kh, kw, c):
  """The transpose of `_patches`: each offset's slice of `dp` added back where it was read."""
  return sum(jnp.pad(dp[..., n * c:(n + 1) * c], ((0, 0), (i, kh - 1 - i), (j, kw - 1 - j), (0, 0)))
             for n, (i, j) in enumerate(_offsets(kh, kw)))


def _chunks(x, chunk):
  return x.reshape(x.shape[0] // chunk, chunk, *x.shape[1:])


def conv_valid(x, kernel, chunk, form='auto'):
  """VALID, stride-1 convolution of NHWC `x` with an HWIO `kernel`, `chunk` images at a time
  (`chunk` must divide the batch). `form`: 'patches' (one patch matrix of kh·kw·C columns),
  'rows' (a kernel row at a time, kw·C columns) or 'auto' (rows from ROWS_MIN_WIDTH columns a
  row on). Both forms are the same convolution; they differ in the order of the sums."""
  if form not in FORMS:
    raise ValueError(f'unknown conv form {form!r}; choose one of {", ".join(FORMS)}')
  if form == 'auto':
    form = 'rows' if kernel.shape[1] * kernel.shape[2] >= ROWS_MIN_WIDTH else 'patches'
  return (_row_conv if form == 'rows' else _patch_conv)(x, kernel, chunk)


def _map_chunks(one, x, chunk):
  """`one` (a chunk of images → its output) over the chunks of x, one after another."""
  y = lax.map(one, _chunks(x, chunk))
  return y.reshape(x.shape[0], *y.shape[2:])


def _scan_chunks(one, dw_t, x, dy, chunk):
  """`one` over the chunks of (x, dy), summing the filter gradient dw_t and stacking the
  input gradient: (dw_t, dx)."""
  dw_t, dx = lax.scan(one, dw_t, (_chunks(x, chunk), _chunks(dy, chunk)))
  return dw_t, dx.reshape(x.shape)


def _inputs_saved(conv):
  """The forward rule of `conv` (custom_vjp): its output, and (x, kernel) for the backward
  pass, which rebuilds the patches instead of storing them."""
  return lambda x, kernel, chunk: (conv(x, kernel, chunk), (x, kernel))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _patch_conv(x, kernel, chunk):
  kh, kw, _, co = kernel.shape
  w2d = kernel.reshape(-1, co)
  return _map_chunks(lambda xc: _patches(xc, kh, kw) @ w2d, x, chunk)


def _patch_bwd(chunk, res, dy):
  x, kernel = res
  kh, kw, ci, co = kernel.shape
  w2d = kernel.reshape(-1, co)

  def one(dw_t, xs):
    # The filter gradient as dyᵀ·patches ([co, positions] · [positions, kh·kw·ci]), transposed
    # once after the loop: XLA then transposes the small dy, not the patch matrix.
    xc, dyc = xs
    patches = _patches(xc, kh, kw)
    dw_t = dw_t + dyc.reshape(-1, co).T @ patches.reshape(-1, patches.shape[-1])
    return dw_t, _fold(dyc @ w2d.T, kh, kw, ci)

  dw_t, dx = _scan_chunks(one, jnp.zeros_like(w2d.T), x, dy, chunk)
  return dx, dw_t.T.reshape(kernel.shape)


_patch_conv.defvjp(_inputs_saved(_patch_conv), _patch_bwd)


def _rows(x, kw):
  """(B, H, W, C) → (B, H, W-kw+1, kw·C): the patches of one kernel row, order (j, c)."""
  w = x.shape[2] - kw + 1
  return jnp.concatenate([x[:, :, j:j + w, :] for j in range(kw)], axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _row_conv(x, kernel, chunk):
  kh, kw, ci, co = kernel.shape
  h = x.shape[1] - kh + 1
  w_rows = kernel.reshape(kh, kw * ci, co)

  def one(xc):
    r = _rows(xc, kw)
    return sum(r[:, i:i + h] @ w_rows[i] for i in range(kh))
  return _map_chunks(one, x, chunk)


def _row_bwd(chunk, res, dy):
  x, kernel = res
  kh, kw, ci, co = kernel.shape
  h = x.shape[1] - kh + 1
  w_rows = kernel.reshape(kh, kw * ci, co)

  def one(dw_t, xs):
    # Kernel row i's gradient as dyᵀ·(row patches shifted by i) ([co, positions] ·
    # [positions, kw·ci]), transposed after the loop; the input's gradient through the rows'
    # transpose: each row's product added back at its offset, then the columns folded.
    xc, dyc = xs
    r = _rows(xc, kw)
    dyt = dyc.reshape(-1, co).T
    dw_t = dw_t + jnp.stack([dyt @ r[:, i:i + h].reshape(-1, kw * ci) for i in range(kh)])
    dr = sum(jnp.pad(dyc @ w_rows[i].T, ((0, 0), (i, kh - 1 - i), (0, 0), (0, 0)))
             for i in range(kh))
    return dw_t, _fold(dr, 1, kw, ci)

  dw_t, dx = _scan_chunks(one, jnp.zeros((kh, co, kw * ci), kernel.dtype), x, dy, chunk)
  return dx, jnp.swapaxes(dw_t, 1, 2).reshape(kernel.shape)


_row_conv.defvjp(_inputs_saved(_row_conv), _row_bwd)


def resolve_impl(impl):
  """'auto' → 'patches' on the CPU backend, 'xla' elsewhere."""
  if impl not in IMPLS:
    raise ValueError(f'unknown conv impl {impl!r}; choose one of {", ".join(IMPLS)}')
  if impl == 'auto':
    return 'patches' if jax.default_backend() == 'cpu' else 'xla'
  return impl


INITS = ('torch', 'lecun')


def torch_kernel_init():
  """PyTorch's default for nn.Conv2d / nn.Linear weights, kaiming_uniform_(a=√5):
  U(±gain·√(3/fan_in)) with gain √(2/(1 + 5)), i.e. U(±1/√fan_in) (fan_in = all but the
  output axis of an HWIO or (in, out) kernel)."""
  return nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')


def torch_bias_init(fan_in):
  """PyTorch's default bias of nn.Conv2d / nn.Linear: U(±1/√fan_in)."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def initializers(init, fan_in):
  """(kernel_init, bias_init): 'torch' (PyTorch's defaults, as the original LeNet-5 code) or
  'lecun' (LeCun normal kernels, zero biases: flax's defaults)."""
  if init == 'torch':
    return torch_kernel_init(), torch_bias_init(fan_in)
  if init == 'lecun':
    return nn.initializers.lecun_normal(), nn.initializers.zeros_init()
  raise ValueError(f'unknown init {init!r}; choose one of {", ".join(INITS)}')


class Conv(nn.Module):
  """Stride-1 2-D convolution with bias, parameters as `flax.linen.Conv` ('kernel' HWIO, 'bias').
  param_init: 'torch' (PyTorch's nn.Conv2d defaults, U(±1/√fan_in) weights and biases) or
  'lecun'."""
  features: int
  kernel_size: tuple = (5, 5)
  padding: str = 'VALID'  # 'VALID' | 'SAME'
  impl: str = 'auto'
  chunk: int = CHUNK
  param_init: str = 'torch'

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    kernel_init, bias_init = initializers(self.param_init, kh * kw * x.shape[-1])
    kernel = self.param('kernel', kernel_init, (kh, kw, x.shape[-1], self.features))
    bias = self.param('bias', bias_init, (self.features,))
    if self.padding == 'SAME':
      x = jnp.pad(x, ((0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)))
    elif self.padding != 'VALID':
      raise ValueError(f"Conv padding must be 'VALID' or 'SAME', got {self.padding!r}")
    if resolve_impl(self.impl) == 'xla':
      y = lax.conv_general_dilated(x, kernel, (1, 1), 'VALID',
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    else:
      y = conv_valid(x, kernel, math.gcd(self.chunk, x.shape[0]))
    return y + bias


def _windows(x):
  """(B, H, W, C) → (B, H/2, 2, W/2, 2, C): the 2×2 windows (odd edges dropped)."""
  b, h, w, c = x.shape
  return x[:, :h // 2 * 2, :w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c)


@jax.custom_vjp
def max_pool_2x2(x):
  """2×2 max-pool, stride 2, by reshape (faster than reduce_window on XLA:CPU); odd edges dropped
  as in VALID pooling. Its gradient is PyTorch's: all of it to the first maximum of each window
  (row by row), where JAX's rule for `max` splits it among tied maxima and finds them with a
  second pass over the input in the forward pass."""
  return _windows(x).max(axis=(2, 4))


def _first_max(xw, y):
  """The index 0..3 (row-major) of the first maximum of each window, int8 (B, H/2, W/2, C)."""
  at = lambda i, j: xw[:, :, i, :, j] == y
  return jnp.where(at(0, 0), 0, jnp.where(at(0, 1), 1, jnp.where(at(1, 0), 2, 3))).astype(jnp.int8)


def _pool_fwd(x):
  xw = _windows(x)
  y = xw.max(axis=(2, 4))
  return y, (_first_max(xw, y), x.shape)


def _pool_bwd(res, dy):
  first, shape = res
  b, h, w, c = shape
  zero = jnp.zeros((), dy.dtype)
  rows = [jnp.stack([jnp.where(first == 2 * i + j, dy, zero) for j in (0, 1)], axis=3)
          for i in (0, 1)]
  dx = jnp.stack(rows, axis=2).reshape(b, h // 2 * 2, w // 2 * 2, c)
  return (jnp.pad(dx, ((0, 0), (0, h % 2), (0, w % 2), (0, 0))),)


max_pool_2x2.defvjp(_pool_fwd, _pool_bwd)
