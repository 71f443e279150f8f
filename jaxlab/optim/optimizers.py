"""Optimizers by name, one per parameter group, joined with `optax.partition`."""

import optax

from jaxlab.optim.schedules import make_schedule

OPTIMIZERS = ('sgdm', 'adamw')


def _base(name, lr, weight_decay, cfg):
  if name == 'sgdm':
    # PyTorch SGD: the decay is added to the gradient before the momentum.
    return optax.chain(optax.add_decayed_weights(weight_decay),
                       optax.sgd(lr, momentum=cfg.momentum, nesterov=cfg.get('nesterov', False)))
  if name == 'adamw':
    return optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=weight_decay)
  raise ValueError(f'unknown optimizer {name!r}; choose one of {list(OPTIMIZERS)}')


def group_settings(optim_cfg, label):
  """(lr, weight_decay) for a parameter group: its entry in optim.groups, else the defaults."""
  group = optim_cfg.groups.get(label, None) if 'groups' in optim_cfg else None
  lr = optim_cfg.lr if group is None or 'lr' not in group else group.lr
  wd = optim_cfg.weight_decay if group is None or 'weight_decay' not in group else group.weight_decay
  return lr, wd


def make_optimizer(optim_cfg, labels, total_steps, steps_per_epoch):
  """optax.partition over the trainable labels, each group with its own lr and weight decay.

  `labels` is the label tree of the trainable parameters; every distinct label
  gets `optim_cfg.name` with the schedule `optim_cfg.schedule` scaled to that
  group's peak lr.
  """
  warmup = int(optim_cfg.warmup_epochs * steps_per_epoch)
  transforms = {}
  for label in sorted(set(_leaves(labels))):
    lr, wd = group_settings(optim_cfg, label)
    schedule = make_schedule(optim_cfg.schedule, lr, total_steps, warmup, optim_cfg.lr_floor)
    transforms[label] = _base(optim_cfg.name, schedule, wd, optim_cfg)
  return optax.partition(transforms, labels)


def _leaves(tree):
  if isinstance(tree, dict):
    for v in tree.values():
      yield from _leaves(v)
  else:
    yield tree
