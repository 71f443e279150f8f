"""Credit-assignment family: BP / FA / DFA / uSF on a ResMLP, trainable-depth ladder.

The reference run and its definitions: docs/references.md.

A cell is one (rule, k): the last k blocks trainable, the first L−k frozen at
their random init (not differentiated), embed / out_ln / out_head always
trained; the cell's seeds train together in one program (Task.seed_loop). The cells run
through jaxlab.train.sweep (each in cells/<rule>_k<k>, with its own result file; finished cells
are skipped on a rerun; sweep.only runs one); `ladder.json`, `ladder.md` (mean ± sample
std beside the reference table, docs/references.md) and `ladder.png` are assembled from the finished cells, and
`identity_check.json` is written first.
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab import checks
from jaxlab.checks import at_least
from jaxlab.credit import rules as credit
from jaxlab.data.datasets import load_dataset
from jaxlab.experiments import preflight
from jaxlab.experiments.over_seeds import stacked, where_verdicts_apply
from jaxlab.io.figures import line_plot, markdown_table
from jaxlab.io.writers import write_json, write_text
from jaxlab.metrics import stats
from jaxlab.params import merge, run_keys
from jaxlab.train.guards import run_or_diverged
from jaxlab.train.loop import fit
from jaxlab.train.sweep import Cell, run_length, run_sweep
from jaxlab.train.task import Task
from jaxlab.train import guards


# The reference run's table (docs/references.md): CIFAR-10 test accuracy, mean ± std over
# seeds {42, 123, 456}.
REFERENCE = {
    (256, 4): {'bp': [(0.389, 0.001), (0.565, 0.003), (0.598, 0.003), (0.608, 0.001), (0.617, 0.002)],
               'fa': [(0.355, 0.003), (0.382, 0.008), (0.349, 0.016), (0.398, 0.008), (0.402, 0.009)],
               'dfa': [(0.349, 0.003), (0.244, 0.015), (0.286, 0.013), (0.296, 0.008), (0.301, 0.006)]},
    (512, 2): {'bp': [(0.386, 0.003), (0.583, 0.002), (0.603, 0.001)],
               'fa': [(0.359, 0.000), (0.412, 0.004), (0.361, 0.003)],
               'dfa': [(0.349, 0.005), (0.226, 0.015), (0.302, 0.005)]},
}
# The source note's conclusions, as paired comparisons of two cells on the same seeds (the
# rules share each seed's initial params and data order): (the ids of the claim in
# jaxlab.reference_claims for the note's deep (d=256 L=4) and shallow (d=512 L=2) ladders, the
# claim, (rule, k) of a, (rule, k) of b, the claimed sign of a − b in each: +1 / −1, or 0 for
# "no difference"). 'L' is the full depth, 'each' every trained rung k = 1..L (one comparison
# each); a ladder of depth ≥ 3 is held to the deep claims, a shallower one to the shallow ones.
# The note's own difference comes from REFERENCE where it holds the configuration.
CLAIMS = (
    (('ladder-1', 'ladder-2'), 'BP climbs with trainable depth: full above frozen',
     ('bp', 'L'), ('bp', 0), (+1, +1)),
    (('ladder-4', 'ladder-4'), 'DFA: frozen above every trained rung', ('dfa', 0),
     ('dfa', 'each'), (+1, +1)),
    (('ladder-5', 'ladder-6'), 'DFA peaks at the frozen baseline: full below frozen',
     ('dfa', 'L'), ('dfa', 0), (-1, -1)),
    (('ladder-8', 'ladder-9'), 'FA: full above frozen in the deep ladder, no net gain in the '
     'shallow one', ('fa', 'L'), ('fa', 0), (+1, 0)),
    (('ladder-11', 'ladder-11'), 'FA dips at k=2: k=1 above k=2', ('fa', 1), ('fa', 2),
     (+1, +1)),
    (('ladder-12', 'ladder-12'), 'BP above FA at full depth', ('bp', 'L'), ('fa', 'L'), (+1, +1)),
    ((None, None), 'FA above DFA at full depth', ('fa', 'L'), ('dfa', 'L'), (+1, +1)),
    ((None, None), 'BP above DFA at full depth', ('bp', 'L'), ('dfa', 'L'), (+1, +1)),
)
IDENTITY_REFERENCE = {'block_ratio': 0.10, 'stack_rel_change': (0.196, 0.003),
                      'stack_cos': (0.981, 0.001)}


def init_params(config, seed, image_shape, num_classes):
  """The seed's initial ResMLP params: the same for every rule, so rules differ only in credit."""
  model = credit.make_model('bp', num_classes, config.model.width, config.model.depth)
  return model.init(run_keys(seed)[0], jnp.zeros((1, *image_shape)))['params']


