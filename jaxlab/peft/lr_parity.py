"""Dynamic learning-rate parity between two parameter groups (an extra of the
PEFT reference code: docs/references.md).

Every step the host folds each group's gradient norm into an EMA (β 0.9).
Every `every` steps, unless cooling off, it compares r = EMA_a / EMA_b: inside
the dead-band [2/3, 3/2] nothing happens; otherwise the group with the larger
gradient norm has its learning-rate scale multiplied by clamp(1/r', 0.5, 2)
(r' = its EMA over the other's), keeping its peak LR within [1e-6, 1e-2]. A
scaling starts a cool-off of `cooloff` check periods; one group is scaled at
most `max_streak` times in a row. The controller's state lives in
`TrainState.extra`, so it is checkpointed and a resumed run continues exactly.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class LrParity:
  peak_lrs: dict  # {group: the group's configured peak lr}
  groups: tuple[str, str] = ('lora', 'norm')
  beta: float = 0.9
  every: int = 20
  band: tuple[float, float] = (2 / 3, 3 / 2)
  factor_range: tuple[float, float] = (0.5, 2.0)
  lr_range: tuple[float, float] = (1e-6, 1e-2)
  cooloff: int = 2
  max_streak: int = 3

  def init_extra(self):
    a, b = self.groups
    return {'lr_scales': {a: np.float32(1.0), b: np.float32(1.0)},
            'parity': {'ema': np.zeros(2, np.float32), 'seen': np.int32(0),
                       'cooldown': np.int32(0), 'last': np.int32(-1), 'streak': np.int32(0)}}

  def observe(self, extra, first_step, metrics):
    """The new extra after the steps first_step.. whose per-step metrics are given (host numpy)."""
    a, b = self.groups
    scales = {g: float(extra['lr_scales'][g]) for g in self.groups}
    p = {k: np.array(v) for k, v in extra['parity'].items()}
    norms = np.stack([np.atleast_1d(metrics[f'grad_norm/{a}']),
                      np.atleast_1d(metrics[f'grad_norm/{b}'])], axis=1)
    for i, gn in enumerate(norms):
      step = first_step + i
      for j in range(2):
        if np.isfinite(gn[j]):  # a held group contributes nothing that step
          p['ema'][j] = gn[j] if p['seen'] == 0 else self.beta * p['ema'][j] + (1 - self.beta) * gn[j]
      p['seen'] = np.int32(p['seen'] + 1)
      if (step + 1) % self.every:
        continue
      if p['cooldown'] > 0:
        p['cooldown'] = np.int32(p['cooldown'] - 1)
        continue
      ratio = p['ema'][0] / max(p['ema'][1], 1e-12)
      if self.band[0] <= ratio <= self.band[1]:
        p['streak'] = np.int32(0)
        continue
      hot = 0 if ratio > 1 else 1
      if p['last'] == hot and p['streak'] >= self.max_streak:
        continue
      over = ratio if hot == 0 else 1 / ratio
      group = self.groups[hot]
      factor = float(np.clip(1 / over, *self.factor_range))
      lo, hi = (x / self.peak_lrs[group] for x in self.lr_range)
      scales[group] = float(np.clip(scales[group] * factor, lo, hi))
      p['streak'] = np.int32(p['streak'] + 1 if p['last'] == hot else 1)
      p['last'] = np.int32(hot)
      p['cooldown'] = np.int32(self.cooloff)
    return {'lr_scales': {g: np.float32(s) for g, s in scales.items()}, 'parity': p}
