"""Seeds trained together: under jax.vmap or one after another inside one program (the loop,
labelled lax.map), the trainer's two ways (jaxlab.train.step.seed_map: Task.seed_loop 'vmap' /
'map'), against one seed alone: the time of a training gradient, and whether each seed's loss
and gradients are bit for bit those of the seed alone (a one-model program) and of the seed
as a group of one through the loop (what the trainer's loop promises).

    python -m benchmarks.seed_axis [--model=lenet|vit|vit_dynamic] [--seeds=3] [--batch=0]
        [--repeats=15] [--json=PATH]

lenet: LeNet-5 (patch convolutions, 100 classes) at batch 64; vit / vit_dynamic:
configs/mhc.py:quick's ViT (plain residual / dynamic mHC, 10 classes) at batch 32. Random
images and labels; each seed its own parameters (the model's init from seeds 0, 1, ...), all on
the same batch. The three compiled gradients are timed in turn, `repeats` times, medians.
"""

import argparse
import json
import statistics
import time

from jaxlab import host

MODELS = ('lenet', 'vit', 'vit_dynamic')


def _model(name):
  """(apply(params, images), init(seed) -> params, classes, default batch)."""
  import jax

  from jaxlab.models import vit
  from jaxlab.models.lenet import LeNet5
  if name == 'lenet':
    model = LeNet5(100, 'patches')
    init = lambda seed: model.init(jax.random.PRNGKey(seed), jax.numpy.zeros((1, 32, 32, 3)))[
        'params']
    return lambda p, x: model.apply({'params': p}, x), init, 100, 64
  from configs.mhc import get_config
  from jaxlab.experiments import mhc
  config = mhc.arm_config(get_config('quick'), 'mhc_dynamic' if name == 'vit_dynamic' else 'regular')
  model = mhc.build_model(config.model, 10)
  return (lambda p, x: model.apply({'params': p}, x, train=False),
          lambda seed: vit.init_vit(model, seed), 10, 32)


def measure(name, seeds=3, batch=0, repeats=15):
  import jax
  import jax.numpy as jnp
  import numpy as np

  from jaxlab.train.step import seed_map
  apply, init, classes, default_batch = _model(name)
  batch = batch or default_batch
  images = jax.random.normal(jax.random.PRNGKey(100), (batch, 32, 32, 3))
  labels = jax.random.randint(jax.random.PRNGKey(101), (batch,), 0, classes)

  def loss(params):
    logp = jax.nn.log_softmax(apply(params, images))
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], 1))

  params = [init(seed) for seed in range(seeds)]
  stacked = jax.tree.map(lambda *a: jnp.stack(a), *params)
  grad = jax.value_and_grad(loss)
  runs = {'one seed': (jax.jit(grad), params[0]),
          'vmap': (jax.jit(seed_map(grad, 'vmap')), stacked),
          'lax.map': (jax.jit(seed_map(grad, 'map')), stacked)}
  outputs = {k: jax.block_until_ready(f(a)) for k, (f, a) in runs.items()}  # compiles
  times = {k: [] for k in runs}
  for _ in range(repeats):
    for k, (f, a) in runs.items():
      t0 = time.perf_counter()
      jax.block_until_ready(f(a))
      times[k].append(time.perf_counter() - t0)
  alone = [jax.tree.leaves(runs['one seed'][0](p)) for p in params]
  # Each seed as a group of one through the loop (config.seeds = (s,)): what the trainer's loop
  # promises to equal bit for bit.
  group_of_one = runs['lax.map'][0]
  in_group = [[x[0] for x in jax.tree.leaves(group_of_one(jax.tree.map(lambda x: x[None], p)))]
              for p in params]

  def differing(together, reference=alone):
    """How many of the seeds' (loss, gradient leaves) differ from `reference` (each seed alone,
    or each seed as a group of one) in any bit."""
    leaves = jax.tree.leaves(together)
    return sum(int(not np.array_equal(a, b[i])) for i in range(seeds)
               for a, b in zip(reference[i], leaves))

  median = {k: statistics.median(v) for k, v in times.items()}
  return {'model': name, 'seeds': seeds, 'batch': batch, 'repeats': repeats,
          'median_s': median,
          'vmap_over_one': median['vmap'] / median['one seed'],
          'map_over_one': median['lax.map'] / median['one seed'],
          'differing_vmap': differing(outputs['vmap']),
          'differing_map': differing(outputs['lax.map']),
          'differing_map_group_of_one': differing(outputs['lax.map'], in_group),
          'values_per_seed': len(alone[0]), 'jax': jax.__version__,
          'device': jax.devices()[0].device_kind}


def line(r):
  return (f'{r["model"]} batch {r["batch"]}, {r["seeds"]} seeds: one seed '
          f'{1e3 * r["median_s"]["one seed"]:.1f} ms; vmap {r["vmap_over_one"]:.2f}x, lax.map '
          f'{r["map_over_one"]:.2f}x one seed; values differing from the seed alone (of '
          f'{r["seeds"] * r["values_per_seed"]}): vmap {r["differing_vmap"]}, lax.map '
          f'{r["differing_map"]} (from each seed as a group of one through the loop: '
          f'{r.get("differing_map_group_of_one", "-")})')


def main(argv=None):
  host.from_environment()  # JAXLAB_MALLOC, before JAX starts a thread (jaxlab/host.py)
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--model', default=','.join(MODELS), help=f'comma-separated of {MODELS}')
  p.add_argument('--seeds', type=int, default=3)
  p.add_argument('--batch', type=int, default=0, help="0: the model's default batch")
  p.add_argument('--repeats', type=int, default=15)
  p.add_argument('--json', default='')
  args = p.parse_args(argv)
  names = args.model.split(',')
  unknown = [n for n in names if n not in MODELS]
  if unknown:
    p.error(f'unknown --model {", ".join(unknown)}; choose from {", ".join(MODELS)}')
  rows = []
  for name in names:
    rows.append(measure(name, args.seeds, args.batch, args.repeats))
    print(line(rows[-1]), flush=True)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(rows, f, indent=1)
    print(f'wrote {args.json}')


if __name__ == '__main__':
  main()
