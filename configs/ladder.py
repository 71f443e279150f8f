"""Credit-assignment family: BP / FA / DFA on a residual MLP, trainable-depth ladder.

The reference run, its table and definitions: docs/references.md; the family: docs/ladder.md.

Variants (python launch.py --config=configs/ladder.py:VARIANT):
  d256_L4   (default) CIFAR-10, d=256, L=4, k = 0..4, seeds 42/123/456, AdamW lr 1e-3 wd 0.01,
            cosine, batch 128, 100 epochs. Reference: BP 0.389 → 0.617, FA 0.355 → 0.402,
            DFA 0.349 → 0.301 (k = 0 → 4).
  d512_L2   the same with d=512, L=2. Reference: BP 0.386 → 0.603, FA 0.359 → 0.361,
            DFA 0.349 → 0.302.
  quick     offline on digits: d=64, L=2, 3 seeds, a few epochs; writes ladder.json, ladder.md,
            ladder.png and identity_check.json in about two minutes on two CPU cores.
Rules: bp, fa, dfa, usf (sign symmetry). --config.credit.rules="('bp','usf')" picks some.
"""

import ml_collections

from jaxlab.configs.common import base_config, pick


def d256_L4():
  c = base_config()
  c.experiment = 'ladder'
  c.seeds = (42, 123, 456)
  c.data.name = 'cifar10'
  c.model = ml_collections.ConfigDict(dict(name='resmlp', width=256, depth=4))
  # ks: () means every k in 0..depth. rms_normalize: the local surrogate's δ/rms(δ).
  c.credit = ml_collections.ConfigDict(dict(rules=('bp', 'fa', 'dfa'), ks=(0,),
                                            rms_normalize=True))
  c.credit.ks = ()
  c.augment.update(crop_padding=0, flip=False, normalization='cifar10')
  c.optim.update(name='adamw', lr=1e-3, weight_decay=0.01, schedule='cosine')
  # An MLP step is tiny: fuse 23 steps (1/17 of a CIFAR-10 epoch of 391 steps) per dispatch.
  c.train.update(batch_size=128, epochs=100, eval_batch_size=500, steps_per_dispatch=23,
                 log_every_steps=391, eval_every_epochs=10)
  c.checkpoint.every_steps = 3910
  return c


def d512_L2():
  c = d256_L4()
  c.model.update(width=512, depth=2)
  return c


def quick():
  c = d256_L4()
  c.data.name = 'digits'
  c.model.update(width=64, depth=2)
  c.augment.normalization = 'half'
  c.train.update(epochs=15, eval_batch_size=120, steps_per_dispatch=12, log_every_steps=12,
                 eval_every_epochs=15)
  c.checkpoint.every_steps = 1000
  return c


VARIANTS = {'d256_L4': d256_L4, 'd512_L2': d512_L2, 'quick': quick}


def get_config(arg=None):
  return pick(VARIANTS, arg, 'd256_L4')
