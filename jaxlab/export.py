"""Export a PEFT run's fine-tuned ViT: python -m jaxlab.export --workdir=RUN --format=F --out=FILE.

Formats:
  timm      safetensors in timm's VisionTransformer layout (vit_small_patch16_224 for ViT-S/16),
            LoRA merged into the kernels; `timm.create_model(name, num_classes=C)` loads it.
  npz       big_vision's (AugReg) npz layout, LoRA merged; jaxlab.io.pretrained.from_big_vision
            and big_vision load it.
  adapters  safetensors of the trained parameters only (LoRA pairs, tuned norms, head) under
            jaxlab's parameter paths, with the method, rank, alpha and the backbone's source
            and fingerprint in its metadata; `read_adapters` reads it back.
  peft      a Hugging Face PEFT adapter directory (adapter_config.json,
            adapter_model.safetensors) for the timm ViT: `peft.PeftModel.from_pretrained(
            timm.create_model(name, num_classes=C), OUT)` on the same backbone gives the run's
            logits; `jaxlab.load_adapters(OUT, weights)` reads it back. OUT is a directory.
            LoRA methods only (lora, hybrid_parallel, hybrid_layerwise).

RUN is one run's workdir (for a sweep, one of its sub-directories, e.g. workdirs/hybrid-quick/lora).
The parameters come from its latest checkpoint (or --step). A run saved with
checkpoint.params=trainable holds no backbone: it is rebuilt from the run's own config (the same
weights file, or the sweep's pretrain run) and checked against the fingerprint in backbone.json.
"""

import json
import os
import sys

import numpy as np

from jaxlab import checks
from jaxlab.io.checkpoint import BACKBONE, fingerprint
from jaxlab.io.pretrained import (read_safetensors, read_safetensors_metadata, to_big_vision, to_timm,
                                  write_safetensors)
from jaxlab.io.writers import read_json
from jaxlab.train.guards import RESOLVED
from jaxlab.models.lora import has_lora
from jaxlab.params import flatten, label_tree, merge, shared_copy, split, unflatten

FORMATS = ('timm', 'npz', 'adapters', 'peft')


class ExportError(ValueError):
  pass


def _checkpoint_tree(run_dir, step=None):
  """(step, the raw saved tree) of run_dir's checkpoint `step` (default: the latest)."""
  import orbax.checkpoint as ocp
  directory = os.path.join(os.path.abspath(run_dir), 'checkpoints')
  if not os.path.isdir(directory):
    raise ExportError(f'{run_dir} has no checkpoints/ directory; pass a run\'s workdir')
  manager = ocp.CheckpointManager(directory)
  try:
    steps = manager.all_steps()
    if not steps:
      raise ExportError(f'{directory} holds no checkpoint')
    step = max(steps) if step is None else int(step)
    if step not in steps:
      raise ExportError(f'{directory} has no step {step}; it has {sorted(steps)}')
    return step, manager.restore(step, args=ocp.args.StandardRestore())
  finally:
    manager.close()


def _numpy(tree):
  return unflatten({k: np.asarray(v) for k, v in flatten(tree).items()}) if tree else {}


def _config(run_dir):
  import ml_collections
  path = os.path.join(run_dir, 'config.json')
  if not os.path.exists(path):
    runs = sorted(d for d in os.listdir(run_dir)
                  if os.path.exists(os.path.join(run_dir, d, 'config.json')))
    if runs:
      raise ExportError(f'{run_dir} is a sweep; export one of its runs: '
                        + ', '.join(os.path.join(run_dir, r) for r in runs))
    raise ExportError(f'{run_dir} is not a run\'s workdir (no config.json)')
  config = ml_collections.ConfigDict(read_json(path))
  if config.experiment != 'peft':
    raise ExportError(f'{run_dir} is a {config.experiment!r} run; export takes PEFT runs '
                      '(configs/hybrid.py), whose model is a plain ViT')
  return config


