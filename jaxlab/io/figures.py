"""Tables and figures that put a sweep's results beside reference numbers."""

import math
import os
import textwrap

import numpy as np

from jaxlab.io.writers import is_writer
from jaxlab.metrics.embedding import project_2d


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
  return plt, *plt.subplots(figsize=(6.4, 4.4), dpi=120)


def plain_number(value):
  """A tick label without exponents: 2,000 and 20,000; 0.003; 1.5."""
  if value >= 1000:
    return f'{value:,.0f}'
  return f'{value:g}'


def _log_ticks(ax, explicit=False):
  """Plain-number labels on a log x axis: majors at 1, 2, 5 × 10^k over up to three decades (1 ×
  10^k beyond), no labels on the minor ticks (matplotlib's default crowds 2×10³ 3×10³ ...)."""
  from matplotlib import ticker
  axis = ax.xaxis
  if not explicit:
    lo, hi = ax.get_xlim()
    decades = math.log10(hi / lo) if lo > 0 and hi > lo else 1.0
    subs = (1.0, 2.0, 5.0) if decades <= 3 else (1.0,)
    axis.set_major_locator(ticker.LogLocator(base=10, subs=subs))
  axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: plain_number(v)))
  axis.set_minor_formatter(ticker.NullFormatter())


def _finish(fig, ax, xlabel, ylabel, title, logx, xticks=None):
  """Axis titles, log scale with plain ticks, the (wrapped) title, the layout."""
  if logx:
    ax.set_xscale('log')
  if xticks is not None:
    ax.set_xticks(list(xticks))
  if logx:
    _log_ticks(ax, explicit=xticks is not None)
  ax.set(xlabel=xlabel, ylabel=ylabel)
  ax.set_title(textwrap.fill(title, 72), fontsize=10)
  ax.grid(True, alpha=0.3)
  fig.tight_layout()


def _write(plt, fig, path):
  if is_writer():
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
  plt.close(fig)


def _save(plt, fig, ax, path, xlabel, ylabel, title, logx, xticks=None):
  _finish(fig, ax, xlabel, ylabel, title, logx, xticks)
  _write(plt, fig, path)


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


# Where a point's label may go, in offset points from the point (dx, dy, ha, va), tried in
# order: beside it first, then above and below, then further out.
_LABEL_SPOTS = tuple((sx * dx, sy * dy, ha, va)
                     for dx, dy in ((7, 3), (7, 12), (0, 10), (7, 22), (0, 22), (14, 34))
                     for sy, va in ((1, 'bottom'), (-1, 'top'))
                     for sx, ha in ((1, 'left' if dx else 'center'),
                                    (-1, 'right' if dx else 'center')))


def _overlap(a, b):
  """Area shared by two display-space boxes."""
  w = min(a.x1, b.x1) - max(a.x0, b.x0)
  h = min(a.y1, b.y1) - max(a.y0, b.y0)
  return w * h if w > 0 and h > 0 else 0.0


def place_labels(fig, ax, points, colors, fontsize=8):
  """Annotate each (x, y, label) where its text overlaps no other text, no marker and stays
  inside the axes: the first free spot of _LABEL_SPOTS, else the least crowded one. A label
  set away from its point gets a thin leader line. Returns the annotations."""
  from matplotlib.transforms import Bbox
  renderer = fig.canvas.get_renderer()
  frame = ax.get_window_extent(renderer)
  taken = [t.get_window_extent(renderer) for t in ax.texts]  # e.g. the diverged runs' notes
  for x, y, _ in points:  # the markers themselves
    px, py = ax.transData.transform((x, y))
    taken.append(Bbox.from_extents(px - 5, py - 5, px + 5, py + 5))

  def cost(box):
    outside = ((max(frame.x0 - box.x0, 0) + max(box.x1 - frame.x1, 0)) * box.height
               + (max(frame.y0 - box.y0, 0) + max(box.y1 - frame.y1, 0)) * box.width)
    return 4 * outside + sum(_overlap(box, t) for t in taken)

  out = []
  for (x, y, label), color in zip(points, colors):
    best = None
    for dx, dy, ha, va in _LABEL_SPOTS:
      ann = ax.annotate(label, (x, y), textcoords='offset points', xytext=(dx, dy), ha=ha,
                        va=va, fontsize=fontsize, color=color)
      box = ann.get_window_extent(renderer).expanded(1.04, 1.15)
      ann.remove()
      c = cost(box)
      if best is None or c < best[0]:
        best = (c, box, (dx, dy, ha, va))
      if c == 0:
        break
    _, box, (dx, dy, ha, va) = best
    far = abs(dx) > 10 or abs(dy) > 15
    out.append(ax.annotate(
        label, (x, y), textcoords='offset points', xytext=(dx, dy), ha=ha, va=va,
        fontsize=fontsize, color=color,
        arrowprops=dict(arrowstyle='-', color=color, lw=0.6, shrinkA=0, shrinkB=4)
        if far else None))
    taken.append(box)
  return out


