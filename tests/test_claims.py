"""claims.md: every conclusion of the reference notes, measured where a sweep measures it."""

import json
import os

import numpy as np
import pytest
from scipy import stats as sp

from configs import hybrid as hybrid_config
from configs import ladder as ladder_config
from jaxlab import claims
from jaxlab.experiments import distributed, ladder, mhc, peft, peft_stats
from jaxlab.reference_claims import CLAIMS, NOTES


def test_every_claim_is_measured_or_says_why_not():
  ids = [c.id for c in CLAIMS]
  assert len(ids) == len(set(ids)) == 91
  assert {c.note for c in CLAIMS} == set(NOTES)
  for c in CLAIMS:
    assert c.text and c.numbers and bool(c.measured_by) != bool(c.why_not), c.id
  # The ladder measures exactly the claims the registry says it does.
  measured = {c.id for c in CLAIMS if c.measured_by == 'ladder'}
  assert measured == {i for entry in ladder.CLAIMS for i in entry[0] if i}
  # So does the PEFT sweep.
  assert {c.id for c in CLAIMS if c.measured_by == 'peft'} == {e[0] for e in peft_stats.CLAIMS}
  assert {c.id for c in CLAIMS if c.measured_by == 'mhc'} == {
      e[0] for e in mhc.WHD_CLAIMS + mhc.COSINE_CLAIMS}
  assert {c.id for c in CLAIMS if c.measured_by == 'distributed'} == {
      e[0] for e in distributed.CLAIMS}


@pytest.mark.parametrize('sweep', ['methods', 'freezing'])
def test_peft_stats_recomputed_from_the_per_seed_values(tmp_path, sweep):
  """A PEFT sweep's stats.json, recomputed independently (SciPy) from the per-seed values it
  holds: every run's summary, every comparison's paired test, the verdicts. The four methods'
  sweep tests the method claims; the selective-freezing sweep (hybrid.py:freezing) the freezing
  claims, its runs named as the variant names them."""
  rng = np.random.default_rng(0)
  seeds = (42, 43, 44, 45)
  c = hybrid_config.get_config('quick')
  if sweep == 'freezing':
    c.sweep.runs = hybrid_config.get_config('freezing').sweep.runs
    runs, own_claims = list(c.sweep.runs), peft_stats.FREEZING_CLAIMS
  else:
    runs, own_claims = [r['run'] for r in peft.REFERENCE], peft_stats.METHOD_CLAIMS
  # Its own claims, then the cost claims (step time, memory) about runs it has.
  cost = [e for e in peft_stats.COST_CLAIMS if e[3] in runs and e[4] in runs]
  expected_claims = (*own_claims, *cost)
  assert {e[0] for e in cost} == ({'peft5-3', 'peft5-4', 'peft5-5', 'peft5-6', 'peft5-9',
                                   'peft5-12'} if sweep == 'freezing' else
                                  {'peft4-10', 'peft4-11', 'peft4-12', 'peft4-13'})
  rows = []
  for i, run in enumerate(runs):
    acc = (0.9 - 0.01 * i + 0.005 * rng.standard_normal(len(seeds))).tolist()
    ece = (0.05 + 0.01 * i + 0.003 * rng.standard_normal(len(seeds))).tolist()
    # Step times per epoch (a different number of epochs per run: Welch's test is unpaired);
    # memory one deterministic figure, two runs alike to check the "same memory" claim.
    steps = (0.5 + 0.02 * i + 0.01 * rng.standard_normal(8 + i % 3)).tolist()
    rows.append(dict(run=run, trainable_params=1000 + i,
                     seeds=list(seeds), acc1=float(np.mean(acc)), acc1_per_seed=acc,
                     acc1_best=float(np.mean(acc)), best_epoch=1, ece=float(np.mean(ece)),
                     ece_per_seed=ece, ece_per_batch=float(np.mean(ece)),
                     ece_per_batch_per_seed=ece, nll=1.0, nll_per_seed=[1.0] * len(seeds),
                     wall_step_time_s=float(np.mean(steps)), wall_step_time_s_per_epoch=steps,
                     peak_mem_bytes=6_000_000 - 1000 * min(i, 1) * (i % 2)))
  c.seeds = seeds
  peft.write_report(str(tmp_path), rows, c, echo=False)
  record = json.load(open(tmp_path / 'stats.json'))
  assert record['seeds'] == list(seeds) and record['dataset'] == 'digits'
  for row in rows:
    got = record['arms'][row['run']]['acc1']
    values = np.array(row['acc1_per_seed'])
    half = sp.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    assert got['values'] == row['acc1_per_seed'] and got['n'] == len(seeds)
    assert got['mean'] == pytest.approx(values.mean(), rel=1e-12)
    assert got['std'] == pytest.approx(values.std(ddof=1), rel=1e-12)
    assert got['ci95'] == pytest.approx([values.mean() - half, values.mean() + half], rel=1e-9)
  assert len(record['comparisons']) == len(expected_claims)
  by_run = {r['run']: r for r in rows}
  for comp, (claim_id, _, metric, a, b, sign) in zip(record['comparisons'], expected_claims):
    metric = 'ece_per_batch' if metric == 'ece' else metric
    assert (comp['claim_id'], comp['metric'], comp['a'], comp['b']) == (claim_id, metric, a, b)
    if metric == peft_stats.MEMORY:  # deterministic: the exact difference, no spread
      diff = by_run[a][metric] - by_run[b][metric]
      assert comp['test'] == 'exact' and comp['a_values'] == [by_run[a][metric]]
      low = high = diff
      assert comp['ci95'] == [diff, diff] and comp['p_value'] is None
    elif metric == peft_stats.STEP:  # per epoch, unpaired: Welch's t-test
      va, vb = (np.array(by_run[x][f'{metric}_per_epoch']) for x in (a, b))
      welch = sp.ttest_ind(va, vb, equal_var=False)
      low, high = welch.confidence_interval(0.95)
      assert comp['test'] == 'welch' and comp['n'] == [len(va), len(vb)]
      assert comp['a_values'] == va.tolist() and comp['b_values'] == vb.tolist()
      assert comp['ci95'] == pytest.approx([low, high], rel=1e-9)
      assert comp['p_value'] == pytest.approx(welch.pvalue, rel=1e-9)
    else:
      va, vb = (np.array(by_run[x][f'{metric}_per_seed']) for x in (a, b))
      diff = va - vb
      half = sp.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))
      low, high = diff.mean() - half, diff.mean() + half
      assert comp['a_values'] == va.tolist() and comp['b_values'] == vb.tolist()
      assert comp['ci95'] == pytest.approx([low, high], rel=1e-9)
      assert comp['p_value'] == pytest.approx(sp.ttest_rel(va, vb).pvalue, rel=1e-9)
    if sign == 0:
      expected = 'not distinguishable' if low <= 0 <= high else 'contradicted'
    else:
      expected = ('supported' if sign * low > 0 and sign * high > 0 else
                  'contradicted' if sign * low < 0 and sign * high < 0 else
                  'not distinguishable')
    assert comp['verdict'] == expected, comp
  table = open(tmp_path / 'table.md').read()
  assert '## Over the seeds' in table and 'the verdicts concern digits' in table
  assert f'| {runs[-1]} | 4 |' in table
  reference = peft.FREEZING_REFERENCE if sweep == 'freezing' else peft.REFERENCE
  ours = {r['run']: r for r in reference}
  for comp in record['comparisons']:  # the note's own difference where it quotes both runs
    metric = comp['metric']
    if comp['a'] in ours and comp['b'] in ours and metric in ours[comp['a']]:
      assert comp['reference_diff'] == pytest.approx(ours[comp['a']][metric]
                                                     - ours[comp['b']][metric])
  assert ('with selective freezing' in table) == (sweep == 'freezing')