def _rebuild_frozen(config, trainable, record, shared=False):
  """The frozen parameters of an adapter-only run, rebuilt from its config and checked."""
  from jaxlab.experiments import peft
  if config.pretrained.source == 'pretrain':
    _, tree = _checkpoint_tree(record['path'])
    pretrained = merge(_numpy(tree['params']), _numpy(tree.get('frozen')))
  else:
    pretrained = peft.load_pretrained(config)
  num_classes = int(np.shape(trainable['head']['bias'])[-1])
  task = peft.make_task(config, num_classes, pretrained)
  _, frozen = split(task.params, label_tree(task.params, task.rules))
  frozen = _numpy(frozen)
  if shared:  # the seeds' copies of the backbone, as the run held it: one
    frozen = shared_copy(frozen)
  if fingerprint(frozen) != record.get('fingerprint'):
    raise ExportError(f'the backbone rebuilt from {record.get("source")} '
                      f'{record.get("path", "")} is not the one this run was trained on '
                      f'(fingerprint {fingerprint(frozen)[:12]} != '
                      f'{str(record.get("fingerprint"))[:12]} in {BACKBONE})')
  return frozen


def _frozen_shared(run_dir, copies):
  """Whether the run's seeds shared one copy of the frozen parameters (resolved.json's
  frozen_copies; runs recorded before it held one copy per seed)."""
  path = os.path.join(run_dir, RESOLVED)
  resolved = read_json(path) if os.path.exists(path) else {}
  return copies > 1 and resolved.get('frozen_copies', copies) == 1


def run_params(run_dir, step=None, seed=None):
  """(config, params, trainable, step) of a PEFT run: `params` the whole model's tree (LoRA
  unmerged), `trainable` its trained part, as numpy arrays. A run of several seeds (config.seeds,
  trained together) holds one model per seed: `seed` picks one."""
  config = _config(run_dir)
  step, tree = _checkpoint_tree(run_dir, step)
  trainable, frozen = _numpy(tree['params']), _numpy(tree.get('frozen'))
  seeds = list(config.get('seeds') or ())
  shared = _frozen_shared(run_dir, len(seeds))  # one backbone every seed read
  backbone = os.path.join(run_dir, BACKBONE)
  if not frozen and os.path.exists(backbone):  # saved with checkpoint.params=trainable
    frozen = _rebuild_frozen(config, trainable, read_json(backbone), shared)
  if seeds:
    if seed not in seeds:
      raise ExportError(f'{run_dir} trained seeds {seeds} together: choose the model of one '
                        f'with --seed (one of {", ".join(map(str, seeds))})')
    pick = lambda tree: {k: pick(v) for k, v in tree.items()} if isinstance(tree, dict) \
        else tree[seeds.index(seed)]
    trainable = pick(trainable)
    if not shared:
      frozen = pick(frozen)
  elif seed is not None and seed != config.seed:
    raise ExportError(f'{run_dir} trained seed {config.seed} alone, not {seed}: drop --seed')
  return config, merge(trainable, frozen), trainable, step


def read_adapters(path):
  """(trainable params tree, metadata dict) of a file written with --format=adapters."""
  meta = read_safetensors_metadata(path)
  if meta.get('jaxlab_format') != 'adapters':
    raise ValueError(f'{path} is not a jaxlab adapters file (metadata: {sorted(meta)})')
  info = {k: json.loads(v) for k, v in meta.items() if k != 'jaxlab_format'}
  return unflatten(read_safetensors(path)), info


def _base_name(config):
  """The backbone's name for PEFT's base_model_name_or_path: timm's hub name of the AugReg
  weights, the weights file, or None (a backbone pretrained by the run)."""
  source = config.pretrained.source
  if source == 'augreg' and config.model.get('variant') == 'S/16':
    return 'timm/vit_small_patch16_224.augreg_in21k_ft_in1k'
  if source in ('npz', 'timm'):
    return os.path.abspath(os.path.expanduser(config.pretrained.path))
  if source == 'hub':
    return config.pretrained.name
  return None


