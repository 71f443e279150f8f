"""Streaming placement: the host delivers each step's uint8 batch.

With data placement 'device' the whole training split lives on every device
and the jitted step gathers its batch by indices (`jaxlab.train.step.gather`).
A split that does not fit the device is *streamed* instead:

* `host_batch` gathers a batch on the host, exactly as `step.gather` does on
  the device (PAD = -1 reads example 0 with weight 0), so the same batch
  indices give bit-identical training on both placements (but for the last bits of the CPU
  patch convolution's gradients on AVX2-only CPUs, which XLA compiles apart in the two);
* `StepPrefetcher` builds the batches of the next steps on background threads
  (grain's thread-pool prefetch), so that gather + host-to-device transfer
  overlap the running step;
* `TfdsImages` is a lazy [N, H, W, C] uint8 array over a TFDS `array_record`
  split: only the requested records are read and decoded;
* `choose_placement` / `device_budget_bytes` decide between the two
  placements (`--config.data.placement=auto|device|stream`).

Augmentation still runs in the step, on the device, for both placements.
"""

from __future__ import annotations

import copy
import operator
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from jaxlab.data.pipeline import PAD  # noqa: F401  (re-exported: the padding index of a batch)

PLACEMENTS = ('auto', 'device', 'stream')
_MB = 1e6  # the unit of data.device_budget_mb and of the messages


# ----------------------------------------------------------------------------
# Host gather.


def host_batch(images, labels, idx) -> dict[str, np.ndarray]:
  """The batch at indices `idx`, as `jaxlab.train.step.gather` builds it on the device.

  Args:
    images: uint8 [N, H, W, C]: a NumPy array or any object indexable by an
      int NumPy array (e.g. `TfdsImages`).
    labels: int [N].
    idx: int indices of any shape S; PAD (-1, any negative) is a padding
      example of weight 0 that reads example 0.

  Returns:
    {'image': uint8 [*S, H, W, C], 'label': int32 [*S], 'weight': float32 [*S]},
    fresh host arrays (they do not alias `images` or `labels`).
  """
  idx = np.asarray(idx)
  if not np.issubdtype(idx.dtype, np.integer):
    raise TypeError(f'batch indices must be integers, got {idx.dtype}')
  real = idx >= 0
  safe = np.where(real, idx, 0)
  flat = np.ascontiguousarray(safe.reshape(-1))
  image = np.asarray(images[flat], dtype=np.uint8)
  image = image.reshape(*idx.shape, *image.shape[1:])
  label = np.asarray(labels)[safe].astype(np.int32)
  return {'image': image, 'label': label, 'weight': real.astype(np.float32)}


# ----------------------------------------------------------------------------
# Background prefetch of whole steps.

_STALE = object()  # what a make() of a pipeline that was restarted or closed returns


