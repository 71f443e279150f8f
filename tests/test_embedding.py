import importlib.util

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score
from sklearn.neighbors import KNeighborsClassifier

from jaxlab.metrics import embedding
from jaxlab.io.figures import embedding_plot
from jaxlab.metrics.embedding import embedding_metrics, knn_accuracy, project_2d, silhouette

HAVE_UMAP = importlib.util.find_spec('umap') is not None
N = 437  # not a multiple of BLOCK, so the last block is padded
BLOCK = 64


def clusters(spread, n=N, dim=16, seed=0, offset=10.0):
  """Five well-separated clusters plus three that overlap three of them, away from 0."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(scale=6.0, size=(5, dim))
  centres = np.concatenate([centres, centres[:3] + rng.normal(scale=0.7, size=(3, dim))])
  labels = rng.integers(0, 8, size=n)
  x = offset + centres[labels] + rng.normal(scale=spread, size=(n, dim))
  return x.astype(np.float32), labels


def sklearn_nearest_other(x, labels):
  """Each point's nearest other point per scikit-learn, and its distance: the first of the two
  nearest that is not the point itself (with duplicates, neither may be)."""
  clf = KNeighborsClassifier(n_neighbors=1, algorithm='brute').fit(x, labels)
  dist, idx = clf.kneighbors(x, n_neighbors=2)
  rows = np.arange(len(x))
  col = (idx[:, 0] == rows).astype(int)
  return idx[rows, col], dist[rows, col]


@pytest.mark.parametrize('spread,offset', [(0.5, 10.0), (2.0, 10.0), (0.5, 1000.0)])
@pytest.mark.parametrize('batch_size', [BLOCK, 1024])
def test_knn_matches_sklearn_leave_one_out(spread, offset, batch_size):
  x, labels = clusters(spread, offset=offset)
  ref_idx, _ = sklearn_nearest_other(x.astype(np.float64), labels)
  ref_acc = float(np.mean(labels[ref_idx] == labels))
  np.testing.assert_array_equal(embedding._nearest_other(x, batch_size), ref_idx)
  assert knn_accuracy(x, labels, batch_size=batch_size) == ref_acc
  if spread > 1:
    assert 0.3 < ref_acc < 0.95  # overlapping: a self-match would show up as 1.0


def test_knn_ties_go_to_the_lowest_other_index():
  # Point 3 duplicates point 0; point 1 is equally far (1.0) from points 0 and 3.
  x = np.array([[0, 0], [1, 0], [0, 1], [0, 0]], np.float32)
  np.testing.assert_array_equal(embedding._nearest_other(x, batch_size=3), [3, 0, 0, 0])
  assert knn_accuracy(x, [5, 0, 7, 5], batch_size=3) == 0.5  # only 0 -> 3 and 3 -> 0 are right


def test_knn_exact_duplicates_agree_with_sklearn():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(300, 16)).astype(np.float32) + 5.0
  x[150:] = x[rng.integers(0, 150, size=150)]  # pairs, triples and more of identical points
  labels = rng.integers(0, 5, size=300)  # copies mostly carry another label
  ours = embedding._nearest_other(x, batch_size=BLOCK)
  _, ref_dist = sklearn_nearest_other(x.astype(np.float64), labels)
  d = np.linalg.norm(x[:, None].astype(np.float64) - x[None], axis=-1)
  np.fill_diagonal(d, np.inf)
  assert (ref_dist == 0).sum() > 200
  # Same nearest distance as scikit-learn (0 for every duplicate) ...
  np.testing.assert_allclose(d[np.arange(300), ours], ref_dist, atol=1e-6)
  # ... and among equally near points, the lowest index (sklearn's pick there is arbitrary).
  np.testing.assert_array_equal(ours, np.argmin(d, axis=1))
  # Where copies share their label, accuracy is exactly scikit-learn's.
  labels[150:] = -1
  labels = np.array([labels[np.flatnonzero((x == x[i]).all(1))[0]] for i in range(300)])
  ref_idx, _ = sklearn_nearest_other(x.astype(np.float64), labels)
  assert knn_accuracy(x, labels, batch_size=BLOCK) == np.mean(labels[ref_idx] == labels)


@pytest.mark.parametrize('spread,offset', [(0.3, 10.0), (2.0, 10.0), (6.0, 10.0), (0.3, 1000.0)])
def test_silhouette_matches_sklearn(spread, offset):
  # Far from the origin (offset 1000) the matmul form of distance needs centred points.
  x, labels = clusters(spread, offset=offset)
  labels = labels * 3 + 7  # codes need not be 0..C-1
  ref = silhouette_score(x.astype(np.float64), labels)
  assert silhouette(x, labels, batch_size=BLOCK) == pytest.approx(ref, rel=1e-5)


def test_silhouette_with_singleton_and_duplicates_matches_sklearn():
  x, labels = clusters(1.0)
  labels[17] = 99  # a cluster of one scores 0
  x[40:45] = x[39]  # duplicates: a distance of exactly 0, not rounding noise
  labels[39:45] = 123
  ref = silhouette_score(x.astype(np.float64), labels)
  assert silhouette(x, labels, batch_size=BLOCK) == pytest.approx(ref, rel=1e-5)


def test_silhouette_needs_two_to_n_minus_one_clusters():
  x, _ = clusters(1.0, n=20)
  with pytest.raises(ValueError):
    silhouette(x, np.zeros(20))
  with pytest.raises(ValueError):
    silhouette(x, np.arange(20))


def test_pca_matches_sklearn_up_to_sign():
  x, _ = clusters(2.0)
  ours = embedding._pca_2d(x)
  ref = PCA(2).fit_transform(x.astype(np.float64))
  signs = np.sign(np.sum(ours * ref, axis=0))
  np.testing.assert_allclose(ours * signs, ref, rtol=1e-6, atol=1e-6)


def test_pca_signs_are_deterministic():
  for seed in range(8):
    x, _ = clusters(2.0, n=100, seed=seed)
    ours = embedding._pca_2d(x)
    # Recover the loadings: each axis's largest-magnitude loading is positive.
    loadings, *_ = np.linalg.lstsq(x - x.mean(0, dtype=np.float64), ours, rcond=None)
    assert np.all(loadings[np.argmax(np.abs(loadings), axis=0), [0, 1]] > 0)
    perm = np.random.default_rng(seed).permutation(len(x))
    np.testing.assert_allclose(embedding._pca_2d(x[perm]), ours[perm], atol=1e-8)


@pytest.mark.skipif(HAVE_UMAP, reason='umap-learn is installed, so UMAP is used')
def test_project_2d_falls_back_to_pca():
  x, _ = clusters(2.0)
  points, method = project_2d(x)
  assert method == 'pca'
  np.testing.assert_array_equal(points, embedding._pca_2d(x))


def _is_png(path):
  data = path.read_bytes()
  return len(data) > 1000 and data[:8] == b'\x89PNG\r\n\x1a\n'


def test_embedding_plot_writes_a_labelled_png(tmp_path, monkeypatch):
  import matplotlib.pyplot as plt
  closed = []
  real_close = plt.close
  monkeypatch.setattr(plt, 'close', closed.append)  # keep the figure to inspect it
  x, labels = clusters(1.0, n=200)
  names = [f'class {i}' for i in range(8)]
  path = tmp_path / 'plots' / 'emb.png'
  method = embedding_plot(str(path), x, labels, 'test', class_names=names)
  assert _is_png(path)
  assert method == 'umap' if HAVE_UMAP else method == 'pca'
  (fig,) = closed
  ax = fig.axes[0]
  assert (ax.get_xlabel(), ax.get_ylabel()) == (f'{method.upper()} 1', f'{method.upper()} 2')
  assert [t.get_text() for t in ax.get_legend().get_texts()] == names
  real_close(fig)


def test_embedding_plot_many_classes_has_no_legend(tmp_path, monkeypatch):
  import matplotlib.pyplot as plt
  closed = []
  real_close = plt.close
  monkeypatch.setattr(plt, 'close', closed.append)
  rng = np.random.default_rng(0)
  path = tmp_path / 'emb.png'
  embedding_plot(str(path), rng.normal(size=(300, 8)), rng.integers(0, 25, 300), 'many')
  assert _is_png(path)
  (fig,) = closed
  assert fig.axes[0].get_legend() is None
  real_close(fig)


def test_embedding_metrics_are_python_floats():
  x, labels = clusters(1.0)
  metrics = embedding_metrics(x, labels)
  assert metrics == {'knn_acc': knn_accuracy(x, labels), 'silhouette': silhouette(x, labels)}
  assert all(type(v) is float for v in metrics.values())


# Tight clusters: distances within a cluster are ~1e-5 of the points' norms, where the
# float32 matmul form ||x||^2 + ||y||^2 - 2 x.y is mostly rounding error.


def tight_clusters(n=300, dim=32, k=5, spread=1e-3, dtype=np.float64, seed=0):
  """k clusters with centres ~100 apart (norm 100 / sqrt 2) and standard deviation `spread`."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(k, dim))
  centres *= 100 / np.sqrt(2) / np.linalg.norm(centres, axis=1, keepdims=True)
  labels = rng.integers(0, k, size=n)
  return (centres[labels] + rng.normal(scale=spread, size=(n, dim))).astype(dtype), labels


