import numpy as np
import pytest

from jaxlab.metrics.classification import classification_metrics, expected_calibration_error


def numpy_ece(logits, labels, bins=15):
  """Reference ECE: equal-width bins over (lo, hi], confidence = max softmax probability."""
  z = logits - logits.max(axis=1, keepdims=True)
  p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
  conf, pred = p.max(axis=1), p.argmax(axis=1)
  edges = np.linspace(0, 1, bins + 1)
  ece = 0.0
  for lo, hi in zip(edges[:-1], edges[1:]):
    in_bin = (conf > lo) & (conf <= hi)
    if in_bin.any():
      ece += in_bin.mean() * abs((pred[in_bin] == labels[in_bin]).mean() - conf[in_bin].mean())
  return ece


@pytest.mark.parametrize('scale', [0.5, 3.0, 10.0])
def test_ece_matches_numpy(scale):
  rng = np.random.default_rng(0)
  logits = (rng.normal(size=(1000, 10)) * scale).astype(np.float32)
  labels = rng.integers(0, 10, size=1000)
  labels[:400] = logits[:400].argmax(1)  # some correct predictions
  ours = float(expected_calibration_error(logits, labels))
  assert ours == pytest.approx(numpy_ece(logits, labels), abs=1e-5)
  assert ours > 0.01


def test_ece_bin_edges_are_right_closed():
  # Confidence exactly 0.6 (=9/15) belongs to bin (8/15, 9/15], not the next one.
  probs = np.array([[0.6, 0.4], [0.6, 0.4]])
  logits = np.log(probs).astype(np.float32)
  labels = np.array([0, 1])
  # One bin holds both: |acc 0.5 - conf 0.6| = 0.1.
  assert float(expected_calibration_error(logits, labels)) == pytest.approx(0.1, abs=1e-6)


def test_accuracy_and_nll():
  logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]], np.float32)
  labels = np.array([0, 1, 1])
  m = classification_metrics(logits, labels)
  assert m['acc1'] == pytest.approx(2 / 3)
  logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  assert m['nll'] == pytest.approx(-logp[np.arange(3), labels].mean(), rel=1e-6)
