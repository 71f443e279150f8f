"""LeNet-5's training step op by op, jaxlab against PyTorch eager, on this machine's CPU.

    python -m benchmarks.op_table --torch_python=/tmp/torchvenv/bin/python [--batch=64]
        [--steps=10] [--json=PATH]

Both sides run the step users time (benchmarks/workloads.py's lenet/<batch>: augmentation,
forward, cross-entropy, backward, SGD with momentum) on random images, and every op of the
timed steps is put in one of the same buckets: each convolution forward and backward, ReLU +
max-pool forward and backward, the dense layers, the loss, augmentation + random numbers, the
optimizer + the rest (on PyTorch's side also the autograd engine's own time, placed with
the ReLU and pool where its name says it serves them, and the pool gradient's fill of zeros).
Each bucket's largest ops are kept in the JSON (top_ops). Milliseconds per step are op durations summed over the timed steps and
divided by their number; the step's wall time is printed beside them (XLA may run two small
ops at once on two threads, so its ops can sum to more than the wall time).

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


def hlo_ops(text):
  """{instruction name: (opcode, metadata op_name)} of a compiled module's text."""
  ops = {}
  for line in text.splitlines():
    m = re.match(r'\s*(?:ROOT )?%(\S+) = (?:\(.*?\)|\S+) ([\w-]+)\(', line)
    if m:
      scope = re.search(r'op_name="([^"]*)"', line)
      ops[m.group(1)] = (m.group(2), scope.group(1) if scope else '')
  return ops


def time_jax(batch, steps, warmup):
  import jax

  from benchmarks.workloads import placed_step
  w = placed_step(f'lenet/{batch}', False)
  state, data, indices, compiled = w.state, w.data, w.indices, w.compiled
  ops = hlo_ops(compiled.as_text())
  batches = [indices() for _ in range(warmup + steps)]
  for i in range(warmup):
    state, _ = jax.block_until_ready(compiled(state, data, batches[i]))
  walls = []
  with tempfile.TemporaryDirectory() as folder:
    jax.profiler.start_trace(folder)
    for i in range(warmup, warmup + steps):
      t0 = time.perf_counter()
      state, _ = jax.block_until_ready(compiled(state, data, batches[i]))
      walls.append(time.perf_counter() - t0)
    jax.profiler.stop_trace()
    (path,) = glob.glob(os.path.join(folder, '**', '*.trace.json.gz'), recursive=True)
    with gzip.open(path) as f:
      events = json.load(f)['traceEvents']
  ms = collections.Counter()
  for e in events:
    op = ops.get(e.get('name')) if e.get('ph') == 'X' else None
    if op and op[0] not in ('while', 'conditional', 'call'):  # their bodies' ops are counted
      ms[(jax_bucket(op[1]), f'{e["name"]} ({op[1][:100]})')] += e['dur'] / 1e3 / steps
  if not ms:
    raise RuntimeError('the trace holds no XLA op events: was JAX imported before '
                       'benchmarks.op_table set --xla_cpu_enable_xprof_traceme?')
  return dict(wall_ms=1e3 * statistics.median(walls), **by_bucket(ms), jax=jax.__version__,
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


def time_torch(batch, steps, warmup):
  """Run by the PyTorch environment's python (no jax there)."""
  from torch.profiler import ProfilerActivity, profile

  from benchmarks import torch_refs as refs
  torch, device, amp, _ = refs._setup('cpu', False, None)
  _, _, make_run = refs.lenet5_training(torch, device, amp, batch, warmup + steps)
  run = make_run()
  for i in range(warmup):
    run(i)
  walls = []
  with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
    for i in range(warmup, warmup + steps):
      t0 = time.perf_counter()
      run(i)
      walls.append(time.perf_counter() - t0)
  ms = collections.Counter()
  for e in prof.events():
    shapes = e.input_shapes
    ms[(torch_bucket(e.name, shapes), f'{e.name} {shapes[0] if shapes else ""}')] += \
        e.self_cpu_time_total / 1e3 / steps
  return dict(wall_ms=1e3 * statistics.median(walls), **by_bucket(ms), torch=torch.__version__,
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


def table(ours, theirs, batch):
  """The markdown table of both sides' buckets (PyTorch's column '–' without it)."""
  lines = [f'LeNet-5 training step at batch {batch}, ms per step (summed op time)', '',
           '| bucket | jaxlab | PyTorch eager | jaxlab / PyTorch |', '| --- | ---: | ---: | ---: |']
  rows = [(name, ours['ms'].get(name, 0.0), theirs['ms'].get(name, 0.0) if theirs else None)
          for name in BUCKETS]
  rows.append(('**sum of ops**', sum(ours['ms'].values()),
               sum(theirs['ms'].values()) if theirs else None))
  rows.append(('**step wall time (median)**', ours['wall_ms'], theirs['wall_ms'] if theirs else None))
  for name, a, b in rows:
    lines.append(f'| {name} | {a:.1f} | {_cell(b)} | {_ratio(a, b)} |')
  return '\n'.join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--batch', type=int, default=64)
  p.add_argument('--steps', type=int, default=10)
  p.add_argument('--warmup', type=int, default=3)
  p.add_argument('--torch_python', default='', help="the python of an environment with torch")
  p.add_argument('--json', default='', help='also write both sides and the table here')
  p.add_argument('--side', choices=('jax', 'torch'), default='', help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.side == 'torch':
    print(json.dumps(time_torch(args.batch, args.steps, args.warmup)))
    return
  theirs = None
  if args.torch_python:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([args.torch_python, '-m', 'benchmarks.op_table', '--side=torch',
                          f'--batch={args.batch}', f'--steps={args.steps}',
                          f'--warmup={args.warmup}'], cwd=root, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=root), check=False)
    if out.returncode:
      sys.exit(f'the PyTorch side failed:\n{out.stderr[-2000:]}')
    theirs = json.loads(out.stdout.strip().splitlines()[-1])
  ours = time_jax(args.batch, args.steps, args.warmup)
  text = table(ours, theirs, args.batch)
  print(text)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'batch': args.batch, 'steps': args.steps, 'jaxlab': ours, 'pytorch': theirs,
                 'table': text}, f, indent=1)
    print(f'wrote {args.json}')


if __name__ == '__main__':
  if 'jax' in sys.modules:
    sys.exit('benchmarks.op_table must set XLA_FLAGS before JAX starts (run it with python -m)')
  os.environ['XLA_FLAGS'] = ' '.join(filter(None, (os.environ.get('XLA_FLAGS', ''),
                                                   '--xla_cpu_enable_xprof_traceme=true')))
  main()
