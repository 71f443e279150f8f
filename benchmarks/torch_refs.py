"""PyTorch references of jaxlab's training steps, to race against the JAX ones.

Each `time_*` function builds the workload's model in PyTorch with the JAX
model's architecture and sizes, and times whole training steps on random
uint8 images and random labels: a batch gathered from a device-resident pool,
the config's augmentation (batched torch ops on the device), forward,
cross-entropy, backward through the trainable parameters only (the frozen ones
have requires_grad=False), the config's optimizer and cosine schedule.

  lenet5     jaxlab/models/lenet.py on 32×32×3, 100 classes; crop (padding 4) + flip +
             CIFAR-100 normalisation; SGD momentum 0.9, wd 4e-4, lr 0.01
             (configs/distributed.py:centralized_sgdm).
  resmlp     jaxlab/models/resmlp.py, d=256, L=4, CIFAR-10 (3072 inputs, 10 classes);
             CIFAR-10 normalisation only; AdamW lr 1e-3, wd 0.01; backprop with the
             ladder's 1/rms(δ) scaling of the block gradients (jaxlab/credit/rules.py);
             several seeds one after another (configs/ladder.py:d256_L4; small: quick's
             d=64, L=2 with 0.5/0.5 normalisation).
  vit_peft   ViT-S/16 at 224 px in timm's layout, 100 classes, PEFT method of
             jaxlab/peft/methods.py, LoRA rank 8 alpha 16 on qkv/proj/fc1/fc2; 32 px images
             resized bilinearly inside the step, augmentation of the 'reference' recipe
             (jaxlab/experiments/peft.py); AdamW groups head/norm/lora (configs/hybrid.py).
             small: configs/hybrid.py:quick's tiny ViT and its 'weights' recipe.
  vit_tiny   configs/mhc.py's plain residual ViT-Ti/4 from scratch: 32 px (no resize), patch 4,
             width 192, depth 12, 3 heads, MLP 768, 10 classes, LayerNorm eps 1e-6, exact GELU,
             class token, learned position embedding (the learned_pos variant; the race's JAX
             row uses pos='learned' too); flip + CIFAR-10 normalisation (no crop, RandAugment,
             colour or erasing); AdamW lr 3e-3, wd 0.01, all parameters trainable, cosine.
             small: configs/mhc.py:quick's sizes (patch 8, width 64, depth 4, 8 heads, MLP 128)
             with 0.5/0.5 normalisation and no flip.

The sizes are written out here rather than read from configs/: the torch
environment need not have jax or ml_collections. torch is imported inside the
functions, so this module imports without it; see `available()`.

  PYTHONPATH=. python -m benchmarks.torch_refs --small [--compile] [--json=PATH]

Timing: warm-up steps are excluded; every timed step ends with a device sync;
time.perf_counter; median and mean. On CUDA the forward runs under bf16
autocast (amp) by default; on CPU in float32 with torch.set_num_threads(cpu count)
unless OMP_NUM_THREADS or num_threads says otherwise.

torch.compile (compile=True, --compile): the model alone is wrapped, as
torch.compile(model, dynamic=False) in the default mode with the inductor backend, so what is
compiled is the model's forward and, through AOTAutograd, its backward; the augmentation, the
cross-entropy and accuracy, zero_grad, the optimizer step (fused/foreach AdamW or SGD, as in
eager) and the LR schedule stay eager. Dynamo's caches are reset first. The compile happens in
the warm-up steps: the first step's seconds are the record's compile_s, and warm-up goes on past
`warmup` (up to COMPILE_EXTRA_WARMUP more steps) while the last warm-up step still compiled
something, so no (re)compile falls in the timed steps; compiles_in_timed_steps counts any that
do anyway (Dynamo's counters). A failure at compile or in a warm-up step gives a record
{'error': 'torch.compile failed: <Type: first line>', 'torch_compile': True, ...}: never a
silent fall back to eager. Every record has torch_compile (True/False) and compile_s (None in
eager). compile_s depends on inductor's on-disk cache (a warm cache loads kernels instead of
building them): the record's inductor_cache counts the hits and misses.
"""

import argparse
import json
import math
import os
import re
import statistics
import sys
import time

# Per-channel (mean, std) of pixels in [0, 1]: jaxlab/data/augment.py's NORMALIZATIONS.
NORMALIZATIONS = {
    'none': ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    'half': ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    'cifar10': ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
    'cifar100': ((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)),
}

# Examples per epoch, only for the length of the cosine schedules; the schedule's value does not
# change the work of a step.
TRAIN_SIZE = 50_000
POOL_BATCHES = 4  # the device-resident pool holds this many batches (the suite: max(4·batch, 512))
SOURCE_SIZE = 32  # CIFAR-sized source images everywhere

LENET = dict(classes=100, crop_padding=4, flip=True, normalization='cifar100', lr=0.01,
             momentum=0.9, weight_decay=4e-4, epochs=150)
LADDER = {  # configs/ladder.py
    'd256_L4': dict(width=256, depth=4, classes=10, normalization='cifar10', lr=1e-3,
                    weight_decay=0.01, epochs=100),
    'quick': dict(width=64, depth=2, classes=10, normalization='half', lr=1e-3,
                  weight_decay=0.01, epochs=15),
}
LADDER_SEEDS = (42, 123, 456)
VIT = {  # configs/hybrid.py: deep_lora and the other 10-epoch variants (ViT-S/16), and quick
    'S/16': dict(image_size=224, patch=16, width=384, depth=12, heads=6, mlp_dim=1536,
                 classes=100, epochs=10,
                 groups=dict(head=(1e-3, 0.05), norm=(1e-3, 0.0), lora=(5e-4, 0.0))),
    'quick': dict(image_size=32, patch=8, width=64, depth=4, heads=8, mlp_dim=128,
                  classes=10, epochs=20,
                  groups=dict(head=(5e-2, 0.05), norm=(5e-2, 0.0), lora=(5e-3, 0.0))),
}
MHC = {  # configs/mhc.py: default (ViT-Ti/4, here with learned_pos) and quick
    'Ti/4': dict(image_size=32, patch=4, width=192, depth=12, heads=3, mlp_dim=768, classes=10,
                 flip=True, normalization='cifar10', lr=3e-3, weight_decay=0.01, epochs=200),
    'quick': dict(image_size=32, patch=8, width=64, depth=4, heads=8, mlp_dim=128, classes=10,
                  flip=False, normalization='half', lr=3e-3, weight_decay=0.01, epochs=15),
}
LORA_RANK, LORA_ALPHA = 8, 16.0
LORA_TARGETS = ('attn.qkv', 'attn.proj', 'mlp.fc1', 'mlp.fc2')
PEFT_METHODS = ('norm', 'lora', 'hybrid_parallel', 'hybrid_layerwise/deep_lora')