def make_task(config, rule, k, seeds, image_shape, num_classes):
  """A cell: its seeds' params and feedback stacked, the rule as the task's gradient."""
  depth = config.model.depth
  if not 0 <= k <= depth:
    raise ValueError(f'k must be in 0..{depth}, got {k}')
  model = credit.make_model(rule, num_classes, config.model.width, depth)
  forward = credit.make_model('bp', num_classes, config.model.width, depth)  # same forward
  trainable_blocks = tuple(range(depth - k, depth))
  params = stacked([init_params(config, s, image_shape, num_classes) for s in seeds])
  feedback = stacked([credit.init_feedback(model, rule, jax.random.fold_in(run_keys(s)[0], 1),
                                           image_shape) for s in seeds])
  rules = [(r'(embed|out_ln|out_head)/.*', 'io')]
  rules += [(rf'blocks_{i}/.*', f'block_{i}' if i in trainable_blocks else None)
            for i in range(depth)]

  def grad_fn(live, rest, images, labels, rng, extra, *, weight, denom):
    del rng
    return credit.credit_value_and_grad(model, rule, merge(live, rest), extra['feedback'], images,
                                        labels, trainable_blocks, config.credit.rms_normalize,
                                        weight=weight, denom=denom)

  return Task(params=params, apply=lambda p, x, train, rng: forward.apply({'params': p}, x),
              rules=rules, grad_fn=grad_fn, extra={'feedback': feedback}, seeds=tuple(seeds))


def identity_check(config, dataset, image_shape):
  """On one training batch at init: ‖f_l(h_l)‖/‖h_l‖ per block, ‖h_L−h_0‖/‖h_0‖, cos(h_L, h_0).

  Per-example values averaged over the batch; mean ± sample std over the seeds.
  """
  from jaxlab.data.augment import make_eval_preprocess
  model = credit.make_model('bp', dataset.num_classes, config.model.width, config.model.depth)
  images = make_eval_preprocess(config.augment)(dataset.train.images[:config.train.batch_size])
  per_seed = []
  for seed in config.seeds:
    p = init_params(config, seed, image_shape, dataset.num_classes)
    hs = [np.asarray(h, np.float64) for h in
          model.apply({'params': p}, images, method=credit.ResMLP.hidden_states)]
    norm = lambda x: np.linalg.norm(x, axis=-1)
    ratios = [float(np.mean(norm(b - a) / norm(a))) for a, b in zip(hs[:-1], hs[1:])]
    per_seed.append({
        'block_ratio': ratios,
        'stack_rel_change': float(np.mean(norm(hs[-1] - hs[0]) / norm(hs[0]))),
        'stack_cos': float(np.mean(np.sum(hs[-1] * hs[0], -1) / (norm(hs[-1]) * norm(hs[0])))),
    })
  out = {'seeds': list(config.seeds), 'per_seed': per_seed, 'reference': IDENTITY_REFERENCE}
  for key in ('block_ratio', 'stack_rel_change', 'stack_cos'):
    values = np.array([s[key] for s in per_seed])
    out[key] = {'mean': values.mean(0).tolist(),
                'std': values.std(0, ddof=1).tolist() if len(values) > 1 else 0.0}
  return out


