"""Seeds in the distributed family: synchronous runs train their seeds together in one program,
a loop over the seeds (one after another in separate programs where they do not fit in memory
together), the local methods one after another;
an arms sweep over seeds writes stats.json with the note's SGDM-vs-AdamW conclusion as a paired
comparison."""

import json

import jax
import numpy as np
import pytest
from scipy import stats as sp

from configs import distributed as dist_config
from jaxlab import checks, experiments
from jaxlab.data.datasets import Dataset, load_dataset
from jaxlab.data.pipeline import Split
from jaxlab.experiments import distributed
from jaxlab.parallel.mesh import make_mesh

SEEDS = (0, 1, 2)


@pytest.fixture(name='small')
def _small(monkeypatch):
  """64 training and 32 test digits; every run on one device."""
  d = load_dataset(dist_config.get_config('quick').data)
  small = Dataset(name='digits', train=Split(d.train.images[:64], d.train.labels[:64]),
                  test=Split(d.test.images[:32], d.test.labels[:32]), num_classes=10,
                  eval_split='test')
  monkeypatch.setattr(distributed, 'load_dataset', lambda _: small)
  real_fit = distributed.fit
  monkeypatch.setattr(distributed, 'fit', lambda config, workdir, *a, **kw: real_fit(
      config, workdir, *a, mesh=make_mesh(jax.devices()[:1]), **kw))
  return small


def config(arms=(), seeds=SEEDS, method='none'):
  c = dist_config.get_config('quick')
  c.progress = False
  c.arms, c.seeds = arms, seeds
  c.local.update(method=method, workers=2, sync_every=2)
  c.train.update(batch_size=16, epochs=1, eval_batch_size=8, eval_every_epochs=1)
  c.checkpoint.every_steps = 4
  return c


def test_seeds_trained_together_equal_each_seed_alone(small, tmp_path):
  together = distributed.run(config(), str(tmp_path / 'together'))
  assert together['seeds'] == list(SEEDS)
  for i, seed in enumerate(SEEDS):
    c = config(seeds=())
    c.seed = seed
    alone = distributed.run(c, str(tmp_path / f'alone_{seed}'))
    assert alone['seeds'] == [seed]
    # The same model, step by step: accuracy, NLL and ECE bit-identical to the seed's own run
    # (the seeds' loop runs each seed's computation as its run alone does: Task.seed_loop).
    assert together['acc1_per_seed'][i] == alone['acc1'], seed
    assert together['nll_per_seed'][i] == alone['nll'], seed
    assert together['ece_per_seed'][i] == alone['ece'], seed
  # Each seed its own model: the seeds do not all end alike.
  assert len(set(together['nll_per_seed'])) == len(SEEDS)


def test_local_method_seeds_run_one_after_another_and_resume(small, tmp_path, capsys):
  c = config(seeds=(0, 1), method='local_sgd')
  summary = distributed.run(c, str(tmp_path))
  assert summary['seeds'] == [0, 1] and summary['seeds_run'] == 'one after another'
  for i, seed in enumerate((0, 1)):
    alone = json.load(open(tmp_path / f'seed_{seed}' / 'summary.json'))
    assert alone['seeds'] == [seed] and alone['workers'] == 2
    assert summary['acc1_per_seed'][i] == alone['acc1']
    assert summary['nll_per_seed'][i] == alone['nll']
  assert summary['nll'] == pytest.approx(np.mean(summary['nll_per_seed']), rel=1e-12)
  on_disk = json.load(open(tmp_path / 'summary.json'))
  assert on_disk['nll_per_seed'] == summary['nll_per_seed']
  capsys.readouterr()
  again = distributed.run(c, str(tmp_path))  # every seed finished: nothing trains again
  assert 'finished earlier' in capsys.readouterr().out
  assert again['nll_per_seed'] == summary['nll_per_seed']


