"""Experiment records: the markdown page a run leaves behind, filled in from the run itself.

A run writes `record.json` (the facts) and `record.md` (the same facts for a
person): date-time, data set, model, optimizer and base learning rate,
schedule, each arm's residual kind, the results table beside the reference run's
reference rows, the git commit and the full config. Several runs go side by
side in one page with

    python -m jaxlab.io.record RUN_DIR RUN_DIR [...] [--out=compare.md]
"""

import datetime
import json
import os
import sys

from jaxlab import checks
from jaxlab.io import provenance
from jaxlab.io.figures import markdown_table, with_status
from jaxlab.io.writers import read_json, write_json, write_text

RESULT_COLUMNS = (
    ('arm', 'arm', '{}'),
    ('residual', 'residual', '{}'),
    ('test/loss', 'loss', '{:.4f}'),
    ('test/acc', 'acc', '{:.4f}'),
    ('test/acc (best epoch)', 'acc_best', '{:.4f}'),
    ('test/knn_acc', 'knn_acc', '{:.4f}'),
    ('test/silhouette', 'silhouette', '{:.4f}'),
    ('params', 'params', '{:,}'),
    ('extra params', 'extra_params', '{:+,}'),
    ('step time (s)', 'step_time_s', '{:.4f}'),
    ('step-time overhead', 'step_overhead', '{:+.1%}'),
    ('compile (s)', 'compile_time_s', '{:.1f}'),
)

# The columns of the averaged-parameter rows and of the reference rows.
SUMMARY_COLUMNS = tuple(c for c in RESULT_COLUMNS
                        if c[1] in ('arm', 'residual', 'loss', 'acc', 'knn_acc', 'silhouette'))


def git_commit():
  """The commit of the checkout jaxlab runs from, with '-dirty' when tracked files have
  uncommitted changes; 'unknown' when it is not a git checkout (an installed package)."""
  state = provenance.git_state()
  if state is None:
    return 'unknown'
  return state['commit'] + ('-dirty' if state['dirty'] else '')


def now():
  return datetime.datetime.now().astimezone().isoformat(timespec='seconds')


def render(record, reference=None):
  """The markdown page of one record (a dict as `write` stores it)."""
  lines = [f'# {record["title"]}', '', '## Basic details', '']
  for key, title in (('datetime', 'Date-time'), ('dataset', 'Dataset'), ('model', 'Model'),
                     ('optimizer', 'Optimizer'), ('schedule', 'Schedule'),
                     ('averaging', 'Checkpoint averaging'), ('augmentation', 'Augmentation'),
                     ('precision', 'Precision'), ('workdir', 'Run directory'),
                     ('command', 'Command'), ('git_commit', 'Git commit')):
    if record.get(key):
      lines.append(f'- {title}: {record[key]}')
  lines += ['', '### Arms', '']
  lines += [f'- {row["arm"]}: {row["residual"]}' for row in record['arms']]
  for warning in record.get('warnings', ()):
    lines += ['', f'> **Warning.** {warning}']
  lines += ['', '## Results', '',
            markdown_table([with_status(r, 'acc') for r in record['arms']], RESULT_COLUMNS)]
  averaged = [r['averaged'] for r in record['arms'] if r.get('averaged')]
  if averaged:
    lines += ['', 'With checkpoint averaging (' + record.get('averaging', '') + '):', '',
              markdown_table(averaged, SUMMARY_COLUMNS)]
  if record.get('over_seeds'):  # markdown: the arms over their seeds, the note's conclusions
    lines += ['', record['over_seeds'].strip()]
  if record.get('notes'):
    lines += [''] + [f'- {n}' for n in record['notes']]
  if record.get('figures'):
    lines += ['', '### Embeddings', '']
    lines += [f'![{name}]({path})' for name, path in record['figures']]
  if reference:
    lines += ['', '## Reference (CIFAR-10, 200 epochs; docs/references.md)', '',
              markdown_table(reference, SUMMARY_COLUMNS)]
  # The reference's record template's sections that only the experimenter can write.
  for section in ('Hypothesis', 'Difference from the previous experiment',
                  'Observations / interpretation', 'Conclusion', 'Next steps', 'Run status'):
    lines += ['', f'## {section}', '', '_(for the experimenter to write)_']
  lines += ['', '## Config', '', '```json', json.dumps(record['config'], indent=2, sort_keys=True),
            '```', '']
  return '\n'.join(lines)


def write(workdir, record, reference=None):
  """workdir/record.json and workdir/record.md; returns the markdown."""
  write_json(os.path.join(workdir, 'record.json'), record)
  text = render(record, reference)
  write_text(os.path.join(workdir, 'record.md'), text)
  return text


def load(workdir):
  return read_json(os.path.join(workdir, 'record.json'))


def compare(workdirs):
  """One page with the records of several runs: their settings and one results table."""
  records = [load(w) for w in workdirs]
  rows = []
  settings = []
  for i, (w, rec) in enumerate(zip(workdirs, records), 1):
    run = f'run {i}'
    settings.append(dict(run=run, workdir=w, datetime=rec.get('datetime'),
                         dataset=rec.get('dataset'), schedule=rec.get('schedule'),
                         averaging=rec.get('averaging') or 'off', commit=rec.get('git_commit')))
    for arm in rec['arms']:
      rows.append({**arm, 'arm': f'{run}: {arm["arm"]}'})
      if arm.get('averaged'):
        rows.append({**arm['averaged'], 'arm': f'{run}: {arm["arm"]} (averaged)'})
  columns = tuple((k.replace('_', ' '), k, '{}') for k in settings[0])
  return '\n'.join([
      f'# Comparison of {len(records)} runs', '', f'Made {now()}.', '',
      markdown_table(settings, columns), '', '## Results', '',
      markdown_table(rows, RESULT_COLUMNS), ''])


def main(argv=None):
  parser = checks.ToolParser(
      prog='python -m jaxlab.io.record',
      description='Put the records (record.json) of two or more runs side by side.')
  parser.add_argument('workdirs', nargs='+', help='run directories holding record.json')
  parser.add_argument('--out', default='', help='write the page here (default: print it)')
  args = parser.parse_args(argv)
  missing = [w for w in args.workdirs if not os.path.exists(os.path.join(w, 'record.json'))]
  if missing:
    parser.error('no record.json in ' + ', '.join(missing) + ' (a finished run writes one)')

  def work():
    text = compare(args.workdirs)
    if args.out:
      write_text(args.out, text)
      print(f'wrote {args.out}')
    else:
      print(text)

  return checks.run_tool(work, os.path.dirname(os.path.abspath(args.out or '.')))


if __name__ == '__main__':
  sys.exit(main())
