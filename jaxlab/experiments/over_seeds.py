"""Arms trained on the same seeds, compared seed by seed: each arm's per-seed values of every
metric with mean ± std and the 95% t-interval, and a reference note's conclusions as paired
tests over the seeds with their verdicts (stats.json), and the tables that show them.

A family gives its rows (one per arm: `<metric>_per_seed` lists, or a single `<metric>` for
one seed) and its claims: (claim id in jaxlab.reference_claims, the claim, the metric, arm a,
arm b, the claimed sign of a − b: +1 / −1, or 0 for "about equal").

Seeds train together in one program (a leading seed axis, jaxlab.train.layouts.Replicas);
where they do not fit in a device's memory together (checks.SeedsDoNotFit, decided from the
compiled step's memory analysis before it runs), `together_or_in_turn` runs them one after
another, each a resumable run of its own in WORKDIR/seed_<s>/, and combines their results as a
run of seeds trained together reports them (`<metric>_per_seed`, mean, std), saying so
(`seeds_run`, `seeds_run_why`)."""

import copy
import os
import sys

import jax
import jax.numpy as jnp

from jaxlab import checks
from jaxlab.io.figures import markdown_table
from jaxlab.io.writers import read_json, write_json
from jaxlab.metrics import stats
from jaxlab.train.evaluate import seed_fields
from jaxlab.train.summary import epoch_step_times


def run_seeds(config):
  """The random seeds of each arm: config.seeds (trained together), or config.seed alone."""
  return tuple(config.get('seeds') or ()) or (config.seed,)


def seed_dir(workdir, seed):
  """Where a seed run in turn lives: WORKDIR/seed_<s>/ (`workdir` '' gives the relative name)."""
  return os.path.join(workdir, f'seed_{seed}')


def combined(results, seeds, keys):
  """One result of runs that differ only in their seed: the first's fields, and each of `keys`
  as seeds trained together report it (evaluate.seed_fields: the mean, `<key>_per_seed`,
  `<key>_std`)."""
  out = dict(results[0])
  out.update(seeds=list(seeds), seeds_run='one after another',
             seed_dirs=[seed_dir('', s) for s in seeds])
  for key in keys:
    values = [r.get(key) for r in results]
    if all(v is not None for v in values):
      out.update(seed_fields(key, values))
  return out


def in_turn(config, workdir, run, keys, why, combine=combined, result_file='summary.json',
            groups_of_one=False):
  """`run(config, workdir)` of each of config.seeds alone, in WORKDIR/seed_<s>/, one after
  another (`why`); their results combined (`combine(results, seeds, keys)`) with
  `seeds_run_why`, also written to WORKDIR/`result_file`. Each seed alone is config.seed = s
  with no seeds, or with `groups_of_one` config.seeds = (s,): the seeds' loop with one seed,
  whose numbers are the seed's in the group, bit for bit (Task.seed_loop)."""
  results = []
  for seed in config.seeds:
    c = copy.deepcopy(config)
    with c.unlocked():
      c.seed, c.seeds = seed, ((seed,) if groups_of_one else ())
    print(f'seed {seed} of {tuple(config.seeds)} (one after another: {why})')
    results.append(run(c, seed_dir(workdir, seed)))
  result = {**combine(results, config.seeds, keys), 'seeds_run_why': why}
  write_json(os.path.join(workdir, result_file), result)
  return result


IN_TURN_FILE = 'seeds_in_turn.json'


def together_or_in_turn(config, workdir, run, keys, combine=combined,
                        result_file='summary.json'):
  """`run(config, workdir)`, config.seeds trained together; where they do not fit in a device's
  memory together (checks.SeedsDoNotFit, raised before the first step), `in_turn`, each seed
  a group of one (its numbers those it would have in the group, bit for bit). The decision is
  kept (WORKDIR/seeds_in_turn.json), so a rerun resumes the seeds in turn without
  compiling the joint step again."""
  kept = os.path.join(workdir, IN_TURN_FILE)
  if config.get('seeds') and os.path.exists(kept):
    why = read_json(kept, f'delete {kept} to try the seeds together again')['why']
    return in_turn(config, workdir, run, keys, why, combine, result_file, groups_of_one=True)
  try:
    return run(config, workdir)
  except checks.SeedsDoNotFit as e:
    why = f'{e.what}: the seeds run one after another'
    print(f'note: {why}', file=sys.stderr)
    write_json(kept, {'why': why, 'seeds': list(config.seeds)})
    return in_turn(config, workdir, run, keys, why, combine, result_file, groups_of_one=True)


