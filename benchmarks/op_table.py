"""A training step op by op, jaxlab against PyTorch eager, on this machine's CPU.

    python -m benchmarks.op_table --torch_python=/tmp/torchvenv/bin/python
        [--model=lenet|vit_tiny|vit_s16_lora] [--batch=N] [--steps=10] [--json=PATH]

Models (each side runs the step users time, from benchmarks/workloads.py and
benchmarks/torch_refs.py, on random images):
  lenet         LeNet-5 (lenet/<batch>, default batch 64): augmentation, forward, cross-entropy,
                backward, SGD with momentum.
  vit_tiny      the plain ViT-Ti/4 of the residual-stream family at 32 px in float32 with a
                learned position embedding (vit_tiny/race, default batch 64), one seed, AdamW.
  vit_s16_lora  ViT-S/16 at 224 px with LoRA on every block (peft/lora, default batch 8): the
                resize to 224 px in the step, the backbone frozen, AdamW on the adapters, norms'
                and head's groups.

Every op of the timed steps is put in one of the model's buckets (BUCKETS; for LeNet-5: each
convolution forward and backward, ReLU + max-pool forward and backward, the dense layers, the
loss, augmentation + random numbers, the optimizer + the rest, with PyTorch's autograd engine's
own time placed with the ReLU and pool where its name says it serves them, and the pool
gradient's fill of zeros; for the ViTs: patch embedding, LayerNorm, the attention's qkv and
output projections (their LoRA included), the attention core (scores, softmax, weighted sum
and the layout shuffles around it), the MLP's two matmuls, GELU, each forward and backward, the
head + loss, augmentation, optimizer + the rest). Each bucket's largest ops are kept in the JSON
(top_ops). Milliseconds per step are op durations summed over the timed steps and divided by
their number; the step's wall time is printed beside them (XLA may run two small ops at once on
two threads, so its ops can sum to more than the wall time; the row "time in which an op runs"
counts such time once).

jaxlab: a jax.profiler trace of the compiled step with XLA:CPU's per-op trace events
(--xla_cpu_enable_xprof_traceme, set here before JAX starts), each op placed by the name
scope XLA keeps in its metadata (conv1, transpose(...) for the backward pass, ...).
PyTorch: torch.profiler's self CPU time of each aten op, placed by op name and input shapes.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from jaxlab import host

BUCKETS = ('conv1 forward', 'conv1 backward', 'conv2 forward', 'conv2 backward',
           'ReLU + pool forward', 'ReLU + pool backward', 'dense layers (fc1, fc2, head)',
           'loss', 'augmentation + random numbers', 'optimizer + other')
LAYERS = ('conv1', 'conv2', 'fc1', 'fc2', 'head')
RANDOM = ('augment', '_randint', '_bernoulli', '_threefry', '_uniform', 'take_along_axis')


# --------------------------------------------------------------------------------------- jaxlab


def jax_bucket(op_name):
  """The bucket of an XLA op from its metadata's name scope."""
  backward = 'transpose(' in op_name
  if 'jvp(LeNet5)' in op_name:
    for part in re.split(r'[/.]', op_name):
      if part in ('conv1', 'conv2'):
        return f'{part} {"backward" if backward else "forward"}'
      if part in LAYERS:
        return 'dense layers (fc1, fc2, head)'
    return f'ReLU + pool {"backward" if backward else "forward"}'
  if 'jvp()' in op_name:
    return 'loss'
  if op_name.startswith('jit(run)/vmap(') or any(name in op_name for name in RANDOM):
    return 'augmentation + random numbers'
  return 'optimizer + other'


VIT_BUCKETS = tuple(f'{part} {way}' for part in (
    'patch embedding', 'LayerNorm', 'qkv + proj (LoRA included)', 'attention core', 'MLP fc1 + fc2',
    'GELU') for way in ('forward', 'backward')) + (
        'head + loss', 'augmentation + random numbers', 'optimizer + other')
