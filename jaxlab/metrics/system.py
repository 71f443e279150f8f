"""What a run costs the machine: peak memory."""

import resource
import sys

import jax


def peak_memory():
  """(peak bytes, source) for the first local device.

  The device's own allocator statistics when the backend reports them (GPU,
  TPU); otherwise the peak resident set size of this process, which on the CPU
  backend is where arrays live.
  """
  stats = None
  try:
    stats = jax.local_devices()[0].memory_stats()
  except Exception:  # Some backends raise instead of returning None.
    stats = None
  if stats and 'peak_bytes_in_use' in stats:
    return int(stats['peak_bytes_in_use']), 'device_memory_stats'
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  # Linux reports kilobytes, macOS bytes.
  return int(rss if sys.platform == 'darwin' else rss * 1024), 'process_peak_rss'