class StepPrefetcher:
  """`make(step)` for consecutive steps, the next `depth` built on background threads.

  `get(step)` returns `make(step)`; when it returns, steps step+1..step+depth
  are queued or being made on `threads` background threads (grain's
  `MapDataset.range(...).map(make).to_iter_dataset(ReadOptions(...))`). Values
  come back in step order, whatever order the threads finish in. Asking for a
  step out of sequence (a resume, a rollback) drops the queued steps and
  restarts the pipeline at that step. Steps at or beyond `end` are never made.
  An exception raised by `make` is raised by the `get` of that step (the
  pipeline then restarts at the next `get`).

  Construction already starts making steps start..start+depth-1, so the first
  batches overlap compilation. `close()` (or leaving a `with` block) stops the
  pipeline: queued steps are dropped, it waits for the `make` calls already
  running and joins the threads that ran them; `make` is never called after.

  `make` runs concurrently on several threads: it must be thread-safe and must
  not depend on the order the steps are made in. `get` and `close` are meant
  to be called from one thread (the training loop).

  depth=0 makes each step synchronously in `get` (no background thread).
  """

  def __init__(self, make: Callable[[int], Any], start: int, end: int,
               depth: int = 2, threads: int | None = None):
    start, end, depth = operator.index(start), operator.index(end), operator.index(depth)
    threads = depth if threads is None else operator.index(threads)
    if depth < 0:
      raise ValueError(f'prefetch depth must be >= 0, got {depth} (--config.data.prefetch)')
    if depth > 0 and threads < 1:
      raise ValueError(f'prefetching needs at least one thread, got threads={threads}')
    self._make, self._end = make, end
    self._depth, self._threads = depth, max(threads, 1)
    self._cv = threading.Condition()
    self._generation = 0  # bumped by every restart and by close
    self._inflight = 0  # make() calls running now
    self._workers: set[threading.Thread] = set()
    self._closed = False
    self._it = None  # grain iterator of the current pipeline
    self._next = None  # the step its next element is
    if start < end:
      self._restart(start)

  # -- public ----------------------------------------------------------------

  @property
  def depth(self) -> int:
    return self._depth

  def get(self, step: int):
    """make(step); steps step+1..step+depth are then prepared in the background."""
    step = operator.index(step)
    if self._closed:
      raise ValueError('StepPrefetcher.get after close()')
    if step >= self._end:
      raise IndexError(f'step {step} is at or beyond the end of this prefetcher ({self._end})')
    if self._it is None or step != self._next:
      self._restart(step)
    try:
      value = next(self._it)
    except StopIteration as err:  # cannot happen: step < end
      self._drop()
      raise RuntimeError(f'prefetch pipeline ended before step {step}') from err
    except BaseException:
      self._drop()  # the grain iterator lost its place: restart at the next get
      raise
    self._next = step + 1
    return value

  def close(self, timeout: float | None = None) -> None:
    """Stops the pipeline and waits (up to `timeout` s per wait) for its threads."""
    with self._cv:
      if self._closed and not self._workers:
        return
      self._closed = True
      self._generation += 1
    self._drop()
    current = threading.current_thread()
    with self._cv:
      self._cv.wait_for(lambda: self._inflight == 0, timeout)
      workers, self._workers = self._workers, set()
    for worker in workers:
      if worker is not current:
        worker.join(timeout)

  def __enter__(self) -> 'StepPrefetcher':
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def __del__(self):
    try:
      self._closed = True
      self._generation += 1
      self._drop()
    except Exception:  # pylint: disable=broad-except
      pass  # interpreter shutdown

  # -- internals -------------------------------------------------------------

  def _restart(self, step: int) -> None:
    import grain  # pylint: disable=g-import-not-at-top

    self._drop()
    with self._cv:
      self._generation += 1
      generation = self._generation
    dataset = grain.MapDataset.range(step, self._end).map(
        lambda s: self._run(generation, s))
    options = grain.ReadOptions(num_threads=self._threads if self._depth else 0,
                                prefetch_buffer_size=self._depth)
    # allow_nones: a make() that returns None must not shift the steps.
    self._it = iter(dataset.to_iter_dataset(options, allow_nones=True))
    self._next = step
    self._it.start_prefetch()

  def _run(self, generation: int, step: int):
    with self._cv:
      if self._closed or generation != self._generation:
        return _STALE  # a dropped pipeline's queued step: never read
      self._inflight += 1
      if self._depth:
        self._workers.add(threading.current_thread())
    try:
      return self._make(step)
    finally:
      with self._cv:
        self._inflight -= 1
        self._cv.notify_all()

  def _drop(self) -> None:
    """Closes the current grain iterator: cancels its queued steps (running ones finish)."""
    it, self._it, self._next = self._it, None, None
    if it is not None:
      it.close()


# ----------------------------------------------------------------------------
# Lazy TFDS images.


