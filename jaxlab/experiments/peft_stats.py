"""The PEFT sweep over seeds: per-method statistics, the reference note's comparisons of
methods as paired tests over the seeds (stats.json), and the table of those verdicts.

Every method of a sweep trains on the same seeds (config.seeds), so the seed-s runs of two
methods share their data order and augmentation: a comparison pairs them seed by seed."""

from jaxlab.io.figures import markdown_table
from jaxlab.metrics import stats

DEEP, PARALLEL = 'hybrid_layerwise/deep_lora', 'hybrid_parallel'
# The metrics each run reports per seed (summary.json '<metric>_per_seed').
METRICS = ('acc1', 'nll', 'ece', 'ece_per_batch')
# The reference note's conclusions about the four methods, each as paired comparisons of two
# runs (claim id in jaxlab.reference_claims, the claim, the metric, run a, run b, the claimed
# sign of a − b: +1 / −1, or 0 for "about equal"). Accuracy is the final epoch's; calibration
# the per-batch ECE the note reported (the global ECE where the run has none).
CLAIMS = (
    ('peft4-4', 'deep_lora as accurate as the parallel hybrid', 'acc1', DEEP, PARALLEL, 0),
    ('peft4-5', 'deep_lora as accurate as LoRA-only', 'acc1', DEEP, 'lora', 0),
    ('peft4-5', 'the parallel hybrid as accurate as LoRA-only', 'acc1', PARALLEL, 'lora', 0),
    ('peft4-6', 'Norm-only edges deep_lora', 'acc1', 'norm', DEEP, +1),
    ('peft4-6', 'Norm-only edges the parallel hybrid', 'acc1', 'norm', PARALLEL, +1),
    ('peft4-6', 'Norm-only edges LoRA-only', 'acc1', 'norm', 'lora', +1),
    ('peft4-14', 'Norm-only better calibrated than deep_lora', 'ece', 'norm', DEEP, -1),
    ('peft4-14', 'Norm-only better calibrated than the parallel hybrid', 'ece', 'norm',
     PARALLEL, -1),
    ('peft4-14', 'Norm-only better calibrated than LoRA-only', 'ece', 'norm', 'lora', -1),
    ('peft4-15', 'LoRA-only worse calibrated than deep_lora', 'ece', 'lora', DEEP, +1),
    ('peft4-15', 'LoRA-only worse calibrated than the parallel hybrid', 'ece', 'lora', PARALLEL,
     +1),
    ('peft4-16', 'deep_lora less well calibrated than Norm-only (between it and LoRA-only)',
     'ece', DEEP, 'norm', +1),
    ('peft4-16', 'the parallel hybrid less well calibrated than Norm-only (between it and '
     'LoRA-only)', 'ece', PARALLEL, 'norm', +1),
)


def per_seed(row, metric):
  """The run's per-seed values of `metric` (one value for a one-seed run), or None."""
  if f'{metric}_per_seed' in row:
    return list(row[f'{metric}_per_seed'])
  return [row[metric]] if row.get(metric) is not None else None


def ece_metric(rows):
  """'ece_per_batch' when every run reports it (as the note measured ECE), else 'ece'."""
  return 'ece_per_batch' if rows and all(r.get('ece_per_batch') is not None for r in rows) \
      else 'ece'