# A ViT op's part from the name scope's module names (jaxlab.models.vit).
_VIT_PARTS = (('patch_embed', 'patch embedding'), ('norm1', 'LayerNorm'), ('norm2', 'LayerNorm'),
              ('qkv', 'qkv + proj (LoRA included)'), ('proj', 'qkv + proj (LoRA included)'),
              ('fc1', 'MLP fc1 + fc2'), ('fc2', 'MLP fc1 + fc2'), ('attn', 'attention core'),
              ('mlp', 'GELU'), ('norm', 'LayerNorm'), ('head', 'head + loss'))


def vit_jax_bucket(op_name):
  """The bucket of a ViT step's XLA op from its metadata's name scope: the innermost module
  name decides (qkv before attn, fc1 before mlp); in an attention block's own scope the ops
  are the core's; an op of the model outside any module (the class token, position
  embedding, residual adds) goes to 'optimizer + other'."""
  if 'jvp(ViT)' in op_name:
    way = 'backward' if 'transpose(' in op_name else 'forward'
    parts = set(re.split(r'[/.;]', op_name))
    for name, part in _VIT_PARTS:
      if name in parts:
        return 'head + loss' if part == 'head + loss' else f'{part} {way}'
    return 'optimizer + other'
  if 'jvp()' in op_name:
    return 'head + loss'
  if op_name.startswith('jit(run)/vmap(') or any(name in op_name for name in RANDOM) \
      or 'resize' in op_name:
    return 'augmentation + random numbers'
  return 'optimizer + other'


def vit_torch_bucket(name, shapes, dims, backward):
  """The bucket of a ViT step's PyTorch op from its name, input shapes and whether it ran in
  the autograd engine's backward pass. dims: the model's width, qkv width (3·width), MLP width
  and classes, which tell the matmuls (addmm, mm, the bias gradients' sums) apart."""
  width, qkv, mlp, classes = dims
  way = 'backward' if backward else 'forward'
  first = shapes[0] if shapes and shapes[0] else []
  sizes = {d for shape in shapes if shape for d in shape}
  if name in ('aten::mkldnn_convolution', 'aten::convolution', 'aten::_convolution',
              'aten::convolution_backward'):
    return f'patch embedding {way}'
  if name in ('aten::native_layer_norm', 'aten::native_layer_norm_backward'):
    return f'LayerNorm {way}'
  if name in ('aten::gelu', 'aten::gelu_backward'):
    return f'GELU {way}'
  if 'scaled_dot_product' in name or 'flash_attention' in name:
    return f'attention core {way}'
  if 'softmax' in name or 'nll_loss' in name or 'cross_entropy' in name:
    return 'head + loss'
  matmul = name in ('aten::addmm', 'aten::mm', 'aten::bmm')  # addmm's first input: the bias
  # The bias gradients' sums, the layout copies, and LoRA's scaling and sum of its output with
  # the base layer's: sized by the layer (those of width-sized outputs, proj's and fc2's, are
  # not told apart from the residual adds: they stay in 'optimizer + other').
  if matmul or (name in ('aten::sum', 'aten::copy_', 'aten::clone') and 2 <= len(first) <= 3) \
      or (name in ('aten::add', 'aten::mul') and len(first) == 3):  # activations, not params
    if classes in sizes and mlp not in sizes and qkv not in sizes:
      return 'head + loss'
    if mlp in sizes:
      return f'MLP fc1 + fc2 {way}'
    if qkv in sizes or (matmul and width in sizes):
      return f'qkv + proj (LoRA included) {way}'
  if not backward and name in (
      'aten::index', 'aten::gather', 'aten::where', 'aten::randint', 'aten::rand',
      'aten::constant_pad_nd', 'aten::flip', 'aten::div_', 'aten::sub', 'aten::div',
      'aten::_to_copy', 'aten::arange', 'aten::lt', 'aten::upsample_bilinear2d',
      'aten::_upsample_bilinear2d_aa'):
    return 'augmentation + random numbers'
  return 'optimizer + other'


def hlo_ops(text):
  """{instruction name: (opcode, metadata op_name)} of a compiled module's text."""
  ops = {}
  for line in text.splitlines():
    m = re.match(r'\s*(?:ROOT )?%(\S+) = (?:\(.*?\)|\S+) ([\w-]+)\(', line)
    if m:
      scope = re.search(r'op_name="([^"]*)"', line)
      ops[m.group(1)] = (m.group(2), scope.group(1) if scope else '')
  return ops


