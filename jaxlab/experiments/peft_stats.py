"""The PEFT sweep over seeds (jaxlab.experiments.over_seeds): the metrics it summarises and
the reference note's conclusions about the four methods, as paired tests over the seeds.

Every method of a sweep trains on the same seeds (config.seeds), so the seed-s runs of two
methods share their data order and augmentation: a comparison pairs them seed by seed."""

from jaxlab.experiments import over_seeds

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


DESCRIPTIONS = {'acc1': 'test accuracy after the last epoch', 'nll': 'test NLL',
                'ece': 'global ECE over the test set (15 bins)',
                'ece_per_batch': 'mean of the ECEs of test batches (the note\'s ECE)'}


def ece_metric(rows):
  """'ece_per_batch' when every run reports it (as the note measured ECE), else 'ece'."""
  return 'ece_per_batch' if rows and all(r.get('ece_per_batch') is not None for r in rows) \
      else 'ece'


def seed_stats(rows, reference, dataset, seeds):
  """stats.json of a PEFT sweep (over_seeds.seed_stats): the runs (rows keyed by 'run'),
  CLAIMS with calibration as the per-batch ECE where every run has it; `reference`: the note's
  rows."""
  finished = [r for r in rows if r.get('diverged_at_step') is None]
  ece = ece_metric(finished)
  claims = [(i, text, ece if m == 'ece' else m, a, b, sign) for i, text, m, a, b, sign in CLAIMS]
  return over_seeds.seed_stats(rows, 'run', METRICS, claims, dataset, seeds, DESCRIPTIONS,
                               {r['run']: r for r in reference})


def seeds_table(results_stats):
  """Each run's accuracy and calibration over the seeds."""
  return over_seeds.seeds_table(results_stats, (('acc1', 'Acc@1 (final)'), ('ece', 'ECE'),
                                                ('ece_per_batch', 'ECE per batch')), 'acc1')


def claims_report(results_stats, dataset):
  """The note's conclusions against this sweep: table.md's claims section."""
  where = over_seeds.where_verdicts_apply(dataset, 'the note\'s CIFAR-100', dataset == 'cifar100')
  return over_seeds.claims_report(results_stats, where, 'the note (one run)')