def draw_scatter(points, xlabel, ylabel, title, logx=False, diverged=(), intervals=None):
  """(plt, fig, ax, label annotations) of scatter_plot's figure, not yet saved."""
  plt, fig, ax = _figure()
  colors = [f'C{i % 10}' for i in range(len(points))]
  intervals = intervals or [None] * len(points)
  for (x, y, _), color, ci in zip(points, colors, intervals):
    ax.scatter([x], [y], s=40, color=color, zorder=3)
    if ci is not None:
      ax.errorbar([x], [y], yerr=[[y - ci[0]], [ci[1] - y]], color=color, capsize=3, zorder=2)
  if points:
    xs = [p[0] for p in points]
    ys = [p[1] for p in points] + [v for ci in intervals if ci is not None for v in ci]
    if logx:  # room for the labels: a fifth of the span (at least a quarter-decade) each side
      lo, hi = math.log10(min(xs)), math.log10(max(xs))
      pad = max(0.2 * (hi - lo), 0.25)
      ax.set_xlim(10 ** (lo - pad), 10 ** (hi + 1.6 * pad))
    else:
      span = (max(xs) - min(xs)) or abs(max(xs)) or 1.0
      ax.set_xlim(min(xs) - 0.2 * span, max(xs) + 0.35 * span)
    span = (max(ys) - min(ys)) or 0.05
    ax.set_ylim(min(ys) - 0.25 * span, max(ys) + 0.3 * span)
  _mark_diverged(ax, diverged)
  _finish(fig, ax, xlabel, ylabel, title, logx)
  return plt, fig, ax, place_labels(fig, ax, points, colors)


def scatter_plot(path, points, xlabel, ylabel, title, logx=False, diverged=(), intervals=None):
  """Save a labelled scatter plot. points: (x, y, label) triples; diverged: (x, text) pairs;
  intervals: per point (low, high) drawn as an error bar, or None (the caller's title says what
  they are).

  No label overlaps another or a marker; a log x axis has plain-number ticks; the title is
  wrapped to the figure's width."""
  plt, fig, _, _ = draw_scatter(points, xlabel, ylabel, title, logx, diverged, intervals)
  _write(plt, fig, path)


def line_plot(path, lines, xlabel, ylabel, title, logx=False, xticks=None, diverged=()):
  """Save one line per (label, xs, ys, yerr or None), with error bars where given;
  diverged: (x, text) pairs marked on the x axis."""
  plt, fig, ax = _figure()
  for label, xs, ys, yerr in lines:
    ax.errorbar(xs, ys, yerr=yerr, marker='o', capsize=3 if yerr is not None else 0, label=label)
  _mark_diverged(ax, diverged)
  if lines or diverged:
    ax.legend(fontsize=7)
  _save(plt, fig, ax, path, xlabel, ylabel, title, logx, xticks)


def embedding_plot(path, embeddings, labels, title, class_names=None, seed=0):
  """Save a 2-D scatter of the embedding coloured by class to `path` (PNG); return the method.

  class_names[label] names each class in the legend (default: str(label)); the
  legend is drawn only for <= 20 classes, where tab10/tab20 give each its own colour.
  """
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  points, method = project_2d(embeddings, seed)
  classes, codes = np.unique(np.asarray(labels), return_inverse=True)
  k = len(classes)
  size = float(np.clip(4000 / len(points), 1, 20))  # smaller dots as N grows
  fig, ax = plt.subplots(figsize=(6.5, 5), dpi=120)
  if k <= 20:
    cmap = plt.get_cmap('tab10' if k <= 10 else 'tab20')
    for c, label in enumerate(classes):
      name = str(label) if class_names is None else str(class_names[label])
      ax.scatter(*points[codes == c].T, s=size, color=cmap(c), linewidths=0, label=name)
    ax.legend(fontsize=7, markerscale=max(1.0, 20 / size) ** 0.5, loc='upper left',
              bbox_to_anchor=(1.01, 1.0), frameon=False)
  else:
    ax.scatter(*points.T, s=size, c=codes, cmap='turbo', linewidths=0)
  name = method.upper()
  ax.set(xlabel=f'{name} 1', ylabel=f'{name} 2', title=title)
  fig.tight_layout()
  if is_writer():
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, bbox_inches='tight')  # keep the legend outside the axes in the image
  plt.close(fig)
  return method
