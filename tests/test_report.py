"""The sweep figure (accuracy against trainable parameters): no label overlaps another label or
a marker or leaves the axes, the log axis reads as plain numbers, the title says what ran."""

import itertools
import re

import pytest

from jaxlab.io import figures

# The quick PEFT demo's trainable counts, with accuracies close enough to crowd the labels.
CROWDED = [(26_053, 0.956, 'hybrid_parallel'), (13_125, 0.939, 'hybrid_layerwise/deep_lora'),
           (24_901, 0.957, 'lora'), (1_477, 0.872, 'norm'), (24_000, 0.955, 'lora_twin')]


@pytest.fixture
def drawn():
  plt, fig, ax, labels = figures.draw_scatter(
      CROWDED, 'trainable parameters', 'Acc@1 (final)', 'PEFT, 4 methods: a long title ' * 4,
      logx=True, diverged=[(5_000, 'x: diverged at step 7')])
  fig.canvas.draw()
  yield fig, ax, labels
  plt.close(fig)


def test_labels_overlap_nothing_and_stay_inside(drawn):
  fig, ax, labels = drawn
  renderer = fig.canvas.get_renderer()
  boxes = [a.get_window_extent(renderer) for a in labels]
  assert [a.get_text() for a in labels] == [p[2] for p in CROWDED]
  for a, b in itertools.combinations(boxes, 2):
    assert figures._overlap(a, b) == 0, (a, b)
  frame = ax.get_window_extent(renderer)
  markers = [ax.transData.transform((x, y)) for x, y, _ in CROWDED]
  for box in boxes:
    assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
    for px, py in markers:  # no label covers a marker's centre
      assert not (box.x0 < px < box.x1 and box.y0 < py < box.y1)


def test_log_axis_has_plain_ticks_and_no_minor_labels(drawn):
  fig, ax, _ = drawn
  lo, hi = ax.get_xlim()
  majors = [t.get_text() for t in ax.get_xticklabels()
            if lo <= t.get_position()[0] <= hi and t.get_text()]
  assert majors and all(re.fullmatch(r'\d{1,3}(,\d{3})*', t) for t in majors), majors
  assert '2,000' in majors and '10,000' in majors
  assert not any(t.get_text() for t in ax.get_xticklabels(minor=True))
  assert fig.axes[0].get_title().count('\n') >= 1  # a long title is wrapped, not cut


def test_plain_number():
  assert [figures.plain_number(v) for v in (2000, 20000.0, 0.003, 1.5, 100)] == [
      '2,000', '20,000', '0.003', '1.5', '100']
