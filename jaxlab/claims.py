"""Which of the reference notes' conclusions hold: claims.md, assembled across workdirs.

    python -m jaxlab.claims WORKDIR [WORKDIR ...] [--out=claims.md]

Every conclusion the five reference notes draw (docs/references.md describes the notes) is one
entry of CLAIMS: its id, the note, the claim in a sentence, the note's own numbers, and either
the family whose sweeps measure it or why it cannot be measured yet. A sweep that measures
claims writes `stats.json` (per-seed values, and per claim the paired comparison over seeds
— over epochs for step times, exact for memory — with its verdict: jaxlab.metrics.stats);
this command reads every stats.json under the workdirs it is given and writes one page: each
claim with every measurement of it (the data set, n, the mean difference with its 95% interval
and p-value, the verdict), or the reason there is none. Verdicts on the embedded digits
concern digits, and the page says so.
"""

import json
import os
import sys

from jaxlab import checks
from jaxlab.io.figures import markdown_table
from jaxlab.io.writers import write_text
from jaxlab.metrics import stats
from jaxlab.reference_claims import CLAIMS, NOTES


def find_stats(workdirs):
  """Every stats.json under `workdirs` (sorted paths)."""
  found = []
  for root in workdirs:
    if not os.path.isdir(root):
      raise FileNotFoundError(f'{root} is not a directory: give the workdirs of finished sweeps')
    for dirpath, _, files in os.walk(root):
      if 'stats.json' in files:
        found.append(os.path.join(dirpath, 'stats.json'))
  return sorted(found)


def measurements(paths):
  """{claim id: [(stats.json path, data set, comparison)]} from the files at `paths`."""
  out = {}
  for path in paths:
    with open(path) as f:
      record = json.load(f)
    for comparison in record.get('comparisons', ()):
      if comparison.get('claim_id'):
        out.setdefault(comparison['claim_id'], []).append((path, record.get('dataset', '?'),
                                                           comparison))
  return out


def render(found, paths):
  """The claims.md page."""
  lines = ['# The reference notes\' conclusions, measured\n',
           'Each conclusion with every measurement of it in the workdirs read '
           f'({len(paths)} stats.json). A measurement is a paired comparison over seeds of '
           '`a − b` in the claimed direction: *supported* (the 95% t-interval lies on the '
           'claimed side of 0), *contradicted* (on the other side), *not distinguishable* (it '
           'holds 0); below three seeds there is no verdict. A step time (the seeds\' joint '
           'step) is compared over the two runs\' epochs by Welch\'s t-test, a peak memory '
           '(XLA\'s memory analysis, the same on every run) exactly. A verdict on a data set '
           'other than the note\'s concerns that data set only.\n']
  counts = {}
  for key, title in NOTES.items():
    rows = []
    for claim in (c for c in CLAIMS if c.note == key):
      got = found.get(claim.id, [])
      if not got:
        why = claim.why_not or (f'no stats.json of the {claim.measured_by} family in the '
                                'workdirs read')
        rows.append({'id': claim.id, 'claim': claim.text, 'numbers': claim.numbers,
                     'where': '–', 'measured': '–', 'verdict': f'not measured: {why}'})
        counts['not measured'] = counts.get('not measured', 0) + 1
        continue
      for path, dataset, comparison in got:
        measured, verdict = stats.describe(comparison, places=4)
        if comparison.get('a') and comparison.get('b'):  # which pair: a claim may have several
          metric = f', {comparison["metric"]}' if comparison.get('metric') else ''
          measured = f'{comparison["a"]} − {comparison["b"]}{metric}: {measured}'
        rows.append({'id': claim.id, 'claim': claim.text, 'numbers': claim.numbers,
                     'where': f'{dataset} ({os.path.dirname(path)})', 'measured': measured,
                     'verdict': verdict})
        kind = comparison.get('verdict') or ('not measured' if comparison.get('not_measured')
                                             else 'no verdict')
        counts[kind] = counts.get(kind, 0) + 1
    lines.append(f'\n## {title}\n')
    lines.append(markdown_table(rows, [
        ('id', 'id', '{}'), ('the note\'s conclusion', 'claim', '{}'),
        ('the note\'s numbers', 'numbers', '{}'), ('data set (workdir)', 'where', '{}'),
        ('measured: a − b [95% CI], p, n', 'measured', '{}'), ('verdict', 'verdict', '{}')]))
    lines.append('')
  lines.append('\nVerdicts: ' + ', '.join(f'{k} {v}' for k, v in sorted(counts.items())) + '.\n')
  return '\n'.join(lines)


def main(argv=None):
  parser = checks.ToolParser(prog='python -m jaxlab.claims', description=__doc__.split(
      '\n\n')[0])
  parser.add_argument('workdirs', nargs='+', help='workdirs of finished sweeps')
  parser.add_argument('--out', default='claims.md', help='the page to write (claims.md)')
  args = parser.parse_args(argv)

  def work():
    paths = find_stats(args.workdirs)
    text = render(measurements(paths), paths)
    write_text(args.out, text)
    print(text)
    print(f'written to {args.out}')

  return checks.run_tool(work, os.path.dirname(os.path.abspath(args.out)))


if __name__ == '__main__':
  sys.exit(main())
