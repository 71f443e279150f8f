"""Parameter-efficient fine-tuning: partition rules, methods and policies, freezing schedules.

`vit_with_peft` (jaxlab.peft.api) builds a PEFT ViT from pretrained weights without a config;
`merge_lora` (jaxlab.peft.merge) folds the adapters back into the kernels. Both load on first
use.
"""

import importlib

_EXPORTS = {'vit_with_peft': 'jaxlab.peft.api', 'merge_lora': 'jaxlab.peft.merge'}


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(_EXPORTS[name]), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