class TfdsImages:
  """The uint8 images [N, H, W, C] of a TFDS split, read and decoded only when indexed.

  Wraps a `tfds.data_source(...)` (array_record). Indexing with an int, a
  slice, a boolean mask or an int array of any shape S returns a NumPy uint8
  array [*S, H, W, C]; each distinct record is read once per call (batched
  `__getitems__` where the source supports it). `np.asarray(images)` decodes
  the whole split. `subset(indices)` is a lazy view on some records.

  Safe to index from several threads at once (array_record readers are).
  """

  def __init__(self, source: Sequence[Any], image_key: str = 'image',
               keys: np.ndarray | None = None, chunk: int = 4096):
    self.source, self.image_key, self.chunk = source, image_key, chunk
    self._keys = None if keys is None else np.asarray(keys, np.int64)
    n = len(source) if keys is None else len(self._keys)
    self.shape = (n, *self._image_shape())
    self.dtype = np.dtype(np.uint8)
    self._batched = hasattr(source, '__getitems__')

  @classmethod
  def open(cls, name: str, split: str = 'train', data_dir: str | None = None,
           image_key: str = 'image', **data_source_kwargs) -> 'TfdsImages':
    """Over `tfds.data_source(name, split=split, data_dir=data_dir)`; nothing is downloaded."""
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    data_source_kwargs.setdefault('download', False)
    data_source_kwargs.setdefault('builder_kwargs', {'file_format': 'array_record'})
    source = tfds.data_source(name, split=split, data_dir=data_dir or None,
                              **data_source_kwargs)
    return cls(source, image_key=image_key)

  def _image_shape(self) -> tuple[int, ...]:
    shape, dtype = None, None
    info = getattr(self.source, 'dataset_info', None)
    feature = None
    if info is not None and info.features is not None:
      try:
        feature = info.features[self.image_key]
      except (KeyError, TypeError):
        feature = None
    if feature is not None:
      shape, dtype = getattr(feature, 'shape', None), getattr(feature, 'np_dtype', None)
    if shape is None or None in tuple(shape) or dtype is None:
      if not len(self.source):
        raise ValueError('cannot tell the image shape of an empty TFDS split without features')
      image = np.asarray(self._read([0])[0][self.image_key])
      shape, dtype = image.shape, image.dtype
    if np.dtype(dtype) != np.uint8 or len(shape) != 3:
      raise ValueError(f'TfdsImages needs uint8 [H, W, C] images in {self.image_key!r}, '
                       f'got {np.dtype(dtype)} {tuple(shape)}')
    return tuple(int(s) for s in shape)

  # -- array protocol ----------------------------------------------------------

  def __len__(self) -> int:
    return self.shape[0]

  @property
  def ndim(self) -> int:
    return len(self.shape)

  @property
  def size(self) -> int:
    return int(np.prod(self.shape))

  @property
  def nbytes(self) -> int:
    """Bytes of the decoded split (uint8): what placement 'device' would hold per device."""
    return self.size

  def __repr__(self) -> str:
    return f'TfdsImages({self.source!r}, shape={self.shape})'

  def __getitem__(self, index) -> np.ndarray:
    if isinstance(index, tuple):
      if len(index) != 1:
        raise IndexError('TfdsImages supports indexing the first axis only')
      index = index[0]
    if isinstance(index, slice):
      return self._gather(np.arange(len(self))[index])
    return self._gather(np.asarray(index))

  def __array__(self, dtype=None, copy=None):  # pylint: disable=redefined-outer-name
    del copy
    out = np.empty(self.shape, np.uint8)
    for start in range(0, len(self), self.chunk):
      stop = min(start + self.chunk, len(self))
      out[start:stop] = self._gather(np.arange(start, stop))
    return out if dtype is None else out.astype(dtype)

  def subset(self, indices) -> 'TfdsImages':
    """A lazy view on the records at `indices` (positions in this array), in that order."""
    positions = self._positions(np.asarray(indices).reshape(-1))
    keys = positions if self._keys is None else self._keys[positions]
    view = copy.copy(self)
    view._keys = keys
    view.shape = (len(keys), *self.shape[1:])
    return view

  # -- labels ----------------------------------------------------------------

  def read_labels(self, key: str = 'label') -> np.ndarray:
    """int32 [N]: feature `key` of every record, without decoding the images.

    Reads the records through a copy of the source whose image decoder is
    `tfds.decode.SkipDecoding()` (only the example proto is parsed).
    """
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    cheap = copy.copy(self.source)
    if hasattr(cheap, 'decoders'):
      decoders = dict(cheap.decoders or {})
      decoders[self.image_key] = tfds.decode.SkipDecoding()
      cheap.decoders = decoders
    keys = np.arange(len(self.source)) if self._keys is None else self._keys
    labels = np.empty(len(keys), np.int32)
    for start in range(0, len(keys), self.chunk):
      part = keys[start:start + self.chunk]
      examples = self._read(part, source=cheap)
      labels[start:start + len(part)] = [int(ex[key]) for ex in examples]
    return labels

  # -- internals -------------------------------------------------------------

  def _positions(self, index: np.ndarray) -> np.ndarray:
    n = len(self)
    if index.dtype == np.bool_:
      if index.shape != (n,):
        raise IndexError(f'boolean index of shape {index.shape} for {n} images')
      return np.flatnonzero(index)
    if index.size == 0:
      return index.astype(np.int64)
    if not np.issubdtype(index.dtype, np.integer):
      raise IndexError(f'TfdsImages indices must be integers, got {index.dtype}')
    index = index.astype(np.int64)
    if index.min() < -n or index.max() >= n:
      raise IndexError(f'index out of range for {n} images: '
                       f'{index.min()}..{index.max()}')
    return np.where(index < 0, index + n, index)

  def _gather(self, index: np.ndarray) -> np.ndarray:
    positions = self._positions(index)
    keys = positions if self._keys is None else self._keys[positions]
    out_shape = (*positions.shape, *self.shape[1:])
    if positions.size == 0:
      return np.empty(out_shape, np.uint8)
    unique, inverse = np.unique(keys.reshape(-1), return_inverse=True)
    decoded = np.empty((len(unique), *self.shape[1:]), np.uint8)
    for i, example in enumerate(self._read(unique)):
      decoded[i] = example[self.image_key]
    return decoded[inverse.reshape(-1)].reshape(out_shape)

  def _read(self, keys, source=None) -> list[Any]:
    """The examples at record `keys`, one batched read where the source allows it."""
    source = self.source if source is None else source
    keys = [int(k) for k in keys]
    if self._batched:
      try:
        return list(source.__getitems__(keys))
      except TypeError:
        # `tfds.testing.mock_data` (TFDS 4.9) binds its fake `__getitems__`
        # without `self`, so batched reads fail there; single reads work. A
        # real TypeError in decoding recurs below and propagates.
        self._batched = False
    return [source[k] for k in keys]