def with_epoch_step_times(row, workdir):
  """`row` (a run's result in `workdir`) with 'wall_step_time_s_per_epoch': the loop's wall clock
  a step, epoch by epoch (train.summary.epoch_step_times; the seeds' joint step, or each seed's
  when they ran in turn), the samples of the step-time comparisons and spreads."""
  runs = ([seed_dir(workdir, s) for s in row['seeds']]
          if row.get('seeds_run') == 'one after another' else [workdir])
  return {**row, 'wall_step_time_s_per_epoch': [t for run in runs for t in epoch_step_times(run)]}


def stacked(trees):
  """Trees of equal structure stacked leaf by leaf on a new leading (seed) axis."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def per_seed(row, metric):
  """The arm's per-seed values of `metric` (one value for a one-seed run), or None."""
  if f'{metric}_per_seed' in row:
    return list(row[f'{metric}_per_seed'])
  return [row[metric]] if row.get(metric) is not None else None


def seed_stats(rows, key, metrics, claims, dataset, seeds, descriptions, reference=None,
               per_epoch=(), exact=()):
  """stats.json: each finished arm's (row[key]) per-seed values of every metric with their
  summary, and each claim compared between arms of this sweep: both sides' per-seed values, the
  paired statistics and the verdict, or why it was not measured. `reference`: {arm: {metric:
  value}}, the note's own numbers (for its difference); `descriptions`: {metric: what it is}.
  `per_epoch`: metrics measured per epoch rather than per seed (the step time of the seeds'
  joint step: row['<metric>_per_epoch']), compared by Welch's unpaired t-test; `exact`:
  deterministic metrics (one value, the same on every run: XLA's memory analysis), compared by
  their exact difference."""
  finished = {r[key]: r for r in rows if r.get('diverged_at_step') is None}
  arms = {}
  for name, row in finished.items():
    arms[name] = {'seeds': row.get('seeds', list(seeds))}
    for metric in metrics:
      values = per_seed(row, metric)
      if values is not None:
        arms[name][metric] = {'values': values, **stats.summarize(values)}
    for metric in per_epoch:
      if row.get(f'{metric}_per_epoch'):
        values = list(row[f'{metric}_per_epoch'])
        arms[name][metric] = {'over': 'epochs', 'values': values, **stats.summarize(values)}
    for metric in exact:
      if row.get(metric) is not None:
        arms[name][metric] = {'over': 'deterministic', 'values': [row[metric]],
                              **stats.summarize([row[metric]])}
  reference = reference or {}
  comparisons = []
  for claim_id, claim, metric, a, b, sign in claims:
    ref_a, ref_b = reference.get(a, {}).get(metric), reference.get(b, {}).get(metric)
    row = {'claim_id': claim_id, 'claim': claim, 'metric': metric, 'a': a, 'b': b,
           'claimed_sign': sign,
           'reference_diff': ref_a - ref_b if ref_a is not None and ref_b is not None else None}
    missing = [n for n in (a, b) if n not in arms]
    unrecorded = [n for n in (a, b) if n in arms and metric not in arms[n]]
    if missing or unrecorded:
      why = (f'no finished {", ".join(missing)} in this sweep' if missing else
             f'{", ".join(unrecorded)} recorded no {metric}')
      comparisons.append({**row, 'verdict': None, 'not_measured': why})
      continue
    va, vb = arms[a][metric]['values'], arms[b][metric]['values']
    compared = (stats.unpaired(va, vb) if metric in per_epoch else
                stats.exact(va[0], vb[0]) if metric in exact else stats.paired(va, vb))
    comparisons.append({**row, 'a_values': va, 'b_values': vb, **compared,
                        'verdict': stats.verdict(compared, sign)})
  return {'dataset': dataset, 'seeds': list(seeds), 'confidence': stats.CONFIDENCE,
          'metrics': {m: descriptions.get(m, m) for m in (*metrics, *per_epoch, *exact)},
          'arms': arms, 'comparisons': comparisons}


