"""The headline commands, before the real data arrives.

Each family's DEFAULT config runs through launch.py for a few steps on tiny CIFAR archives
(random images in the original python-pickle layout) and, for the PEFT family, a random
ViT-S/16 in the AugReg (big_vision) npz layout. Only the batch sizes, the step count
(train.steps) and where the data and weights are come from the command line; everything
else (model, optimizer, schedule over the configured epochs, augmentation) is the real
run's. Then the identical command again: a finished run is not trained again.
"""

import json
import math
import os
import pathlib
import pickle
import subprocess
import sys

import numpy as np
import pytest
import xla_flags  # tests/xla_flags.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 2
TRAIN_PER_SPLIT = 24  # CIFAR-10: 5 batches of 24; CIFAR-100: one train file of 24
TEST_PER_SPLIT = 4  # the final evaluation (and mhc's embeddings) run over all of it


def launch(*args, cache_dir=None, timeout=600):
  """python launch.py ARGS on one CPU device (no device count in XLA_FLAGS: the default configs'
  setting; the session's compile level, tests/xla_flags.py).

  `cache_dir`: JAX's persistent compilation cache, shared by the runs of this module. Every
  program is still compiled once by its first run (and checked there); a rerun and a case that
  compiles the same program (LeNet in both distributed configs, the eager init ops) load it
  instead (measured on two shared CPU cores: distributed's rerun 19 s without it, 4 s with it).
  """
  env = dict(os.environ, XLA_FLAGS=xla_flags.for_command(), PYTHONPATH=ROOT)
  if cache_dir:
    env.update(JAX_COMPILATION_CACHE_DIR=str(cache_dir),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='-1')
  return subprocess.run([sys.executable, 'launch.py', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------------------------------------
# Fixtures: tiny CIFAR archives and a random AugReg ViT-S/16.


def _rows(rng, num):
  return rng.integers(0, 256, size=(num, 3072), dtype=np.uint8)


def _pickle(path, obj):
  with open(path, 'wb') as f:
    pickle.dump(obj, f)


def write_cifar10(root, per_batch=TRAIN_PER_SPLIT, test=TEST_PER_SPLIT, seed=10):
  """root/cifar-10-batches-py/: data_batch_1..5, test_batch, batches.meta."""
  rng = np.random.default_rng(seed)
  folder = pathlib.Path(root) / 'cifar-10-batches-py'
  folder.mkdir(parents=True)
  for i in range(1, 6):
    _pickle(folder / f'data_batch_{i}', {b'data': _rows(rng, per_batch),
                                         b'labels': [int(v) for v in rng.integers(0, 10, per_batch)]})
  _pickle(folder / 'test_batch', {b'data': _rows(rng, test),
                                  b'labels': [int(v) for v in rng.integers(0, 10, test)]})
  _pickle(folder / 'batches.meta', {b'label_names': [b'x'] * 10})


def write_cifar100(root, train=TRAIN_PER_SPLIT, test=TEST_PER_SPLIT, seed=100):
  """root/cifar-100-python/: train, test, meta."""
  rng = np.random.default_rng(seed)
  folder = pathlib.Path(root) / 'cifar-100-python'
  folder.mkdir(parents=True)
  for split, num in (('train', train), ('test', test)):
    _pickle(folder / split, {b'data': _rows(rng, num),
                             b'fine_labels': [int(v) for v in rng.integers(0, 100, num)],
                             b'coarse_labels': [int(v) for v in rng.integers(0, 20, num)]})
  _pickle(folder / 'meta', {b'fine_label_names': [b'f'] * 100, b'coarse_label_names': [b'c'] * 20})


def write_augreg_npz(path, depth=12, width=384, heads=6, mlp_dim=1536, patch=16, image_size=224,
                     num_classes=1000, seed=0):
  """A random ViT (default S/16 at 224 px, 1000-class head) under big_vision / AugReg names.

  Weights N(0, 0.02), LayerNorm scales 1, biases 0: the layout `big_vision_to_params` reads
  (the name mapping of docs/references.md), stored as float16 to halve the file.
  """
  rng = np.random.default_rng(seed)
  hd = width // heads
  tokens = (image_size // patch) ** 2 + 1
  w = lambda *shape: (0.02 * rng.standard_normal(shape, np.float32)).astype(np.float16)
  zeros = lambda *shape: np.zeros(shape, np.float16)
  ones = lambda *shape: np.ones(shape, np.float16)
  out = {
      'embedding/kernel': w(patch, patch, 3, width), 'embedding/bias': zeros(width),
      'cls': w(1, 1, width), 'Transformer/posembed_input/pos_embedding': w(1, tokens, width),
      'Transformer/encoder_norm/scale': ones(width), 'Transformer/encoder_norm/bias': zeros(width),
      'head/kernel': w(width, num_classes), 'head/bias': zeros(num_classes),
  }
  for i in range(depth):
    b = f'Transformer/encoderblock_{i}/'
    a = b + 'MultiHeadDotProductAttention_1/'
    for ln in ('LayerNorm_0', 'LayerNorm_2'):
      out[f'{b}{ln}/scale'], out[f'{b}{ln}/bias'] = ones(width), zeros(width)
    for name in ('query', 'key', 'value'):
      out[f'{a}{name}/kernel'], out[f'{a}{name}/bias'] = w(width, heads, hd), zeros(heads, hd)
    out[f'{a}out/kernel'], out[f'{a}out/bias'] = w(heads, hd, width), zeros(width)
    out[f'{b}MlpBlock_3/Dense_0/kernel'] = w(width, mlp_dim)
    out[f'{b}MlpBlock_3/Dense_0/bias'] = zeros(mlp_dim)
    out[f'{b}MlpBlock_3/Dense_1/kernel'] = w(mlp_dim, width)
    out[f'{b}MlpBlock_3/Dense_1/bias'] = zeros(width)
  np.savez(path, **out)
  return path


@pytest.fixture(scope='module')
def inputs(tmp_path_factory):
  """{'data': folder holding both archives, 'weights': the random AugReg ViT-S/16 npz,
  'xla_cache': the compilation cache the module's runs share}."""
  root = tmp_path_factory.mktemp('headline_inputs')
  write_cifar10(root)
  write_cifar100(root)
  # The session's compilation cache (tests/conftest.py; JAXLAB_TEST_XLA_CACHE=DIR keeps it
  # between sessions): shared with the other tests' commands and the other xdist worker's.
  cache = os.environ.get('JAX_COMPILATION_CACHE_DIR') or tmp_path_factory.mktemp('headline_xla_cache')
  return {'data': str(root), 'weights': write_augreg_npz(root / 'vit_s16_augreg_random.npz'),
          'xla_cache': str(cache)}


# ---------------------------------------------------------------------------------------------
# The cases.

LADDER_CELLS = [f'{rule}_k{k}' for rule in ('bp', 'fa', 'dfa') for k in range(5)]
MHC_ARMS = ('regular', 'mhc_static', 'mhc_dynamic')

# config, batch sizes (train, eval), the run directories (relative to the workdir) that each
# hold summary.json and checkpoints/, other files the family writes, what its output says.
CASES = {
    'hybrid': dict(config='configs/hybrid.py', batch=2, eval_batch=TEST_PER_SPLIT,
                   weights=True, runs=['.'], files=[], says='run written to'),
    'ladder': dict(config='configs/ladder.py', batch=2, eval_batch=None,
                   runs=[f'cells/{c}' for c in LADDER_CELLS],
                   files=['ladder.json', 'ladder.md', 'identity_check.json', 'stats.json'],
                   says='# Trainable-depth ladder'),
    'mhc': dict(config='configs/mhc.py', batch=2, eval_batch=TEST_PER_SPLIT,
                runs=list(MHC_ARMS), files=['record.md', 'record.json'], says='Record: '),
    'distributed': dict(config='configs/distributed.py', batch=2, eval_batch=None, runs=['.'],
                        files=[], says='run written to'),
    'large_batch': dict(config='configs/distributed.py:large_batch', batch=2, eval_batch=None,
                        runs=['.'], files=[], says='run written to'),
}


def command(case, inputs, workdir):
  c = CASES[case]
  args = [f'--config={c["config"]}', f'--workdir={workdir}', '--config.progress=false',
          f'--config.train.steps={STEPS}', f'--config.train.batch_size={c["batch"]}',
          '--config.data.source=archive', f'--config.data.dir={inputs["data"]}']
  if c['eval_batch']:
    args.append(f'--config.train.eval_batch_size={c["eval_batch"]}')
  if c.get('weights'):
    args += ['--config.pretrained.source=npz', f'--config.pretrained.path={inputs["weights"]}']
  return args


def _read(path):
  with open(path) as f:
    return f.read()


@pytest.mark.parametrize('case', list(CASES))
def test_headline_command(case, inputs, tmp_path):
  c = CASES[case]
  workdir = tmp_path / case
  args = command(case, inputs, workdir)
  shown = 'python launch.py ' + ' '.join(args)

  # 1. It runs, and says what it wrote.
  r = launch(*args, cache_dir=inputs['xla_cache'])
  assert r.returncode == 0, f'{shown}\n{r.stderr[-3000:]}'
  assert 'Traceback' not in r.stderr, r.stderr[-3000:]
  assert c['says'] in r.stdout, r.stdout[-2000:]

  # 2. summary.json where the family writes it: STEPS steps, a finite acc@1.
  summaries = {}
  for run in c['runs']:
    path = workdir / run / 'summary.json'
    assert path.is_file(), f'no {path}'
    summaries[path] = _read(path)
    summary = json.loads(summaries[path])
    assert summary['steps'] == STEPS, (run, summary['steps'])
    assert math.isfinite(summary['acc1']), (run, summary['acc1'])
  for name in c['files']:
    assert (workdir / name).is_file(), f'no {workdir / name}'
  if case == 'ladder':
    assert sorted(json.loads(_read(workdir / 'ladder.json'))['cells']) == sorted(LADDER_CELLS)

  # 3. A checkpoint of the last step.
  for run in c['runs']:
    assert (workdir / run / 'checkpoints' / str(STEPS)).is_dir(), \
        f'no checkpoint {workdir / run / "checkpoints" / str(STEPS)}'

  # 4. The identical command again: exits 0, says the run finished earlier, trains nothing.
  again = launch(*args, cache_dir=inputs['xla_cache'])
  assert again.returncode == 0, f'rerun of {shown}\n{again.stderr[-3000:]}'
  problems = []
  if 'finished earlier' not in again.stdout + again.stderr:
    problems.append('the rerun prints no line containing "finished earlier"')
  changed = [str(p.relative_to(workdir)) for p, text in summaries.items() if _read(p) != text]
  if changed:
    problems.append(f'the rerun rewrote {len(changed)} summary.json: {", ".join(changed)}')
  assert not problems, f'rerun of {shown}:\n' + '\n'.join(problems)