def available():
  """(True, 'torch <version>') when torch imports, else (False, why not)."""
  try:
    import torch
  except Exception as e:  # a broken install raises more than ImportError
    return False, f'torch is not importable ({type(e).__name__}: {e})'
  return True, f'torch {torch.__version__}'


def timm_status():
  """(timm module or None, reason): timm needs a torchvision that loads with this torch."""
  try:
    import timm
    from timm.models.vision_transformer import VisionTransformer  # noqa: F401
  except Exception as e:
    return None, f'timm is not importable ({type(e).__name__}: {str(e).splitlines()[0]})'
  return timm, f'timm {timm.__version__}'


# ----------------------------------------------------------------------------- setup


def _setup(device, amp, num_threads):
  """(torch, device, amp, notes) with the threads and precision settings applied."""
  import torch
  notes = []
  if num_threads:
    torch.set_num_threads(num_threads)
  elif 'OMP_NUM_THREADS' not in os.environ:
    torch.set_num_threads(os.cpu_count())
  device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
  amp = device.type == 'cuda' if amp is None else amp
  if device.type == 'cuda':
    # JAX's default float32 matmul precision on GPU allows TF32; XLA autotunes its convs.
    torch.set_float32_matmul_precision('high')
    torch.backends.cudnn.benchmark = True
  notes.append('amp bf16 autocast' if amp else 'float32')
  return torch, device, amp, notes


def _sync(torch, device):
  if device.type == 'cuda':
    torch.cuda.synchronize(device)


def _lecun_(torch, module, scale=1.0):
  """Flax's variance_scaling(scale², 'fan_in', 'truncated_normal') on the weight (2σ cut,
  σ corrected for the cut), zero bias: the JAX models' init, so the losses look alike."""
  w = module.weight
  std = scale / math.sqrt(w[0].numel()) / 0.87962566103423978
  with torch.no_grad():
    torch.nn.init.trunc_normal_(w, std=std, a=-2 * std, b=2 * std)
    torch.nn.init.zeros_(module.bias)
  return module


def _optimizer(torch, name, groups, **kw):
  """torch.optim.<name> over the param groups, fused where this torch and device allow it
  (the JAX side fuses the whole update into its compiled step), else foreach."""
  cls = getattr(torch.optim, name)
  try:
    return cls(groups, fused=True, **kw), 'fused'
  except (RuntimeError, TypeError, ValueError):
    return cls(groups, foreach=True, **kw), 'foreach'


def _cosine(torch, opt, total_steps):
  # configs' schedule='cosine': optax.cosine_decay_schedule over the run, floor 0.
  return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_steps, 1))


# ----------------------------------------------------------------------------- augmentation


def augment(torch, images, *, resize=0, crop_padding=0, flip=False, normalization='none'):
  """float32 NCHW [B, C, H', W'] from uint8 NHWC [B, H, W, C]: the work of
  jaxlab.data.augment.make_train_augment with these fields, batched, each example with its
  own draws: to [0, 1], bilinear resize (half-pixel centres, no antialiasing, as
  jax.image.resize), zero-padded random crop, left-right flip with probability 1/2,
  per-channel normalisation."""
  import torch.nn.functional as F
  x = images.permute(0, 3, 1, 2).float().div_(255.0)
  b, c, h, w = x.shape
  if resize and (h, w) != (resize, resize):
    x = F.interpolate(x, size=(resize, resize), mode='bilinear', align_corners=False,
                      antialias=False)
    h = w = resize
  if crop_padding > 0:
    p = crop_padding
    flat = F.pad(x, (p, p, p, p)).flatten(2)  # [B, C, (H+2p)(W+2p)]
    top = torch.randint(0, 2 * p + 1, (b, 1, 1), device=x.device)
    left = torch.randint(0, 2 * p + 1, (b, 1, 1), device=x.device)
    rows = top + torch.arange(h, device=x.device).view(1, h, 1)
    cols = left + torch.arange(w, device=x.device).view(1, 1, w)
    index = (rows * (w + 2 * p) + cols).view(b, 1, h * w).expand(b, c, h * w)
    x = flat.gather(2, index).view(b, c, h, w)
  if flip:
    x = torch.where(torch.rand(b, 1, 1, 1, device=x.device) < 0.5, x.flip(3), x)
  if normalization != 'none':
    mean, std = (torch.tensor(v, device=x.device).view(1, c, 1, 1)
                 for v in NORMALIZATIONS[normalization])
    x = (x - mean) / std
  return x


# ----------------------------------------------------------------------------- timing


def _pool(torch, device, batch, classes, steps, seed, copies=1):
  """Random uint8 CIFAR-sized images and labels on the device, and per step (and copy) the
  indices of its batch: the step gathers its batch on the device, as the JAX step does."""
  g = torch.Generator().manual_seed(seed)
  n = batch * POOL_BATCHES
  images = torch.randint(0, 256, (n, SOURCE_SIZE, SOURCE_SIZE, 3), dtype=torch.uint8,
                         generator=g).to(device)
  labels = torch.randint(0, classes, (n,), generator=g).to(device)
  idx = [[torch.randperm(n, generator=g)[:batch].to(device) for _ in range(copies)]
         for _ in range(steps)]
  return images, labels, idx