def median_walls(run, warmup, steps, profiler):
  """Both sides' timing: run(i) for steps 0 .. warmup-1 untimed, the next `steps` timed without
  a profiler, the `steps` after them timed inside the context manager `profiler` (whose
  events the caller reads). (median ms unprofiled, median ms profiled, mean ms profiled: the
  one to set beside a per-step mean of the trace's events)."""

  def timed(first):
    walls = []
    for i in range(first, first + steps):
      t0 = time.perf_counter()
      run(i)
      walls.append(1e3 * (time.perf_counter() - t0))
    return walls

  for i in range(warmup):
    run(i)
  untraced = timed(warmup)
  with profiler:
    traced = timed(warmup + steps)
  return statistics.median(untraced), statistics.median(traced), statistics.fmean(traced)


def overlaps(events):
  """(µs in which any of the trace's complete events runs, µs of events that start before the
  previous event on their own thread has ended): XLA may run two ops at once on two threads, so
  their durations can sum to more than the wall time; on one thread, an op inside another means
  the trace counted something twice (a loop's own event spans its body's ops)."""
  union, end, nested, ends = 0.0, float('-inf'), 0.0, {}
  for e in sorted(events, key=lambda e: e['ts']):
    start, stop = e['ts'], e['ts'] + e['dur']
    union += max(0.0, stop - max(start, end))
    end = max(end, stop)
    thread = (e.get('pid'), e.get('tid'))
    if start < ends.get(thread, float('-inf')):
      nested += e['dur']
    ends[thread] = max(ends.get(thread, float('-inf')), stop)
  return union, nested


MODELS = {  # --model: (title, the suite's workload at a batch, default batch, buckets)
    'lenet': ('LeNet-5', lambda batch: f'lenet/{batch}', 64, BUCKETS),
    'vit_tiny': ('ViT-Ti/4 (32 px, float32, learned position embedding, one seed)',
                 lambda batch: 'vit_tiny/race', 64, VIT_BUCKETS),
    'vit_s16_lora': ('ViT-S/16 with LoRA (224 px, float32)', lambda batch: 'peft/lora', 8,
                     VIT_BUCKETS),
}
# The ViTs' (width, qkv width, MLP width, classes): what tells PyTorch's matmuls apart.
VIT_DIMS = {'vit_tiny': (192, 576, 768, 10), 'vit_s16_lora': (384, 1152, 1536, 100)}


def time_jax(batch, steps, warmup, model='lenet', small=False):
  """jaxlab's side; small: the workload's --small sizes (the ViT-Ti/4 row's quick ViT), for
  the tests."""
  import jax

  from benchmarks.workloads import placed_step
  _, workload, _, _ = MODELS[model]
  w = placed_step(workload(batch), small, batch=batch, seeds=None if model == 'lenet' else (0,))
  bucket = jax_bucket if model == 'lenet' else vit_jax_bucket
  state, data, indices, compiled = w.state, w.data, w.indices, w.compiled
  ops = hlo_ops(compiled.as_text())
  batches = [indices() for _ in range(warmup + 2 * steps)]

  def run(i):
    nonlocal state
    state, _ = jax.block_until_ready(compiled(state, data, batches[i]))

  with tempfile.TemporaryDirectory() as folder:
    untraced_ms, wall_ms, wall_mean_ms = median_walls(run, warmup, steps,
                                                      jax.profiler.trace(folder))
    (path,) = glob.glob(os.path.join(folder, '**', '*.trace.json.gz'), recursive=True)
    with gzip.open(path) as f:
      events = json.load(f)['traceEvents']
  ms, counted = collections.Counter(), []
  for e in events:
    op = ops.get(e.get('name')) if e.get('ph') == 'X' else None
    if op and op[0] not in ('while', 'conditional', 'call'):  # their bodies' ops are counted
      ms[(bucket(op[1]), f'{e["name"]} ({op[1][:100]})')] += e['dur'] / 1e3 / steps
      counted.append(e)
  if not ms:
    raise RuntimeError('the trace holds no XLA op events: was JAX imported before '
                       'benchmarks.op_table set --xla_cpu_enable_xprof_traceme?')
  union_us, nested_us = overlaps(counted)
  return dict(wall_ms=wall_ms, wall_mean_ms=wall_mean_ms, untraced_wall_ms=untraced_ms,
              **by_bucket(ms), ops_union_ms=union_us / 1e3 / steps,
              ops_nested_ms=nested_us / 1e3 / steps,
              jax=jax.__version__,
              device=jax.devices()[0].device_kind)


