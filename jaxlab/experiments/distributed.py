"""Distributed-learning family: LeNet-5 on CIFAR-100.

The centralized (synchronous data-parallel) baseline over every local device,
large-batch optimizers (LARS, LAMB) with the learning rate scaled by batch
size, and local methods (local SGD, SlowMo, DiLoCo, post-local SGD) over a
worker axis sharded on the mesh. `arms` runs several methods side by side
(each in its own sub-workdir) and writes a comparison table; `grid` runs a
grid (e.g. lr × wd × batch; each cell in cells/<name>) and writes a table and a figure.
Both are sweeps of jaxlab.train.sweep: resumable cell by cell, sweep.only runs one, and
the tables are assembled from the finished cells' result files.
"""

import copy
import os

import jax.numpy as jnp

from jaxlab import checks, experiments, models
from jaxlab.checks import at_least, one_of, positive, rule, within
from jaxlab.data.datasets import load_dataset
from jaxlab.experiments import over_seeds, preflight
from jaxlab.io.figures import line_plot, markdown_table, with_status
from jaxlab.io.writers import write_json, write_text
from jaxlab.models import conv
from jaxlab.optim.optimizers import schedule_from_optim
from jaxlab.parallel.local import (DYNAMIC_FORMS, METHOD_READS, METHODS as LOCAL_METHODS,
                                   WORKER_DATA, LocalSpec, worker_steps_per_epoch)
from jaxlab.params import run_keys
from jaxlab.train.loop import fit
from jaxlab.train.summary import print_summary
from jaxlab.train.sweep import (Cell, apply_overrides, cell_name, parse_grid, run_length,
                                run_sweep)
from jaxlab.train.task import Task, flax_apply
from jaxlab.train import guards

# lr × (batch_size / optim.base_batch) ** power for each optim.lr_scaling (scaled_lr).
LR_SCALINGS = {'none': 0.0, 'sqrt': 0.5, 'linear': 1.0}
# The reference's augmentation sets (docs/references.md) on top of the config's crop / flip /
# normalisation.
AUG_SETS = {
    'basic': dict(crop_padding=4, flip=True, rotation=0.0, perspective=0.0,
                  color_jitter=(0.0, 0.0, 0.0, 0.0)),
    'adamw': dict(crop_padding=4, flip=True, rotation=0.0, perspective=0.0,
                  color_jitter=(0.2, 0.2, 0.2, 0.1)),
    'sgdm': dict(crop_padding=4, flip=True, rotation=15.0, perspective=0.2, perspective_p=0.5,
                 color_jitter=(0.3, 0.3, 0.3, 0.2)),
}
# Arms that compare optimizers (the synchronous baseline with the note's recipes): each sets
# these optim fields; the note's stronger-augmentation comparison (docs/references.md) ran
# SGDM at lr 1e-2, wd 4e-4 against AdamW at lr 5e-4, wd 5e-4.
OPTIMIZER_ARMS = {
    'sgdm': dict(name='sgdm', lr=1e-2, momentum=0.9, weight_decay=4e-4),
    'adamw': dict(name='adamw', lr=5e-4, weight_decay=5e-4),
}
# The metrics each run reports per seed (summary.json '<metric>_per_seed'), and the note's
# conclusions that a sweep of these arms tests as paired comparisons over its seeds (claim id
# in jaxlab.reference_claims, the claim, the metric, arm a, arm b, the claimed sign of a − b).
METRICS = ('acc1', 'acc1_best', 'nll', 'ece')
DESCRIPTIONS = {'acc1': 'accuracy after the last epoch on the evaluation split',
                'acc1_best': 'accuracy at the best evaluated epoch',
                'nll': 'NLL after the last epoch', 'ece': 'global ECE (15 bins)',
                'wall_step_time_s': ('the loop\'s wall clock a step of the seeds\' joint step, '
                                     'each epoch but the first (values: per epoch)')}