def brute_force_sq_dists(x):
  """[N, N] float64 sums of squared differences of the inputs: the definition the metrics use."""
  x = np.asarray(x, np.float64)
  return ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=-1)


def brute_force_nearest_other(x):
  """Each point's nearest other point by float64 brute force; ties go to the lowest index."""
  d = brute_force_sq_dists(x)
  np.fill_diagonal(d, np.inf)
  return np.argmin(d, axis=1)  # the first minimum


def direct_silhouette(x, labels):
  """Mean silhouette coefficient from float64 direct differences (no matmul form)."""
  d = np.sqrt(brute_force_sq_dists(x))
  classes = np.unique(labels)
  sums = np.stack([d[:, labels == c].sum(axis=1) for c in classes], axis=1)
  counts = np.array([np.sum(labels == c) for c in classes])
  own = np.searchsorted(classes, labels)
  rows = np.arange(len(x))
  a = sums[rows, own] / np.maximum(counts[own] - 1, 1)
  means = sums / counts
  means[rows, own] = np.inf
  b = means.min(axis=1)
  s = np.where(counts[own] > 1, (b - a) / np.maximum(a, b), 0.0)
  return float(np.mean(s))


@pytest.mark.parametrize('dtype', [np.float64, np.float32])
def test_tight_clusters_match_sklearn_and_brute_force(dtype):
  x, labels = tight_clusters(dtype=dtype)
  ref_nearest = brute_force_nearest_other(x)
  if dtype == np.float32:
    # Here the float32 matmul form (the former implementation) picks mostly wrong neighbours.
    c = x - x.mean(0)
    sq = np.sum(c * c, axis=1)
    d32 = sq[:, None] + sq[None, :] - 2 * (c @ c.T)
    np.fill_diagonal(d32, np.inf)
    assert np.sum(np.argmin(d32, axis=1) != ref_nearest) > 100
  np.testing.assert_array_equal(embedding._nearest_other(x, batch_size=BLOCK), ref_nearest)
  # Labels that vary within clusters, so that the accuracy depends on the exact picks.
  knn_labels = np.random.default_rng(1).integers(0, 3, size=len(x))
  ref_acc = np.mean(knn_labels[ref_nearest] == knn_labels)
  assert abs(knn_accuracy(x, knn_labels, batch_size=BLOCK) - ref_acc) <= 1e-6
  ref = silhouette_score(x.astype(np.float64), labels, metric='euclidean')
  assert abs(ref - direct_silhouette(x, labels)) <= 1e-9  # scikit-learn is accurate here
  assert abs(silhouette(x, labels, batch_size=BLOCK) - ref) <= 1e-6
  assert abs(silhouette(x, labels, batch_size=BLOCK) - direct_silhouette(x, labels)) <= 1e-8


