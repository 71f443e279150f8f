"""Parameter-efficient fine-tuning: methods and policies as partition rules, freezing schedules.

`vit_with_peft` (jaxlab.peft.api) builds a PEFT ViT from pretrained weights without a config;
it loads on first use. `merge_lora` (jaxlab.models.lora) folds the adapters back into the kernels.
"""

import importlib

_EXPORTS = {'vit_with_peft': 'jaxlab.peft.api'}


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(_EXPORTS[name]), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
