"""The trainable-depth ladder: frozen blocks, seeds in one program, resumable sweeps."""

import json

import jax
import numpy as np
import pytest

from configs import ladder as ladder_config
from jaxlab.data.datasets import Dataset, load_dataset
from jaxlab.data.pipeline import Split
from jaxlab.experiments import ladder
from jaxlab.parallel.mesh import make_mesh
from jaxlab.params import flatten
from jaxlab.train.loop import fit

SHAPE = (32, 32, 3)


@pytest.fixture(scope='module')
def digits():
  d = load_dataset(ladder_config.get_config('quick').data)
  return Dataset(name='digits', train=Split(d.train.images[:64], d.train.labels[:64]),
                 test=Split(d.test.images[:40], d.test.labels[:40]), num_classes=10,
                 eval_split='test')


def tiny(**kw):
  c = ladder_config.get_config('quick')
  c.progress = False
  c.model.update(width=16, depth=2)
  c.train.update(batch_size=16, epochs=2, eval_batch_size=8, steps_per_dispatch=2,
                 log_every_steps=4, eval_every_epochs=2)
  c.seeds = (1, 2)
  for k, v in kw.items():
    c[k] = v
  return c


def train(c, tmp_path, digits, rule, k, seeds):
  task = ladder.make_task(c, rule, k, seeds, SHAPE, 10)
  return fit(c, str(tmp_path), task, digits, mesh=make_mesh(jax.devices()[:1]))


def test_frozen_blocks_are_bit_identical_and_not_differentiated(tmp_path, digits):
  c = tiny()
  _, state = train(c, tmp_path, digits, 'fa', 1, (1, 2))
  assert 'blocks_0' not in state.params and 'blocks_1' in state.params
  assert set(state.frozen) == {'blocks_0'}
  init = [ladder.init_params(c, s, SHAPE, 10)['blocks_0'] for s in (1, 2)]
  for r in range(2):
    for path, leaf in flatten(init[r]).items():
      np.testing.assert_array_equal(np.asarray(flatten(state.frozen['blocks_0'])[path][r]), leaf)
  # The trainable block did move.
  moved = flatten(jax.device_get(state.params['blocks_1']))
  start = [flatten(ladder.init_params(c, s, SHAPE, 10)['blocks_1']) for s in (1, 2)]
  assert not np.allclose(moved['fc1/kernel'][0], start[0]['fc1/kernel'])


@pytest.mark.parametrize('rule', ['bp', 'fa', 'dfa'])
def test_seeds_together_equal_separate_runs_bit_for_bit(tmp_path, digits, rule):
  c = tiny()
  together, state = train(c, tmp_path / 'both', digits, rule, 2, (1, 2))
  for r, seed in enumerate((1, 2)):
    alone, single = train(c, tmp_path / f'seed{seed}', digits, rule, 2, (seed,))
    a, b = flatten(jax.device_get(state.params)), flatten(jax.device_get(single.params))
    for path in a:  # bit for bit: the seeds' loop compiles one seed's body alike for 2 and 1
      np.testing.assert_array_equal(a[path][r], b[path][0], err_msg=path)
    for metric in ('acc1', 'nll', 'ece'):
      assert together[f'{metric}_per_seed'][r] == alone[f'{metric}_per_seed'][0], metric


def test_sweep_resumes_without_recomputing_finished_cells(tmp_path, digits, monkeypatch):
  c = tiny()
  c.credit.rules = ('bp', 'fa')
  c.credit.ks = (0, 2)
  monkeypatch.setattr(ladder, 'load_dataset', lambda _: digits)
  calls = []
  real_fit = ladder.fit

  def crashing_fit(config, workdir, task, dataset, **kw):
    calls.append(workdir)
    if len(calls) == 3:
      raise KeyboardInterrupt('killed during the third cell')
    return real_fit(config, workdir, task, dataset, mesh=make_mesh(jax.devices()[:1]), **kw)

  monkeypatch.setattr(ladder, 'fit', crashing_fit)
  with pytest.raises(KeyboardInterrupt):
    ladder.run(c, str(tmp_path))
  done = json.load(open(tmp_path / 'ladder.json'))['cells']
  assert sorted(done) == ['bp_k0', 'bp_k2']

  calls.clear()
  monkeypatch.setattr(ladder, 'fit', lambda *a, **kw: (calls.append(a[1]), real_fit(
      *a, mesh=make_mesh(jax.devices()[:1]), **kw))[1])
  results = ladder.run(c, str(tmp_path))
  assert [p.rsplit('/', 1)[1] for p in calls] == ['fa_k0', 'fa_k2']
  assert sorted(results['cells']) == ['bp_k0', 'bp_k2', 'fa_k0', 'fa_k2']
  for name in ('ladder.md', 'ladder.png', 'identity_check.json'):
    assert (tmp_path / name).exists()
  table = (tmp_path / 'ladder.md').read_text()
  assert '| 2 |' in table and '±' in table


def test_identity_check_values(digits):
  c = tiny()
  out = ladder.identity_check(c, digits, SHAPE)
  assert len(out['block_ratio']['mean']) == 2
  # fc2 is scaled so that each branch adds about a tenth of the stream's norm at init.
  for r in out['block_ratio']['mean']:
    assert 0.05 < r < 0.2
  assert 0.9 < out['stack_cos']['mean'] <= 1.0


