"""The residual-stream family end to end on a tiny ViT: arms, record, figures, comparison."""

import json
import os

import pytest

from configs import mhc as mhc_config
from jaxlab import experiments
from jaxlab.io import record


def tiny(arms, **hc):
  c = mhc_config.get_config('quick')
  c.progress = False
  c.mhc.arms = arms
  c.model.update(dict(width=16, depth=1, heads=2, mlp_dim=32, patch=8))
  c.model.hc.update(hc)
  c.augment.update(dict(randaugment_ops=0, erasing_p=0.0))
  # Batch 256: 5 steps an epoch on digits; snapshots after steps 3 and 5 for the average.
  c.train.update(dict(epochs=1, eval_every_epochs=1, batch_size=256, eval_batch_size=120))
  c.averaging.update(dict(every_steps=1, start_fraction=0.5, window=0))
  c.seeds = ()  # one model (the tests that train seeds name them)
  return c


@pytest.fixture(scope='module')
def two_arms(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('mhc'))
  experiments.run(tiny(('regular', 'mhc_static')), workdir)
  return workdir


def test_record_has_every_field_and_both_arms(two_arms):
  text = open(os.path.join(two_arms, 'record.md')).read()
  for field in ('Date-time', 'Dataset: digits', 'rotation up to 10°', 'Model: ViT',
                'Optimizer: adamw, base lr 0.003',
                'Schedule: warmup-hold-decay', 'Checkpoint averaging', 'mHC static: n = 4 streams',
                '10 Sinkhorn iterations, τ = 0.05', 'H_resᵀ·x', 'Git commit', '## Config',
                'latent-space baseline_cifar10_002',
                '## Hypothesis', '## Run status'):
    assert field in text, field
  rec = json.load(open(os.path.join(two_arms, 'record.json')))
  regular, static = rec['arms']
  assert (regular['arm'], static['arm']) == ('regular', 'mhc_static')
  # width 16, depth 1: two wrapped branches, each n² + 2n = 24 logits.
  assert static['extra_params'] == 48 and regular['extra_params'] == 0
  for row in (regular, static, regular['averaged']):
    assert 0 <= row['acc'] <= 1 and 0 <= row['knn_acc'] <= 1 and -1 <= row['silhouette'] <= 1
  # Step time and its overhead over the regular arm, for every arm, in the record and its page.
  assert regular['step_time_s'] > 0 and static['step_time_s'] > 0
  assert regular['step_overhead'] == 0 and static['step_overhead'] > -1
  assert regular['compile_time_s'] > 0
  results = text.split('## Results', 1)[1].split('\n\n')[1].splitlines()
  columns = [c.strip() for c in results[0].strip('|').split('|')]
  for line in results[2:4]:
    cells = dict(zip(columns, (c.strip() for c in line.strip('|').split('|'))))
    assert '–' not in (cells['step time (s)'], cells['step-time overhead']), line
  assert static['hres_row_error'] < 1e-3
  # The reference's static initialisation (−8 off the diagonal, τ = 0.05) leaves no gradient to the
  # H_res logits (exp(−160) underflows), so H_res stays exactly the identity; the record says so.
  assert static['hres_from_identity'] == 0.0 and 'never mix' in text
  for arm in ('regular', 'mhc_static'):
    with open(os.path.join(two_arms, arm, 'embeddings.png'), 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_step_time_of_an_arm_that_timed_no_step_comes_from_its_log(tmp_path):
  # An arm resumed at its last step times no step in this process: the record takes the
  # step-weighted mean of its logged train records instead of showing '–'.
  from jaxlab.experiments import mhc
  records = [dict(split='train', step=10, step_time_s=0.2), dict(split='test', step=10),
             dict(split='train_epoch', step=10, step_time_s=9.0),
             dict(split='train', step=40, step_time_s=0.1)]
  (tmp_path / 'metrics.jsonl').write_text('\n'.join(map(json.dumps, records)) + '\n')
  assert mhc.step_time({'avg_step_time_s': 0.3}, str(tmp_path)) == 0.3
  assert mhc.step_time({'avg_step_time_s': None}, str(tmp_path)) == pytest.approx(0.125)
  assert mhc.step_time({}, str(tmp_path / 'elsewhere')) is None


def test_compare_puts_runs_side_by_side(two_arms, tmp_path):
  out = tmp_path / 'compare.md'
  record.main([two_arms, two_arms, '--out', str(out)])
  text = out.read_text()
  assert 'run 1: regular' in text and 'run 2: mhc_static' in text
  assert 'run 1: regular (averaged' in text
  with pytest.raises(SystemExit):
    record.main([str(tmp_path)])  # no record.json there


def test_one_stream_warns_and_the_record_says_so(tmp_path):
  c = tiny(('mhc_static',), streams=1)
  c.train.epochs = 1
  with pytest.warns(UserWarning, match='n = 1'):
    experiments.run(c, str(tmp_path))
  assert '**Warning.** mHC with n = 1' in open(tmp_path / 'record.md').read()


def test_bad_arm_and_residual_are_errors_naming_the_choices():
  c = tiny(('regular', 'mhc'))
  with pytest.raises(ValueError, match='mhc_static'):
    experiments.validate(c)
  c = tiny(('regular',))
  c.model.hc.reduce = 'max'
  c.mhc.arms = ('mhc_dynamic',)
  with pytest.raises(ValueError, match="'sum' or 'mean'"):
    experiments.validate(c)
  with pytest.raises(ValueError, match='combine them with commas'):
    mhc_config.get_config('quick,wsd')


def test_seeds_trained_together_equal_each_seed_alone(tmp_path, monkeypatch, capsys):
  """config.seeds: each arm's seeds train together in one program, checkpoint averaging keeping
  one average per seed; each seed's accuracy, loss and embedding metrics, of the final and of
  the averaged parameters, are bit for bit those of that seed's run alone (a group of one);
  the record and stats.json give the mean ± std and the note's comparisons of the arms (two
  seeds: "n too small"). Where the seeds do not fit in a device's memory together, they run
  one after another: those runs are the seeds alone."""
  from jaxlab.data.datasets import load_dataset
  from jaxlab.experiments import mhc
  from jaxlab.train import loop
  c = tiny(('regular', 'mhc_dynamic'))
  c.seeds = (3, 5)
  workdir = tmp_path / 'sweep'
  experiments.run(c, str(workdir))
  together = {r['arm']: r for r in json.load(open(workdir / 'record.json'))['arms']}
  dynamic = together['mhc_dynamic']
  assert dynamic['seeds'] == [3, 5] and dynamic['averaged']['seeds'] == [3, 5]
  assert dynamic['acc'] == pytest.approx(sum(dynamic['acc_per_seed']) / 2)
  # The same arm on a device too small for its two seeds together (by XLA's memory analysis of
  # the compiled step; here a device of 1 byte): each seed alone, one after another.
  monkeypatch.setattr(loop, 'device_memory_bytes', lambda: 1)
  in_turn_dir = tmp_path / 'in_turn'
  in_turn = mhc.run_arm(c, str(in_turn_dir), load_dataset(c.data), 'mhc_dynamic')
  assert in_turn['seeds_run'] == 'one after another' and in_turn['seeds'] == [3, 5]
  assert 'the 2 seeds (3, 5) trained together need' in capsys.readouterr().err
  assert (in_turn_dir / 'embeddings.png').exists() and (in_turn_dir / 'arm.json').exists()
  for i, seed in enumerate((3, 5)):
    alone = json.load(open(in_turn_dir / f'seed_{seed}' / 'arm.json'))  # config.seeds = (s,)
    assert alone['seeds'] == [seed]
    assert alone['averaged']['arm'] == dynamic['averaged']['arm']  # the same snapshots
    for key in ('acc', 'loss', 'knn_acc', 'silhouette'):
      assert in_turn[f'{key}_per_seed'][i] == alone[key], key
      assert in_turn['averaged'][f'{key}_per_seed'][i] == alone['averaged'][key], key
      # Bit for bit: the seeds' loop compiles one seed's body alike for two seeds and for one.
      assert dynamic[f'{key}_per_seed'][i] == alone[f'{key}_per_seed'][0], key
      assert (dynamic['averaged'][f'{key}_per_seed'][i]
              == alone['averaged'][f'{key}_per_seed'][0]), key
  # A rerun keeps the decision: the seeds resume in turn (finished: nothing trains).
  again = mhc.run_arm(c, str(in_turn_dir), load_dataset(c.data), 'mhc_dynamic')
  err = capsys.readouterr()
  assert again['acc_per_seed'] == in_turn['acc_per_seed'] and 'note:' not in err.err
  assert err.out.count('finished earlier') == 2
  # The averaged parameters are not the final ones (the average is of two snapshots).
  assert dynamic['averaged']['loss_per_seed'] != dynamic['loss_per_seed']
  stats = json.load(open(workdir / 'stats.json'))
  assert stats['seeds'] == [3, 5] and set(stats['arms']) == {
      'regular', 'mhc_dynamic', 'regular (averaged)', 'mhc_dynamic (averaged)'}
  assert stats['arms']['mhc_dynamic']['acc']['values'] == dynamic['acc_per_seed']
  assert (stats['arms']['mhc_dynamic (averaged)']['loss']['values']
          == dynamic['averaged']['loss_per_seed'])
  assert {x['claim_id'] for x in stats['comparisons']} == {'mhc-7', 'mhc-8', 'mhc-9'}
  assert all(x.get('note') == 'n too small' and x['verdict'] is None
             for x in stats['comparisons'])
  text = open(workdir / 'record.md').read()
  assert '### Over the seeds' in text and 'the verdicts concern digits' in text
  assert 'mhc_dynamic (averaged)' in text.split('### Over the seeds', 1)[1]