COMPILE_EXTRA_WARMUP = 10  # at most this many warm-up steps beyond `warmup` in compile mode


class CompileFailed(Exception):
  """torch.compile raised, at compile or in a warm-up step; str() is the record's 'error'."""


def _compile_failed(e):
  lines = str(e).strip().splitlines()
  return f'torch.compile failed: {type(e).__name__}' + (f': {lines[0]}' if lines else '')


def _maybe_compile(torch, model, compile):
  """`model`, or torch.compile(model, dynamic=False) (default mode, inductor) with Dynamo's
  caches reset first, so that earlier runs in this process neither hit nor fill them."""
  if not compile:
    return model
  try:
    torch._dynamo.reset()
    return torch.compile(model, dynamic=False)
  except Exception as e:
    raise CompileFailed(_compile_failed(e)) from e


def _dynamo_counts(torch):
  """Running totals of Dynamo's counters: what was compiled (frames, graphs, inductor graphs
  built or loaded from its cache), graph breaks."""
  from torch._dynamo.utils import counters
  ind = counters['inductor']
  return {'frames': counters['frames']['total'], 'frames_ok': counters['frames']['ok'],
          'graphs': counters['stats']['unique_graphs'],
          'aot': counters['aot_autograd']['total'], 'cache_hit': ind['fxgraph_cache_hit'],
          'cache_miss': ind['fxgraph_cache_miss'],
          'graph_breaks': sum(counters['graph_break'].values()),
          'why': tuple(counters['unimplemented'])}


def _check_no_skipped_frames(start, now):
  """Raises CompileFailed when Dynamo gave up on a frame since `start`: it then runs that
  frame eager without an error (e.g. a graph break inside a loop), a silent fall back."""
  skipped = (now['frames'] - start['frames']) - (now['frames_ok'] - start['frames_ok'])
  if skipped > 0:
    new = [w for w in now['why'] if w not in start['why']] or list(now['why'])
    why = new[0].strip().splitlines() if new else []
    raise CompileFailed(f'torch.compile failed: FrameSkipped: Dynamo skipped {skipped} frame(s), '
                        'which would run eager' + (f' ({why[0]})' if why else ''))


def _compiled_something(before, after):
  return any(after[k] != before[k] for k in ('frames', 'graphs', 'aot', 'cache_hit', 'cache_miss'))


def _time(torch, device, run_step, steps, warmup, compile=False):
  """Wall times of run_step(i) for i = 0, 1, ..., each ended by a device sync: `warmup`
  untimed steps, then `steps` timed ones. With compile (the model under torch.compile), at
  least one warm-up step, and warm-up goes on, up to COMPILE_EXTRA_WARMUP more steps, while its
  last step still compiled; an exception in a warm-up step is raised as CompileFailed.
  Returns (timed step times, first step time, CPU seconds per wall second when timed,
  info: warmup_steps run and, with compile, the compile fields of the record)."""
  times, cpu, first = [], 0.0, None
  warmup = max(warmup, 1) if compile else warmup
  counts = (lambda: _dynamo_counts(torch)) if compile else (lambda: None)
  start = counts()
  warm, warming, timed_compiles, i = 0, warmup > 0, 0, 0
  while len(times) < steps:
    before = counts()
    c0, t0 = time.process_time(), time.perf_counter()
    try:
      run_step(i)
      _sync(torch, device)
    except Exception as e:
      if compile and warming:
        raise CompileFailed(_compile_failed(e)) from e
      raise
    dt = time.perf_counter() - t0
    compiled = compile and _compiled_something(before, counts())
    if first is None:
      first = dt
    if warming:
      warm += 1
      warming = warm < warmup or (compiled and warm < warmup + COMPILE_EXTRA_WARMUP)
      if compile and not warming:
        _check_no_skipped_frames(start, counts())
    else:
      times.append(dt)
      cpu += time.process_time() - c0
      timed_compiles += compiled
    i += 1
  info = {'warmup_steps': warm}
  if compile:
    end = counts()
    info.update(compile_s=first, compile_extra_warmup_steps=warm - warmup,
                compiles_in_timed_steps=timed_compiles,
                compiled_graphs=end['graphs'] - start['graphs'],
                graph_breaks=end['graph_breaks'] - start['graph_breaks'],
                inductor_cache={'hit': end['cache_hit'] - start['cache_hit'],
                                'miss': end['cache_miss'] - start['cache_miss']})
  return times, first, cpu / max(sum(times), 1e-12), info


def _compile_note(compile):
  if not compile:
    return 'eager PyTorch (no torch.compile)'
  return ('torch.compile(model, dynamic=False), default mode, inductor: the model forward and '
          'its backward compiled; augmentation, loss, optimizer step and schedule eager')


def _timed_record(torch, device, workload, batch, compile, make_run, steps, warmup,
                  make_record):
  """Times the step function make_run() returns (it wraps the model with _maybe_compile) and
  returns make_record(times, first, cpu_per_wall, info), or the error record when
  torch.compile failed."""
  try:
    times, first, cpw, info = _time(torch, device, make_run(), steps, warmup, compile)
  except CompileFailed as e:
    return {'workload': workload, 'framework': 'torch', 'batch': batch, 'error': str(e),
            'torch_compile': True}
  return make_record(times, first, cpw, info)


def _train_step(torch, model, opt, sched, aug, amp, device, after_backward=None):
  """step(images uint8, labels) -> loss: augment, forward, cross-entropy, backward, update."""
  import torch.nn.functional as F

  def step(images, labels):
    x = aug(images)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
      logits = model(x)
    logits = logits.float()
    loss = F.cross_entropy(logits, labels)
    acc = (logits.argmax(-1) == labels).float().mean()  # the JAX step's metric
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if after_backward is not None:
      after_backward()
    opt.step()
    sched.step()
    return loss.detach(), acc
  return step


