"""A run's summary, printed for a person."""

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