def export(run_dir, fmt, out, step=None, heads=None, seed=None):
  """Write run_dir's model to `out` in format `fmt` (one of FORMATS); returns a one-line report.
  `seed`: which seed's model, of a run that trained several together."""
  if fmt not in FORMATS:
    raise ExportError(f'unknown format {fmt!r}; choose one of {", ".join(FORMATS)}')
  config, params, trainable, step = run_params(run_dir, step, seed)
  from jaxlab.experiments.peft import lora_of_config
  lora = lora_of_config(config)
  alpha = config.peft.alpha
  merged = 'LoRA merged' if has_lora(params) else 'no LoRA'
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  if fmt == 'peft':
    from jaxlab.peft.adapters import WEIGHTS, save_adapters
    try:
      save_adapters(out, lora, trainable, base_model_name_or_path=_base_name(config))
    except ValueError as e:
      raise ExportError(f'{run_dir}: {e}') from e
    size = os.path.getsize(os.path.join(out, WEIGHTS))
    count = sum(int(np.size(a)) for a in flatten(trainable).values())
    return (f'wrote {out}/: a PEFT LoRA adapter, {len(flatten(trainable))} tensors, {count:,} '
            f'parameters, {size / 1e6:.2f} MB (step {step}, r={lora.rank}, '
            f'lora_alpha={lora.alpha:g})')
  if fmt == 'timm':
    arrays = to_timm(params, lora)
    write_safetensors(out, arrays, metadata={'format': 'pt', 'jaxlab_run': os.path.abspath(run_dir),
                                             'jaxlab_step': step})
  elif fmt == 'npz':
    from jaxlab.models import vit_arch
    arrays = to_big_vision(params, heads or vit_arch(config.model)['heads'], lora)
    with open(out, 'wb') as f:  # np.savez(path) would append '.npz' to another suffix
      np.savez(f, **arrays)
  else:
    arrays = flatten(trainable)
    backbone = os.path.join(run_dir, BACKBONE)
    record = None
    if os.path.exists(backbone):
      record = read_json(backbone)
    p = config.peft
    meta = dict(jaxlab_format='adapters', method=p.method, policy=p.policy, rank=p.rank,
                alpha=alpha, step=step, backbone=record, model=config.model.to_dict(),
                seed=config.seed if seed is None else seed)
    write_safetensors(out, arrays, metadata={k: v if k == 'jaxlab_format' else json.dumps(v)
                                             for k, v in meta.items()})
    merged = 'adapters only'
  size = os.path.getsize(out)
  count = sum(int(np.size(a)) for a in arrays.values())
  return (f'wrote {out}: {len(arrays)} tensors, {count:,} parameters, {size / 1e6:.2f} MB '
          f'({fmt}, step {step}, {merged})')


def main(argv=None):
  """python -m jaxlab.export: 0, or 2 for bad input / 4 for the environment after one line on
  stderr (checks.run_tool)."""
  import argparse
  parser = checks.ToolParser(prog='python -m jaxlab.export', description=__doc__,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--workdir', required=True, help="a PEFT run's workdir")
  parser.add_argument('--format', required=True, choices=FORMATS)
  parser.add_argument('--out', required=True,
                      help='the file to write (for --format=peft, a directory)')
  parser.add_argument('--step', type=int, default=None, help='checkpoint step (default: latest)')
  parser.add_argument('--heads', type=int, default=None,
                      help='attention heads, for npz (default: the run\'s config)')
  parser.add_argument('--seed', type=int, default=None,
                      help='the seed whose model to write, of a run of several seeds')
  args = parser.parse_args(argv)
  return checks.run_tool(
      lambda: print(export(args.workdir, args.format, args.out, args.step, args.heads,
                           args.seed)), os.path.dirname(os.path.abspath(args.out)))


if __name__ == '__main__':
  sys.exit(main())
