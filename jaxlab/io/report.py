"""Tables and figures that put a sweep's results beside reference numbers."""

import math
import os


def _cell(value, fmt):
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return '–'
  if isinstance(value, str):
    return value
  return fmt.format(value)


def markdown_table(rows, columns):
  """A markdown table. columns: (title, key, format) triples; missing values print '–'."""
  head = '| ' + ' | '.join(title for title, _, _ in columns) + ' |'
  rule = '| ' + ' | '.join('---' if fmt == '{}' else '---:' for _, _, fmt in columns) + ' |'
  body = ['| ' + ' | '.join(_cell(row.get(key), fmt) for _, key, fmt in columns) + ' |'
          for row in rows]
  return '\n'.join([head, rule, *body])


def scatter_plot(path, points, xlabel, ylabel, title, logx=False):
  """Save a labelled scatter plot. points: (x, y, label) triples."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
  for x, y, label in points:
    ax.scatter([x], [y], s=40)
    ax.annotate(label, (x, y), textcoords='offset points', xytext=(5, 4), fontsize=8)
  if logx:
    ax.set_xscale('log')
  ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
  ax.grid(True, alpha=0.3)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path)
  plt.close(fig)