def cells(config):
  ks = config.credit.ks or tuple(range(config.model.depth + 1))
  return [(rule, k) for rule in config.credit.rules for k in ks]


def cell_name(rule, k):
  return f'{rule}_k{k}'


def cell_names(config):
  """The names of the sweep's cells (what sweep.only chooses from)."""
  return [cell_name(rule, k) for rule, k in cells(config)]


def cell_dir(workdir, rule, k):
  return os.path.join(workdir, 'cells', cell_name(rule, k))


def run_cell(config, workdir, dataset, rule, k, image_shape):
  """One cell's result: final accuracy per seed, mean ± std and the best epoch's mean; or, if
  any of its seeds diverged, 'diverged at step N'."""
  task = make_task(config, rule, k, tuple(config.seeds), image_shape, dataset.num_classes)
  out = cell_dir(workdir, rule, k)
  summary = run_or_diverged(lambda: fit(config, out, task, dataset,
                                        summary_extra={'rule': rule, 'k': k})[0])
  if summary.get('diverged_at_step') is not None:
    return {'rule': rule, 'k': k, 'seeds': list(config.seeds),
            **{key: summary[key] for key in ('status', 'diverged_at_step', 'diverged_metric',
                                             'last_checkpoint_step')}}
  return {'rule': rule, 'k': k, 'seeds': list(config.seeds), 'acc': summary['acc1_per_seed'],
          'mean': summary['acc1'], 'std': summary['acc1_std'],
          'best_mean': summary.get('acc1_best'), 'best_epoch': summary.get('best_epoch'),
          'avg_step_time_s': summary['avg_step_time_s']}


# What this family reads beyond configs/common.py's shared fields and the optimizers' own.
FIELDS = guards.declare_family('ladder', guards.Family(
    reads=('credit.*', 'seeds', 'model.width', 'model.depth'),
    cells=('credit.rules', 'credit.ks'),
    ranges={'model.width': checks.rule(at_least, 1),
            'model.depth': checks.rule(at_least, 1)}))

def validate(config, overridden=frozenset(), devices=1):
  """Rules, depths and seeds of the ladder; each seed's batch split over the devices."""
  del overridden  # no field here is set per cell
  c = config
  if c.augment.get('mixup_alpha') or c.augment.get('cutmix_alpha'):
    checks.fail('augment.mixup_alpha' if c.augment.get('mixup_alpha') else 'augment.cutmix_alpha',
                'the ladder\'s credit rules compute their own error signals from one label, '
                'and mixup / CutMix mix two', 'set it to 0 (the peft, mhc and distributed '
                'families read it)')
  if c.train.get('label_smoothing'):
    checks.fail('train.label_smoothing', 'the ladder\'s credit rules (BP, FA, DFA) compute '
                'their own loss and error signals, without label smoothing',
                'set --config.train.label_smoothing=0 (the families that train with autodiff '
                'read it: peft, mhc, distributed)')
  bad = [rule for rule in c.credit.rules if rule not in credit.RULES]
  if bad or not c.credit.rules:
    checks.fail('credit.rules', f'credit.rules {tuple(c.credit.rules)} must name one or more '
                'known rules', f'choose from {", ".join(credit.RULES)}')
  bad = [k for k in c.credit.ks if not 0 <= k <= c.model.depth]
  if bad:
    checks.fail('credit.ks', f'credit.ks {bad} lie outside 0..{c.model.depth} (model.depth)',
                f'list trainable depths in 0..{c.model.depth}, or () for all of them')
  if len(c.seeds) < 1:
    checks.fail('seeds', 'seeds is empty', 'list at least one seed, e.g. --config.seeds="(42,)"')
  preflight.check_divisible(c, 'train.batch_size', devices)


