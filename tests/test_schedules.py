"""Learning-rate schedules at their boundaries, against hand-computed values, and checkpoint
averaging against a numpy average of the snapshots it was given."""

import math

import jax
import ml_collections
import numpy as np
import pytest

from jaxlab.optim import averaging, schedules
from jaxlab.train.step import seed_map


def lr(kind, step, **kw):
  return float(schedules.make_schedule(kind, 1.0, 100, warmup_steps=10, floor=0.1, **kw)(step))


@pytest.mark.parametrize('step,expected', [
    (0, 0.0), (5, 0.5), (10, 1.0), (50, 1.0), (80, 1.0),  # warm-up, hold, start of decay
    (84, 0.1 + 0.9 * (1 - math.sqrt(0.2))),  # 1−sqrt at 20% of the decay: 0.597508
    (100, 0.1), (130, 0.1)])  # end of decay: the floor, and it stays there
def test_whd_one_minus_sqrt(step, expected):
  assert lr('whd', step, decay_start=80) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize('shape,expected', [('linear', 0.775), ('cosine', 0.8681980515),
                                            ('1-sqrt', 0.55)])
def test_whd_decay_shapes_at_a_quarter_of_the_decay(shape, expected):
  # t = 5/20: linear 1 − t; cosine (1 + cos(π/4))/2; 1−sqrt 1 − 0.5.
  assert lr('whd', 85, decay_start=80, decay_shape=shape) == pytest.approx(expected, abs=1e-6)


def test_whd_holding_to_the_end_never_decays():
  assert lr('whd', 99, decay_start=100) == pytest.approx(1.0)
  assert lr('whd', 100, decay_start=100) == pytest.approx(1.0)


def test_warmup_cosine_and_cosine_boundaries():
  assert lr('warmup_cosine', 10) == pytest.approx(1.0)
  assert lr('warmup_cosine', 55) == pytest.approx(0.55, abs=1e-6)  # half-way through the cosine
  assert lr('warmup_cosine', 100) == pytest.approx(0.1, abs=1e-6)
  assert float(schedules.make_schedule('cosine', 2.0, 100)(50)) == pytest.approx(1.0, abs=1e-6)
  assert lr('constant', 77) == 1.0


def test_schedule_from_config_uses_fractions_of_the_run():
  cfg = ml_collections.ConfigDict(dict(schedule='whd', warmup_epochs=0.0, warmup_fraction=0.1,
                                       lr_floor=0.1, decay_start_fraction=0.8,
                                       decay_shape='1-sqrt'))
  fn = schedules.schedule_from_config(cfg, 1.0, total_steps=100, steps_per_epoch=7)
  assert [float(fn(s)) for s in (5, 10, 80)] == pytest.approx([0.5, 1.0, 1.0])
  assert float(fn(100)) == pytest.approx(0.1)
  assert 'hold to step 80' in schedules.describe(cfg, 100, 7)


def test_unknown_schedule_and_shape_name_the_choices():
  with pytest.raises(ValueError, match='whd'):
    schedules.make_schedule('wsd', 1.0, 10)
  with pytest.raises(ValueError, match='1-sqrt'):
    schedules.make_schedule('whd', 1.0, 10, decay_shape='sqrt')


def snapshots(k=5):
  rng = np.random.default_rng(0)
  return [{'w': rng.normal(size=(3, 2)).astype(np.float32),
           'b': {'c': rng.normal(size=(4,)).astype(np.float32)}} for _ in range(k)]


@pytest.mark.parametrize('window,last', [(0, 5), (3, 3), (8, 5)])
def test_average_equals_numpy_mean_of_the_snapshots(window, last):
  avg = averaging.ParamAverage(start=0, every=1, window=window)
  snaps = snapshots(5)
  stats = avg.init(snaps[0])
  update = jax.jit(avg.update)
  assert avg.average(stats, snaps[0]) is None
  for s in snaps:
    stats = update(stats, s)
  got = avg.average(stats, snaps[0])
  np.testing.assert_allclose(got['w'], np.mean([s['w'] for s in snaps[-last:]], 0), rtol=1e-6)
  np.testing.assert_allclose(got['b']['c'], np.mean([s['b']['c'] for s in snaps[-last:]], 0),
                             rtol=1e-6)


@pytest.mark.parametrize('window', [0, 3])
def test_seeds_keep_each_their_own_average(window):
  """Seeds trained together (parameters stacked on a leading seed axis), each snapshot added
  as the trainer adds it (through the seeds' loop): each seed's average is the one it would
  have alone, exactly."""
  avg = averaging.ParamAverage(start=0, every=1, window=window)
  seeds = [snapshots(5), [jax.tree.map(lambda x: 2 * x + 1, s) for s in snapshots(5)]]
  stacked = [jax.tree.map(lambda *x: np.stack(x), a, b) for a, b in zip(*seeds)]
  stats = avg.init(stacked[0], seeds=True)
  update = jax.jit(seed_map(avg.update, 'map'))
  for s in stacked:
    stats = update(stats, s)
  assert stats['count'].shape == (2,) and avg.snapshots(stats) == 5
  got = avg.average(stats, stacked[0], seeds=True)
  for i, snaps in enumerate(seeds):
    alone = avg.init(snaps[0])
    for s in snaps:
      alone = jax.jit(avg.update)(alone, s)
    want = avg.average(alone, snaps[0])
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_array_equal(np.asarray(g)[i], np.asarray(w))


def test_snapshot_steps_and_config():
  avg = averaging.from_config(ml_collections.ConfigDict(
      dict(every_steps=5, start_fraction=0.8, window=0)), total_steps=100)
  assert [s for s in range(101) if avg.due(s)] == [85, 90, 95, 100]
  assert averaging.from_config(ml_collections.ConfigDict(
      dict(every_steps=0, start_fraction=0.8, window=0)), 100) is None
  with pytest.raises(ValueError, match='window'):
    averaging.ParamAverage(start=0, every=1, window=-1)
