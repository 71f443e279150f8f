"""PEFT methods and layer policies as partition rules over ViT parameter paths
(definitions: docs/references.md).

Every method trains the head. `norm` trains every LayerNorm (final norm
included); `lora` adds LoRA to every block; `hybrid_parallel` does both;
`hybrid_layerwise` gives each block either LoRA or its own norm1/norm2 (final
norm not trained) by policy; `full` trains everything, `linear` only the head.
"""

import re

METHODS = ('full', 'linear', 'norm', 'lora', 'hybrid_parallel', 'hybrid_layerwise')
POLICIES = ('deep_lora', 'even_lora', 'odd_lora', 'explicit')
ORDERS = ('lora-first', 'norm-first')


def lora_blocks(method, depth, policy='deep_lora', explicit=()):
  """Indices of the blocks that get LoRA."""
  if method not in METHODS:
    raise ValueError(f'unknown peft.method {method!r}; choose one of {", ".join(METHODS)}')
  if method in ('lora', 'hybrid_parallel'):
    return tuple(range(depth))
  if method != 'hybrid_layerwise':
    return ()
  if policy == 'deep_lora':
    return tuple(range(int(2 * depth / 3), depth))
  if policy == 'even_lora':
    return tuple(range(0, depth, 2))
  if policy == 'odd_lora':
    return tuple(range(1, depth, 2))
  if policy == 'explicit':
    bad = [i for i in explicit if not 0 <= i < depth]
    if bad or not explicit:
      raise ValueError(f'peft.lora_blocks must list block indices in 0..{depth - 1}, got '
                       f'{tuple(explicit)}')
    return tuple(sorted(set(explicit)))
  raise ValueError(f'unknown peft.policy {policy!r}; choose one of {", ".join(POLICIES)}')


def _alternation(indices):
  return '|'.join(str(i) for i in indices)


def rules(method, depth, blocks_with_lora):
  """Ordered (regex, label) rules: labels head, norm, lora, base (full only) or frozen."""
  head = [(r'head/.*', 'head')]
  lora = [(r'.*/lora_[ab]', 'lora')]
  all_norms = [(r'(blocks_\d+/norm[12]|norm)/.*', 'norm')]
  if method == 'full':
    return head + all_norms + lora + [(r'.*', 'base')]
  if method == 'linear':
    return head + [(r'.*', None)]
  if method == 'norm':
    return head + all_norms + [(r'.*', None)]
  if method == 'lora':
    return head + lora + [(r'.*', None)]
  if method == 'hybrid_parallel':
    return head + all_norms + lora + [(r'.*', None)]
  if method == 'hybrid_layerwise':
    norm_blocks = [i for i in range(depth) if i not in blocks_with_lora]
    own_norms = [(rf'blocks_({_alternation(norm_blocks)})/norm[12]/.*', 'norm')] if norm_blocks else []
    return head + own_norms + lora + [(r'.*', None)]
  raise ValueError(f'unknown peft.method {method!r}; choose one of {", ".join(METHODS)}')