CLAIMS = (
    ('dist-6', 'SGDM beats AdamW with the shared stronger augmentation', 'acc1', 'sgdm',
     'adamw', +1),
)
# The note's own numbers (validation accuracy on the 20% hold-out, one run each).
REFERENCE = {'sgdm': {'acc1': 0.5338}, 'adamw': {'acc1': 0.4594}}
COLUMNS = (
    ('arm', 'arm', '{}'),
    ('workers (sync: devices)', 'workers', '{}'),
    ('J', 'sync_every', '{}'),
    ('acc@1 (final)', 'acc1', '{:.4f}'),
    ('acc@1 (best epoch)', 'acc1_best', '{:.4f}'),
    ('best epoch', 'best_epoch', '{:g}'),
    ('NLL', 'nll', '{:.4f}'),
    ('img/s', 'throughput_img_s', '{:,.0f}'),
    ('compute s', 'compute_time_s', '{:.2f}'),
    ('comm s', 'comm_time_s', '{:.3f}'),
    ('rounds', 'comm_rounds', '{}'),
)


def base_lr(optim_cfg):
  """The optimizer's base lr: optim.lamb_lr for LAMB when set (> 0), else optim.lr."""
  if optim_cfg.name == 'lamb' and optim_cfg.get('lamb_lr', 0.0) > 0:
    return optim_cfg.lamb_lr
  return optim_cfg.lr


def weight_decay_of(optim_cfg):
  """optim.lamb_weight_decay for LAMB when set (≥ 0), else optim.weight_decay."""
  if optim_cfg.name == 'lamb' and optim_cfg.get('lamb_weight_decay', -1.0) >= 0:
    return optim_cfg.lamb_weight_decay
  return optim_cfg.weight_decay


def scaled_lr(optim_cfg, batch_size):
  """base lr × (B / base_batch) ** {0, 1/2, 1} for the none / sqrt / linear rule."""
  rule = optim_cfg.lr_scaling
  if rule not in LR_SCALINGS:
    raise ValueError(f'unknown optim.lr_scaling {rule!r}; choose one of {", ".join(LR_SCALINGS)}')
  power = LR_SCALINGS[rule]
  return base_lr(optim_cfg) * (batch_size / optim_cfg.base_batch) ** power


def local_spec(config, steps_per_epoch):
  lc = config.local
  if lc.method == 'none':
    return None
  return LocalSpec(workers=lc.workers, sync_every=lc.sync_every, method=lc.method,
                   slowmo_alpha=lc.slowmo_alpha, slowmo_beta=lc.slowmo_beta,
                   outer_lr=lc.outer_lr, outer_momentum=lc.outer_momentum,
                   switch_step=int(lc.switch_epochs * steps_per_epoch),
                   inner_lr=config.optim.lr,
                   inner_schedule=(schedule_from_optim(config.optim,
                                                       steps_per_epoch * config.train.epochs,
                                                       steps_per_epoch)
                                   if lc.get('slowmo_lr', 'scheduled') == 'scheduled'
                                   and steps_per_epoch else None),
                   dynamic_alpha=lc.dynamic_alpha,
                   dynamic_form=lc.get('dynamic_form', 'original'),
                   worker_data=lc.get('worker_data', 'epoch'))


def make_task(config, num_classes, image_shape, workers=None):
  """LeNet-style classifier with every parameter in one optimizer group; model.param_init:
  'torch' (PyTorch's defaults, as the original) or 'lecun' (see jaxlab.models.conv). With
  config.seeds (and no local workers) the seeds train together in one program, one after
  another in a loop (Task.seed_loop 'map', the default: each seed's numbers are those of its
  run alone, bit for bit, as tests/test_distributed_seeds.py checks), each with its own init,
  data order and augmentation (jaxlab.train.layouts.Replicas)."""
  model = models.model_from_config(config.model, num_classes)
  if hasattr(model, 'param_init'):
    model = model.clone(param_init=config.model.get('param_init', 'torch'))
  together = bool(config.get('seeds')) and workers is None  # local methods: in turn
  seeds = tuple(config.seeds) if together else (config.seed,)
  inits = [model.init(run_keys(seed)[0], jnp.zeros((1, *image_shape)), train=False)['params']
           for seed in seeds]
  return Task(params=over_seeds.stacked(inits) if together else inits[0],
              apply=flax_apply(model), rules=[('.*', 'base')], workers=workers,
              seeds=seeds if together else None, seed_loop='map')


