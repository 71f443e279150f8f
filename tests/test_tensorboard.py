"""TensorBoard scalars beside metrics.jsonl: every record, trimmed on resume like the log."""

import jax
import pytest

from jaxlab.io.tensorboard import read_scalars
from jaxlab.io.writers import read_jsonl
from jaxlab.parallel.mesh import make_mesh
from tests.test_trainer import run, small_digits, tiny_config  # noqa: F401  (fixture)

pytest.importorskip('tensorboardX')


def test_events_mirror_metrics_jsonl_after_a_crash_and_resume(tmp_path, small_digits):
  c = tiny_config()  # 2 epochs of 4 steps; logs every 2 steps; checkpoints every 3
  c.log.tensorboard = True
  mesh = make_mesh(jax.devices()[:2])

  def crash(step, state):
    if step == 5:  # after the records of step 4 (train, epoch, eval), past checkpoint 3
      raise RuntimeError('simulated crash')

  with pytest.raises(RuntimeError, match='simulated crash'):
    run(c, tmp_path, small_digits, mesh, on_chunk=crash)
  before = read_scalars(tmp_path / 'tensorboard')
  assert [s for s, _ in before['train/loss']] == [2, 4]
  summary, _ = run(c, tmp_path, small_digits, mesh)
  assert summary['resumed_from_step'] == 3
  scalars = read_scalars(tmp_path / 'tensorboard')
  records = read_jsonl(tmp_path / 'metrics.jsonl')
  for split, key in (('train', 'loss'), ('train', 'acc'), ('train_epoch', 'loss'),
                     ('test', 'acc1'), ('test', 'nll')):
    want = [(r['step'], r[key]) for r in records if r['split'] == split]
    got = scalars[f'{split}/{key}']
    # The steps logged after checkpoint 3 by the crashed attempt are purged, not doubled.
    assert [s for s, _ in got] == [s for s, _ in want], (split, key)
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6), (split, key)
  assert [s for s, _ in scalars['train/loss']] == [2, 4, 6, 8]