def hold_schedule(freeze_lora_steps=0, freeze_norm_steps=0, alt_freeze_every=0,
                  order='lora-first'):
  """step -> the set of groups held still at that step (selective freezing as the
  PEFT reference code scheduled it).

  LoRA is held while step < freeze_lora_steps, Norm while step <
  freeze_norm_steps. Once both warm-ups are over and K = alt_freeze_every > 0,
  phase = (step // K) % 2: with 'lora-first' phase 0 holds LoRA (Norm trains
  first) and phase 1 holds Norm; 'norm-first' is the reverse. The head is
  never held. Returns None when no freezing is configured.
  """
  if order not in ORDERS:
    raise ValueError(f'unknown peft.alt_order {order!r}; choose one of {", ".join(ORDERS)}')
  if not (freeze_lora_steps or freeze_norm_steps or alt_freeze_every):
    return None
  first, second = ('lora', 'norm') if order == 'lora-first' else ('norm', 'lora')
  warmup_end = max(freeze_lora_steps, freeze_norm_steps)

  def held(step):
    out = set()
    if step < freeze_lora_steps:
      out.add('lora')
    if step < freeze_norm_steps:
      out.add('norm')
    if alt_freeze_every and step >= warmup_end:
      out.add(first if (step // alt_freeze_every) % 2 == 0 else second)
    return frozenset(out)

  return held


# A selective-freezing schedule by name, for a sweep's runs ('method/policy@schedule'): parts
# joined by '+', each one of
#   warmup_lora<N>   LoRA held for the first N steps       (peft.freeze_lora_steps = N)
#   warmup_norm<N>   Norm held for the first N steps       (peft.freeze_norm_steps = N)
#   warmup_both<N>   both held for the first N steps (the head alone trains)
#   alt<K>           then alternation every K steps, LoRA held first (peft.alt_freeze_every = K)
#   alt<K>_norm_first  the same, Norm held first         (peft.alt_order = 'norm-first')
# e.g. 'warmup_lora200+alt25'. FREEZING_FIELDS are the peft fields a schedule sets.
FREEZING_FIELDS = ('freeze_lora_steps', 'freeze_norm_steps', 'alt_freeze_every', 'alt_order')
_NO_FREEZING = dict(freeze_lora_steps=0, freeze_norm_steps=0, alt_freeze_every=0,
                    alt_order='lora-first')
_FREEZING_PART = re.compile(r'(warmup_(lora|norm|both)|alt)([1-9][0-9]*)(_norm_first)?$')
FREEZING_GRAMMAR = ('parts joined by "+": warmup_lora<N>, warmup_norm<N>, warmup_both<N> (held '
                    'for the first N steps), alt<K> or alt<K>_norm_first (then alternation '
                    'every K steps), e.g. warmup_lora200+alt25')


def freezing_fields(name):
  """The peft fields (FREEZING_FIELDS) of the schedule called `name` (see above); ValueError
  for a name outside the grammar or not in its canonical form (freezing_name's)."""
  fields = dict(_NO_FREEZING)
  for part in name.split('+'):
    m = _FREEZING_PART.match(part)
    if not m or (m.group(4) and m.group(1) != 'alt'):
      raise ValueError(f'unknown freezing schedule {name!r}: {FREEZING_GRAMMAR}')
    steps = int(m.group(3))
    if m.group(1) == 'alt':
      fields.update(alt_freeze_every=steps,
                    alt_order='norm-first' if m.group(4) else 'lora-first')
    else:
      for group in ('lora', 'norm') if m.group(2) == 'both' else (m.group(2),):
        fields[f'freeze_{group}_steps'] = steps
  canonical = freezing_name(**fields)
  if canonical != name:
    raise ValueError(f'freezing schedule {name!r}: write it {canonical!r} (one name per '
                     'schedule: warm-ups first, both equal as warmup_both)')
  return fields


def freezing_name(freeze_lora_steps=0, freeze_norm_steps=0, alt_freeze_every=0,
                  alt_order='lora-first'):
  """The name of a selective-freezing schedule ('' for none): the inverse of freezing_fields."""
  parts = []
  if freeze_lora_steps and freeze_lora_steps == freeze_norm_steps:
    parts.append(f'warmup_both{freeze_lora_steps}')
  else:
    parts += [f'warmup_{g}{n}' for g, n in (('lora', freeze_lora_steps),
                                             ('norm', freeze_norm_steps)) if n]
  if alt_freeze_every:
    parts.append(f'alt{alt_freeze_every}' + ('_norm_first' if alt_order == 'norm-first' else ''))
  return '+'.join(parts)


def split_run(spec):
  """A sweep run 'method', 'method/policy' or either with '@schedule': (method, policy or '',
  schedule or '')."""
  spec, _, schedule = spec.partition('@')
  method, _, policy = spec.partition('/')
  return method, policy, schedule


def describe(method, policy, blocks_with_lora, freezing=''):
  """A short name for tables: 'hybrid_layerwise/deep_lora' etc., with '@<schedule>' when the
  run freezes groups selectively (freezing_name)."""
  if method == 'hybrid_layerwise':
    name = f'{method}/{policy}' if policy != 'explicit' else f'{method}/{list(blocks_with_lora)}'
  else:
    name = method
  return f'{name}@{freezing}' if freezing else name