def test_optimizer_arms_over_seeds_write_the_notes_comparison(small, tmp_path):
  c = config(arms=('sgdm', 'adamw'))
  distributed.run(c, str(tmp_path))
  for arm, recipe in distributed.OPTIMIZER_ARMS.items():
    summary = json.load(open(tmp_path / arm / 'summary.json'))
    assert summary['lr'] == recipe['lr'] and summary['seeds'] == list(SEEDS)
  record = json.load(open(tmp_path / 'stats.json'))
  assert record['seeds'] == list(SEEDS) and record['dataset'] == 'digits'
  (comp,) = record['comparisons']
  assert (comp['claim_id'], comp['a'], comp['b'], comp['metric']) == ('dist-6', 'sgdm', 'adamw',
                                                                        'acc1')
  assert comp['reference_diff'] == pytest.approx(0.5338 - 0.4594)
  # Recomputed independently from the per-seed values the file holds.
  va, vb = np.array(comp['a_values']), np.array(comp['b_values'])
  assert comp['a_values'] == record['arms']['sgdm']['acc1']['values']
  diff = va - vb
  if np.ptp(diff) > 0:
    half = sp.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))
    assert comp['ci95'] == pytest.approx([diff.mean() - half, diff.mean() + half], rel=1e-9)
    assert comp['p_value'] == pytest.approx(sp.ttest_rel(va, vb).pvalue, rel=1e-9)
  text = open(tmp_path / 'comparison.md').read()
  assert '# SGDM vs AdamW on digits' in text and '## Over the seeds' in text
  assert 'dist-6' in text and 'the verdicts concern digits test' in text


def test_bad_seed_and_arm_settings_are_refused():
  with pytest.raises(checks.BadInput, match='repeats a seed') as e:
    experiments.validate(config(seeds=(1, 1)), devices=1)
  assert e.value.where == '--config.seeds'
  with pytest.raises(checks.BadInput, match='would be ignored') as e:
    experiments.validate(config(arms=('sgdm', 'adamw')), {'optim.lr'}, devices=1)
  assert e.value.where == '--config.optim.lr'
  with pytest.raises(checks.BadInput, match='unknown arms'):
    experiments.validate(config(arms=('sgdm', 'rmsprop')), devices=1)


def test_seeds_that_do_not_fit_together_run_one_after_another(small, tmp_path, monkeypatch,
                                                              capsys):
  """A device too small for the seeds' vmapped step, by XLA's memory analysis of the compiled
  step (here: a device of 1 byte): the seeds run one after another, said on stderr and in
  summary.json; one seed alone is not checked (nothing to split)."""
  from jaxlab.train import loop
  monkeypatch.setattr(loop, 'device_memory_bytes', lambda: 1)
  summary = distributed.run(config(seeds=(0, 1)), str(tmp_path))
  assert summary['seeds'] == [0, 1] and summary['seeds_run'] == 'one after another'
  assert 'seeds (0, 1) trained together need' in summary['seeds_run_why']
  assert 'note: the 2 seeds (0, 1) trained together need' in capsys.readouterr().err
  for i, seed in enumerate((0, 1)):
    alone = json.load(open(tmp_path / f'seed_{seed}' / 'summary.json'))
    assert alone['seeds'] == [seed] and summary['acc1_per_seed'][i] == alone['acc1']
  # A rerun keeps the decision (seeds_in_turn.json): the seeds resume in turn, nothing trains.
  assert json.load(open(tmp_path / 'seeds_in_turn.json'))['seeds'] == [0, 1]
  again = distributed.run(config(seeds=(0, 1)), str(tmp_path))
  out = capsys.readouterr()
  assert out.out.count('finished earlier') == 2 and 'note:' not in out.err
  assert again['acc1_per_seed'] == summary['acc1_per_seed']


def test_a_family_without_seeds_in_turn_refuses_seeds_that_do_not_fit(tmp_path, monkeypatch):
  from jaxlab.train import loop
  from tests.test_faults import ladder_config  # one cell, two seeds
  monkeypatch.setattr(loop, 'device_memory_bytes', lambda: 1)
  with pytest.raises(checks.SeedsDoNotFit, match=r'more than the 1 B a device has') as e:
    experiments.run(ladder_config(steps=2), str(tmp_path))
  assert e.value.where == '--config.seeds' and '--config.seeds="(0,)"' in e.value.fix
  assert not (tmp_path / 'cells' / 'bp_k1' / 'checkpoints').exists()  # nothing trained