def run(config, workdir):
  dataset = load_dataset(config.data)
  image_shape = dataset.train.images.shape[1:]
  os.makedirs(workdir, exist_ok=True)
  identity = identity_check(config, dataset, image_shape)
  write_json(os.path.join(workdir, 'identity_check.json'), identity)
  length = run_length(config)

  def assemble(finished, final):
    results = {'cells': {name: {**r, 'length': length} for name, r in finished.items()}}
    write_json(os.path.join(workdir, 'ladder.json'), results)
    results_stats = seed_stats(config, results)
    write_json(os.path.join(workdir, 'stats.json'), results_stats)
    text = report(config, results, identity) + claims_report(config, results_stats)
    write_text(os.path.join(workdir, 'ladder.md'), text)
    plot(config, results, results_stats, os.path.join(workdir, 'ladder.png'))
    if final:
      print('\n' + text)
    return results

  return run_sweep(config, workdir, [
      Cell(cell_name(rule, k), cell_dir(workdir, rule, k),
           functools.partial(run_cell, config, workdir, dataset, rule, k, image_shape), length)
      for rule, k in cells(config)], assemble)


def _pairs(depth):
  """Each CLAIMS entry with its two cells (rule, k) for a ladder of `depth`: 'L' made the
  depth, 'each' one pair per trained rung k = 1..depth; pairs beyond the depth left out."""
  for ids, claim, a, b, signs in CLAIMS:
    for rung in range(1, depth + 1) if 'each' in (a[1], b[1]) else (None,):
      pair = [(rule, {'L': depth, 'each': rung}.get(k, k)) for rule, k in (a, b)]
      if max(pair[0][1], pair[1][1]) <= depth:
        yield ids, claim, signs, *pair


def seed_stats(config, results):
  """stats.json: every finished cell's per-seed accuracy with its summary, and each of the
  note's comparisons (CLAIMS) between cells of this sweep: both sides' per-seed values, the
  paired statistics and the verdict, or why it was not measured."""
  depth = config.model.depth
  cells_out = {name: {'seeds': c['seeds'], 'acc': c['acc'], **stats.summarize(c['acc'])}
               for name, c in results['cells'].items() if 'acc' in c}
  reference = REFERENCE.get((config.model.width, depth), {})
  comparisons = []
  deep = depth >= 3
  for ids, claim, signs, (rule_a, k_a), (rule_b, k_b) in _pairs(depth):
    sign = signs[0 if deep else 1]
    names = cell_name(rule_a, k_a), cell_name(rule_b, k_b)
    row = {'claim_id': ids[0 if deep else 1], 'claim': claim, 'a': names[0], 'b': names[1],
           'claimed_sign': sign,
           'reference_diff': (reference[rule_a][k_a][0] - reference[rule_b][k_b][0]
                              if rule_a in reference and rule_b in reference else None)}
    missing = [n for n in names if n not in cells_out]
    if missing:
      comparisons.append({**row, 'verdict': None,
                          'not_measured': f'no finished cell {", ".join(missing)} in this sweep'})
      continue
    va, vb = cells_out[names[0]], cells_out[names[1]]
    compared = stats.paired(va['acc'], vb['acc'])
    comparisons.append({**row, 'a_values': va['acc'], 'b_values': vb['acc'], **compared,
                        'verdict': stats.verdict(compared, sign)})
  return {'metric': 'acc1 (test accuracy after the last epoch)', 'dataset': config.data.name,
          'seeds': list(config.seeds), 'confidence': stats.CONFIDENCE, 'cells': cells_out,
          'comparisons': comparisons}


def claims_report(config, results_stats):
  """The note's conclusions against this sweep: ladder.md's second table."""
  rows = []
  for c in results_stats['comparisons']:
    ref = c['reference_diff']
    measured, verdict = stats.describe(c)
    rows.append({'claim': c['claim'], 'pair': f'{c["a"]} − {c["b"]}',
                 'ref': f'{ref:+.3f}' if ref is not None else '–', 'measured': measured,
                 'verdict': verdict})
  columns = [('the note\'s conclusion', 'claim', '{}'), ('a − b', 'pair', '{}'),
             ('the note (CIFAR-10)', 'ref', '{}'),
             ('measured: mean [95% CI], paired t-test p, n', 'measured', '{}'),
             ('verdict', 'verdict', '{}')]
  where = where_verdicts_apply(config.data.name, 'the note\'s CIFAR-10',
                               config.data.name == 'cifar10')
  return (f'\n## The note\'s conclusions on this sweep ({where})\n\n'
          f'Paired over seeds {list(config.seeds)} (n = {len(config.seeds)}): supported = the 95% '
          'interval of a − b lies on the claimed side of 0, contradicted = on the other side, not '
          'distinguishable = it holds 0; below 3 seeds no verdict. Per-seed values: stats.json.'
          '\n\n' + markdown_table(rows, columns) + '\n')