def seed_stats(rows, reference, dataset, seeds):
  """stats.json: each finished run's per-seed values of every metric with their summary, and
  each of the note's comparisons (CLAIMS) between runs of this sweep: both sides' per-seed
  values, the paired statistics and the verdict, or why it was not measured. `reference`:
  the note's rows (for its own difference)."""
  finished = {r['run']: r for r in rows if r.get('diverged_at_step') is None}
  runs = {}
  for name, row in finished.items():
    runs[name] = {'seeds': row.get('seeds', list(seeds))}
    for metric in METRICS:
      values = per_seed(row, metric)
      if values is not None:
        runs[name][metric] = {'values': values, **stats.summarize(values)}
  ece = ece_metric(list(finished.values()))
  ref = {r['run']: r for r in reference}
  comparisons = []
  for claim_id, claim, metric, a, b, sign in CLAIMS:
    metric = ece if metric == 'ece' else metric
    row = {'claim_id': claim_id, 'claim': claim, 'metric': metric, 'a': a, 'b': b,
           'claimed_sign': sign,
           'reference_diff': (ref[a][metric] - ref[b][metric]
                              if a in ref and b in ref and metric in ref[a] else None)}
    missing = [n for n in (a, b) if n not in runs or metric not in runs[n]]
    if missing:
      comparisons.append({**row, 'verdict': None,
                          'not_measured': f'no finished run {", ".join(missing)} in this sweep'})
      continue
    va, vb = runs[a][metric]['values'], runs[b][metric]['values']
    compared = stats.paired(va, vb)
    comparisons.append({**row, 'a_values': va, 'b_values': vb, **compared,
                        'verdict': stats.verdict(compared, sign)})
  return {'dataset': dataset, 'seeds': list(seeds), 'confidence': stats.CONFIDENCE,
          'metrics': {'acc1': 'test accuracy after the last epoch', 'nll': 'test NLL',
                      'ece': 'global ECE over the test set (15 bins)',
                      'ece_per_batch': 'mean of the ECEs of test batches (the note\'s ECE)'},
          'runs': runs, 'comparisons': comparisons}


def shown(summary):
  """'mean ± std' of a stats.summarize result (the mean alone for one seed)."""
  if summary.get('std') is None:
    return f'{summary["mean"]:.4f}'
  return f'{summary["mean"]:.4f} ± {summary["std"]:.4f}'


def interval(summary):
  return '–' if summary.get('ci95') is None else \
      f'[{summary["ci95"][0]:.4f}, {summary["ci95"][1]:.4f}]'


def seeds_table(results_stats):
  """Each run's accuracy and calibration over the seeds: mean ± std, the 95% t-interval."""
  rows = []
  for name, run in results_stats['runs'].items():
    acc = run['acc1']
    row = {'run': name, 'n': acc['n'], 'acc': shown(acc), 'acc_ci': interval(acc)}
    for metric in ('ece', 'ece_per_batch'):
      row[metric] = shown(run[metric]) if metric in run else '–'
    rows.append(row)
  return markdown_table(rows, [
      ('run', 'run', '{}'), ('n', 'n', '{}'), ('Acc@1 (final): mean ± std', 'acc', '{}'),
      ('Acc@1 95% CI', 'acc_ci', '{}'), ('ECE: mean ± std', 'ece', '{}'),
      ('ECE per batch: mean ± std', 'ece_per_batch', '{}')])


def claims_report(results_stats, dataset):
  """The note's conclusions against this sweep: table.md's claims section."""
  rows = []
  for c in results_stats['comparisons']:
    ref = c['reference_diff']
    measured, verdict = stats.describe(c, places=4)
    rows.append({'id': c['claim_id'], 'claim': c['claim'], 'pair': f'{c["a"]} − {c["b"]}',
                 'metric': c['metric'], 'ref': f'{ref:+.4f}' if ref is not None else '–',
                 'measured': measured, 'verdict': verdict})
  where = ('CIFAR-100, the note\'s data set (the note: ViT-S/16)' if dataset == 'cifar100' else
           f'{dataset}, not the note\'s CIFAR-100: the verdicts concern {dataset}')
  seeds = results_stats['seeds']
  return (f'\n## The note\'s conclusions on this sweep ({where})\n\n'
          f'Paired over seeds {seeds} (n = {len(seeds)}; each seed\'s runs share the data '
          'order): supported = the 95% interval of a − b lies on the claimed side of 0, '
          'contradicted = on the other side, not distinguishable = it holds 0 (what a claim of '
          '"as accurate as" says; such a claim is contradicted when the interval excludes 0); '
          'below 3 seeds no verdict. Per-seed values: stats.json.\n\n'
          + markdown_table(rows, [
              ('id', 'id', '{}'), ('the note\'s conclusion', 'claim', '{}'),
              ('a − b', 'pair', '{}'), ('metric', 'metric', '{}'),
              ('the note (one run)', 'ref', '{}'),
              ('measured: mean [95% CI], paired t-test p, n', 'measured', '{}'),
              ('verdict', 'verdict', '{}')]) + '\n')