# What this family reads beyond configs/common.py's shared fields and the optimizers' own.
FIELDS = guards.declare_family('distributed', guards.Family(
    reads=('local.*', 'arms', 'seeds', 'aug_set', 'grid', 'model.conv_impl', 'model.param_init',
           'optim.lr_scaling', 'optim.base_batch', 'optim.lamb_lr', 'optim.lamb_weight_decay'),
    neutral=('model.conv_impl',),
    cells=('arms', 'grid'),
    ranges={
        'local.method': rule(one_of, ('none', *LOCAL_METHODS)),
        'aug_set': rule(one_of, ('', *AUG_SETS)),
        'model.conv_impl': rule(one_of, conv.IMPLS),
        'model.param_init': rule(one_of, conv.INITS),
        'local.workers': rule(at_least, 1),
        'local.sync_every': rule(at_least, 1),
        'local.slowmo_alpha': rule(positive),
        'local.slowmo_beta': rule(within, 0, 1, high_open=True),
        'local.outer_lr': rule(positive),
        'local.outer_momentum': rule(within, 0, 1, high_open=True),
        'local.dynamic_alpha': rule(at_least, 0, ' (0: fixed rounds of local.sync_every)'),
        'local.dynamic_form': rule(one_of, DYNAMIC_FORMS),
        'local.worker_data': rule(one_of, WORKER_DATA),
        'local.slowmo_lr': rule(one_of, ('scheduled', 'base')),
        'optim.lr_scaling': rule(one_of, tuple(LR_SCALINGS)),
        'optim.base_batch': rule(at_least, 1),
        'optim.lamb_lr': rule(at_least, 0, ' (0 uses optim.lr)'),
    }))
# The optim fields read only under optim.name=lamb (base_lr, weight_decay_of).
LAMB_READS = ('lamb_lr', 'lamb_weight_decay')

