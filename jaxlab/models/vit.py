"""Vision Transformer with timm's layout, and LoRA that can be injected per block.

Parameter paths follow timm's names, so loaders map one-to-one:
  patch_embed/{kernel,bias}, cls_token, pos_embed,
  blocks_{i}/norm1, blocks_{i}/attn/qkv, blocks_{i}/attn/proj, blocks_{i}/norm2,
  blocks_{i}/mlp/fc1, blocks_{i}/mlp/fc2, norm, head.
LoRA adds blocks_{i}/<layer>/lora_a (in, r) and lora_b (r, out) to each targeted layer.
`S/16` is timm's vit_small_patch16_224: pre-LN blocks, LayerNorm eps 1e-6 with
the exact (two-pass) variance, exact erf GELU, qkv with bias, class token.

Position information is a learned embedding (timm's) or, with pos='rope',
axial 2-D rotary embeddings on the queries and keys (no pos_embed). With
`residual` set (a HyperSpec), each block's attention and MLP branches are
wrapped in hyper-connections over n residual streams (blocks_{i}/hc_attn,
blocks_{i}/hc_mlp); the branch weights keep their paths.

`weight_init` picks the initialisation: 'default' (today's, for the pretrained PEFT ViT),
'trunc_normal' (timm's from-scratch ViT init with trunc-normal(0.02)) or 'latent_space' (the
DINOv3-derived ViT of white-richard/latent-space, which the mHC family reproduces); see INITS.
`rope_form` picks the axial RoPE's coordinates ('integer' or 'latent_space', see ROPE_FORMS),
`rope_dtype` the precision of its tables and of the rotation, `stream_dtype` the dtype of the
residual stream between blocks (None: the compute dtype).
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from jaxlab.models import autodiff
from jaxlab.models.hyper_connections import HyperConnection, HyperSpec, expand, reduce
from jaxlab.models.lora import LoraSpec
from jaxlab.params import run_keys

# name: (patch, width, depth, heads, mlp_dim)
VARIANTS = {
    'Ti/16': (16, 192, 12, 3, 768),
    'S/16': (16, 384, 12, 6, 1536),
    'B/16': (16, 768, 12, 12, 3072),
    'Ti/4': (4, 192, 12, 3, 768),
}


def uniform_fan_in(fan_in):
  """U(±1/sqrt(fan_in)): PyTorch's kaiming_uniform(a=√5), its default for nn.Linear."""
  bound = 1.0 / fan_in ** 0.5
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class LoraDense(nn.Module):
  """x·W + b, plus a low-rank adapter (alpha/rank)·dropout(x)·A·B when rank > 0.

  A (in, rank) starts U(±1/sqrt(rank)), B (rank, out) starts at zero, so the
  adapter is the identity change at init.
  """
  features: int
  rank: int = 0
  alpha: float = 16.0
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32
  kernel_init: nn.initializers.Initializer = None  # None: DEFAULT_DENSE_INIT

  @nn.compact
  def __call__(self, x, train=False):
    kernel = self.param('kernel', self.kernel_init or DEFAULT_DENSE_INIT,
                        (x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    x = x.astype(self.dtype)
    y = x @ kernel.astype(self.dtype) + bias.astype(self.dtype)
    if self.rank:
      a = self.param('lora_a', uniform_fan_in(self.rank), (x.shape[-1], self.rank))
      b = self.param('lora_b', nn.initializers.zeros, (self.rank, self.features))
      h = nn.Dropout(self.dropout, deterministic=not train)(x) if self.dropout else x
      y = y + (self.alpha / self.rank) * low_rank(h, a.astype(self.dtype), b.astype(self.dtype))
    return y


@jax.custom_vjp
def _low_rank(h, a, b):
  """(h·A)·B for h [..., in], A [in, r], B [r, out]; its gradient is written out so that every
  product contracting over the tokens transposes a rank-r operand, never an [tokens, width]
  one (autodiff's order made XLA:CPU transpose the output gradient, fused with its producers,
  once per adapter)."""
  return (h @ a) @ b


def _low_rank_fwd(h, a, b):
  u = h @ a
  return u @ b, (h, a, b, u)


def _low_rank_bwd(res, g):
  h, a, b, u = res
  tokens = lambda x: x.reshape(-1, x.shape[-1])
  g2, u2, h2 = tokens(g), tokens(u), tokens(h)
  du = g @ b.T  # [..., r]
  db = u2.T @ g2  # [r, tokens] · [tokens, out]
  da = (tokens(du).T @ h2).T  # ([r, tokens] · [tokens, in])ᵀ
  return du @ a.T, da.astype(a.dtype), db.astype(b.dtype)


_low_rank.defvjp(_low_rank_fwd, _low_rank_bwd)
low_rank = autodiff.fast_or_plain(_low_rank, _low_rank.fun)


@jax.custom_vjp
def _materialize_grad(x):
  """The identity; its gradient leaves here as one buffer.

  Between blocks the residual stream's gradient is a sum of elementwise terms (each
  LayerNorm's backward) reaching down through every block above. Left alone, XLA:CPU fuses
  that whole chain into each consumer that reads the gradient in another layout (the LoRA
  and weight gradients' dots) and recomputes it there: quadratic in the depth, about 3× the
  step of ViT-S/16 with LoRA at batch 8 (jax 0.10.2). An optimization barrier would say
  "materialise" but XLA:CPU removes barriers before fusing, so on the CPU the gradient passes
  through a loop XLA cannot see through (its trip count is 1, read from the data; 0 for a
  NaN, which returns the same value). Other platforms get the identity.
  """
  return x


def _materialize_fwd(x):
  return x, None


def _through_loop(g):
  def body(carry):
    i, x = carry
    return i + 1, jnp.where(i >= 0, x, -x)  # i >= 0 always: x unchanged
  once = 1 - jnp.isnan(g.reshape(-1)[0]).astype(jnp.int32)
  return jax.lax.while_loop(lambda carry: carry[0] < once, body, (jnp.int32(0), g))[1]


def _materialize_bwd(_, g):
  return (jax.lax.platform_dependent(g, cpu=_through_loop, default=lambda g: g),)


_materialize_grad.defvjp(_materialize_fwd, _materialize_bwd)
materialize_grad = autodiff.fast_or_plain(_materialize_grad, _materialize_grad.fun)


def layer_norm(eps, dtype, name):
  # Two-pass variance, as PyTorch: Flax's fast variance E[x²]-E[x]² breaks timm parity.
  return nn.LayerNorm(epsilon=eps, use_fast_variance=False, dtype=dtype, name=name)


POSITIONS = ('learned', 'rope')

# ViT initialisations (model.weight_init; timm's VisionTransformer names its keyword so too):
#   default       today's, kept bit for bit: patch_embed kernel lecun-normal (flax Conv's
#                 default); block Dense kernels (qkv, proj, fc1, fc2) and pos_embed
#                 DEFAULT_DENSE_INIT; head kernel and bias U(±1/sqrt(width)) (PyTorch
#                 nn.Linear's default: the fresh head of the pretrained PEFT ViT).
#   trunc_normal  timm's `init_weights` for a ViT trained from scratch:
#                 TRUNC_NORMAL_02 for the patch_embed, qkv, proj, fc1, fc2 and head kernels and
#                 for pos_embed. (timm's VisionTransformer.init_weights does pos_embed, and
#                 init_weights_vit_timm every nn.Linear; it leaves the Conv2d patch embedding at
#                 PyTorch's default; here it gets trunc-normal(0.02) too.)
# Under these two, biases are zero (except the default head's), cls_token is N(0, 1e-6) as in timm,
# LayerNorms are (1, 0) and the hyper-connection parameters keep their own init.
#   latent_space  white-richard/latent-space, src/latent_space/models/vision_transformer/
#                 vision_transformer.py `DinoVisionTransformer.init_weights` (called by
#                 lightning/lightning_module.py) with `init_weights_vit` over every module, and
#                 layers/patch_embed.py `PatchEmbed.reset_parameters`:
#                 patch_embed kernel AND bias U(±1/sqrt(fan_in)), fan_in = channels·patch²
#                 (48 for RGB patches of 4); cls_token N(0, 0.02) (nn.init.normal_, untruncated);
#                 every Dense kernel (qkv, proj, fc1, fc2, head) torch.nn.init.trunc_normal_(
#                 std=0.02), whose cut at ±2 (absolute, = ±100σ) is TORCH_TRUNC_NORMAL_02, and
#                 zero biases (head included); LayerNorms (1, 0); pos_embed (learned_pos only;
#                 the reference has none) TORCH_TRUNC_NORMAL_02. The hyper-connection
#                 parameters keep their own init (init_weights_vit leaves them alone too).
INITS = ('default', 'trunc_normal', 'latent_space')
# jax/flax `truncated_normal(s)` draws N(0, 1) truncated at ±2 and multiplies by s, WITHOUT
# correcting the variance: its std is 0.8796·s (0.0176 for s = 0.02) and |x| < 2s. It stays the
# default init so that existing configs are unchanged.
DEFAULT_DENSE_INIT = nn.initializers.truncated_normal(0.02)
# std 0.02 exactly, truncated at ±2 standard deviations of the underlying normal: the jax
# initializer with s = 0.02/0.8796 (the factor is the std of N(0, 1) truncated at ±2, as in
# jax's variance_scaling), so |x| < 2·0.02/0.8796 ≈ 0.0455. timm's `trunc_normal_(std=.02)`
# truncates at the absolute ±2 (±100σ), in effect an untruncated N(0, 0.02²); both have std
# 0.02, and this one is truncated in earnest (no draw beyond 2.27σ of 0.02).
TRUNCATED_NORMAL_STD_CORRECTION = .87962566103423978
TRUNC_NORMAL_02 = nn.initializers.truncated_normal(0.02 / TRUNCATED_NORMAL_STD_CORRECTION)


def torch_trunc_normal(std, a=-2.0, b=2.0):
  """torch.nn.init.trunc_normal_(std=std, a=a, b=b): N(0, std²) cut at the ABSOLUTE bounds
  [a, b] (for std 0.02 and the default ±2 that is ±100σ: in effect N(0, 0.02²))."""
  def init(key, shape, dtype=jnp.float32):
    return (jax.random.truncated_normal(key, a / std, b / std, shape, jnp.float32)
            * std).astype(dtype)
  return init


TORCH_TRUNC_NORMAL_02 = torch_trunc_normal(0.02)

# Axial RoPE coordinates (model.rope_form):
#   integer       patch (row, col) at integer positions 0..grid−1, angle position·freq.
#   latent_space  white-richard/latent-space src/latent_space/models/vision_transformer/layers/
#                 rope_position_encoding.py (DINOv3's), normalize_coords='separate', no shift /
#                 jitter / rescale (DinoVisionTransformer's defaults, which vit_tiny keeps):
#                 coordinates ((i + 0.5)/H)·2 − 1 ∈ [−1, 1], angle 2π·coord/period with
#                 period_k = base^(2k/(head_dim/2)), k < head_dim/4. With rope_dtype bfloat16
#                 (pos_embed_rope_dtype='bf16', the reference's default) the periods, coords,
#                 angles and sin/cos are each rounded to bfloat16 and the queries and keys are
#                 cast to bfloat16, rotated and cast back (attention.py `apply_rope`).
# Both: dim j of the first half of a head pairs with j + head_dim/2 (rotate-half); the first
# head_dim/4 pairs turn with the row, the rest with the column; the class token is not rotated.
ROPE_FORMS = ('integer', 'latent_space')
ROPE_DTYPES = ('float32', 'bfloat16')


def axial_rope(grid, head_dim, base):
  """(cos, sin) [1 + grid², head_dim/2] of axial 2-D rotary embeddings for a class token
  (unrotated) and a grid×grid patch grid in row-major order.

  Dimension j of the first half pairs with j + head_dim/2; the first head_dim/4 pairs
  turn with the patch's row, the rest with its column, at frequencies base^(−i/(head_dim/4)).
  """
  if head_dim % 4:
    raise ValueError(f'axial RoPE needs a head dimension divisible by 4 (got {head_dim})')
  quarter = head_dim // 4
  freqs = base ** (-jnp.arange(quarter, dtype=jnp.float32) / quarter)
  rows, cols = jnp.meshgrid(jnp.arange(grid, dtype=jnp.float32),
                            jnp.arange(grid, dtype=jnp.float32), indexing='ij')
  angles = jnp.concatenate([rows.reshape(-1, 1) * freqs, cols.reshape(-1, 1) * freqs], axis=1)
  angles = jnp.concatenate([jnp.zeros((1, 2 * quarter)), angles])
  return jnp.cos(angles), jnp.sin(angles)


def _round_to(x, dtype):
  """float32 numpy x rounded to `dtype` (bfloat16: round to nearest even) and back."""
  return np.asarray(x, np.float32).astype(dtype).astype(np.float32)


def latent_space_rope(grid_h, grid_w, head_dim, base, dtype='float32'):
  """(cos, sin, 'table') [1 + grid_h·grid_w, head_dim/2] of white-richard/latent-space's
  RopePositionEmbedding (rope_position_encoding.py forward and _init_weights, base given,
  normalize_coords='separate', no coordinate augmentation) for a class token (angle 0:
  unrotated) and the patches in row-major order, in `dtype` (see ROPE_FORMS).

  Computed on the host in numpy float32, rounding to `dtype` after every operation as
  PyTorch's bfloat16 ops do (each computes in float32 and rounds), so the tables do not
  depend on how XLA fuses bfloat16 arithmetic. The third element tells `rotate` to rotate in
  the tables' dtype.
  """
  if head_dim % 4:
    raise ValueError(f'axial RoPE needs a head dimension divisible by 4 (got {head_dim})')
  if dtype not in ROPE_DTYPES:
    raise ValueError(f'unknown rope_dtype {dtype!r}; choose one of {ROPE_DTYPES}')
  dt = ml_dtypes.bfloat16 if dtype == 'bfloat16' else np.float32
  r = lambda v: _round_to(v, dt)
  quarter = head_dim // 4
  # periods = base ** (2 * arange(D//4) / (D//2))
  periods = r(np.float32(base) ** r(r(2 * np.arange(quarter, dtype=np.float32)) / (head_dim // 2)))
  # coords = arange(0.5, H) / H per axis, meshgrid 'ij', flattened, then 2·coords − 1
  ch = r(r(np.arange(grid_h, dtype=np.float32) + np.float32(0.5)) / np.float32(grid_h))
  cw = r(r(np.arange(grid_w, dtype=np.float32) + np.float32(0.5)) / np.float32(grid_w))
  rows, cols = np.meshgrid(ch, cw, indexing='ij')
  coords = np.stack([rows.reshape(-1), cols.reshape(-1)], axis=-1)  # [HW, 2]
  coords = r(r(2.0 * coords) - 1.0)
  # angles = 2 * math.pi * coords[:, :, None] / periods: (2π · coords) rounded, then / periods
  angles = r(r(np.float32(2 * math.pi) * coords[:, :, None]) / periods[None, None, :])
  angles = angles.reshape(len(coords), 2 * quarter)  # [HW, D/2]: row angles, then column angles
  angles = np.concatenate([np.zeros((1, 2 * quarter), np.float32), angles])
  cos, sin = r(np.cos(angles)), r(np.sin(angles))
  return jnp.asarray(cos, dt), jnp.asarray(sin, dt), 'table'


def rotate(x, cos, sin, in_table_dtype=None):
  """Rotary embedding of x [B, T, heads, head_dim] with tables [T, head_dim/2].

  Default: the tables are cast to x's dtype. With in_table_dtype (the third element of
  `latent_space_rope`'s tables) x is cast to the tables' dtype, rotated in it and cast back,
  as the reference's apply_rope does (the class token included).
  """
  half = x.shape[-1] // 2
  if in_table_dtype:
    out_dtype = x.dtype
    x = x.astype(cos.dtype)
  x1, x2 = x[..., :half], x[..., half:]
  cos, sin = cos[:, None, :].astype(x.dtype), sin[:, None, :].astype(x.dtype)
  y = jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
  return y.astype(out_dtype) if in_table_dtype else y


# How the attention is computed: XLA's ops (every platform), or cuDNN's fused kernel (NVIDIA
# GPUs, 16-bit compute). jax.nn.dot_product_attention picks XLA unless cuDNN is asked for.
ATTENTION_IMPLEMENTATIONS = ('xla', 'cudnn')
ATTENTION_CHOICES = ('auto',) + ATTENTION_IMPLEMENTATIONS


def cudnn_attention_refusal(dtype, head_dim, platform):
  """Why cuDNN's fused attention cannot train this ViT's attention (None when it can): it needs
  an NVIDIA GPU, bfloat16 or float16 compute (it refuses float32) and a head width that is a
  multiple of 8, at most 128. (An odd token count is padded: `attend`.)"""
  if platform != 'cuda':
    return f'cuDNN attention runs on NVIDIA GPUs only (this is {platform})'
  if jnp.dtype(dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
    return f'cuDNN attention needs bfloat16 compute (model.dtype is {jnp.dtype(dtype).name})'
  if head_dim % 8 or head_dim > 128:
    return f'cuDNN attention needs a head width that is a multiple of 8, at most 128 ({head_dim})'
  return None


def attend(q, k, v, implementation='xla', pad_odd=None):
  """jax.nn.dot_product_attention of [batch, tokens, heads, head_dim] queries, keys and values.

  An odd number of tokens goes to cuDNN padded by one token that the keys mask out (and whose
  query row is dropped): JAX's cuDNN path refuses an odd sequence in training (a class token on
  an even patch grid: ViT-S/16's 197, ViT-Ti/4's 65). `pad_odd` forces the padding either way
  (a test runs the padded form through XLA's attention to check it is the same attention)."""
  n = q.shape[1]
  if pad_odd is None:
    pad_odd = implementation == 'cudnn' and n % 2 == 1
  if not pad_odd:
    return jax.nn.dot_product_attention(q, k, v, implementation=implementation)
  pad = lambda x: jnp.pad(x, ((0, 0), (0, 1), (0, 0), (0, 0)))
  lengths = jnp.full((q.shape[0],), n, jnp.int32)
  out = jax.nn.dot_product_attention(pad(q), pad(k), pad(v), implementation=implementation,
                                     query_seq_lengths=lengths, key_value_seq_lengths=lengths)
  return out[:, :n]


def device_platform():
  """'cuda', 'rocm', 'tpu' or 'cpu': the platform of the default device."""
  device = jax.devices()[0]
  if device.platform == 'gpu':
    version = getattr(device.client, 'platform_version', '').lower()
    return 'rocm' if 'rocm' in version else 'cuda'
  return device.platform


def attention_implementation(choice, dtype, head_dim, platform=None):
  """The attention a ViT computes with for `choice` (model.attention): 'auto' is cuDNN where
  it can run (cudnn_attention_refusal) and XLA elsewhere; 'cudnn' where it cannot is an error
  naming why."""
  if choice not in ATTENTION_CHOICES:
    raise ValueError(f'unknown attention {choice!r}; choose one of {", ".join(ATTENTION_CHOICES)}')
  if choice == 'xla':
    return 'xla'
  why = cudnn_attention_refusal(dtype, head_dim, platform or device_platform())
  if choice == 'cudnn' and why:
    raise ValueError(why)
  return 'xla' if why else 'cudnn'


def with_dtype(model, dtype):
  """`model` (a ViT) computing in `dtype`. cuDNN's attention needs 16-bit compute, so a ViT on
  it gives way to XLA's attention where `dtype` is float32 (the float32 embedding pass of a
  bfloat16 ViT); any other attention is kept."""
  dtype = jnp.dtype(dtype)
  attention = model.attention
  if attention == 'cudnn' and cudnn_attention_refusal(dtype, model.width // model.heads, 'cuda'):
    attention = 'xla'
  return model.clone(dtype=dtype, attention=attention)


class Attention(nn.Module):
  """Multi-head self-attention with a fused qkv laid out as timm's [3, heads, head_dim].

  rope: (cos, sin) tables of `axial_rope` (or (cos, sin, 'table') of `latent_space_rope`) to
    rotate queries and keys, or None.
  """
  width: int
  heads: int
  lora: dict
  dtype: jnp.dtype = jnp.float32
  rope: tuple | None = None
  kernel_init: nn.initializers.Initializer = None  # of qkv and proj; None: DEFAULT_DENSE_INIT
  implementation: str = 'xla'  # of the attention: one of ATTENTION_IMPLEMENTATIONS

  @nn.compact
  def __call__(self, x, train=False):
    b, n, _ = x.shape
    qkv = LoraDense(3 * self.width, dtype=self.dtype, name='qkv', kernel_init=self.kernel_init,
                    **self.lora.get('qkv', {}))(x, train)
    q, k, v = jnp.moveaxis(qkv.reshape(b, n, 3, self.heads, self.width // self.heads), 2, 0)
    if self.rope is not None:
      q, k = rotate(q, *self.rope), rotate(k, *self.rope)
    out = attend(q, k, v, self.implementation)
    out = out.reshape(b, n, self.width)
    return LoraDense(self.width, dtype=self.dtype, name='proj', kernel_init=self.kernel_init,
                     **self.lora.get('proj', {}))(out, train)


class Mlp(nn.Module):
  """fc1 → GELU → fc2."""
  width: int
  mlp_dim: int
  gelu_approximate: bool
  lora: dict
  dtype: jnp.dtype = jnp.float32
  kernel_init: nn.initializers.Initializer = None  # of fc1 and fc2; None: DEFAULT_DENSE_INIT

  @nn.compact
  def __call__(self, x, train=False):
    x = LoraDense(self.mlp_dim, dtype=self.dtype, name='fc1', kernel_init=self.kernel_init,
                  **self.lora.get('fc1', {}))(x, train)
    x = nn.gelu(x, approximate=self.gelu_approximate)
    return LoraDense(self.width, dtype=self.dtype, name='fc2', kernel_init=self.kernel_init,
                     **self.lora.get('fc2', {}))(x, train)


class Block(nn.Module):
  """Pre-LN transformer block: x + attn(norm1(x)), then + mlp(norm2(x)).

  With `residual` (a HyperSpec) x is [B, T, n, D] and each `+` is a
  hyper-connection of the branch (see hyper_connections.py).
  """
  width: int
  heads: int
  mlp_dim: int
  gelu_approximate: bool
  ln_eps: float
  lora: dict
  dtype: jnp.dtype = jnp.float32
  rope: tuple | None = None
  residual: HyperSpec | None = None
  index: int = 0
  kernel_init: nn.initializers.Initializer = None  # of the Dense kernels; None: DEFAULT_DENSE_INIT
  drop_path: float = 0.0  # stochastic depth: the probability of dropping each branch per example
  attention: str = 'xla'  # Attention.implementation

  def _drop_path(self, y, train):
    """timm's DropPath: in training, each example's branch output is zeroed with probability
    drop_path and the kept ones scaled by 1/(1 − drop_path); the identity otherwise."""
    if not train or not self.drop_path:
      return y
    keep = 1.0 - self.drop_path
    mask = jax.random.bernoulli(self.make_rng('dropout'), keep, (y.shape[0],) + (1,) * (y.ndim - 1))
    return y / jnp.asarray(keep, y.dtype) * mask.astype(y.dtype)

  @nn.compact
  def __call__(self, x, train=False):
    norm1 = layer_norm(self.ln_eps, self.dtype, 'norm1')
    attn = Attention(self.width, self.heads, self.lora, self.dtype, self.rope, self.kernel_init,
                     self.attention, name='attn')
    norm2 = layer_norm(self.ln_eps, self.dtype, 'norm2')
    mlp = Mlp(self.width, self.mlp_dim, self.gelu_approximate, self.lora, self.dtype,
              self.kernel_init, name='mlp')
    branches = (lambda h: self._drop_path(attn(norm1(h), train), train),
                lambda h: self._drop_path(mlp(norm2(h), train), train))
    x = materialize_grad(x)
    for j, (name, branch) in enumerate(zip(('hc_attn', 'hc_mlp'), branches)):
      if self.residual is None:
        x = x + branch(x)
      else:
        x = HyperConnection(self.residual, 2 * self.index + j, name=name)(x, branch)
    return x


class ViT(nn.Module):
  """Patch embedding, class token, learned position embedding, blocks, final norm, head."""
  num_classes: int
  image_size: int = 224
  patch: int = 16
  width: int = 384
  depth: int = 12
  heads: int = 6
  mlp_dim: int = 1536
  gelu_approximate: bool = False
  ln_eps: float = 1e-6
  lora: LoraSpec | None = None
  dtype: jnp.dtype = jnp.float32
  pos: str = 'learned'
  rope_base: float = 100.0
  residual: HyperSpec | None = None
  remat: bool = False  # recompute each block's activations in the backward pass (saves memory)
  attention: str = 'xla'  # 'xla' | 'cudnn' (attention_implementation picks one for a device)
  weight_init: str = 'default'  # one of INITS (not `init`: that is flax's Module.init)
  rope_form: str = 'integer'  # one of ROPE_FORMS
  rope_dtype: str = 'float32'  # latent_space form only: one of ROPE_DTYPES
  stream_dtype: jnp.dtype | None = None  # the residual stream's dtype; None: `dtype`
  # Stochastic depth: block i drops its branches with probability drop_path_rate·i/(depth − 1)
  # (timm's linspace(0, drop_path_rate, depth)), per example, in training only.
  drop_path_rate: float = 0.0

  def block_drop_path(self, i):
    """Block i's stochastic-depth rate: timm's linspace(0, drop_path_rate, depth)[i]."""
    if not self.drop_path_rate or self.depth == 1:
      return 0.0
    return float(self.drop_path_rate) * i / (self.depth - 1)

  def block_lora(self, i):
    """Keyword arguments of each LoraDense in block i: {target: {rank, alpha, dropout}}."""
    spec = self.lora
    if spec is None or i not in spec.blocks:
      return {}
    return {t: dict(rank=spec.rank, alpha=spec.alpha, dropout=spec.dropout) for t in spec.targets}

  @nn.compact
  def __call__(self, images, train=False, embed=False):
    """Logits [B, classes] in float32; with embed=True the normed class token [B, width]."""
    if self.pos not in POSITIONS:
      raise ValueError(f'unknown position embedding {self.pos!r}; choose one of {POSITIONS}')
    if self.weight_init not in INITS:
      raise ValueError(f'unknown weight_init {self.weight_init!r}; choose one of {INITS}')
    if self.rope_form not in ROPE_FORMS:
      raise ValueError(f'unknown rope_form {self.rope_form!r}; choose one of {ROPE_FORMS}')
    cls_init = nn.initializers.normal(1e-6)
    if self.weight_init == 'latent_space':
      fan_in = images.shape[-1] * self.patch * self.patch
      embed_init = dict(kernel_init=uniform_fan_in(fan_in), bias_init=uniform_fan_in(fan_in))
      dense_init = pos_init = TORCH_TRUNC_NORMAL_02
      head_init = dict(kernel_init=TORCH_TRUNC_NORMAL_02, bias_init=nn.initializers.zeros)
      cls_init = nn.initializers.normal(0.02)
    elif self.weight_init == 'trunc_normal':
      embed_init = dict(kernel_init=TRUNC_NORMAL_02)  # bias: flax's zeros
      dense_init = pos_init = TRUNC_NORMAL_02
      head_init = dict(kernel_init=TRUNC_NORMAL_02, bias_init=nn.initializers.zeros)
    else:
      embed_init = {}  # flax Conv's defaults: lecun-normal kernel, zero bias
      dense_init = pos_init = DEFAULT_DENSE_INIT
      head_init = dict(kernel_init=uniform_fan_in(self.width), bias_init=uniform_fan_in(self.width))
    x = nn.Conv(self.width, (self.patch, self.patch), strides=(self.patch, self.patch),
                padding='VALID', dtype=self.dtype, name='patch_embed', **embed_init)(images)
    b = x.shape[0]
    x = x.reshape(b, -1, self.width)
    cls = self.param('cls_token', cls_init, (1, 1, self.width))
    if self.stream_dtype is not None:
      # The reference concatenates its float32 class token with the (autocast bfloat16) patch
      # embeddings: torch.cat promotes, and the residual stream stays float32 between blocks
      # while the branches compute in bfloat16.
      x = x.astype(self.stream_dtype)
    x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, self.width)).astype(x.dtype), x], axis=1)
    rope = None
    if self.pos == 'learned':
      pos = self.param('pos_embed', pos_init, (1, x.shape[1], self.width))
      x = x + pos.astype(x.dtype)
    else:
      grid = images.shape[1] // self.patch
      if self.rope_form == 'latent_space':
        rope = latent_space_rope(grid, images.shape[2] // self.patch, self.width // self.heads,
                                 self.rope_base, self.rope_dtype)
      else:
        rope = axial_rope(grid, self.width // self.heads, self.rope_base)
    if self.residual is not None:
      x = expand(x, self.residual.streams)
    block = nn.remat(Block, static_argnums=(2,)) if self.remat else Block  # 2: `train`
    for i in range(self.depth):
      x = block(self.width, self.heads, self.mlp_dim, self.gelu_approximate, self.ln_eps,
                self.block_lora(i), self.dtype, rope, self.residual, i, dense_init,
                self.block_drop_path(i), self.attention, name=f'blocks_{i}')(x, train)
    after_reduce = self.residual is not None and self.residual.final_norm == 'after_reduce'
    if after_reduce:  # the streams are summed, then normed (the reference ViT)
      x = reduce(x, self.residual.reduce)
    x = layer_norm(self.ln_eps, self.dtype, 'norm')(x)
    if self.residual is not None and not after_reduce:  # normed per stream, then summed
      x = reduce(x, self.residual.reduce)
    if embed:
      return x[:, 0].astype(jnp.float32)
    head = nn.Dense(self.num_classes, dtype=self.dtype, name='head', **head_init)
    return head(x[:, 0]).astype(jnp.float32)


# The module is a static argument: equal modules (Linen modules compare by their fields) share
# one compiled init, so building the same ViT again (another seed, a sweep) does not recompile.
_init = jax.jit(lambda model, key, images: model.init(key, images)['params'], static_argnums=0)


def init_vit(model, seed=0):
  """`model.init` params for images of `model.image_size`, from the run's init key
  (jaxlab.params.run_keys(seed)[0], as the trainer's runs)."""
  size = model.image_size
  return _init(model, run_keys(seed)[0], jnp.zeros((1, size, size, 3)))
