"""Several processes, one run: JAX's multi-controller runtime (`jax.distributed`).

Every process runs the same program; the device mesh spans all their devices.
`initialize` must run before anything touches a JAX backend (jax.devices(), an
array, a jit): the launcher calls it first thing.
"""

import os

import jax

from jaxlab import checks


def wanted(dist_cfg):
  """Whether `config.distributed` asks for a multi-process run: initialize=true, or any of the
  coordinator fields set."""
  return bool(dist_cfg.initialize or dist_cfg.coordinator_address or dist_cfg.num_processes > 0
              or dist_cfg.process_id >= 0)


def initialize(dist_cfg):
  """Join the multi-process run `dist_cfg` describes (a no-op when it asks for none).

  coordinator_address 'host:port', num_processes and process_id: empty / -1 let
  jax.distributed.initialize() detect them from the cluster (SLURM, Open MPI,
  Kubernetes, a Cloud TPU pod). cpu_collectives: the CPU devices' collectives
  across processes (gloo here, or mpi).
  """
  if not wanted(dist_cfg):
    return
  if dist_cfg.cpu_collectives:
    jax.config.update('jax_cpu_collectives_implementation', dist_cfg.cpu_collectives)
  given = dict(coordinator_address=dist_cfg.coordinator_address or None,
               num_processes=dist_cfg.num_processes if dist_cfg.num_processes > 0 else None,
               process_id=dist_cfg.process_id if dist_cfg.process_id >= 0 else None)
  try:
    jax.distributed.initialize(**given)
  except (ValueError, RuntimeError) as e:
    if 'must be called before' in str(e):
      raise
    raise RuntimeError(
        f'jax.distributed.initialize({", ".join(f"{k}={v!r}" for k, v in given.items() if v is not None)}) '
        f'failed: {str(e).rstrip(".")}. Outside a cluster manager JAX cannot detect the run: pass '
        '--config.distributed.coordinator_address=HOST:PORT (process 0\'s address), '
        '--config.distributed.num_processes=N and --config.distributed.process_id=I '
        '(0..N-1, a different one in each process)') from e


def is_main():
  """Whether this is process 0 (the one that writes files and draws progress)."""
  return jax.process_index() == 0


def check_platform():
  """Start JAX's backend, or say in one line (checks.EnvFailure) that the platform
  JAX_PLATFORMS names cannot start here."""
  try:
    jax.devices()
  except Exception as e:  # pylint: disable=broad-except  # JAX raises RuntimeError or AssertionError
    wanted = os.environ.get('JAX_PLATFORMS') or jax.config.jax_platforms or ''
    reason = str(e).split(' (set JAX_PLATFORMS')[0].strip() or (
        f'{type(e).__name__}: no plugin for it is installed')
    raise checks.EnvFailure(
        f'JAX cannot start the platform {wanted!r} on this machine ({reason})',
        f'JAX_PLATFORMS={wanted}' if wanted else 'JAX_PLATFORMS',
        'unset JAX_PLATFORMS (or set it to cpu) to run on the CPU; for a GPU, install the CUDA '
        'build (pip install -e ".[cuda12]") on a machine where nvidia-smi lists the GPU') from e
