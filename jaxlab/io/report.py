"""Tables and figures that put a sweep's results beside reference numbers."""

import math
import os

from jaxlab.io.writers import is_writer


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


def _figure():
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  return plt, *plt.subplots(figsize=(6, 4), dpi=120)


def _save(plt, fig, ax, path, xlabel, ylabel, title, logx):
  if logx:
    ax.set_xscale('log')
  ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
  ax.grid(True, alpha=0.3)
  fig.tight_layout()
  if is_writer():
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
  plt.close(fig)


def with_status(row, key):
  """`row` for a table: a diverged run shows its status ('diverged at step N') in place of its
  result `key`."""
  if row.get('diverged_at_step') is None:
    return row
  return {**row, key: row['status']}


def _mark_diverged(ax, diverged):
  """Red crosses on the x axis, each labelled with its status, for runs without a result."""
  if not diverged:
    return
  lo, hi = ax.get_ylim() if ax.has_data() else (0.0, 1.0)
  ax.set_ylim(lo, hi)  # the crosses sit on the x axis without moving it
  for i, (x, text) in enumerate(diverged):
    ax.scatter([x], [lo], marker='x', color='red', s=50, zorder=3, clip_on=False,
               label='diverged' if i == 0 else None)
    right = ax.transAxes.inverted().transform(ax.transData.transform((x, lo)))[0] > 0.5
    ax.annotate(text, (x, lo), textcoords='offset points', xytext=(-4 if right else 4, 5),
                ha='right' if right else 'left', fontsize=7, color='red')


def scatter_plot(path, points, xlabel, ylabel, title, logx=False, diverged=()):
  """Save a labelled scatter plot. points: (x, y, label) triples; diverged: (x, text) pairs."""
  plt, fig, ax = _figure()
  for x, y, label in points:
    ax.scatter([x], [y], s=40)
    ax.annotate(label, (x, y), textcoords='offset points', xytext=(5, 4), fontsize=8)
  _mark_diverged(ax, diverged)
  _save(plt, fig, ax, path, xlabel, ylabel, title, logx)


def line_plot(path, lines, xlabel, ylabel, title, logx=False, xticks=None, diverged=()):
  """Save one line per (label, xs, ys, yerr or None), with error bars where given;
  diverged: (x, text) pairs marked on the x axis."""
  plt, fig, ax = _figure()
  for label, xs, ys, yerr in lines:
    ax.errorbar(xs, ys, yerr=yerr, marker='o', capsize=3 if yerr is not None else 0, label=label)
  if xticks is not None:
    ax.set_xticks(xticks)
  _mark_diverged(ax, diverged)
  if lines or diverged:
    ax.legend(fontsize=7)
  _save(plt, fig, ax, path, xlabel, ylabel, title, logx)
