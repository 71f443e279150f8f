"""Distributed-learning family (SPEC §4): LeNet-5 on CIFAR-100, centralized baselines.

Variants:
  quick              offline demo on the embedded digits (about a minute on two CPU cores):
                       python launch.py --config=configs/distributed.py:quick
                     reaches about 0.97 test accuracy.
  centralized_sgdm   SGDM lr 0.01, momentum 0.9, wd 4e-4, batch 64, 150 epochs, cosine
                     (default): python launch.py --config=configs/distributed.py
                     SPEC: best ≈ 53–55% CIFAR-100 test accuracy.
  centralized_adamw  AdamW lr 5e-4, wd 4e-4, otherwise the same; SPEC: ≈ 50% test.

Tuning runs hold out 20% of the training set: --config.data.validation_fraction=0.2.
"""

from configs.common import base_config, pick


def centralized_sgdm():
  c = base_config()
  c.experiment = 'distributed'
  c.data.name = 'cifar100'
  c.model.name = 'lenet5'
  c.augment.update(crop_padding=4, flip=True, normalization='cifar100')
  c.optim.update(name='sgdm', lr=0.01, momentum=0.9, weight_decay=4e-4, schedule='cosine')
  # One step per dispatch: XLA:CPU is slow on conv gradients inside lax.scan.
  c.train.update(batch_size=64, epochs=150, eval_every_epochs=5, steps_per_dispatch=1,
                 log_every_steps=100)
  c.checkpoint.every_steps = 2500
  return c


def centralized_adamw():
  c = centralized_sgdm()
  c.optim.update(name='adamw', lr=5e-4, weight_decay=4e-4)
  return c


def quick():
  c = centralized_sgdm()
  c.data.name = 'digits'
  c.augment.update(crop_padding=2, flip=False, normalization='half')
  c.optim.update(lr=0.05)
  c.train.update(epochs=8, eval_every_epochs=4, log_every_steps=22)
  c.checkpoint.every_steps = 88
  return c


VARIANTS = {
    'centralized_sgdm': centralized_sgdm,
    'centralized_adamw': centralized_adamw,
    'quick': quick,
}


def get_config(arg=None):
  return pick(VARIANTS, arg, 'centralized_sgdm')
