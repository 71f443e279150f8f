"""jaxlab: pure-function JAX experiments on one device or many.

Use it in your own code without configs (names load on first use, so `import jaxlab` is
cheap):

    model, params, labels = jaxlab.vit_with_peft(weights, num_classes=10, method='lora')
    trainable, frozen = jaxlab.split(params, labels)
    tx = jaxlab.make_optimizer(jaxlab.subtree_labels(trainable, labels), name='adamw', lr=1e-3)

See examples/own_loop.py for a whole training loop.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    # models and pretrained weights
    'ViT': 'jaxlab.models.vit',
    'LoraSpec': 'jaxlab.models.lora',
    'from_timm': 'jaxlab.io.pretrained',
    'from_big_vision': 'jaxlab.io.pretrained',
    'resample_pos_embed': 'jaxlab.io.pretrained',
    'resample_patch_kernel': 'jaxlab.io.pretrained',
    # PEFT
    'vit_with_peft': 'jaxlab.peft.api',
    'merge_lora': 'jaxlab.models.lora',
    'save_adapters': 'jaxlab.peft.adapters',
    'load_adapters': 'jaxlab.peft.adapters',
    'label_tree': 'jaxlab.params',
    'split': 'jaxlab.params',
    'merge': 'jaxlab.params',
    'subtree_labels': 'jaxlab.params',
    # optimizers and data
    'make_optimizer': 'jaxlab.optim.optimizers',
    'make_schedule': 'jaxlab.optim.schedules',
    'load_dataset': 'jaxlab.data.datasets',
    # the process
    'keep_freed_memory': 'jaxlab.host',
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
  return sorted(set(globals()) | set(_EXPORTS))