# -------------------------------------------------------------------------------------- PyTorch


def torch_bucket(name, shapes):
  """The bucket of a PyTorch op from its name and input shapes (NCHW: 3 input channels is conv1's
  input, a 28×28 gradient conv1's output)."""
  first = shapes[0] if shapes and shapes[0] else []
  if name in ('aten::mkldnn_convolution', 'aten::convolution', 'aten::_convolution'):
    return 'conv1 forward' if len(first) == 4 and first[1] == 3 else 'conv2 forward'
  if name == 'aten::convolution_backward':
    return 'conv1 backward' if len(first) == 4 and first[2] == 28 else 'conv2 backward'
  if name in ('aten::max_pool2d_with_indices', 'aten::clamp_min', 'aten::relu'):
    return 'ReLU + pool forward'
  if name in ('aten::max_pool2d_with_indices_backward', 'aten::threshold_backward') or (
      name == 'aten::fill_' and len(first) == 4 and first[1] == 64) or (  # the pool's zeros
          name.startswith('autograd::engine::evaluate_function: ')
          and ('Relu' in name or 'MaxPool' in name)):
    return 'ReLU + pool backward'
  if name in ('aten::addmm', 'aten::mm', 'aten::t', 'aten::sum') and len(first) <= 2:
    return 'dense layers (fc1, fc2, head)'
  if 'softmax' in name or 'nll_loss' in name or 'cross_entropy' in name:
    return 'loss'
  if name in ('aten::index', 'aten::gather', 'aten::where', 'aten::randint', 'aten::rand',
              'aten::constant_pad_nd', 'aten::flip', 'aten::permute', 'aten::div_',
              'aten::sub', 'aten::div', 'aten::_to_copy', 'aten::copy_', 'aten::arange',
              'aten::add', 'aten::lt', 'aten::unsqueeze', 'aten::expand'):
    return 'augmentation + random numbers'
  return 'optimizer + other'


def _in_backward(event):
  """Whether a profiler event ran inside the autograd engine's backward pass."""
  parent = event.cpu_parent
  while parent is not None:
    if parent.name.startswith('autograd::engine::evaluate_function'):
      return True
    parent = parent.cpu_parent
  return False


def time_torch(batch, steps, warmup, model='lenet'):
  """Run by the PyTorch environment's python (no jax there)."""
  from torch.profiler import ProfilerActivity, profile

  from benchmarks import torch_refs as refs
  torch, device, amp, _ = refs._setup('cpu', False, None)
  if model == 'lenet':
    make_run = refs.lenet5_training(torch, device, amp, batch, warmup + 2 * steps)[2]
    bucket = lambda e, shapes: torch_bucket(e.name, shapes)
  else:
    if model == 'vit_tiny':
      make_run = refs.vit_tiny_training(torch, device, amp, batch, warmup + 2 * steps)[2]
    else:
      make_run = refs.vit_peft_training(torch, device, amp, 'lora', batch,
                                         warmup + 2 * steps)[3]
    bucket = lambda e, shapes: vit_torch_bucket(e.name, shapes, VIT_DIMS[model], _in_backward(e))
  prof = profile(activities=[ProfilerActivity.CPU], record_shapes=True)
  untraced_ms, wall_ms, _ = median_walls(make_run(), warmup, steps, prof)
  ms = collections.Counter()
  for e in prof.events():
    shapes = e.input_shapes
    ms[(bucket(e, shapes), f'{e.name} {shapes[0] if shapes else ""}')] += \
        e.self_cpu_time_total / 1e3 / steps
  return dict(wall_ms=wall_ms, untraced_wall_ms=untraced_ms, **by_bucket(ms),
              torch=torch.__version__,
              threads=torch.get_num_threads())


# ------------------------------------------------------------------------------------- the table