def validate(config, overridden=frozenset(), devices=1):
  """The family's fields, the devices' split of each arm's batch or workers, overrides
  that `arms`, `aug_set` or `grid` would ignore, and every grid cell as a config of its own."""
  c = config
  bad = [arm for arm in c.arms if arm not in ('sync', *LOCAL_METHODS, *OPTIMIZER_ARMS)]
  if bad:
    checks.fail('arms', f'unknown arms {bad}',
                f'choose from sync, {", ".join(LOCAL_METHODS)} (local methods) or '
                f'{", ".join(OPTIMIZER_ARMS)} (the note\'s optimizer recipes, synchronous)')
  if c.get('seeds'):
    preflight.check_seeds(c)
  for arm in c.arms:
    for name in OPTIMIZER_ARMS.get(arm, {}):
      checks.ignored_override(f'optim.{name}', overridden, f'arm {arm!r}',
                              f'the arm sets it; drop {arm} from --config.arms to set it')
  methods = [(arm if arm in LOCAL_METHODS else 'none') for arm in c.arms] or [c.local.method]
  if 'post_local' in methods:
    within(c, 'local.switch_epochs', 0, c.train.epochs, high_open=True,
           why=' (the epoch where post-local SGD turns local, inside train.epochs)')
  unread = lambda field, why, fix: checks.unread_override(field, overridden, why, fix)
  if c.optim.name != 'lamb':
    for name in LAMB_READS:
      unread(f'optim.{name}', f'by optim.name={c.optim.name!r}', 'set --config.optim.name=lamb too')
  local = [m for m in methods if m != 'none']
  users = {}  # local.* field -> the methods that read it (parallel.local.METHOD_READS)
  for method, reads in METHOD_READS.items():
    for name in reads:
      users.setdefault(name, []).append(method)
  for name, readers in users.items():
    needs = None if len(readers) == len(METHOD_READS) else readers[0]
    if not set(readers) & set(local):
      unread(f'local.{name}', f'by the methods run here ({", ".join(methods)})',
             f'run {needs or "a local method"} too: --config.local.method='
             f'{needs or "local_sgd"}' + (' or add it to --config.arms' if c.arms else ''))
  if c.arms:
    checks.ignored_override('local.method', overridden, f'arms {tuple(c.arms)}',
                            'name the methods in --config.arms, or give --config.arms="()" to '
                            'run local.method alone')
  if c.aug_set:
    for key in AUG_SETS[c.aug_set]:
      checks.ignored_override(f'augment.{key}', overridden, f'aug_set {c.aug_set!r}',
                              "add --config.aug_set='' to use the augment fields as given")
  for method in methods:
    if method == 'none':
      preflight.check_divisible(c, 'train.batch_size', devices)
    else:
      preflight.check_divisible(c, 'local.workers', devices,
                                'devices (each device holds whole workers)')
  if c.grid:
    with checks.about('grid', 'write it as "field=v1,v2;field=v1,v2" with Python literals and '
                      'config fields'):
      cells = parse_grid(c.grid)
      for overrides in cells:
        apply_overrides(copy.deepcopy(c), overrides)
    for field in cells[0]:
      checks.ignored_override(field, overridden, f'grid {c.grid!r}',
                              f'give its values in --config.grid (or drop {field} from the grid)')
    for overrides in cells:  # every cell is a run: its values pass the same checks
      cell = apply_overrides(copy.deepcopy(c), overrides)
      with cell.unlocked():
        cell.grid = ''
      try:
        experiments.validate(cell, devices=devices)
      except checks.BadInput as e:
        raise checks.BadInput(f'grid cell {cell_name(overrides)}: {e.what}', e.where,
                              e.fix + ' (in --config.grid)') from e


# What a run of seeds one after another reports per seed (over_seeds.combined).
SEED_KEYS = (*METRICS, 'throughput_img_s', 'avg_step_time_s', 'compute_time_s', 'comm_time_s')


def run_one(config, workdir, dataset):
  """One run of `config` in `workdir`: its summary. Several seeds (config.seeds) train together
  in one program; under a local method (a leading worker axis), or where the seeds together do
  not fit in a device's memory (checks.SeedsDoNotFit), they run one after another, each in
  WORKDIR/seed_<s>/, and WORKDIR/summary.json holds their per-seed values and means."""
  run = lambda c, w: _run_together(c, w, dataset)
  if config.get('seeds') and config.local.method != 'none':
    return over_seeds.in_turn(config, workdir, run, SEED_KEYS, LOCAL_IN_TURN)
  return over_seeds.together_or_in_turn(config, workdir, run, SEED_KEYS)


def _run_together(config, workdir, dataset):
  config = copy.deepcopy(config)
  size = config.augment.resize or dataset.train.images.shape[1]
  shape = (size, size, dataset.train.images.shape[3])
  with config.unlocked():
    config.optim.lr = scaled_lr(config.optim, config.train.batch_size)
    config.optim.weight_decay = weight_decay_of(config.optim)
    if config.aug_set:
      config.augment.update(AUG_SETS[config.aug_set])
    # The original dynamic rounds read each worker's last gradients (parallel/local.py).
    config.optim.record_last_grads = bool(
        config.local.method != 'none' and config.local.dynamic_alpha
        and config.local.get('dynamic_form', 'original') == 'original')
  workers = config.local.workers if config.local.method != 'none' else 1
  spe = worker_steps_per_epoch(len(dataset.train.labels), workers, config.train.batch_size,
                               config.train.drop_last, local_spec(config, 0))
  task = make_task(config, dataset.num_classes, shape, local_spec(config, spe))
  summary, _ = fit(config, workdir, task, dataset, summary_extra={'lr': config.optim.lr})
  return summary