def test_tight_clusters_blocked_equals_unblocked():
  x, labels = tight_clusters(dtype=np.float32)
  knn_labels = np.random.default_rng(1).integers(0, 3, size=len(x))
  assert len(x) % BLOCK != 0  # a short last block
  whole = {'nearest': embedding._nearest_other(x, batch_size=len(x)),
           'knn': knn_accuracy(x, knn_labels, batch_size=len(x)),
           'silhouette': silhouette(x, labels, batch_size=len(x))}
  for batch_size in [BLOCK, 7]:
    np.testing.assert_array_equal(embedding._nearest_other(x, batch_size), whole['nearest'])
    assert knn_accuracy(x, knn_labels, batch_size) == whole['knn']
    assert silhouette(x, labels, batch_size) == pytest.approx(whole['silhouette'], abs=1e-12)


def test_tight_clusters_far_from_the_mean_are_recomputed(monkeypatch):
  # Two overlapping tight clusters near 0 and one far away: centred on the global mean,
  # the matmul form cannot resolve the near ones' distances (~1e-3) in float64 either,
  # so their coefficients are redone centred on their own cluster's mean.
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, size=300)
  x = rng.normal(scale=1e-4, size=(300, 32))
  x[labels == 1] += 1e-4
  x[labels == 2] += 1e3
  redone = []
  redo = embedding._redo_silhouette

  def spy(x, cl, s, todo, batch_size):
    redone.append(len(todo))
    redo(x, cl, s, todo, batch_size)

  monkeypatch.setattr(embedding, '_redo_silhouette', spy)
  ours = silhouette(x, labels, batch_size=BLOCK)
  assert redone and redone[0] >= np.sum(labels < 2)
  ref = silhouette_score(x, labels, metric='euclidean')
  assert abs(ref - direct_silhouette(x, labels)) <= 1e-9  # accurate: its clusters are near 0
  assert abs(ours - ref) <= 1e-6
  assert abs(ours - direct_silhouette(x, labels)) <= 1e-8
  np.testing.assert_array_equal(embedding._nearest_other(x, BLOCK), brute_force_nearest_other(x))


def test_silhouette_from_direct_differences_matches_sklearn(monkeypatch):
  # With no error allowed, no matmul-form coefficient is certified, and every point's
  # is recomputed from direct differences (the last resort).
  monkeypatch.setattr(embedding, '_SIL_TOL', 0.0)
  x, labels = clusters(1.0, n=200)
  labels[5] = 99  # a singleton
  ref = silhouette_score(x.astype(np.float64), labels)
  assert silhouette(x, labels, batch_size=BLOCK) == pytest.approx(ref, abs=1e-12)


def test_metrics_accept_host_numpy_and_jax_arrays():
  import jax.numpy as jnp
  x, labels = clusters(1.0, n=200)
  on_host = embedding_metrics(x, labels)
  assert embedding_metrics(jnp.asarray(x), jnp.asarray(labels)) == on_host
  assert embedding_metrics(x.astype(np.float64), list(labels)) == on_host