def by_bucket(ms, top=6):
  """{(bucket, op): ms} → {'ms': {bucket: ms}, 'top_ops': {bucket: [[op, ms], ...]}} (the
  bucket's largest ops, for the reader who wants to see what a bucket holds)."""
  totals, ops = collections.Counter(), collections.defaultdict(list)
  for (bucket, op), value in sorted(ms.items(), key=lambda kv: -kv[1]):
    totals[bucket] += value
    if len(ops[bucket]) < top:
      ops[bucket].append([op, round(value, 3)])
  return {'ms': dict(totals), 'top_ops': dict(ops)}


def _cell(value):
  return '–' if value is None else f'{value:.1f}'


def _ratio(a, b):
  return f'{a / b:.2f}' if b else '–'


def table(ours, theirs, batch, model='lenet'):
  """The markdown table of both sides' buckets (PyTorch's column '–' without it)."""
  title, _, _, buckets = MODELS[model]
  lines = [f'{title} training step at batch {batch}, ms per step (summed op time)', '',
           '| bucket | jaxlab | PyTorch eager | jaxlab / PyTorch |', '| --- | ---: | ---: | ---: |']
  rows = [(name, ours['ms'].get(name, 0.0), theirs['ms'].get(name, 0.0) if theirs else None)
          for name in buckets]
  rows.append(('**sum of ops**', sum(ours['ms'].values()),
               sum(theirs['ms'].values()) if theirs else None))
  if 'ops_union_ms' in ours:  # jaxlab's ops at once counted once (PyTorch's side: not measured)
    rows.append(('**time in which an op runs**', ours['ops_union_ms'], None))
  rows.append(('**step wall time, profiled (median)**', ours['wall_ms'],
               theirs['wall_ms'] if theirs else None))
  rows.append(('**step wall time, not profiled (median)**', ours['untraced_wall_ms'],
               theirs['untraced_wall_ms'] if theirs else None))
  for name, a, b in rows:
    lines.append(f'| {name} | {a:.1f} | {_cell(b)} | {_ratio(a, b)} |')
  return '\n'.join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--model', choices=sorted(MODELS), default='lenet')
  p.add_argument('--batch', type=int, default=0, help="default: the model's (LeNet-5 and "
                 'ViT-Ti/4 64, ViT-S/16 8)')
  p.add_argument('--steps', type=int, default=10)
  p.add_argument('--warmup', type=int, default=3)
  p.add_argument('--torch_python', default='', help="the python of an environment with torch")
  p.add_argument('--json', default='', help='also write both sides and the table here')
  p.add_argument('--side', choices=('jax', 'torch'), default='', help=argparse.SUPPRESS)
  p.add_argument('--small', action='store_true', help=argparse.SUPPRESS)  # jaxlab's side, tests
  args = p.parse_args(argv)
  args.batch = args.batch or MODELS[args.model][2]
  if args.side == 'torch':
    print(json.dumps(time_torch(args.batch, args.steps, args.warmup, args.model)))
    return
  host.from_environment()  # JAXLAB_MALLOC, as the jaxlab command reads it (jaxlab/host.py)
  theirs = None
  if args.torch_python:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([args.torch_python, '-m', 'benchmarks.op_table', '--side=torch',
                          f'--model={args.model}', f'--batch={args.batch}', f'--steps={args.steps}',
                          f'--warmup={args.warmup}'], cwd=root, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=root), check=False)
    if out.returncode:
      sys.exit(f'the PyTorch side failed:\n{out.stderr[-2000:]}')
    theirs = json.loads(out.stdout.strip().splitlines()[-1])
  ours = time_jax(args.batch, args.steps, args.warmup, args.model, args.small)
  text = table(ours, theirs, args.batch, args.model)
  print(text)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'model': args.model, 'batch': args.batch, 'steps': args.steps, 'jaxlab': ours, 'pytorch': theirs,
                 'table': text}, f, indent=1)
    print(f'wrote {args.json}')


if __name__ == '__main__':
  if 'jax' in sys.modules:
    sys.exit('benchmarks.op_table must set XLA_FLAGS before JAX starts (run it with python -m)')
  os.environ['XLA_FLAGS'] = ' '.join(filter(None, (os.environ.get('XLA_FLAGS', ''),
                                                   '--xla_cpu_enable_xprof_traceme=true')))
  main()