LOCAL_IN_TURN = 'local methods train one set of workers per program'


def grid_cell_config(config, overrides):
  c = apply_overrides(copy.deepcopy(config), overrides)
  with c.unlocked():
    c.grid = ''
  return c


def run_grid(config, workdir, dataset):
  """Every cell of `config.grid` (resumable): grid.json, grid.md and grid.png."""
  grid = parse_grid(config.grid)
  fields = list(grid[0])
  keep = ('acc1', 'acc1_best', 'best_epoch', 'nll', 'ece', 'throughput_img_s',
          'avg_step_time_s', 'lr', 'peak_mem_bytes', 'status', 'diverged_at_step')

  def cell(overrides):
    c = grid_cell_config(config, overrides)
    out = os.path.join(workdir, 'cells', cell_name(overrides))
    return Cell(cell_name(overrides), out, lambda: run_one(c, out, dataset), run_length(c))

  cells = [cell(o) for o in grid]
  lengths = {c.name: c.length for c in cells}

  def row(overrides, summary):
    return {**overrides, **{k: summary[k] for k in keep if k in summary}}

  def assemble(finished, final):
    results = {'cells': {cell_name(o): {**row(o, finished[cell_name(o)]),
                                        'length': lengths[cell_name(o)]}
                         for o in grid if cell_name(o) in finished}}
    write_json(os.path.join(workdir, 'grid.json'), results)
    rows = list(results['cells'].values())
    columns = [(f, f, '{}') for f in fields] + [
        ('lr (scaled)', 'lr', '{:.4g}'),
        (f'{dataset.eval_split} acc@1 (final)', 'acc1', '{:.4f}'),
        ('acc@1 (best epoch)', 'acc1_best', '{:.4f}'), ('best epoch', 'best_epoch', '{:g}'),
        ('NLL', 'nll', '{:.4f}'), ('img/s', 'throughput_img_s', '{:,.0f}')]
    text = (f'# Grid on {config.data.name}: {config.grid}\n\n'
            + markdown_table([with_status(r, 'acc1') for r in rows], columns) + '\n')
    write_text(os.path.join(workdir, 'grid.md'), text)
    plot_grid(rows, fields, os.path.join(workdir, 'grid.png'), dataset.eval_split)
    if final:
      print('\n' + text)
    return results

  return run_sweep(config, workdir, cells, assemble)


def plot_grid(rows, fields, path, split):
  """Accuracy against the first grid field, one line per combination of the others."""
  x, rest = fields[0], fields[1:]
  done = [r for r in rows if r.get('diverged_at_step') is None]
  lines = []
  for key in sorted({tuple(r[f] for f in rest) for r in done}, key=str):
    pts = sorted((r[x], r['acc1']) for r in done if tuple(r[f] for f in rest) == key)
    label = ', '.join(f'{f.rsplit(".", 1)[-1]}={v}' for f, v in zip(rest, key)) or 'acc@1'
    lines.append((label, *zip(*pts), None))
  logx = all(isinstance(r[x], (int, float)) and r[x] > 0 for r in rows)
  diverged = [(r[x], ', '.join([f'{f.rsplit(".", 1)[-1]}={r[f]}' for f in rest] + [r['status']]))
              for r in rows if r.get('diverged_at_step') is not None]
  line_plot(path, lines, x, f'{split} acc@1 (final)', 'grid sweep', logx=logx, diverged=diverged)


