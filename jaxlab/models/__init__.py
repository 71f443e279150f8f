"""Flax Linen models. `build(model_cfg, num_classes)` picks one by name."""

from jaxlab.models.lenet import LeNet5

MODELS = {'lenet5': LeNet5}


def build(model_cfg, num_classes):
  """The model named by `model_cfg.name`, sized for `num_classes`."""
  if model_cfg.name not in MODELS:
    raise ValueError(f'unknown model {model_cfg.name!r}; choose one of {sorted(MODELS)}')
  return MODELS[model_cfg.name](num_classes=num_classes)
