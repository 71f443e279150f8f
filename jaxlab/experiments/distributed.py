"""Distributed-learning family (SPEC §4): a small CNN trained from scratch.

Today: the centralized, synchronous data-parallel baseline over every local
device. Local SGD and its relatives build on the same trainer.
"""

import jax.numpy as jnp

from jaxlab import models
from jaxlab.data.datasets import load_dataset
from jaxlab.train.loop import fit, run_keys
from jaxlab.train.task import Task, flax_apply
from jaxlab.train.report import print_summary


def make_task(config, num_classes, image_shape):
  """LeNet-style classifier with every parameter in one optimizer group."""
  model = models.build(config.model, num_classes)
  init_key, _, _ = run_keys(config.seed)
  params = model.init(init_key, jnp.zeros((1, *image_shape)), train=False)['params']
  return Task(params=params, apply=flax_apply(model), rules=[('.*', 'base')])


def run(config, workdir):
  dataset = load_dataset(config.data)
  size = config.augment.resize or dataset.train.images.shape[1]
  task = make_task(config, dataset.num_classes, (size, size, dataset.train.images.shape[3]))
  summary, _ = fit(config, workdir, task, dataset)
  print_summary(summary, workdir)
  return summary