def arm_config(config, arm):
  """The config of one arm: 'sync' (synchronous data parallelism), a local method, or an
  optimizer recipe of OPTIMIZER_ARMS (synchronous)."""
  c = copy.deepcopy(config)
  with c.unlocked():
    c.local.method = arm if arm in LOCAL_METHODS else 'none'
    if arm in OPTIMIZER_ARMS:
      c.optim.update(OPTIMIZER_ARMS[arm])
  return c


def seed_stats(config, rows, dataset):
  """stats.json of an arms sweep over seeds (over_seeds.seed_stats): every arm's per-seed
  values, and the note's conclusions about the arms present as paired comparisons."""
  arms = set(config.arms)
  claims = [c for c in CLAIMS if {c[3], c[4]} <= arms]
  seeds = list(over_seeds.run_seeds(config))
  return over_seeds.seed_stats(rows, 'arm', METRICS, claims, dataset.name, seeds, DESCRIPTIONS,
                               REFERENCE, per_epoch=('wall_step_time_s',))


def over_seeds_text(config, results_stats, dataset):
  """comparison.md's sections over the seeds: each arm's mean ± std and interval, and the
  note's conclusions with their verdicts where the sweep has both arms."""
  text = ('\n## Over the seeds\n\n'
          + over_seeds.seeds_table(results_stats, (('acc1', 'acc@1 (final)'),
                                                   ('acc1_best', 'acc@1 (best epoch)'),
                                                   ('nll', 'NLL'),
                                                   ('wall_step_time_s',
                                                    'wall step time (s) over epochs')), 'acc1'))
  if results_stats['comparisons']:
    where = over_seeds.where_verdicts_apply(
        f'{dataset.name} {dataset.eval_split}', 'the note\'s 20% validation hold-out of CIFAR-100',
        dataset.name == 'cifar100' and bool(config.data.get('validation_fraction')))
    text += over_seeds.claims_report(results_stats, where, 'the note (one run)')
  return text


def arm_dir(workdir, arm):
  return os.path.join(workdir, arm)


def cell_names(config):
  """The names of the sweep's cells (what sweep.only chooses from): the grid's cells, else
  the arms; none for a single run."""
  if config.grid:
    return [cell_name(o) for o in parse_grid(config.grid)]
  return list(config.arms)


def run(config, workdir):
  dataset = load_dataset(config.data)
  if config.grid:
    return run_grid(config, workdir, dataset)
  if not config.arms:
    summary = run_one(config, workdir, dataset)
    print_summary(summary, workdir)
    return summary

  def cell(arm):
    c = arm_config(config, arm)
    # The row: the arm's summary and its step time epoch by epoch (the table's spread).
    return Cell(arm, arm_dir(workdir, arm), lambda: over_seeds.with_epoch_step_times(
        run_one(c, arm_dir(workdir, arm), dataset), arm_dir(workdir, arm)), run_length(c))

  def assemble(finished, final):
    rows = [{'arm': arm, 'workers': summary.get('workers', summary.get('num_devices')),
             **summary} for arm, summary in finished.items()]
    optimizers = any(arm in OPTIMIZER_ARMS for arm in config.arms)
    title = ('SGDM vs AdamW' if optimizers else
             'Synchronous data parallelism vs local methods')
    text = (f'# {title} on {config.data.name}\n\n'
            + markdown_table([with_status(r, 'acc1') for r in rows], COLUMNS) + '\n')
    if any('acc1_per_seed' in r for r in rows):
      results_stats = seed_stats(config, rows, dataset)
      write_json(os.path.join(workdir, 'stats.json'), results_stats)
      text += over_seeds_text(config, results_stats, dataset)
    write_text(os.path.join(workdir, 'comparison.md'), text)
    write_json(os.path.join(workdir, 'comparison.json'), rows)
    if final:
      print('\n' + text)
    return {'arms': rows}

  return run_sweep(config, workdir, [cell(arm) for arm in config.arms], assemble)
