"""A run's summary, printed for a person, and its step time epoch by epoch."""

import os

from jaxlab.io.writers import read_jsonl

_ROWS = (
    ('eval split', 'eval_split', '{}'),
    ('acc@1', 'acc1', '{:.4f}'),
    ('NLL', 'nll', '{:.4f}'),
    ('ECE (15 bins)', 'ece', '{:.4f}'),
    ('ECE per batch', 'ece_per_batch', '{:.4f}'),
    ('trainable params', 'trainable_params', '{:,}'),
    ('avg step time', 'avg_step_time_s', '{:.4f} s'),
    ('wall step time', 'wall_step_time_s', '{:.4f} s'),
    ('throughput', 'throughput_img_s', '{:,.0f} img/s'),
    ('peak memory', 'peak_mem_bytes', '{:,} B'),
    ('memory source', 'peak_mem_source', '{}'),
    ('devices', 'num_devices', '{}'),
)


_OPTIONAL = ('ece_per_batch',)  # only where the run asked for it (train.ece_batch_size)


def format_summary(summary):
  lines = []
  for title, key, fmt in _ROWS:
    if key in _OPTIONAL and key not in summary:
      continue
    value = summary.get(key)
    lines.append(f'  {title:<18} {"n/a" if value is None else fmt.format(value)}')
  return '\n'.join(lines)


def print_summary(summary, workdir):
  print(f'\n{summary.get("dataset", "")} run written to {workdir}\n{format_summary(summary)}')


def epoch_step_times(workdir, key='wall_step_time_s'):
  """The step time (`key` of the 'train_epoch' records of workdir/metrics.jsonl: the loop's
  wall clock a step, by default) of every epoch but the first, which holds each compiled step's
  first execution: the samples a comparison of two runs' step times is made of."""
  records = [r for r in read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
             if r.get('split') == 'train_epoch' and r.get(key) is not None]
  return [r[key] for r in sorted(records, key=lambda r: r['step'])[1:]]
