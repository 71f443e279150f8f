"""Pretrained ViT weights: timm state dicts / safetensors and big_vision (AugReg) npz files.

Both converters return `(arch, params)`: `arch` holds the keyword arguments of
`jaxlab.models.vit.ViT` that the checkpoint fixes (num_classes, image_size, patch,
width, depth, heads, mlp_dim), all read from the array shapes, and `params` is the
nested dict of float32 numpy arrays that `ViT(**arch).apply({'params': params}, x)`
takes (images NHWC). The name mapping (docs/references.md, PEFT):

  timm                         big_vision / AugReg npz               jaxlab
  patch_embed.proj (OIHW)      embedding (HWIO)                      patch_embed (HWIO)
  cls_token                    cls                                   cls_token
  pos_embed                    Transformer/posembed_input/pos_embedding  pos_embed
  blocks.i.norm1               Transformer/encoderblock_i/LayerNorm_0    blocks_i/norm1
  blocks.i.attn.qkv            .../MultiHeadDotProductAttention_1/{query,key,value}  blocks_i/attn/qkv
  blocks.i.attn.proj           .../MultiHeadDotProductAttention_1/out    blocks_i/attn/proj
  blocks.i.norm2               .../LayerNorm_2                           blocks_i/norm2
  blocks.i.mlp.fc1 / fc2       .../MlpBlock_3/Dense_0 / Dense_1          blocks_i/mlp/fc1 / fc2
  norm                         Transformer/encoder_norm                  norm
  head                         head                                      head

torch Linear weights are (out, in) and are transposed to jaxlab's (in, out).

safetensors files are read and written by the `safetensors` package (its numpy side: no
torch); bfloat16 tensors come as `ml_dtypes.bfloat16` arrays.

`from_timm` and `from_big_vision` give `(model, params)` of a checkpoint (`graft` fits its
leaves into a fresh model of another head, image size or patch). `to_timm` and
`to_big_vision` are the exact inverses of `timm_to_params` and `big_vision_to_params`:
loading what they return gives back the same arrays, bit for bit. LoRA pairs are merged
into their kernels first (jaxlab.models.lora.merge_lora, with the alpha of the model's
LoraSpec). Models that timm's and big_vision's plain ViT cannot hold (RoPE instead of a
position embedding, hyper-connections) are refused with the parameters that have no place
there.
"""

import os
import re
import tempfile
import urllib.error
import urllib.request
import zipfile

import jax.numpy as jnp
import ml_dtypes
import numpy as np

from jaxlab.models.lora import has_lora, merge_lora
from jaxlab.models.vit import ViT, init_vit
from jaxlab.params import flatten, unflatten

# ---------------------------------------------------------------------------------------------
# safetensors

def read_safetensors(path):
  """All tensors of a .safetensors file as {name: np.ndarray} (`__metadata__` is not a tensor),
  through the safetensors package, which maps the file and reads each tensor once: F64 / F32 /
  F16 / BF16 (as ml_dtypes.bfloat16), the integer types and BOOL. A damaged file (truncated,
  not safetensors, offsets that do not fit) is a ValueError naming the file and the reason."""
  from safetensors import SafetensorError, safe_open  # pylint: disable=import-outside-toplevel
  path = os.fspath(path)
  try:
    with safe_open(path, framework='numpy') as f:
      return {name: f.get_tensor(name) for name in f.keys()}
  except (SafetensorError, TypeError) as e:
    raise ValueError(f'{path}: not a readable safetensors file ({e})') from e


def read_safetensors_metadata(path):
  """The {str: str} `__metadata__` of a .safetensors file ({} when it has none)."""
  from safetensors import SafetensorError, safe_open  # pylint: disable=import-outside-toplevel
  path = os.fspath(path)
  try:
    with safe_open(path, framework='numpy') as f:
      return dict(f.metadata() or {})
  except SafetensorError as e:
    raise ValueError(f'{path}: not a readable safetensors file ({e})') from e