def test_a_diverged_cell_is_a_result_and_the_ladder_goes_on(tmp_path, digits, monkeypatch):
  from jaxlab.train.guards import DivergenceError, SweepDivergedError
  c = tiny()
  c.credit.rules = ('bp', 'fa')
  c.credit.ks = (1,)
  monkeypatch.setattr(ladder, 'load_dataset', lambda _: digits)

  def fake_fit(config, workdir, task, dataset, summary_extra):
    if summary_extra['rule'] == 'fa':
      raise DivergenceError(5, 'loss', 4, workdir, 'lower optim.lr')
    return {'acc1_per_seed': [0.5, 0.7], 'acc1': 0.6, 'acc1_std': 0.1414, 'acc1_best': 0.65,
            'best_epoch': 1, 'avg_step_time_s': 0.01}, None

  monkeypatch.setattr(ladder, 'fit', fake_fit)
  results = ladder.run(c, str(tmp_path / 'some'))
  assert results['cells']['fa_k1']['status'] == 'diverged at step 5'
  assert results['cells']['bp_k1']['mean'] == 0.6
  table = (tmp_path / 'some' / 'ladder.md').read_text()
  assert '| 1 | 0.600 ± 0.141 | 0.650 (epoch 1) |' in table and 'diverged at step 5' in table
  assert (tmp_path / 'some' / 'ladder.png').exists()
  c.credit.rules = ('fa',)  # every cell diverged: the sweep as a whole fails, naming the step
  with pytest.raises(SweepDivergedError, match='fa_k1: non-finite loss at step 5'):
    ladder.run(c, str(tmp_path / 'all'))


def test_stats_json_recomputed_independently_and_the_claims_table(tmp_path):
  from scipy import stats as sp  # pylint: disable=g-import-not-at-top
  c = ladder_config.get_config('quick')  # digits
  c.model.update(width=256, depth=4)  # the note's primary configuration: its numbers appear
  rng = np.random.default_rng(1)
  cells = {}
  for rule, base, slope in (('bp', 0.40, 0.05), ('fa', 0.36, 0.01), ('dfa', 0.35, -0.01)):
    for k in range(5):
      cells[f'{rule}_k{k}'] = {'rule': rule, 'k': k, 'seeds': [42, 123, 456],
                               'acc': (base + slope * k + rng.normal(0, 0.004, 3)).tolist()}
  cells['fa_k4'] = {'rule': 'fa', 'k': 4, 'status': 'diverged at step 7', 'diverged_at_step': 7}
  out = json.loads(json.dumps(ladder.seed_stats(c, {'cells': cells})))  # as stats.json holds it
  assert 'fa_k4' not in out['cells']
  for name, cell in out['cells'].items():
    acc = np.array(cells[name]['acc'])
    assert cell['mean'] == pytest.approx(acc.mean()) and cell['n'] == 3
    assert cell['std'] == pytest.approx(acc.std(ddof=1))
    assert cell['ci95'] == pytest.approx(list(sp.t.interval(0.95, 2, acc.mean(), sp.sem(acc))))
  by_pair = {(r['a'], r['b']): r for r in out['comparisons']}
  # One pair per claim, and ladder-4's frozen DFA rung against each of the 4 trained ones.
  assert len(by_pair) == len(ladder.CLAIMS) - 1 + 4
  each = [r for r in out['comparisons'] if r['claim_id'] == 'ladder-4']
  assert [(r['a'], r['b']) for r in each] == [('dfa_k0', f'dfa_k{k}') for k in (1, 2, 3, 4)]
  assert each[0]['reference_diff'] == pytest.approx(0.349 - 0.244)  # the note's d=256 ladder
  # Made-up DFA falls 0.01 a rung: k0 − k1 = +0.01 with noise 0.004 is not yet certain at n = 3;
  # k0 − k4 = +0.04 is.
  assert each[-1]['verdict'] == 'supported' and each[-1]['claimed_sign'] == 1
  assert by_pair[('bp_k4', 'bp_k0')]['claim_id'] == 'ladder-1'  # the deep ladder's claims
  assert by_pair[('fa_k1', 'fa_k2')]['claim_id'] == 'ladder-11'
  bp = by_pair[('bp_k4', 'bp_k0')]
  a, b = np.array(bp['a_values']), np.array(bp['b_values'])
  assert bp['a_values'] == cells['bp_k4']['acc'] and bp['b_values'] == cells['bp_k0']['acc']
  assert bp['mean_diff'] == pytest.approx((a - b).mean())
  assert bp['p_value'] == pytest.approx(sp.ttest_rel(a, b).pvalue, rel=1e-9)
  assert bp['reference_diff'] == pytest.approx(0.617 - 0.389)
  assert bp['verdict'] == 'supported'  # +0.20 with noise 0.004
  assert by_pair[('dfa_k4', 'dfa_k0')]['verdict'] == 'supported'  # claimed −, measured −0.04
  assert by_pair[('fa_k4', 'fa_k0')]['verdict'] is None
  assert 'fa_k4' in by_pair[('fa_k4', 'fa_k0')]['not_measured']
  text = ladder.claims_report(c, out)
  assert 'the verdicts concern digits' in text and '+0.228' in text
  assert 'not measured: no finished cell fa_k4' in text
  finished = {n: {**v, 'mean': float(np.mean(v['acc']))} if 'acc' in v else v
              for n, v in cells.items()}
  ladder.plot(c, {'cells': finished}, out, tmp_path / 'ladder.png')  # bars: 95% t-intervals
  assert (tmp_path / 'ladder.png').stat().st_size > 0
  two = ladder.seed_stats(c, {'cells': {n: {**v, 'acc': v['acc'][:2], 'seeds': [42, 123]}
                                        for n, v in cells.items() if 'acc' in v}})
  assert {r['note'] for r in two['comparisons'] if 'note' in r} == {'n too small'}