def _record(torch, device, workload, batch, times, first, cpu_per_wall, info, model_params,
            notes, copies=1, **extra):
  """The record of a timed run; `info` is _time's (warmup_steps and the compile fields)."""
  trainable = sum(p.numel() for p in model_params if p.requires_grad)
  median, mean = statistics.median(times), statistics.fmean(times)
  info = {'torch_compile': 'compile_s' in info, 'compile_s': None, **info}
  return {
      'workload': workload, 'framework': 'torch', 'batch': batch,
      'step_time_median_s': median, 'step_time_mean_s': mean,
      'img_s': batch * copies / median, 'img_s_mean': batch * copies / mean,
      'timed_steps': len(times), 'compile_or_first_step_s': first, **info,
      'step_times_s': times, 'cpu_per_wall': cpu_per_wall,
      'torch_version': torch.__version__, 'device': _device_name(torch, device),
      'num_threads': torch.get_num_threads(), 'cpu_count': os.cpu_count(),
      'trainable_params': trainable, 'total_params': sum(p.numel() for p in model_params),
      **extra, 'notes': '; '.join(notes)}


def _device_name(torch, device):
  if device.type == 'cuda':
    return f'cuda: {torch.cuda.get_device_name(device)}'
  return 'cpu'


# ----------------------------------------------------------------------------- LeNet-5


def _lenet5(torch, classes):
  """jaxlab.models.lenet.LeNet5: conv 64 5×5 → relu → pool 2, twice; 1600 → 384 → 192 →
  classes. (It flattens NHWC, torch NCHW: the same layer up to a permutation of fc1's rows.)"""
  nn = torch.nn

  class LeNet5(nn.Module):

    def __init__(self):
      super().__init__()
      self.conv1, self.conv2 = nn.Conv2d(3, 64, 5), nn.Conv2d(64, 64, 5)
      self.fc1, self.fc2 = nn.Linear(1600, 384), nn.Linear(384, 192)
      self.head = nn.Linear(192, classes)
      for m in self.children():
        _lecun_(torch, m)

    def forward(self, x):
      pool = nn.functional.max_pool2d
      x = pool(torch.relu(self.conv1(x)), 2)
      x = pool(torch.relu(self.conv2(x)), 2).flatten(1)
      x = torch.relu(self.fc1(x))
      return self.head(torch.relu(self.fc2(x)))

  return LeNet5()