def write_safetensors(path, arrays, metadata=None):
  """Write {name: array} (numpy or JAX, any dtype safetensors has, bfloat16 included) as a
  .safetensors file through the safetensors package; `metadata`, if given, is a {str: str}
  dict stored under `__metadata__`."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  arrays = {str(k): np.asarray(_to_numpy(v), order='C') for k, v in arrays.items()}
  try:
    save_file(arrays, os.fspath(path),
              metadata={str(k): str(v) for k, v in metadata.items()} if metadata else None)
  except (ValueError, TypeError, KeyError) as e:
    raise ValueError(f'{os.fspath(path)}: cannot write these arrays as safetensors ({e})') from e


def load_npz(path):
  """All arrays of an .npz file as {name: np.ndarray} (no pickles)."""
  if not zipfile.is_zipfile(os.fspath(path)):
    raise ValueError(f'{path}: not an npz archive (no zip directory: a truncated download or '
                     'another format)')
  with np.load(os.fspath(path), allow_pickle=False) as f:
    return {k: f[k] for k in f.files}


# ---------------------------------------------------------------------------------------------
# Conversion helpers


class CheckpointKeyError(KeyError, ValueError):
  """Missing or unexpected checkpoint entries; catchable as KeyError or ValueError."""

  def __str__(self):  # KeyError would repr() the message, quotes and escaped newlines included
    return str(self.args[0]) if self.args else ''


def _to_numpy(x):
  """np.ndarray of numpy arrays, jax arrays, lists, or torch tensors (via .detach().cpu().numpy())."""
  if isinstance(x, np.ndarray):
    return x
  if hasattr(x, 'detach') and hasattr(x, 'cpu'):  # torch.Tensor, possibly on GPU / requiring grad
    x = x.detach().cpu()
    if str(getattr(x, 'dtype', '')) == 'torch.bfloat16':  # numpy() has no bfloat16
      return x.float().numpy().astype(ml_dtypes.bfloat16)
    return x.numpy()
  return np.asarray(x)


def _cast(a, dtype):
  """Floating arrays (bfloat16 included) to `dtype`; others, or dtype None, unchanged."""
  if dtype is None or not (np.issubdtype(a.dtype, np.floating) or a.dtype == ml_dtypes.bfloat16):
    return a
  return a.astype(dtype)


def _check_keys(kind, present, expected):
  """Raise CheckpointKeyError listing every missing and every unexpected key."""
  missing = sorted(set(expected) - set(present), key=natural_key)
  unexpected = sorted(set(present) - set(expected), key=natural_key)
  if missing or unexpected:
    lines = [f'{kind} checkpoint does not match the ViT layout:']
    if missing:
      lines.append(f'  missing keys ({len(missing)}): ' + ', '.join(missing))
    if unexpected:
      lines.append(f'  unexpected keys ({len(unexpected)}): ' + ', '.join(unexpected))
    raise CheckpointKeyError('\n'.join(lines))


def natural_key(key):
  """Sort key that puts blocks.2 before blocks.10."""
  return [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', key)]


def _depth(keys, pattern):
  """1 + the largest block index among the keys (0 when there are no blocks)."""
  idx = [int(m.group(1)) for k in keys for m in [re.match(pattern, k)] if m]
  return max(idx) + 1 if idx else 0


def _grid(kind, pos_len, patch):
  """image_size from the position-embedding length 1 + (image_size / patch)²."""
  n = pos_len - 1
  side = int(round(n ** 0.5))
  if n <= 0 or side * side != n:
    raise ValueError(f'{kind}: position embedding has {pos_len} tokens; expected 1 + a square '
                     '(class token + a square patch grid)')
  return side * patch


def _heads(kind, width, heads):
  if heads is None:
    if width % 64:
      raise ValueError(f'{kind}: width {width} is not a multiple of 64; pass heads= explicitly')
    return width // 64
  heads = int(heads)
  if heads <= 0 or width % heads:
    raise ValueError(f'{kind}: heads={heads} does not divide width {width}')
  return heads


def _check_shapes(kind, params, arch):
  """Every leaf's shape against the ViT's; raises ValueError listing all mismatches."""
  p, w, m, c = arch['patch'], arch['width'], arch['mlp_dim'], arch['num_classes']
  n = (arch['image_size'] // p) ** 2 + 1
  want = {
      ('patch_embed', 'kernel'): (p, p, 3, w), ('patch_embed', 'bias'): (w,),
      ('cls_token',): (1, 1, w), ('pos_embed',): (1, n, w),
      ('norm', 'scale'): (w,), ('norm', 'bias'): (w,),
      ('head', 'kernel'): (w, c), ('head', 'bias'): (c,),
  }
  for i in range(arch['depth']):
    b = f'blocks_{i}'
    want.update({
        (b, 'norm1', 'scale'): (w,), (b, 'norm1', 'bias'): (w,),
        (b, 'norm2', 'scale'): (w,), (b, 'norm2', 'bias'): (w,),
        (b, 'attn', 'qkv', 'kernel'): (w, 3 * w), (b, 'attn', 'qkv', 'bias'): (3 * w,),
        (b, 'attn', 'proj', 'kernel'): (w, w), (b, 'attn', 'proj', 'bias'): (w,),
        (b, 'mlp', 'fc1', 'kernel'): (w, m), (b, 'mlp', 'fc1', 'bias'): (m,),
        (b, 'mlp', 'fc2', 'kernel'): (m, w), (b, 'mlp', 'fc2', 'bias'): (w,),
    })
  bad = []
  for path, shape in want.items():
    node = params
    for k in path:
      node = node[k]
    if tuple(node.shape) != shape:
      bad.append(f'{"/".join(path)}: got {tuple(node.shape)}, want {shape}')
  if bad:
    raise ValueError(f'{kind} checkpoint has inconsistent shapes for {arch}:\n  ' + '\n  '.join(bad))


def _set(tree, path, value):
  *parents, leaf = path.split('/')
  for k in parents:
    tree = tree.setdefault(k, {})
  tree[leaf] = value


# ---------------------------------------------------------------------------------------------
# timm


def timm_to_params(state_dict, heads=None, dtype=np.float32):
  """(arch, params) of a timm VisionTransformer state dict (e.g. vit_small_patch16_224).

  `state_dict`: {name: array}; numpy arrays, jax arrays or torch tensors. The layout
  is timm's default ViT: class token, learned position embedding, pre-LN blocks with
  fused qkv (with bias), final `norm`, `head` on the class token. Everything else in
  the checkpoint (layer scale, fc_norm, register tokens, ...) is reported as unexpected.

  Shapes give patch, width, depth, mlp_dim, num_classes and image_size. The number of
  heads is not stored anywhere in a timm checkpoint: it defaults to width // 64,
  because every standard timm ViT (Ti 3, S 6, B 12, L 16, H 16 heads) uses
  head_dim 64. Pass `heads=` for anything else. Floating arrays are cast to `dtype`
  (None keeps them).

  Raises CheckpointKeyError (a KeyError and a ValueError) listing every missing and
  every unexpected key, and ValueError on inconsistent shapes.
  """
  sd = {str(k): v for k, v in state_dict.items()}
  depth = _depth(sd, r'blocks\.(\d+)\.')
  expected = ['patch_embed.proj.weight', 'patch_embed.proj.bias', 'cls_token', 'pos_embed',
              'norm.weight', 'norm.bias', 'head.weight', 'head.bias']
  for i in range(depth):
    for layer in ('norm1', 'attn.qkv', 'attn.proj', 'norm2', 'mlp.fc1', 'mlp.fc2'):
      expected += [f'blocks.{i}.{layer}.weight', f'blocks.{i}.{layer}.bias']
  _check_keys('timm', sd, expected)
  if depth == 0:
    raise ValueError('timm checkpoint has no transformer blocks')

  def get(name):
    return _cast(_to_numpy(sd[name]), dtype)

  conv = get('patch_embed.proj.weight')  # (width, 3, p, p) OIHW
  if conv.ndim != 4 or conv.shape[2] != conv.shape[3]:
    raise ValueError(f'timm: patch_embed.proj.weight has shape {conv.shape}; want (width, 3, p, p)')
  width, patch = conv.shape[0], conv.shape[2]
  fc1 = get('blocks.0.mlp.fc1.weight')
  head = get('head.weight')
  pos = get('pos_embed')
  arch = dict(num_classes=int(head.shape[0]), image_size=_grid('timm', pos.shape[1], patch),
              patch=int(patch), width=int(width), depth=depth,
              heads=_heads('timm', width, heads), mlp_dim=int(fc1.shape[0]))

  params = {}
  _set(params, 'patch_embed/kernel', conv.transpose(2, 3, 1, 0))  # OIHW -> HWIO
  _set(params, 'patch_embed/bias', get('patch_embed.proj.bias'))
  _set(params, 'cls_token', get('cls_token'))
  _set(params, 'pos_embed', pos)
  for i in range(depth):
    t, j = f'blocks.{i}', f'blocks_{i}'
    for src, dst in (('norm1', 'norm1'), ('norm2', 'norm2')):
      _set(params, f'{j}/{dst}/scale', get(f'{t}.{src}.weight'))
      _set(params, f'{j}/{dst}/bias', get(f'{t}.{src}.bias'))
    for src, dst in (('attn.qkv', 'attn/qkv'), ('attn.proj', 'attn/proj'),
                     ('mlp.fc1', 'mlp/fc1'), ('mlp.fc2', 'mlp/fc2')):
      _set(params, f'{j}/{dst}/kernel', get(f'{t}.{src}.weight').T)  # (out, in) -> (in, out)
      _set(params, f'{j}/{dst}/bias', get(f'{t}.{src}.bias'))
  _set(params, 'norm/scale', get('norm.weight'))
  _set(params, 'norm/bias', get('norm.bias'))
  _set(params, 'head/kernel', head.T)
  _set(params, 'head/bias', get('head.bias'))
  params = _contiguous(params)
  _check_shapes('timm', params, arch)
  return arch, params


def _contiguous(tree):
  if isinstance(tree, dict):
    return {k: _contiguous(v) for k, v in tree.items()}
  return np.asarray(tree, order='C')


# ---------------------------------------------------------------------------------------------
# big_vision / AugReg npz

_BV_BLOCK = 'Transformer/encoderblock_{}/'
_BV_ATTN = 'MultiHeadDotProductAttention_1/'


def big_vision_to_params(npz_mapping, heads=None, dtype=np.float32, prefix=''):
  """(arch, params) of a big_vision / AugReg ViT npz (the `vit_models/augreg/*.npz` files).

  `npz_mapping`: {name: array}, e.g. `load_npz(path)`. Keys (after `prefix`, which is
  '' for the AugReg files and 'opt/target/' for some older vit_jax checkpoints):
  embedding/{kernel (HWIO), bias}, cls, Transformer/posembed_input/pos_embedding,
  Transformer/encoderblock_i/{LayerNorm_0, MultiHeadDotProductAttention_1/{query,key,value,out},
  LayerNorm_2, MlpBlock_3/{Dense_0, Dense_1}}, Transformer/encoder_norm, head.
  q/k/v kernels are (width, heads, head_dim) and biases (heads, head_dim); `out` is
  (heads, head_dim, width). The fused qkv kernel is [q | k | v] each reshaped to
  (width, width), which is timm's [3, heads, head_dim] output layout. `heads` is read
  from the shapes; passing it only checks it.

  Keys outside `prefix`, and keys such as pre_logits, are unexpected: the error
  (CheckpointKeyError, a KeyError and a ValueError) lists every missing and every
  unexpected key.
  """
  sd = {}
  for k in npz_mapping.keys():
    sd[str(k)[len(prefix):] if str(k).startswith(prefix) else '<outside prefix> ' + str(k)] = k
  depth = _depth(sd, r'Transformer/encoderblock_(\d+)/')
  expected = ['embedding/kernel', 'embedding/bias', 'cls', 'Transformer/posembed_input/pos_embedding',
              'Transformer/encoder_norm/scale', 'Transformer/encoder_norm/bias',
              'head/kernel', 'head/bias']
  for i in range(depth):
    b = _BV_BLOCK.format(i)
    for ln in ('LayerNorm_0', 'LayerNorm_2'):
      expected += [f'{b}{ln}/scale', f'{b}{ln}/bias']
    for d in ('query', 'key', 'value', 'out'):
      expected += [f'{b}{_BV_ATTN}{d}/kernel', f'{b}{_BV_ATTN}{d}/bias']
    for d in ('Dense_0', 'Dense_1'):
      expected += [f'{b}MlpBlock_3/{d}/kernel', f'{b}MlpBlock_3/{d}/bias']
  _check_keys('big_vision', sd, expected)
  if depth == 0:
    raise ValueError('big_vision checkpoint has no encoder blocks')

  def get(name):
    return _cast(_to_numpy(npz_mapping[sd[name]]), dtype)

  emb = get('embedding/kernel')  # (p, p, 3, width) HWIO
  if emb.ndim != 4 or emb.shape[0] != emb.shape[1]:
    raise ValueError(f'big_vision: embedding/kernel has shape {emb.shape}; want (p, p, 3, width)')
  patch, width = emb.shape[0], emb.shape[3]
  q0 = get(_BV_BLOCK.format(0) + _BV_ATTN + 'query/kernel')
  if q0.ndim != 3 or q0.shape[0] != width or q0.shape[1] * q0.shape[2] != width:
    raise ValueError(f'big_vision: query kernel has shape {q0.shape}; want (width, heads, head_dim)')
  if heads is not None and int(heads) != q0.shape[1]:
    raise ValueError(f'big_vision: heads={heads} given but the checkpoint has {q0.shape[1]} heads')
  head = get('head/kernel')
  pos = get('Transformer/posembed_input/pos_embedding')
  arch = dict(num_classes=int(head.shape[-1]), image_size=_grid('big_vision', pos.shape[1], patch),
              patch=int(patch), width=int(width), depth=depth, heads=int(q0.shape[1]),
              mlp_dim=int(get(_BV_BLOCK.format(0) + 'MlpBlock_3/Dense_0/kernel').shape[-1]))

  params = {}
  _set(params, 'patch_embed/kernel', emb)
  _set(params, 'patch_embed/bias', get('embedding/bias'))
  _set(params, 'cls_token', get('cls'))
  _set(params, 'pos_embed', pos)
  for i in range(depth):
    b, j = _BV_BLOCK.format(i), f'blocks_{i}'
    for src, dst in (('LayerNorm_0', 'norm1'), ('LayerNorm_2', 'norm2')):
      _set(params, f'{j}/{dst}/scale', get(f'{b}{src}/scale'))
      _set(params, f'{j}/{dst}/bias', get(f'{b}{src}/bias'))
    qkv_k, qkv_b = [], []
    for d in ('query', 'key', 'value'):
      k, bias = get(f'{b}{_BV_ATTN}{d}/kernel'), get(f'{b}{_BV_ATTN}{d}/bias')
      qkv_k.append(k.reshape(k.shape[0], -1))  # (width, heads, head_dim) -> (width, width)
      qkv_b.append(bias.reshape(-1))
    _set(params, f'{j}/attn/qkv/kernel', np.concatenate(qkv_k, axis=1))
    _set(params, f'{j}/attn/qkv/bias', np.concatenate(qkv_b))
    out = get(f'{b}{_BV_ATTN}out/kernel')  # (heads, head_dim, width) -> (width, width)
    _set(params, f'{j}/attn/proj/kernel', out.reshape(-1, out.shape[-1]))
    _set(params, f'{j}/attn/proj/bias', get(f'{b}{_BV_ATTN}out/bias'))
    for src, dst in (('Dense_0', 'fc1'), ('Dense_1', 'fc2')):
      _set(params, f'{j}/mlp/{dst}/kernel', get(f'{b}MlpBlock_3/{src}/kernel'))
      _set(params, f'{j}/mlp/{dst}/bias', get(f'{b}MlpBlock_3/{src}/bias'))
  _set(params, 'norm/scale', get('Transformer/encoder_norm/scale'))
  _set(params, 'norm/bias', get('Transformer/encoder_norm/bias'))
  _set(params, 'head/kernel', head)
  _set(params, 'head/bias', get('head/bias'))
  params = _contiguous(params)
  _check_shapes('big_vision', params, arch)
  return arch, params


# ---------------------------------------------------------------------------------------------
# Download

AUGREG_S16 = ('S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-'
              'lr_0.03-res_224.npz')
AUGREG_BASE_URL = 'https://storage.googleapis.com/vit_models/augreg/'
TIMM_S16 = 'vit_small_patch16_224.augreg_in21k_ft_in1k'


def fetch_augreg(name=AUGREG_S16, cache_dir='~/.cache/jaxlab', base_url=AUGREG_BASE_URL,
                 timeout=60.0):
  """Local path of the AugReg npz `name`, downloaded once into `cache_dir`.

  The download goes to a temporary file in `cache_dir` that is renamed into place
  when complete, so an interrupted download never leaves a partial file under
  `name`. Offline, raises FileNotFoundError saying where to put the file by hand
  (or to use timm's safetensors of the same weights instead).
  """
  cache_dir = os.path.expanduser(os.fspath(cache_dir))
  path = os.path.join(cache_dir, name)
  if os.path.isfile(path):
    return path
  url = base_url.rstrip('/') + '/' + name
  os.makedirs(cache_dir, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix='.' + name[:32] + '.', suffix='.part', dir=cache_dir)
  try:
    with os.fdopen(fd, 'wb') as out, urllib.request.urlopen(url, timeout=timeout) as resp:
      while chunk := resp.read(1 << 20):
        out.write(chunk)
    os.replace(tmp, path)
  except (urllib.error.URLError, OSError, TimeoutError, ValueError) as e:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise FileNotFoundError(
        f'could not download {url} ({e}). Offline? Download it elsewhere and put it at {path} '
        f'(or pass cache_dir=), or use timm\'s copy of the same weights, '
        f'{TIMM_S16} (model.safetensors from the Hugging Face hub repo timm/{TIMM_S16}), '
        'with jaxlab.io.pretrained.from_timm(path).') from e
  return path


# ---------------------------------------------------------------------------------------------
# Other image sizes and patch sizes
#
# jaxlab's ViT (as timm's) orders the patch tokens row-major after the class token: token
# 1 + r·g + c is the patch in row r, column c of the g×g grid. Both resamplings below use
# bilinear interpolation with half-pixel centres and clamped edges and no antialiasing:
# PyTorch's F.interpolate(mode='bilinear', align_corners=False), TF's and jax.image.resize's
# bilinear without antialias. (timm defaults to bicubic with antialias for both; big_vision
# zooms position embeddings with scipy.ndimage.zoom(order=1), corners aligned, and FlexiViT
# builds its patch-kernel resize from tf.image.resize bilinear, the choice here.)


# A model on the Hugging Face hub: 'timm/vit_small_patch16_224.augreg_in21k_ft_in1k', optionally
# with timm's 'hf-hub:' / 'hf_hub:' prefix.
_HUB_NAME = re.compile(r'(?:hf[-_]hub:)?([\w.-]+/[\w.-]+)')


def hub_name(weights):
  """The hub repository of `weights` when it names one ('org/name', not a file on disk and not
  a .safetensors / .npz path), else None."""
  if not isinstance(weights, str) or os.path.exists(os.path.expanduser(weights)):
    return None
  m = _HUB_NAME.fullmatch(weights)
  if not m or weights.endswith(('.safetensors', '.npz')):
    return None
  return m.group(1)


def hub_cache_dir():
  """The Hugging Face hub cache huggingface_hub reads (HF_HUB_CACHE, else HF_HOME/hub)."""
  import huggingface_hub.constants  # pylint: disable=g-import-not-at-top
  return huggingface_hub.constants.HF_HUB_CACHE


def hub_file(name, filename='model.safetensors', revision=None, cache_dir=None):
  """The local path of `filename` in the Hugging Face hub repository `name` (timm's
  'timm/<model>.<tag>'), through huggingface_hub (`pip install "jaxlab[hub]"`): from the shared
  hub cache (HF_HOME / HF_HUB_CACHE, or `cache_dir`) when it holds the file, downloaded into it
  otherwise; offline (HF_HUB_OFFLINE=1) the cache alone. FileNotFoundError when it is neither
  cached nor downloadable."""
  repo = hub_name(name) or name
  try:
    import huggingface_hub  # pylint: disable=g-import-not-at-top
    import huggingface_hub.errors  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f'weights by hub name ({repo}) need huggingface_hub: '
                      'pip install "jaxlab[hub]"') from e
  try:
    return huggingface_hub.hf_hub_download(repo, filename, revision=revision, cache_dir=cache_dir)
  except (huggingface_hub.errors.LocalEntryNotFoundError,
          huggingface_hub.errors.RepositoryNotFoundError,
          huggingface_hub.errors.EntryNotFoundError, OSError) as e:
    where = cache_dir or hub_cache_dir()
    raise FileNotFoundError(f'{repo}/{filename} is not in the hub cache ({where}) and could not '
                            f'be downloaded ({type(e).__name__})') from e


def linear_resize_matrix(n_in, n_out):
  """(n_out, n_in) matrix M of 1-D linear interpolation: M @ x resizes x from n_in to n_out
  samples. Output j reads the input at (j + 0.5)·n_in/n_out − 0.5, clamped to [0, n_in − 1]."""
  if n_in < 1 or n_out < 1:
    raise ValueError(f'sizes must be positive, got {n_in} -> {n_out}')
  src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1)
  lo = np.floor(src).astype(np.int64)
  hi = np.minimum(lo + 1, n_in - 1)
  frac = src - lo
  m = np.zeros((n_out, n_in))
  np.add.at(m, (np.arange(n_out), lo), 1.0 - frac)
  np.add.at(m, (np.arange(n_out), hi), frac)
  return m


def _pair(size, what):
  h, w = (size, size) if np.ndim(size) == 0 else tuple(size)
  if int(h) != h or int(w) != w or h < 1 or w < 1:
    raise ValueError(f'{what} must be a positive int or (h, w), got {size!r}')
  return int(h), int(w)


def resample_pos_embed(pos, new_grid, num_prefix=1, old_grid=None):
  """A learned position embedding [1, num_prefix + h·w, D] resampled to a new patch grid.

  The first `num_prefix` tokens (the class token) are kept as they are; the h×w grid
  (row-major, `old_grid`, default the square one) is resized bilinearly (half-pixel
  centres, clamped edges, no antialias) to `new_grid` (an int for a square grid, or (h, w)).
  The same grid returns `pos` unchanged (as numpy). Takes numpy or jax arrays; returns numpy
  in `pos`'s dtype (computed in float64).
  """
  pos = _to_numpy(pos)
  if pos.ndim != 3 or pos.shape[0] != 1:
    raise ValueError(f'position embedding has shape {pos.shape}; want (1, tokens, width)')
  n = pos.shape[1] - num_prefix
  if old_grid is None:
    side = int(round(max(n, 0) ** 0.5))
    if n <= 0 or side * side != n:
      raise ValueError(f'position embedding has {pos.shape[1]} tokens: {num_prefix} prefix '
                       'token(s) + not a square grid; pass old_grid=(h, w)')
    old_grid = side
  (gh, gw), (nh, nw) = _pair(old_grid, 'old_grid'), _pair(new_grid, 'new_grid')
  if gh * gw != n:
    raise ValueError(f'old_grid {(gh, gw)} does not hold the {n} grid tokens')
  if (gh, gw) == (nh, nw):
    return pos
  grid = pos[0, num_prefix:].astype(np.float64).reshape(gh, gw, -1)
  grid = np.einsum('ir,rcd,jc->ijd', linear_resize_matrix(gh, nh), grid,
                   linear_resize_matrix(gw, nw))
  grid = grid.reshape(1, nh * nw, -1).astype(pos.dtype)
  return np.concatenate([pos[:, :num_prefix], grid], axis=1)


def patch_resize_matrix(old_patch, new_patch):
  """(q_h·q_w, p_h·p_w) matrix R that resizes a p×p patch, flattened row-major, to q×q:
  the Kronecker product of the two 1-D `linear_resize_matrix`es."""
  (ph, pw), (qh, qw) = _pair(old_patch, 'old_patch'), _pair(new_patch, 'new_patch')
  return np.kron(linear_resize_matrix(ph, qh), linear_resize_matrix(pw, qw))


def resample_patch_kernel(kernel, new_patch):
  """A patch-embedding kernel (HWIO: [p, p, C, D]) resized to [q, q, C, D] as FlexiViT does.

  With R the bilinear resize of a p×p patch to q×q (`patch_resize_matrix`), the new kernel
  is pinv(Rᵀ)·w for each input/output channel pair (w flattened row-major). It minimises
  E‖⟨x, w⟩ − ⟨Rx, ŵ⟩‖² over white-noise patches x, and when q ≥ p (upsampling) it keeps
  the patch embedding exactly: ⟨x, w⟩ = ⟨resize(x), ŵ⟩ for every p×p patch x. So a model
  with patch q on images resized by q/p computes what the original computes (up to the
  patch borders). The same size returns `kernel` unchanged (as numpy). Returns numpy in the
  kernel's dtype (computed in float64).
  (FlexiViT, Beyer et al. 2023; big_vision's flexi `resample_patchemb`, timm's
  `resample_patch_embed`.)
  """
  w = _to_numpy(kernel)
  if w.ndim != 4:
    raise ValueError(f'patch kernel has shape {w.shape}; want (p, p, in, out) (HWIO)')
  (ph, pw), (qh, qw) = w.shape[:2], _pair(new_patch, 'new_patch')
  if (ph, pw) == (qh, qw):
    return w
  resize = patch_resize_matrix((ph, pw), (qh, qw))
  new = np.linalg.pinv(resize.T) @ w.astype(np.float64).reshape(ph * pw, -1)
  return new.reshape(qh, qw, *w.shape[2:]).astype(w.dtype)


def resample_leaf(path, value, shape):
  """`value` (the pretrained leaf at `path`) fitted to `shape`, or None when it cannot be.

  'pos_embed' [1, 1 + g², D] takes another square grid (`resample_pos_embed`) and
  'patch_embed/kernel' [p, p, C, D] another patch size (`resample_patch_kernel`); only
  their grid or patch may differ. Every other leaf fits only at its own shape.
  """
  shape = tuple(shape)
  if tuple(value.shape) == shape:
    return value
  if path == 'pos_embed' and len(shape) == 3 and value.ndim == 3 and \
      value.shape[::2] == shape[::2]:
    side = int(round((shape[1] - 1) ** 0.5))
    if side * side == shape[1] - 1 and side > 0:
      return resample_pos_embed(value, side)
  if path == 'patch_embed/kernel' and len(shape) == 4 and value.ndim == 4 and \
      value.shape[2:] == shape[2:]:
    return resample_patch_kernel(value, shape[:2])
  return None


def graft(fresh, pretrained, fresh_head=True):
  """`fresh` with every backbone leaf taken from `pretrained`; LoRA (and the head) stay fresh.

  The head is new by default (transfer to a new label set); fresh_head=False takes it from
  `pretrained` too. A pretrained position embedding of another grid or patch kernel of
  another patch size is resampled to the fresh one's shape (`resample_leaf`); any other leaf missing from `pretrained` or of another shape is an error
  that lists them.
  """
  out, problems = {}, []
  flat_pre = flatten(pretrained)
  for path, leaf in flatten(fresh).items():
    if (fresh_head and path.startswith('head/')) or '/lora_' in path:
      out[path] = leaf
    elif path not in flat_pre:
      problems.append(f'{path} missing')
    else:
      value = resample_leaf(path, flat_pre[path], leaf.shape)
      if value is None:
        problems.append(f'{path} {tuple(flat_pre[path].shape)} != {tuple(leaf.shape)}')
      else:
        out[path] = jnp.asarray(value, leaf.dtype)
  if problems:
    raise ValueError('pretrained weights do not fit the configured model: ' + '; '.join(problems))
  return unflatten(out)


# ---------------------------------------------------------------------------------------------
# (model, params) of a timm or big_vision checkpoint


def _pretrained(convert, source, reader, suffixes, kw):
  """(ViT, params) from a converter of this module and a path or a mapping."""
  import os
  heads = kw.pop('heads', None)
  seed = kw.pop('seed', 0)
  if isinstance(source, (str, os.PathLike)):
    path = os.fspath(source)
    if not path.endswith(suffixes):
      raise ValueError(f'{path}: expected a {" or ".join(suffixes)} file, or a mapping of arrays')
    source = reader(path)
  arch, params = convert(source, heads=heads)
  clash = sorted(k for k in ('width', 'depth', 'mlp_dim') if k in kw and kw[k] != arch[k])
  if clash:
    raise ValueError('the checkpoint fixes ' + ', '.join(f'{k}={arch[k]!r} (got {kw[k]!r})'
                                                         for k in clash)
                     + '; num_classes, image_size and patch may differ')
  model = ViT(**{**arch, **kw})
  if model.patch < 1 or model.image_size % model.patch:
    raise ValueError(f'patch {model.patch} does not divide image_size {model.image_size}')
  changed = ('num_classes', 'image_size', 'patch')
  if any(getattr(model, k) != arch[k] for k in changed) or model.lora is not None:
    # graft resamples the position embedding and patch kernel (resample_leaf) and keeps the
    # fresh head and LoRA leaves.
    params = graft(init_vit(model, seed), params,
                   fresh_head=model.num_classes != arch['num_classes'])
  return model, params


def from_timm(state_dict, **kw):
  """(model, params) of a timm ViT state dict, or of a path to its .safetensors file.

  `heads=` goes to the converter (default width // 64, timm's head_dim), `seed=` is the
  key of any fresh leaves; every other keyword goes to ViT (e.g. dtype, lora, num_classes,
  image_size, patch). width, depth and mlp_dim must match the checkpoint. Another
  num_classes gets a fresh head, initialised as `ViT.init` does (default weight_init:
  kernel and bias U(±1/sqrt(width)), PyTorch nn.Linear's default) from the key
  jaxlab.params.run_keys(seed)[0] (seed default 0): the head vit_with_peft gives for
  that seed with head_init='uniform' (its default, 'timm', draws timm's 0.02 truncated normal). A `lora=` LoraSpec gets fresh adapters (B = 0, so the model starts as the
  checkpoint). Another image_size or patch resamples the position embedding bilinearly
  (class token kept) and the patch kernel by FlexiViT's pseudo-inverse resize
  (jaxlab.io.pretrained.resample_pos_embed, resample_patch_kernel). See
  jaxlab.io.pretrained.timm_to_params.
  """
  return _pretrained(timm_to_params, state_dict, read_safetensors, ('.safetensors',), kw)


def from_big_vision(npz_mapping_or_path, **kw):
  """(model, params) of a big_vision / AugReg ViT npz, given as a path or as a mapping.

  Keywords as `from_timm` (num_classes, image_size and patch may differ, seed= keys the
  fresh leaves), except that `heads=` is only checked against the file. See
  jaxlab.io.pretrained.big_vision_to_params and fetch_augreg.
  """
  return _pretrained(big_vision_to_params, npz_mapping_or_path, load_npz, ('.npz',), kw)


# ---------------------------------------------------------------------------------------------
# jaxlab params in timm's and big_vision's layouts: the exact inverses of the converters above

_BLOCK_LEAVES = ('norm1/scale', 'norm1/bias', 'attn/qkv/kernel', 'attn/qkv/bias',
                 'attn/proj/kernel', 'attn/proj/bias', 'norm2/scale', 'norm2/bias',
                 'mlp/fc1/kernel', 'mlp/fc1/bias', 'mlp/fc2/kernel', 'mlp/fc2/bias')
_TOP_LEAVES = ('patch_embed/kernel', 'patch_embed/bias', 'cls_token', 'pos_embed',
               'norm/scale', 'norm/bias', 'head/kernel', 'head/bias')


def _plain_vit(params, model):
  """{path: np.ndarray} of a plain ViT (LoRA merged with `model`'s LoraSpec); the depth; or a
  ValueError naming the leaves a plain ViT has no place for, or the ones it misses."""
  if has_lora(params):
    params = merge_lora(params, model)
  flat = {k: np.asarray(v) for k, v in flatten(params).items()}
  depth = 1 + max((int(k.split('/')[0][len('blocks_'):]) for k in flat
                   if k.startswith('blocks_')), default=-1)
  expected = set(_TOP_LEAVES) | {f'blocks_{i}/{leaf}' for i in range(depth)
                                 for leaf in _BLOCK_LEAVES}
  extra = sorted(set(flat) - expected)
  missing = sorted(expected - set(flat))
  if extra or missing or depth == 0:
    parts = []
    if extra:
      parts.append(f'no place for {len(extra)} parameter(s): {", ".join(extra[:6])}'
                   + (' ...' if len(extra) > 6 else ''))
    if missing:
      parts.append(f'missing {", ".join(missing[:6])}' + (' ...' if len(missing) > 6 else ''))
    raise ValueError('not a plain ViT (class token, learned position embedding, pre-LN blocks '
                     'with fused qkv, head; as timm vit_*_patch*): ' + '; '.join(parts or
                                                                                ['no blocks']))
  return flat, depth


def to_timm(params, model=None):
  """{timm name: np.ndarray} of a jaxlab ViT, in timm VisionTransformer's layout.

  For ViT-S/16 at 224 px this is `vit_small_patch16_224`'s state dict (with the head's
  num_classes); `timm.create_model(name, num_classes=C).load_state_dict(...)` takes it
  after `torch.from_numpy`. Linear kernels (in, out) become (out, in) weights, the
  patch embedding HWIO becomes OIHW. Arrays keep their dtype. `model`: the ViT (or its
  LoraSpec) of params that hold LoRA, merged first (merge_lora).
  """
  flat, depth = _plain_vit(params, model)
  sd = {
      'patch_embed.proj.weight': flat['patch_embed/kernel'].transpose(3, 2, 0, 1),  # HWIO->OIHW
      'patch_embed.proj.bias': flat['patch_embed/bias'],
      'cls_token': flat['cls_token'],
      'pos_embed': flat['pos_embed'],
      'norm.weight': flat['norm/scale'],
      'norm.bias': flat['norm/bias'],
      'head.weight': flat['head/kernel'].T,
      'head.bias': flat['head/bias'],
  }
  for i in range(depth):
    j, t = f'blocks_{i}', f'blocks.{i}'
    for src, dst in (('norm1', 'norm1'), ('norm2', 'norm2')):
      sd[f'{t}.{dst}.weight'] = flat[f'{j}/{src}/scale']
      sd[f'{t}.{dst}.bias'] = flat[f'{j}/{src}/bias']
    for src, dst in (('attn/qkv', 'attn.qkv'), ('attn/proj', 'attn.proj'),
                     ('mlp/fc1', 'mlp.fc1'), ('mlp/fc2', 'mlp.fc2')):
      sd[f'{t}.{dst}.weight'] = flat[f'{j}/{src}/kernel'].T
      sd[f'{t}.{dst}.bias'] = flat[f'{j}/{src}/bias']
  return {k: np.ascontiguousarray(v) for k, v in sd.items()}


def to_big_vision(params, heads=None, model=None):
  """{npz name: np.ndarray} of a jaxlab ViT, in big_vision's (AugReg) ViT layout.

  `heads` splits the fused qkv into query/key/value kernels (width, heads, head_dim); it
  is not recorded in the parameters, so it defaults to width // 64 (every standard ViT,
  as jaxlab.io.pretrained assumes for timm). `np.savez(path, **to_big_vision(params))`
  writes a file that `from_big_vision` and big_vision load. `model`: the ViT (or its
  LoraSpec) of params that hold LoRA, merged first (merge_lora).
  """
  flat, depth = _plain_vit(params, model)
  width = flat['cls_token'].shape[-1]
  if heads is None:
    if width % 64:
      raise ValueError(f'width {width} is not a multiple of 64; pass heads=')
    heads = width // 64
  if width % heads:
    raise ValueError(f'heads={heads} does not divide width {width}')
  head_dim = width // heads
  out = {
      'embedding/kernel': flat['patch_embed/kernel'],
      'embedding/bias': flat['patch_embed/bias'],
      'cls': flat['cls_token'],
      'Transformer/posembed_input/pos_embedding': flat['pos_embed'],
      'Transformer/encoder_norm/scale': flat['norm/scale'],
      'Transformer/encoder_norm/bias': flat['norm/bias'],
      'head/kernel': flat['head/kernel'],
      'head/bias': flat['head/bias'],
  }
  for i in range(depth):
    j, b = f'blocks_{i}', f'Transformer/encoderblock_{i}/'
    a = b + 'MultiHeadDotProductAttention_1/'
    out[b + 'LayerNorm_0/scale'] = flat[f'{j}/norm1/scale']
    out[b + 'LayerNorm_0/bias'] = flat[f'{j}/norm1/bias']
    out[b + 'LayerNorm_2/scale'] = flat[f'{j}/norm2/scale']
    out[b + 'LayerNorm_2/bias'] = flat[f'{j}/norm2/bias']
    qkv_k, qkv_b = flat[f'{j}/attn/qkv/kernel'], flat[f'{j}/attn/qkv/bias']
    for n, name in enumerate(('query', 'key', 'value')):  # [q | k | v], each (width, width)
      out[a + f'{name}/kernel'] = qkv_k[:, n * width:(n + 1) * width].reshape(
          width, heads, head_dim)
      out[a + f'{name}/bias'] = qkv_b[n * width:(n + 1) * width].reshape(heads, head_dim)
    out[a + 'out/kernel'] = flat[f'{j}/attn/proj/kernel'].reshape(heads, head_dim, width)
    out[a + 'out/bias'] = flat[f'{j}/attn/proj/bias']
    for src, dst in (('fc1', 'Dense_0'), ('fc2', 'Dense_1')):
      out[b + f'MlpBlock_3/{dst}/kernel'] = flat[f'{j}/mlp/{src}/kernel']
      out[b + f'MlpBlock_3/{dst}/bias'] = flat[f'{j}/mlp/{src}/bias']
  return {k: np.ascontiguousarray(v) for k, v in out.items()}