def shown(summary):
  """'mean ± std' of a stats.summarize result (the mean alone for one seed)."""
  if summary.get('std') is None:
    return f'{summary["mean"]:.4f}'
  return f'{summary["mean"]:.4f} ± {summary["std"]:.4f}'


def interval(summary):
  return '–' if summary.get('ci95') is None else \
      f'[{summary["ci95"][0]:.4f}, {summary["ci95"][1]:.4f}]'


def seeds_table(results_stats, metrics, first):
  """Each arm over the seeds: n, then per metric (name, title) mean ± std; the 95% t-interval
  of `first` (a metric name) beside it."""
  rows, columns = [], [('arm', 'arm', '{}'), ('n', 'n', '{}')]
  for name, arm in results_stats['arms'].items():
    row = {'arm': name, 'n': arm[first]['n'] if first in arm else 0,
           'ci': interval(arm[first]) if first in arm else '–'}
    for metric, _ in metrics:
      row[metric] = shown(arm[metric]) if metric in arm else '–'
    rows.append(row)
  for metric, title in metrics:
    columns.append((f'{title}: mean ± std', metric, '{}'))
    if metric == first:
      columns.append((f'{title} 95% CI', 'ci', '{}'))
  per_epoch = any(arm.get(metric, {}).get('over') == 'epochs'
                  for arm in results_stats['arms'].values() for metric, _ in metrics)
  return (markdown_table(rows, columns) + '\n\nmean ± sample std (ddof 1) over the n seeds; the '
          '95% CI is the t-interval of the mean.'
          + (' A step time is the seeds\' joint step: its mean ± std is over the run\'s epochs '
             '(the first, holding the first execution, left out).' if per_epoch else '') + '\n')


def where_verdicts_apply(measured_on, note_setting, is_note_setting):
  """Where a claims section's verdicts apply: the note's own setting (`note_setting`, e.g. "the
  note's CIFAR-10") when the sweep ran it, else what the sweep measured instead, saying that
  the verdicts concern that and not the note's setting."""
  if is_note_setting:
    return note_setting
  return f'{measured_on}, not {note_setting}: the verdicts concern {measured_on}'


def claims_report(results_stats, where, reference_title):
  """The note's conclusions tested on this sweep, as a markdown section. `where`: the data set
  and whether it is the note's; `reference_title`: the heading of the note's own column."""
  rows = []
  for c in results_stats['comparisons']:
    ref = c['reference_diff']
    measured, verdict = stats.describe(c, places=4)
    rows.append({'id': c['claim_id'], 'claim': c['claim'], 'pair': f'{c["a"]} − {c["b"]}',
                 'metric': c['metric'], 'ref': ('–' if ref is None else f'{ref:+,.0f}'
                                                if c.get('test') == 'exact' else f'{ref:+.4f}'),
                 'measured': measured, 'verdict': verdict})
  seeds = results_stats['seeds']
  tests = {c.get('test') for c in results_stats['comparisons']}
  costs = (' A step time is the seeds\' joint step, compared over the two runs\' epochs (the '
           'first, holding the first execution, left out) by Welch\'s t-test; a peak memory '
           'is XLA\'s memory analysis of the compiled step, the same on every run, compared '
           'exactly.' if tests & {'welch', 'exact'} else '')
  return (f'\n## The note\'s conclusions on this sweep ({where})\n\n'
          f'Paired over seeds {seeds} (n = {len(seeds)}; each seed\'s arms share the data '
          'order): supported = the 95% interval of a − b lies on the claimed side of 0, '
          'contradicted = on the other side, not distinguishable = it holds 0 (what a claim of '
          '"about equal" says; such a claim is contradicted when the interval excludes 0); '
          f'below 3 seeds no verdict.{costs} Per-seed values: stats.json.\n\n'
          + markdown_table(rows, [
              ('id', 'id', '{}'), ('the note\'s conclusion', 'claim', '{}'),
              ('a − b', 'pair', '{}'), ('metric', 'metric', '{}'),
              (reference_title, 'ref', '{}'),
              ('measured: mean [95% CI], paired t-test p, n', 'measured', '{}'),
              ('verdict', 'verdict', '{}')]) + '\n')