def lenet5_training(torch, device, amp, batch, steps, seed=0):
  """LeNet-5 (configs/distributed.py:centralized_sgdm) with its optimizer, cosine schedule,
  augmentation and `steps` random batches on the device: (model, the optimizer's
  implementation, make_run(compile=False) -> run(i), one training step on batch i)."""
  c = LENET
  torch.manual_seed(seed)
  model = _lenet5(torch, c['classes']).to(device)
  opt, impl = _optimizer(torch, 'SGD', model.parameters(), lr=c['lr'], momentum=c['momentum'],
                         weight_decay=c['weight_decay'])
  sched = _cosine(torch, opt, c['epochs'] * (TRAIN_SIZE // batch))
  aug = lambda x: augment(torch, x, crop_padding=c['crop_padding'], flip=c['flip'],
                          normalization=c['normalization'])
  images, labels, idx = _pool(torch, device, batch, c['classes'], steps, seed)

  def make_run(compile=False):
    step = _train_step(torch, _maybe_compile(torch, model, compile), opt, sched, aug, amp, device)
    return lambda i: step(images[idx[i % len(idx)][0]], labels[idx[i % len(idx)][0]])
  return model, impl, make_run


def time_lenet5(batch=64, steps=20, warmup=3, compile=False, device=None, amp=None,
                num_threads=None, seed=0):
  """Times LeNet-5 training steps (configs/distributed.py:centralized_sgdm); a record dict.
  compile: the model under torch.compile (see the module's docstring)."""
  torch, device, amp, notes = _setup(device, amp, num_threads)
  model, impl, make_lenet_run = lenet5_training(torch, device, amp, batch, warmup + steps, seed)
  notes += [f'SGD momentum 0.9 wd 4e-4 ({impl}), cosine', 'crop pad 4 + flip + cifar100 norm',
            _compile_note(compile)]
  record = lambda times, first, cpw, info: _record(
      torch, device, 'lenet5', batch, times, first, cpw, info, list(model.parameters()), notes,
      amp=amp, image_size=SOURCE_SIZE, classes=LENET['classes'])
  make_run = lambda: make_lenet_run(compile)
  return _timed_record(torch, device, 'lenet5', batch, compile, make_run, steps, warmup, record)


# ----------------------------------------------------------------------------- ResMLP


def _resmlp(torch, pixels, classes, width, depth, trainable_blocks):
  """jaxlab.models.resmlp.ResMLP (rule 'bp'): embed → h += fc2(relu(fc1(h))) per block →
  out_ln → out_head. Frozen blocks get requires_grad=False. `block_rms` holds, after a
  backward, rms(δ) at each trainable block's output, for the ladder's gradient scaling.

  A backward hook on the block output records δ, but Dynamo cannot trace that hook (it mutates
  `block_rms` from inside the graph: it skips the whole frame and runs it eager), so under
  torch.compile `use_probes` replaces it: a zero tensor with requires_grad is added to each
  trainable block's output (f + 0), and its .grad after the backward is that δ."""
  nn = torch.nn
  branch_scale = 0.1 * 2 ** 0.5  # jaxlab.models.resmlp.BRANCH_SCALE

  class ResMLP(nn.Module):

    def __init__(self):
      super().__init__()
      self.embed = _lecun_(torch, nn.Linear(pixels, width))
      self.blocks = nn.ModuleList(
          nn.ModuleDict(dict(fc1=_lecun_(torch, nn.Linear(width, width)),
                             fc2=_lecun_(torch, nn.Linear(width, width), branch_scale)))
          for _ in range(depth))
      self.out_ln = nn.LayerNorm(width, eps=1e-5)
      self.out_head = _lecun_(torch, nn.Linear(width, classes))
      for i, block in enumerate(self.blocks):
        block.requires_grad_(i in trainable_blocks)
      self.block_rms = {}
      self.probes = None

    def use_probes(self, batch, dtype, device):
      self.probes = {i: torch.zeros(batch, width, dtype=dtype, device=device, requires_grad=True)
                     for i in trainable_blocks}

    def forward(self, x):
      h = self.embed(x.flatten(1))
      for i, block in enumerate(self.blocks):
        f = block['fc2'](torch.relu(block['fc1'](h)))
        if self.probes is not None:
          if i in self.probes:
            f = f + self.probes[i]
        elif i in trainable_blocks and f.requires_grad:
          f.register_hook(lambda g, i=i: self.block_rms.__setitem__(
              i, g.float().square().mean().sqrt() + 1e-12))
        h = h + f
      return self.out_head(self.out_ln(h))

    def scale_block_grads(self):
      # credit_value_and_grad (rms_normalize=True): a trainable block's parameter gradient
      # is that of <δ/rms(δ), f_l>, while the input gradient passes δ on unscaled.
      if self.probes is not None:
        for i, probe in self.probes.items():
          self.block_rms[i] = probe.grad.float().square().mean().sqrt() + 1e-12
          probe.grad = None
      for i, rms in self.block_rms.items():
        for p in self.blocks[i].parameters():
          p.grad.div_(rms)

  return ResMLP()


def time_resmlp(batch=128, steps=20, warmup=3, seeds=3, small=False, k=None, compile=False,
                device=None, amp=None, num_threads=None):
  """Times ladder training steps of `seeds` ResMLPs (configs/ladder.py d256_L4, or quick when
  small), rule bp, the last k blocks trainable (default all); img_s sums over the seeds.
  compile: each seed's model under its own torch.compile (see the module's docstring); the
  first step compiles them all."""
  torch, device, amp, notes = _setup(device, amp, num_threads)
  c = LADDER['quick' if small else 'd256_L4']
  depth = c['depth']
  k = depth if k is None else k
  if not 0 <= k <= depth:
    raise ValueError(f'k must be in 0..{depth}, got {k}')
  seed_list = list(LADDER_SEEDS[:seeds]) + list(range(seeds - len(LADDER_SEEDS)))
  total = c['epochs'] * (TRAIN_SIZE // batch)
  models, opts = [], []
  for s in seed_list:
    torch.manual_seed(s)
    model = _resmlp(torch, SOURCE_SIZE * SOURCE_SIZE * 3, c['classes'], c['width'], depth,
                    tuple(range(depth - k, depth))).to(device)
    if compile:
      model.use_probes(batch, torch.bfloat16 if amp else torch.float32, device)
    opt, impl = _optimizer(torch, 'AdamW', [p for p in model.parameters() if p.requires_grad],
                           lr=c['lr'], weight_decay=c['weight_decay'], betas=(0.9, 0.999),
                           eps=1e-8)
    models.append(model)
    opts.append(opt)
  aug = lambda x: augment(torch, x, normalization=c['normalization'])
  n = len(models)
  images, labels, idx = _pool(torch, device, batch, c['classes'], warmup + steps, 0, copies=n)

  def make_run():
    copies = [_train_step(torch, _maybe_compile(torch, m, compile), opt,
                          _cosine(torch, opt, total), aug, amp, device, m.scale_block_grads)
              for m, opt in zip(models, opts)]

    def run(i):
      for step, j in zip(copies, idx[i % len(idx)]):  # each seed its own batch, as the replicas
        step(images[j], labels[j])
    return run

  notes += [f'{n} seeds trained one after another in a Python loop (JAX vmaps them '
            'in one compiled step; PyTorch has no vmap-of-training by default)',
            f'AdamW lr 1e-3 wd 0.01 ({impl}), cosine', f'{c["normalization"]} norm, no crop/flip',
            'block grads scaled by 1/rms(delta) as the ladder rule bp'
            + (' (delta read from zero probes added to the block outputs, not hooks)'
               if compile else ''),
            'trainable/total params are per seed', _compile_note(compile)]
  record = lambda times, first, cpw, info: _record(
      torch, device, 'resmlp', batch, times, first, cpw, info, list(models[-1].parameters()),
      notes, copies=n, amp=amp, seeds=n, width=c['width'], depth=depth, k=k,
      classes=c['classes'], config='ladder:quick' if small else 'ladder:d256_L4')
  return _timed_record(torch, device, 'resmlp', batch, compile, make_run, steps, warmup, record)


# ----------------------------------------------------------------------------- ViT + PEFT


def _lora_linear(torch):
  nn = torch.nn

  class LoraLinear(nn.Module):
    """base(x) + (alpha/rank)·(x·Aᵀ)·Bᵀ with `base` frozen: jaxlab.models.vit.LoraDense.
    A starts U(±1/sqrt(rank)), B at zero, so the adapter changes nothing at init."""

    def __init__(self, base, rank, alpha):
      super().__init__()
      self.base = base.requires_grad_(False)
      bound = 1.0 / math.sqrt(rank)
      self.lora_a = nn.Parameter(torch.empty(rank, base.in_features).uniform_(-bound, bound))
      self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
      self.scaling = alpha / rank

    def forward(self, x):
      lin = nn.functional.linear
      return self.base(x) + self.scaling * lin(lin(x, self.lora_a), self.lora_b)

  return LoraLinear


def _plain_vit(torch, image_size, patch, width, depth, heads, mlp_dim, classes):
  """A minimal ViT with timm's layout and parameter names (used when timm is absent):
  class token, learned pos_embed, pre-LN blocks (LayerNorm eps 1e-6, fused qkv with bias,
  exact GELU), final norm, head on the class token."""
  nn = torch.nn
  norm = lambda: nn.LayerNorm(width, eps=1e-6)

  class Attention(nn.Module):

    def __init__(self):
      super().__init__()
      self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)

    def forward(self, x):
      b, n, d = x.shape
      q, k, v = self.qkv(x).reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
      x = nn.functional.scaled_dot_product_attention(q, k, v)
      return self.proj(x.transpose(1, 2).reshape(b, n, d))

  class Mlp(nn.Module):

    def __init__(self):
      super().__init__()
      self.fc1, self.act, self.fc2 = nn.Linear(width, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, width)

    def forward(self, x):
      return self.fc2(self.act(self.fc1(x)))

  class Block(nn.Module):

    def __init__(self):
      super().__init__()
      self.norm1, self.attn, self.norm2, self.mlp = norm(), Attention(), norm(), Mlp()

    def forward(self, x):
      x = x + self.attn(self.norm1(x))
      return x + self.mlp(self.norm2(x))

  class PatchEmbed(nn.Module):

    def __init__(self):
      super().__init__()
      self.proj = nn.Conv2d(3, width, patch, stride=patch)

    def forward(self, x):
      return self.proj(x).flatten(2).transpose(1, 2)

  class ViT(nn.Module):

    def __init__(self):
      super().__init__()
      tokens = (image_size // patch) ** 2 + 1
      self.cls_token = nn.Parameter(torch.randn(1, 1, width) * 1e-6)
      self.pos_embed = nn.Parameter(torch.randn(1, tokens, width) * 0.02)
      self.patch_embed = PatchEmbed()
      self.blocks = nn.Sequential(*(Block() for _ in range(depth)))
      self.norm, self.head = norm(), nn.Linear(width, classes)

    def forward(self, x):
      x = self.patch_embed(x)
      x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
      x = self.norm(self.blocks(x + self.pos_embed))
      return self.head(x[:, 0])

  return ViT()


def lora_blocks(method, depth):
  """Indices of the blocks with LoRA: jaxlab.peft.methods.lora_blocks for 'norm', 'lora',
  'hybrid_parallel' and 'hybrid_layerwise/<deep_lora|even_lora|odd_lora>'."""
  name, _, policy = method.partition('/')
  if name in ('lora', 'hybrid_parallel') and not policy:
    return tuple(range(depth))
  if name == 'norm' and not policy:
    return ()
  if name == 'hybrid_layerwise':
    starts = {'deep_lora': (int(2 * depth / 3), 1), 'even_lora': (0, 2), 'odd_lora': (1, 2)}
    if policy in starts:
      start, every = starts[policy]
      return tuple(range(start, depth, every))
  raise ValueError(f'unknown PEFT method {method!r}; choose one of {", ".join(PEFT_METHODS)} '
                   '(or hybrid_layerwise/even_lora, hybrid_layerwise/odd_lora)')


def peft_label(method, name, with_lora):
  """The group of the parameter `name` (timm's names) under jaxlab.peft.methods.rules:
  'head', 'norm', 'lora' or None (frozen)."""
  if name.startswith('head.'):
    return 'head'
  if '.lora_' in name:
    return 'lora'
  m = re.fullmatch(r'(?:blocks\.(\d+)\.norm[12]|norm)\.(?:weight|bias)', name)
  if m:
    kind = method.partition('/')[0]
    if kind in ('norm', 'hybrid_parallel'):
      return 'norm'
    if kind == 'hybrid_layerwise' and m.group(1) is not None and int(m.group(1)) not in with_lora:
      return 'norm'  # the blocks without LoRA train their own norms; the final norm is frozen
  return None


def build_vit_peft(method, small=False, use_timm=None, classes=None):
  """(model, groups {label: [params]}, description) with the method's LoRA injected and the
  frozen parameters' requires_grad off. use_timm: None = timm when importable, True = timm
  or an ImportError, False = the built-in ViT."""
  import torch
  c = VIT['quick' if small else 'S/16']
  classes = classes or c['classes']
  timm, why = (None, 'built-in ViT requested') if use_timm is False else timm_status()
  if timm is None and use_timm:
    raise ImportError(why)
  if timm is None:
    model = _plain_vit(torch, c['image_size'], c['patch'], c['width'], c['depth'], c['heads'],
                       c['mlp_dim'], classes)
    desc = f'built-in ViT with timm layout ({why})'
  elif small:
    from timm.models.vision_transformer import VisionTransformer
    model = VisionTransformer(img_size=c['image_size'], patch_size=c['patch'],
                              embed_dim=c['width'], depth=c['depth'], num_heads=c['heads'],
                              mlp_ratio=c['mlp_dim'] / c['width'], num_classes=classes)
    desc = f'timm {timm.__version__} VisionTransformer (configs/hybrid.py:quick sizes)'
  else:
    model = timm.create_model('vit_small_patch16_224', pretrained=False, num_classes=classes)
    desc = f'timm {timm.__version__} vit_small_patch16_224 (pretrained=False)'
  with_lora = lora_blocks(method, c['depth'])
  lora = _lora_linear(torch)
  for i in with_lora:
    for target in LORA_TARGETS:
      parent, attr = target.split('.')
      owner = getattr(model.blocks[i], parent)
      setattr(owner, attr, lora(getattr(owner, attr), LORA_RANK, LORA_ALPHA))
  groups = {}
  for name, p in model.named_parameters():
    label = peft_label(method, name, with_lora)
    p.requires_grad_(label is not None)
    if label:
      groups.setdefault(label, []).append(p)
  return model, groups, desc


def vit_peft_training(torch, device, amp, method, batch, steps, small=False, use_timm=None,
                      classes=None, seed=0):
  """ViT-S/16 at 224 px (or the quick tiny ViT when small) with `method`'s LoRA and trainable
  groups, its AdamW groups, cosine schedule, augmentation (the resize included) and `steps`
  random batches on the device: (model, groups, notes, make_run(compile=False) -> run(i), one
  training step on batch i)."""
  c = VIT['quick' if small else 'S/16']
  torch.manual_seed(seed)
  model, groups, desc = build_vit_peft(method, small, use_timm, classes)
  model.to(device)
  param_groups = [dict(params=ps, lr=c['groups'][g][0], weight_decay=c['groups'][g][1])
                  for g, ps in sorted(groups.items())]
  opt, impl = _optimizer(torch, 'AdamW', param_groups, betas=(0.9, 0.999), eps=1e-8)
  sched = _cosine(torch, opt, c['epochs'] * (TRAIN_SIZE // batch))
  # jaxlab.experiments.peft.apply_recipe: 'weights' for quick; 'reference' for the ViT-S/16
  # variants, which is 'crop_flip' (crop pad 4, flip, no normalisation) for hybrid_parallel,
  # else 'flip_cifar100'.
  if small:  # the digits are never flipped (apply_recipe); the race leaves out quick's zoom
    recipe = dict(crop_padding=0, flip=False, normalization='half')
  elif method == 'hybrid_parallel':
    recipe = dict(crop_padding=4, flip=True, normalization='none')
  else:
    recipe = dict(crop_padding=0, flip=True, normalization='cifar100')
  aug = lambda x: augment(torch, x, resize=c['image_size'], **recipe)
  images, labels, idx = _pool(torch, device, batch, model.head.out_features, steps, seed)

  def make_run(compile=False):
    step = _train_step(torch, _maybe_compile(torch, model, compile), opt, sched, aug, amp, device)
    return lambda i: step(images[idx[i % len(idx)][0]], labels[idx[i % len(idx)][0]])

  notes = [desc, f'AdamW groups {sorted(groups)} ({impl}), cosine',
           f'{SOURCE_SIZE} px uint8 resized to {c["image_size"]} in the step, '
           + ', '.join(f'{k} {v}' for k, v in recipe.items())]
  return model, groups, notes, make_run


def time_vit_peft(method, batch=128, steps=5, warmup=2, small=False, use_timm=None,
                  classes=None, compile=False, device=None, amp=None, num_threads=None, seed=0):
  """Times PEFT training steps of ViT-S/16 at 224 px (or the quick tiny ViT when small) for
  `method` in PEFT_METHODS (configs/hybrid.py); a record dict. compile: the model under
  torch.compile (see the module's docstring); the resize stays eager, in the augmentation."""
  torch, device, amp, notes = _setup(device, amp, num_threads)
  c = VIT['quick' if small else 'S/16']
  model, groups, more, make_peft_run = vit_peft_training(
      torch, device, amp, method, batch, warmup + steps, small, use_timm, classes, seed)
  notes += more + [_compile_note(compile)]
  record = lambda times, first, cpw, info: _record(
      torch, device, f'vit_peft/{method}', batch, times, first, cpw, info,
      list(model.parameters()), notes, amp=amp, method=method,
      model='quick tiny ViT' if small else 'S/16', image_size=c['image_size'],
      classes=model.head.out_features, groups=sorted(groups))
  return _timed_record(torch, device, f'vit_peft/{method}', batch, compile,
                       lambda: make_peft_run(compile), steps, warmup, record)


# ----------------------------------------------------------------------------- ViT-Ti/4 (mHC)


def vit_tiny_training(torch, device, amp, batch, steps, small=False, seed=0):
  """configs/mhc.py's plain residual ViT-Ti/4 (or quick's 4-block ViT when small) with a
  learned position embedding, its AdamW, a cosine schedule, the race's augmentation and `steps`
  random batches on the device: (model, notes, make_run(compile=False) -> run(i), one training
  step on batch i). All parameters train."""
  c = MHC['quick' if small else 'Ti/4']
  torch.manual_seed(seed)
  # _plain_vit: class token, learned pos_embed, pre-LN blocks (eps 1e-6, exact GELU, fused qkv),
  # final norm, head on the class token; PyTorch's default inits (the init does not change the
  # work of a step).
  model = _plain_vit(torch, c['image_size'], c['patch'], c['width'], c['depth'], c['heads'],
                     c['mlp_dim'], c['classes']).to(device)
  opt, impl = _optimizer(torch, 'AdamW', model.parameters(), lr=c['lr'],
                         weight_decay=c['weight_decay'], betas=(0.9, 0.999), eps=1e-8)
  # configs/mhc.py schedules warm-up, hold, 1-sqrt decay ('whd'); a plain cosine here: the
  # schedule only sets the learning rate each step, its cost is negligible either way.
  sched = _cosine(torch, opt, c['epochs'] * (TRAIN_SIZE // batch))
  recipe = dict(flip=c['flip'], normalization=c['normalization'])  # no crop, resize, RandAugment,
  aug = lambda x: augment(torch, x, **recipe)  # colour jitter or erasing: as the race's JAX row
  images, labels, idx = _pool(torch, device, batch, c['classes'], steps, seed)

  def make_run(compile=False):
    step = _train_step(torch, _maybe_compile(torch, model, compile), opt, sched, aug, amp, device)
    return lambda i: step(images[idx[i % len(idx)][0]], labels[idx[i % len(idx)][0]])

  notes = ['built-in ViT with timm layout, learned pos_embed',
           f'AdamW lr 3e-3 wd 0.01 ({impl}), cosine (the config: warmup-hold-decay)',
           ', '.join(f'{k} {v}' for k, v in recipe.items()) + ', no crop/resize']
  return model, notes, make_run


def time_vit_tiny(batch=64, steps=20, warmup=3, small=False, compile=False, device=None,
                  amp=None, num_threads=None, seed=0):
  """Times from-scratch training steps of configs/mhc.py's plain residual ViT-Ti/4 (or quick's
  4-block ViT when small) with a learned position embedding; a record dict. All parameters
  train. compile: the model under torch.compile (see the module's docstring)."""
  torch, device, amp, notes = _setup(device, amp, num_threads)
  c = MHC['quick' if small else 'Ti/4']
  model, more, make_tiny_run = vit_tiny_training(torch, device, amp, batch, warmup + steps,
                                                 small, seed)
  notes += more + [_compile_note(compile)]
  record = lambda times, first, cpw, info: _record(
      torch, device, 'vit_tiny', batch, times, first, cpw, info, list(model.parameters()),
      notes, amp=amp, model='quick ViT' if small else 'Ti/4', pos='learned',
      image_size=c['image_size'], patch=c['patch'], width=c['width'], depth=c['depth'],
      heads=c['heads'], mlp_dim=c['mlp_dim'], classes=c['classes'],
      config='mhc:quick,regular' if small else 'mhc:regular,learned_pos')
  return _timed_record(torch, device, 'vit_tiny', batch, compile,
                       lambda: make_tiny_run(compile), steps, warmup, record)


# ----------------------------------------------------------------------------- CLI


def run_all(small=False, steps=None, warmup=None, vit_batch=None, methods=PEFT_METHODS,
            use_timm=None, device=None, compile=False):
  """Records of every workload; a workload that cannot run gets {'workload', 'skipped'}, one
  where torch.compile failed {'workload', 'error', 'torch_compile'}."""
  kw = dict(device=device, compile=compile)
  jobs = [('lenet5', lambda: time_lenet5(64, steps or 20, 3 if warmup is None else warmup,
                                         **kw)),
          # --small keeps the ladder's d=256, L=4 and only takes fewer steps (an MLP step is cheap).
          ('resmlp', lambda: time_resmlp(128, steps or (10 if small else 20),
                                         2 if warmup is None else warmup, **kw)),
          ('vit_tiny', lambda: time_vit_tiny(64, steps or (10 if small else 20),
                                             3 if warmup is None else warmup, small=small, **kw))]
  for m in methods:
    jobs.append((f'vit_peft/{m}', lambda m=m: time_vit_peft(
        m, vit_batch or (8 if small else 128), steps or 5, 2 if warmup is None else warmup,
        small=small, use_timm=use_timm, **kw)))
  ok, why = available()
  records = []
  for name, job in jobs:
    if not ok:
      records.append({'workload': name, 'skipped': why})
      continue
    print(f'running {name} ...', file=sys.stderr, flush=True)
    try:
      records.append(job())
    except ImportError as e:
      records.append({'workload': name, 'skipped': str(e)})
  return records


def print_table(records):
  head = (f'{"workload":36} {"batch":>5} {"median s":>9} {"mean s":>9} {"img/s":>9} '
          f'{"trainable":>10} {"total":>11} {"first s":>8} {"cpu/wall":>8}')
  done = [r for r in records if 'skipped' not in r and 'error' not in r]
  if done:
    r = done[0]
    print(f'PyTorch references: torch {r["torch_version"]}, {r["device"]}, '
          f'{r["num_threads"]} threads (cpu count {r["cpu_count"]})')
  print(head)
  print('-' * len(head))
  for r in records:
    name = r['workload'] + (' (compiled)' if r.get('torch_compile') else '')
    if 'skipped' in r or 'error' in r:
      print(f'{name:36} {"skipped" if "skipped" in r else "error"}: '
            f'{r.get("skipped") or r.get("error")}')
      continue
    print(f'{name:36} {r["batch"]:>5} {r["step_time_median_s"]:>9.4f} '
          f'{r["step_time_mean_s"]:>9.4f} {r["img_s"]:>9.1f} {r["trainable_params"]:>10,} '
          f'{r["total_params"]:>11,} {r["compile_or_first_step_s"]:>8.3f} '
          f'{r["cpu_per_wall"]:>8.2f}')
  for r in done:
    print(f'  {r["workload"]}: {r["notes"]}')
    if r['torch_compile']:
      print(f'    compile: first step {r["compile_s"]:.1f} s, {r["warmup_steps"]} warm-up steps '
            f'({r["compile_extra_warmup_steps"]} extra), {r["compiled_graphs"]} graphs, '
            f'{r["graph_breaks"]} graph breaks, inductor cache {r["inductor_cache"]}, '
            f'{r["compiles_in_timed_steps"]} compiles in timed steps')


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--small', action='store_true',
                 help='LeNet batch 64, ResMLP d=256 L=4 with few steps, quick ViT-Ti sizes, '
                 'tiny PEFT ViT batch 8')
  p.add_argument('--compile', action='store_true',
                 help='the models under torch.compile (default mode, inductor, dynamic=False); '
                 'the compiling warm-up steps are not timed')
  p.add_argument('--json', default='', help='write the records to this path')
  p.add_argument('--steps', type=int, default=None, help='timed steps (default per workload)')
  p.add_argument('--warmup', type=int, default=None, help='untimed steps first')
  p.add_argument('--vit_batch', type=int, default=None)
  p.add_argument('--methods', default=','.join(PEFT_METHODS))
  p.add_argument('--timm', choices=('auto', 'yes', 'no'), default='auto',
                 help='yes: skip the ViT rows when timm is absent; no: the built-in ViT')
  p.add_argument('--device', default=None, help='cpu | cuda (default: cuda when available)')
  args = p.parse_args(argv)
  records = run_all(args.small, args.steps, args.warmup, args.vit_batch,
                    [m for m in args.methods.split(',') if m],
                    {'auto': None, 'yes': True, 'no': False}[args.timm], args.device,
                    args.compile)
  print_table(records)
  if args.json:
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, 'w') as f:
      json.dump(records, f, indent=2)
    print(f'written to {args.json}')


if __name__ == '__main__':
  main()