def fake_ladder(workdir, width, depth, seeds, shift):
  """A finished ladder's stats.json from made-up per-seed accuracies."""
  c = ladder_config.get_config('quick')
  c.model.update(width=width, depth=depth)
  c.seeds = seeds
  rng = np.random.default_rng(depth)
  cells = {f'{rule}_k{k}': {'rule': rule, 'k': k, 'seeds': list(seeds),
                            'acc': (0.5 + slope * k + rng.normal(0, 0.003, len(seeds))).tolist()}
           for rule, slope in (('bp', shift), ('fa', 0.0), ('dfa', -shift))
           for k in range(depth + 1)}
  os.makedirs(workdir)
  with open(os.path.join(workdir, 'stats.json'), 'w') as f:
    json.dump(ladder.seed_stats(c, {'cells': cells}), f)


def test_claims_page_from_two_ladders(tmp_path, capsys):
  fake_ladder(tmp_path / 'deep' / 'sweep', 256, 4, (42, 123, 456), 0.05)
  fake_ladder(tmp_path / 'shallow', 512, 2, (42, 123), 0.05)  # two seeds: no verdicts
  out = tmp_path / 'claims.md'
  assert claims.main([str(tmp_path / 'deep'), str(tmp_path / 'shallow'), f'--out={out}']) == 0
  text = out.read_text()
  assert text in capsys.readouterr().out
  for c in CLAIMS:
    assert f'| {c.id} |' in text, c.id
  rows = {line.split(' | ')[0][2:]: line for line in text.splitlines()
          if line.startswith(('| ladder-', '| dist-'))}
  assert rows['ladder-1'].endswith('| supported |')  # BP full vs frozen, deep ladder
  assert 'digits' in rows['ladder-1'] and 'bp_k4 − bp_k0: +0.19' in rows['ladder-1']
  assert 'n too small: no verdict' in rows['ladder-2']  # the two-seed shallow ladder
  assert 'not measured: a consistency check' in rows['ladder-14']
  # ladder-4 (frozen DFA above every trained rung): a row per trained rung of each ladder.
  four = [line for line in text.splitlines() if line.startswith('| ladder-4 |')]
  assert [line.split(' | ')[4].split(':')[0] for line in four] == [
      f'dfa_k0 − dfa_k{k}' for k in (1, 2, 3, 4, 1, 2)]
  assert all(line.endswith('| supported |') for line in four[:4])  # the deep ladder, 3 seeds
  assert all('n too small' in line for line in four[4:])  # the shallow one, 2 seeds
  # A claim another family measures, with none of its workdirs read: said so.
  assert 'not measured: no stats.json of the distributed family' in rows['dist-6']


def test_a_missing_workdir_is_one_line(tmp_path, capsys):
  assert claims.main([str(tmp_path / 'nowhere')]) == 2
  assert 'is not a directory' in capsys.readouterr().err