def report(config, results, identity):
  d, depth = config.model.width, config.model.depth
  ks = sorted({c['k'] for c in results['cells'].values()})
  reference = REFERENCE.get((d, depth))
  rows = []
  for k in ks:
    row = {'k': str(k)}
    for rule in config.credit.rules:
      c = results['cells'].get(cell_name(rule, k))
      if c is None:
        row[rule] = '–'
      elif c.get('diverged_at_step') is not None:
        row[rule] = c['status']
      else:
        row[rule] = f'{c["mean"]:.3f} ± {c["std"]:.3f}'
        if c.get('best_mean') is not None:
          row[f'{rule}_best'] = f'{c["best_mean"]:.3f} (epoch {c["best_epoch"]:g})'
      if reference and rule in reference and k < len(reference[rule]):
        m, s = reference[rule][k]
        row[f'{rule}_ref'] = f'{m:.3f} ± {s:.3f}'
    rows.append(row)
  columns = [('k', 'k', '{}')]
  for rule in config.credit.rules:
    columns.append((rule, rule, '{}'))
    columns.append((f'{rule} best epoch', f'{rule}_best', '{}'))
    if reference and rule in reference:
      columns.append((f'{rule} (reference)', f'{rule}_ref', '{}'))
  title = (f'# Trainable-depth ladder: ResMLP d={d} L={depth} on {config.data.name}, '
           f'{config.train.epochs} epochs, seeds {list(config.seeds)}\n\n'
           'Test accuracy after the last epoch, mean ± sample std (ddof 1); "best epoch": the '
           'best evaluated epoch of the seeds\' mean. Reference columns: CIFAR-10, 100 epochs '
           '(docs/references.md).\n\n')
  ident = (f'\n\nFrozen-init identity check (one batch, mean over seeds): per-block ‖f‖/‖h‖ '
           f'{", ".join(f"{r:.3f}" for r in identity["block_ratio"]["mean"])} '
           '(reference ≈ 0.10); '
           f'‖h_L−h_0‖/‖h_0‖ {identity["stack_rel_change"]["mean"]:.3f} '
           '(reference 0.196 at L=4); '
           f'cos(h_L, h_0) {identity["stack_cos"]["mean"]:.3f} (reference 0.981 at L=4).\n')
  return title + markdown_table(rows, columns) + ident


def plot(config, results, results_stats, path):
  """Accuracy against k, one line per rule: the seeds' mean, with the 95% t-interval of the
  mean (seed_stats) as error bars (none with one seed)."""
  lines, diverged = [], []
  for rule in config.credit.rules:
    cells = [c for c in results['cells'].values() if c['rule'] == rule]
    pts = []
    for c in sorted((c for c in cells if 'mean' in c), key=lambda c: c['k']):
      ci = results_stats['cells'][cell_name(rule, c['k'])]['ci95']
      pts.append((c['k'], c['mean'], 0.0 if ci is None else (ci[1] - ci[0]) / 2))
    if pts:
      lines.append((rule, *zip(*pts)))
    diverged += [(c['k'], f'{rule}: {c["status"]}') for c in cells if 'mean' not in c]
  n = len(config.seeds)
  line_plot(path, lines, 'trainable blocks k (last k)',
            f'test accuracy: mean of {n} seeds' + (', bars: 95% t-interval' if n > 1 else ''),
            f'ResMLP d={config.model.width} L={config.model.depth} on {config.data.name}',
            xticks=range(config.model.depth + 1), diverged=diverged)
