"""Steps per second of synchronous data parallelism vs local SGD (J = 1, 8, 32).

    python -m benchmarks.local_sgd [--devices=4] [--steps=32] [--batch=64] [--model=lenet5]

Runs on `--devices` simulated CPU devices when there is no accelerator (set before JAX
starts). Each worker (local SGD) or each device's share of the global batch (synchronous)
sees `--batch` images per step; both use LeNet-5 on random 32×32 data with SGD momentum.
Timing: the compiled local steps and the compiled parameter averages are timed separately
(device-synchronised, compilation and one warm-up round excluded). Writes
benchmarks/results/local_sgd_<device>_<date>.json.
"""

import argparse
import datetime
import functools
import json
import os
import sys
import time


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--devices', type=int, default=4)
  p.add_argument('--steps', type=int, default=32)
  p.add_argument('--batch', type=int, default=64)
  p.add_argument('--out', default='')
  args = p.parse_args(argv)
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             f' --xla_force_host_platform_device_count={args.devices}')
  import jax
  import jax.numpy as jnp
  import ml_collections
  import numpy as np

  from configs.common import base_config
  from jaxlab.data.augment import make_train_augment
  from jaxlab.models.lenet import LeNet5
  from jaxlab.optim.optimizers import make_optimizer
  from jaxlab.parallel.local import LocalSpec, make_average, worker_state
  from jaxlab.parallel.mesh import make_mesh, replicate, shard_leading
  from jaxlab.peft.partition import label_tree
  from jaxlab.train.state import TrainState
  from jaxlab.train.step import make_train_chunk, train_step
  from jaxlab.train.task import Task, flax_apply

  devices = jax.devices()[:args.devices]
  mesh = make_mesh(devices)
  k = len(devices)
  rng = np.random.default_rng(0)
  n = 4096
  data = replicate({'image': rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                    'label': rng.integers(0, 100, n).astype(np.int32)}, mesh)
  model = LeNet5(100)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))['params']
  task = Task(params=params, apply=flax_apply(model), rules=[('.*', 'base')])
  oc = base_config().optim
  oc.update(name='sgdm', lr=0.01, momentum=0.9, weight_decay=4e-4, schedule='constant')
  labels = label_tree(params, task.rules)
  tx = make_optimizer(oc, labels, 10_000, 100)
  aug = make_train_augment(ml_collections.ConfigDict(
      dict(resize=0, crop_padding=4, flip=True, normalization='cifar100')))
  step = functools.partial(train_step, task=task, tx=tx, augment=aug, labels=labels)
  idx = rng.integers(0, n, (args.steps, k, args.batch)).astype(np.int32)

  def timed(fn):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t0

  results = []
  # Synchronous: one model, global batch k·batch split over the devices.
  state = replicate(TrainState.create(params, {}, tx, jax.random.PRNGKey(1)), mesh)
  chunk = make_train_chunk(step, mesh, 'data')
  one = lambda s: shard_leading(idx[s:s + 1].reshape(1, k * args.batch), mesh, axis=1)
  compiled = chunk.lower(state, data, one(0)).compile()
  state, _ = compiled(state, data, one(0))  # warm-up
  compute = 0.0
  for s in range(args.steps):
    (state, _), dt = timed(lambda: compiled(state, data, one(s)))
    compute += dt
  results.append({'arm': 'sync', 'sync_every': None, 'steps_per_s': args.steps / compute,
                  'compute_s': compute, 'comm_s': 0.0, 'img_per_s': args.steps * k * args.batch / compute})

  for j in (1, 8, 32):
    spec = LocalSpec(workers=k, sync_every=j)
    base = TrainState.create(params, {}, tx, jax.random.PRNGKey(1), spec.init_extra(params))
    state = shard_leading(worker_state(base, k), mesh)
    chunk = make_train_chunk(functools.partial(step, axis_name=None), mesh, 'workers')
    local = lambda s: shard_leading(idx[s:s + 1], mesh, axis=1)
    compiled = chunk.lower(state, data, local(0)).compile()
    average = make_average(spec, mesh).lower(state).compile()
    state, _ = compiled(state, data, local(0))
    state = average(state)  # warm-up of both
    compute = comm = 0.0
    rounds = 0
    for s in range(args.steps):
      (state, _), dt = timed(lambda: compiled(state, data, local(s)))
      compute += dt
      if spec.averages_after(s + 1):
        state, dt = timed(lambda: average(state))
        comm, rounds = comm + dt, rounds + 1
    total = compute + comm
    results.append({'arm': 'local_sgd', 'sync_every': j, 'steps_per_s': args.steps / total,
                    'compute_s': compute, 'comm_s': comm, 'rounds': rounds,
                    'img_per_s': args.steps * k * args.batch / total})

  device = devices[0].device_kind.replace(' ', '_')
  record = {'benchmark': 'local_sgd', 'device_kind': devices[0].device_kind,
            'platform': devices[0].platform, 'num_devices': k, 'jax_version': jax.__version__,
            'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
            'command': 'python -m benchmarks.local_sgd ' + ' '.join(argv or sys.argv[1:]),
            'model': 'lenet5', 'batch_per_worker': args.batch, 'steps': args.steps,
            'results': results}
  out = args.out or os.path.join(os.path.dirname(__file__), 'results',
                                 f'local_sgd_{device}_{datetime.date.today()}.json')
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, 'w') as f:
    json.dump(record, f, indent=2)
  print(f'{"arm":<10} {"J":>3} {"steps/s":>9} {"img/s":>9} {"compute s":>10} {"comm s":>8}')
  for r in results:
    print(f'{r["arm"]:<10} {str(r["sync_every"] or "-"):>3} {r["steps_per_s"]:>9.2f} '
          f'{r["img_per_s"]:>9.0f} {r["compute_s"]:>10.2f} {r["comm_s"]:>8.3f}')
  print(f'written to {out}')


if __name__ == '__main__':
  main()