# ----------------------------------------------------------------------------
# Choosing the placement.


def _mb(nbytes: float) -> str:
  return f'{nbytes / _MB:.1f} MB'


def _check_placement(requested: str) -> None:
  if requested not in PLACEMENTS:
    raise ValueError(
        f'Unknown data placement {requested!r} (--config.data.placement=); valid choices: '
        f'{", ".join(repr(p) for p in PLACEMENTS)}.')


def choose_placement(requested: str, nbytes: int, budget_bytes: int) -> tuple[str, str]:
  """('device' | 'stream', reason): where the training split's images go.

  Args:
    requested: 'device', 'stream' or 'auto' (--config.data.placement).
    nbytes: the training split's images as uint8, as each device would hold them.
    budget_bytes: what each device may spend on them (`device_budget_bytes`);
    may be float('inf') for an explicit 'device' or 'stream' (no budget).

  'auto' picks 'device' when nbytes <= budget_bytes, else 'stream'. The reason
  is a sentence for the user, with the sizes in MB (10^6 bytes).
  """
  _check_placement(requested)
  size, budget = _mb(nbytes), _mb(budget_bytes)
  fits = nbytes <= budget_bytes
  if requested == 'auto':
    if fits:
      return 'device', (f"data.placement=auto chose device: the training split's {size} fits "
                        f'the device budget of {budget} (data.device_budget_mb)')
    return 'stream', (f"data.placement=auto chose stream: the training split's {size} exceeds "
                      f'the device budget of {budget} (data.device_budget_mb)')
  if requested == 'device':
    if fits:
      return 'device', (f"data.placement=device: the training split's {size} is kept on every "
                        'device' + (f' (budget {budget})' if np.isfinite(budget_bytes) else ''))
    return 'device', (f"data.placement=device: the training split's {size} is kept on every "
                      f'device although it exceeds the device budget of {budget} '
                      '(data.device_budget_mb); it may not fit, --config.data.placement=stream '
                      'streams it from the host')
  return 'stream', (f"data.placement=stream: each step's batch is streamed from the host "
                    f"(the training split's {size} stays on the host)")


def _host_memory_bytes() -> int:
  return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')


def device_budget_bytes(budget_mb: float, devices=None) -> int:
  """Bytes each device may spend on the training split's images.

  budget_mb > 0: that many MB (10^6 bytes). 0 (automatic): half of what each device has
  (`device_memory_bytes`).
  """
  budget_mb = float(budget_mb)
  if budget_mb < 0:
    raise ValueError(f'data.device_budget_mb must be >= 0 (0 = automatic), got {budget_mb} '
                     '(--config.data.device_budget_mb=)')
  if budget_mb > 0:
    return int(budget_mb * _MB)
  return device_memory_bytes(devices) // 2


# What an accelerator is assumed to have when its backend reports no memory limit (stated on
# stderr when used): a conservative 4 GiB, never the host's RAM, which is not the device's.
ACCELERATOR_FALLBACK_BYTES = 4 * 2**30


def device_memory_bytes(devices=None) -> int:
  """The memory one device has: the smallest `memory_stats()['bytes_limit']` of this process's
  devices among `devices` (default: `jax.local_devices()`) where the backend reports it. CPU
  devices without it: the host's physical memory divided by the number of those devices,
  which share it. An accelerator without it: ACCELERATOR_FALLBACK_BYTES, said on stderr."""
  import jax  # pylint: disable=g-import-not-at-top

  devices = list(jax.local_devices() if devices is None else devices)
  local = [d for d in devices if getattr(d, 'process_index', 0) == jax.process_index()]
  devices = local or devices
  limits = []
  for device in devices:
    try:
      stats = device.memory_stats()
    except Exception:  # pylint: disable=broad-except
      stats = None  # backends without memory statistics
    if stats and stats.get('bytes_limit'):
      limits.append(int(stats['bytes_limit']))
  if devices and len(limits) == len(devices):
    return min(limits)
  if any(getattr(d, 'platform', 'cpu') != 'cpu' for d in devices):
    kinds = sorted({getattr(d, 'device_kind', '?') for d in devices})
    print(f'note: {", ".join(kinds)} reports no memory limit; assuming '
          f'{ACCELERATOR_FALLBACK_BYTES / 2**30:.0f} GiB a device (set '
          '--config.data.device_budget_mb to give the budget yourself)', file=sys.stderr)
    return min(limits + [ACCELERATOR_FALLBACK_BYTES])
  return _host_memory_bytes() // max(len(devices), 1)
