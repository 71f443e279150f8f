"""The PEFT sweep over seeds (jaxlab.experiments.over_seeds): the metrics it summarises and
the reference notes' conclusions about the four methods and about selective freezing, as
paired tests over the seeds, and about their cost, over epochs (step time) or exactly (memory)
(a sweep tests those whose two runs it has).

Every method of a sweep trains on the same seeds (config.seeds), so the seed-s runs of two
methods share their data order and augmentation: a comparison pairs them seed by seed."""

from jaxlab.experiments import over_seeds

DEEP, PARALLEL = 'hybrid_layerwise/deep_lora', 'hybrid_parallel'
# The selective-freezing runs of deep_lora (jaxlab.peft.methods.freezing_fields names them).
WARMUP, ALT50 = f'{DEEP}@warmup_lora200', f'{DEEP}@alt50'
ALTS = tuple(f'{DEEP}@alt{k}' for k in (25, 50, 100))
WARMUP_ALT, NORM_WARMUPS = f'{DEEP}@warmup_lora200+alt25', (f'{DEEP}@warmup_norm200',
                                                          f'{DEEP}@warmup_both100')
FREEZING_RUNS = (DEEP, WARMUP, *NORM_WARMUPS, *ALTS, f'{DEEP}@alt50_norm_first', WARMUP_ALT)
# The metrics each run reports per seed (summary.json '<metric>_per_seed').
METRICS = ('acc1', 'nll', 'ece', 'ece_per_batch')
# The reference note's conclusions about the four methods, each as paired comparisons of two
# runs (claim id in jaxlab.reference_claims, the claim, the metric, run a, run b, the claimed
# sign of a − b: +1 / −1, or 0 for "about equal"). Accuracy is the final epoch's; calibration
# the per-batch ECE the note reported (the global ECE where the run has none).
METHOD_CLAIMS = (
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
# The selective-freezing note's conclusions (5 epochs of deep_lora), each against the baseline
# without freezing unless it says otherwise. "Neutral or slightly worse" is claimed as worse:
# a verdict "not distinguishable" then reads "neutral".
FREEZING_CLAIMS = (
    ('peft5-1', 'warm-up LoRA more accurate than the baseline', 'acc1', WARMUP, DEEP, +1),
    ('peft5-2', 'warm-up LoRA better calibrated than the baseline', 'ece', WARMUP, DEEP, -1),
    ('peft5-7', 'alternation K=50 better calibrated than the baseline', 'ece', ALT50, DEEP, -1),
    ('peft5-7', 'alternation K=50 better calibrated than warm-up LoRA', 'ece', ALT50, WARMUP, -1),
    ('peft5-8', 'alternation K=50 as accurate as the baseline (within ~0.1 pp)', 'acc1', ALT50,
     DEEP, 0),
    *(('peft5-10', f'alternation K={k} slightly less accurate than the baseline', 'acc1', run,
       DEEP, -1) for k, run in zip((25, 50, 100), ALTS)),
    *(('peft5-11', f'alternation K={k} better calibrated than the baseline', 'ece', run, DEEP, -1)
      for k, run in zip((25, 50, 100), ALTS)),
    ('peft5-13', 'warm-up LoRA + alternation K=25 better calibrated than the baseline', 'ece',
     WARMUP_ALT, DEEP, -1),
    ('peft5-14', 'warm-up LoRA + alternation K=25 slightly less accurate than the baseline',
     'acc1', WARMUP_ALT, DEEP, -1),
    *(('peft5-17', f'{name} no more accurate than the baseline', 'acc1', run, DEEP, -1)
      for name, run in zip(('warm-up Norm (200)', 'warm-up of both (100/100)'), NORM_WARMUPS)),
    *(('peft5-18', f'{name} no better calibrated than the baseline', 'ece', run, DEEP, +1)
      for name, run in zip(('warm-up Norm (200)', 'warm-up of both (100/100)'), NORM_WARMUPS)),
    ('peft5-20', 'alternation K=50 LoRA-first more accurate than Norm-first', 'acc1', ALT50,
     f'{DEEP}@alt50_norm_first', +1),
    ('peft5-23', 'alternation K=50 gives up some accuracy', 'acc1', ALT50, DEEP, -1),
    ('peft5-23', 'alternation K=50 banks calibration', 'ece', ALT50, DEEP, -1),
)
# The notes' conclusions about cost: step time (the loop's wall clock a step, as the notes'
# code timed it; the seeds' joint step, compared over the runs' epochs by Welch's t-test) and
# peak memory (XLA's memory analysis of the compiled step: deterministic, compared exactly).
# "More throughput" is a shorter step at the same batch.
STEP, MEMORY = 'wall_step_time_s', 'peak_mem_bytes'
OTHERS = ((DEEP, 'deep_lora'), (PARALLEL, 'the parallel hybrid'), ('lora', 'LoRA-only'))
COST_CLAIMS = (
    ('peft4-10', "deep_lora's step shorter than the parallel hybrid's (~22%)", STEP, DEEP,
     PARALLEL, -1),
    *(('peft4-11', f'Norm-only a shorter step than {name}', STEP, 'norm', run, -1)
      for run, name in OTHERS),
    ('peft4-12', 'deep_lora less peak memory than the parallel hybrid', MEMORY, DEEP, PARALLEL,
     -1),
    *(('peft4-13', f'Norm-only less peak memory than {name}', MEMORY, 'norm', run, -1)
      for run, name in OTHERS),
    ('peft5-3', 'warm-up LoRA the same step time as the baseline', STEP, WARMUP, DEEP, 0),
    ('peft5-4', 'warm-up LoRA the same peak memory as the baseline', MEMORY, WARMUP, DEEP, 0),
    ('peft5-5', 'alternation K=50 a shorter step than the baseline (~19% more throughput)',
     STEP, ALT50, DEEP, -1),
    ('peft5-6', 'alternation K=50 less peak memory than the baseline (~13%)', MEMORY, ALT50,
     DEEP, -1),
    *(('peft5-9', f'alternation K={k} a shorter step than the baseline', STEP, run, DEEP, -1)
      for k, run in zip((25, 50, 100), ALTS)),
    *(('peft5-9', f'alternation K={k} less peak memory than the baseline', MEMORY, run, DEEP, -1)
      for k, run in zip((25, 50, 100), ALTS)),
    ('peft5-12', 'warm-up LoRA + alternation K=25 a shorter step than the baseline', STEP,
     WARMUP_ALT, DEEP, -1),
    ('peft5-12', 'warm-up LoRA + alternation K=25 less peak memory than the baseline', MEMORY,
     WARMUP_ALT, DEEP, -1),
)
CLAIMS = METHOD_CLAIMS + FREEZING_CLAIMS + COST_CLAIMS


DESCRIPTIONS = {'acc1': 'test accuracy after the last epoch', 'nll': 'test NLL',
                'ece': 'global ECE over the test set (15 bins)',
                'ece_per_batch': 'mean of the ECEs of test batches (the note\'s ECE)',
                STEP: ('the loop\'s wall clock a step of the seeds\' joint step, each epoch but '
                       'the first (values: per epoch)'),
                MEMORY: ('XLA\'s memory analysis of the compiled training step (the seeds\' '
                         'joint step): the same on every run')}


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
  runs = {r['run'] for r in rows}  # a sweep tests the claims about runs it has
  claims = [(i, text, ece if m == 'ece' else m, a, b, sign) for i, text, m, a, b, sign in CLAIMS
            if a in runs and b in runs]
  return over_seeds.seed_stats(rows, 'run', METRICS, claims, dataset, seeds, DESCRIPTIONS,
                               {r['run']: r for r in reference}, per_epoch=(STEP,),
                               exact=(MEMORY,))


def seeds_table(results_stats):
  """Each run's accuracy and calibration over the seeds, and its step time over the epochs."""
  return over_seeds.seeds_table(results_stats, (('acc1', 'Acc@1 (final)'), ('ece', 'ECE'),
                                                ('ece_per_batch', 'ECE per batch'),
                                                (STEP, 'wall step time (s) over epochs')), 'acc1')


def claims_report(results_stats, dataset):
  """The note's conclusions against this sweep: table.md's claims section."""
  where = over_seeds.where_verdicts_apply(dataset, 'the note\'s CIFAR-100', dataset == 'cifar100')
  return over_seeds.claims_report(results_stats, where, 'the note (one run)')
