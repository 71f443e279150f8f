"""claims.md: every conclusion of the reference notes, measured where a sweep measures it."""

import json
import os

import numpy as np

from configs import ladder as ladder_config
from jaxlab import claims
from jaxlab.experiments import ladder
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
          if line.startswith('| ladder-')}
  assert rows['ladder-1'].endswith('| supported |')  # BP full vs frozen, deep ladder
  assert 'digits' in rows['ladder-1'] and '+0.2' in rows['ladder-1']
  assert 'n too small: no verdict' in rows['ladder-2']  # the two-seed shallow ladder
  assert 'not measured: a consistency check' in rows['ladder-14']
  assert 'not measured: this family runs one seed' in text  # the PEFT, mHC, LeNet claims


def test_a_missing_workdir_is_one_line(tmp_path, capsys):
  assert claims.main([str(tmp_path / 'nowhere')]) == 2
  assert 'is not a directory' in capsys.readouterr().err
