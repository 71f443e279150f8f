"""PEFT family: a pretrained ViT fine-tuned with LoRA, Norm tuning or hybrids.

One run trains one method; `sweep.runs` runs several through jaxlab.train.sweep (each in
its own sub-workdir, named after the run with '/' as '-', with its own result file;
sweep.only runs one) and assembles from the finished runs a table beside the reference
run's own rows (docs/references.md), sweep.json and a figure of accuracy against trainable parameters. With
`pretrained.source='pretrain'` the backbone is first trained from scratch on
`sweep.pretrain_classes` (the offline demo on digits).
"""

import copy
import dataclasses
import os

import jax
import ml_collections

from jaxlab import checks, models
from jaxlab.checks import at_least, one_of, positive, rule, within
from jaxlab.data.datasets import load_dataset, select_classes
from jaxlab.experiments import over_seeds, peft_stats, preflight
from jaxlab.io import pretrained as pt
from jaxlab.io.figures import markdown_table, scatter_plot, with_status
from jaxlab.io.writers import write_json, write_text
from jaxlab.params import flatten, label_paths, merge
from jaxlab.peft import api, methods
from jaxlab.peft.lr_parity import LrParity
from jaxlab.io import lock
from jaxlab.train.loop import fit
from jaxlab.train.summary import print_summary
from jaxlab.train.sweep import Cell, run_length, run_sweep
from jaxlab.train.task import Task, flax_apply
from jaxlab.train import guards


PRETRAINED_SOURCES = ('augreg', 'npz', 'timm', 'hub', 'none', 'pretrain')
RECIPES = ('weights', 'crop_flip', 'flip_cifar100', 'reference')
# Recipe names given up, each with the name that replaced it: an old name is an error that
# names the new one, never a silent alias.
RENAMED_RECIPES = {'seed': 'reference', 'week3': 'crop_flip', 'standard': 'flip_cifar100'}

# The reference rows (docs/references.md): the 10-epoch reference runs (ViT-S/16, CIFAR-100) as
# their own code logged them, one row per epoch, in Tony-lyu/CV reports/results_week4.csv: the last
# epoch's accuracy and per-batch ECE (its ECE is a mean of per-batch ECEs at eval batch 128), the
# best epoch's accuracy (the figure the write-up quotes), the median over the 10 epochs of its step
# time (each epoch's wall clock a step, batches and diagnostics included; the first epoch's holds
# CUDA's warm-up) and its peak memory (torch.cuda.max_memory_allocated).
REFERENCE = (
    dict(run='hybrid_parallel', trainable_params=647_524, wall_step_time_s=0.7298,
         peak_mem_bytes=8_037_466_112, acc1=0.8950, acc1_best=0.8950, best_epoch=10,
         ece_per_batch=0.0738),
    dict(run='hybrid_layerwise/deep_lora', trainable_params=247_396, wall_step_time_s=0.5685,
         peak_mem_bytes=6_145_093_632, acc1=0.8952, acc1_best=0.8960, best_epoch=8,
         ece_per_batch=0.0748),
    dict(run='lora', trainable_params=628_324, wall_step_time_s=0.7224,
         peak_mem_bytes=7_998_299_136, acc1=0.8923, acc1_best=0.8934, best_epoch=9,
         ece_per_batch=0.0775),
    dict(run='norm', trainable_params=57_700, wall_step_time_s=0.4993,
         peak_mem_bytes=5_199_781_888, acc1=0.8971, acc1_best=0.8975, best_epoch=6,
         ece_per_batch=0.0618),
)

# The selective-freezing runs (deep_lora, 5 epochs; docs/references.md) as the reference note
# quotes them from its code's log (Tony-lyu/CV, reports/results_week5_clean.csv): final accuracy,
# ECE (the code's per-batch mean at eval batch 128), its avg_step_time_s (the wall clock a step,
# as it timed steps), img/s and peak memory (torch.cuda.max_memory_allocated). The warm-up
# figure is the best of the note's reruns of that setting.
FREEZING_REFERENCE = (
    dict(run=peft_stats.DEEP, trainable_params=247_396, wall_step_time_s=0.5698,
         throughput_img_s=224.7, peak_mem_bytes=6_145_093_632, acc1=0.9004, ece_per_batch=0.0637),
    dict(run=peft_stats.WARMUP, trainable_params=247_396, wall_step_time_s=0.5714,
         throughput_img_s=224.0, peak_mem_bytes=6_145_093_632, acc1=0.9021, ece_per_batch=0.0600),
    dict(run=peft_stats.ALT50, trainable_params=235_108, wall_step_time_s=0.4781,
         throughput_img_s=267.7, peak_mem_bytes=5_355_933_696, acc1=0.8993, ece_per_batch=0.0592),
)


def reference_rows(config):
  """(the reference note's rows for this sweep's table, their heading): the selective-freezing
  runs for a sweep whose runs name freezing schedules, else the 10-epoch method runs."""
  if any('@' in spec for spec in config.sweep.runs):
    return FREEZING_REFERENCE, ('the reference runs with selective freezing (ViT-S/16, '
                                'CIFAR-100, deep_lora, 5 epochs; docs/references.md)')
  return REFERENCE, 'the reference runs (ViT-S/16, CIFAR-100, 10 epochs; docs/references.md)'


COLUMNS = (
    ('run', 'run', '{}'),
    ('trainables', 'trainable_params', '{:,}'),
    ('step time (s)', 'avg_step_time_s', '{:.4f}'),
    ('wall step time (s)', 'wall_step_time_s', '{:.4f}'),
    ('img/s', 'throughput_img_s', '{:,.0f}'),
    ('peak memory (B)', 'peak_mem_bytes', '{:,}'),
    ('Acc@1 (final)', 'acc1', '{:.4f}'),
    ('Acc@1 (best epoch)', 'acc1_best', '{:.4f}'),
    ('best epoch', 'best_epoch', '{:g}'),
    ('ECE', 'ece', '{:.4f}'),
    ('ECE per batch', 'ece_per_batch', '{:.4f}'),
)


def apply_recipe(config):
  """Set the augmentation of `config.augment.recipe` in place.

  weights: resize, flip, the pretrained weights' own normalisation (0.5/0.5);
  crop_flip: resize, crop with padding 4, flip, no normalisation (what the reference code
  gave hybrid_parallel); flip_cifar100: resize, flip, CIFAR-100 statistics (what it gave
  every other method); reference: crop_flip for hybrid_parallel, flip_cifar100 otherwise,
  as the reference code chose per method (docs/references.md). Digits are never flipped.
  """
  recipe = check_recipe(config.augment.recipe)
  if recipe == 'reference':
    recipe = 'crop_flip' if config.peft.method == 'hybrid_parallel' else 'flip_cifar100'
  settings = {'weights': dict(crop_padding=0, flip=True, normalization='half'),
              'crop_flip': dict(crop_padding=4, flip=True, normalization='none'),
              'flip_cifar100': dict(crop_padding=0, flip=True, normalization='cifar100')}[recipe]
  if config.data.name == 'digits':
    settings['flip'] = False  # a mirrored digit is another glyph (or none)
  with config.unlocked():
    config.augment.update(settings)
    config.augment.resize = config.model.image_size


def check_recipe(recipe):
  """`recipe` if it names a recipe; checks.BadInput otherwise, naming the new name of a
  renamed one."""
  if recipe in RENAMED_RECIPES:
    checks.fail('augment.recipe', f'augment.recipe {recipe!r} was renamed '
                f'{RENAMED_RECIPES[recipe]!r}',
                f'use --config.augment.recipe={RENAMED_RECIPES[recipe]}')
  if recipe not in RECIPES:
    checks.fail('augment.recipe', f'unknown augment.recipe {recipe!r}',
                f'choose one of {", ".join(RECIPES)}')
  return recipe


graft = pt.graft  # the backbone grafting that make_task does (jaxlab.io.pretrained.graft)


def make_task(config, num_classes, pretrained=None):
  """The ViT with the method's LoRA, its partition rules and freezing schedule.

  Built by jaxlab.peft.api.peft_vit, as `vit_with_peft` builds it: the same seed gives the
  same params. A `pretrained` backbone of another image size or patch is resampled."""
  p = config.peft
  if config.model.name != 'vit':
    raise ValueError(f'the peft family fine-tunes a ViT; model.name is {config.model.name!r}')
  targets = api.lora_targets(p.attn_only)
  seeds = over_seeds.run_seeds(config)
  built = [api.peft_vit(models.vit_arch(config.model), num_classes, p.method, p.policy, p.rank,
                        p.alpha, p.dropout, tuple(p.lora_blocks), targets, seed, pretrained,
                        p.get('head_init', 'timm')) for seed in seeds]
  model, params, rules = built[0]
  groups = set(label_paths(flatten(params), rules).values())
  parity = None
  if p.lr_parity:
    if not {'lora', 'norm'} <= groups:
      raise ValueError(f'peft.lr_parity needs both a lora and a norm group; {p.method} has '
                       f'{sorted(groups)}')
    parity = LrParity(peak_lrs={g: config.optim.groups[g].lr for g in ('lora', 'norm')})
  if config.get('seeds'):
    # The seeds train together in one program (jaxlab.train.layouts.Replicas): each its own fresh
    # leaves (head, LoRA), data order and augmentation; the same backbone.
    params = over_seeds.stacked([b[1] for b in built])
  return Task(
      params=params, apply=flax_apply(model), rules=rules,
      hold_schedule=methods.hold_schedule(p.freeze_lora_steps, p.freeze_norm_steps,
                                          p.alt_freeze_every, p.alt_order),
      diagnostics=('lora', 'norm') if p.diagnostics else (),
      diagnostics_every=p.get('diagnostics_every', 0), controller=parity,
      seeds=seeds if config.get('seeds') else None)


def lora_of_config(config):
  """The LoraSpec of the model a PEFT config builds (None for a method without LoRA), without
  building it."""
  p = config.peft
  return api.lora_spec(p.method, models.vit_arch(config.model)['depth'], p.policy, p.rank,
                       p.alpha, p.dropout, tuple(p.lora_blocks), api.lora_targets(p.attn_only))[1]


def load_pretrained(config):
  """Backbone params from `config.pretrained` (None for 'none'); checks the architecture.

  Width, depth and MLP size must match the configured model; another image size or patch
  is fine (make_task resamples the position embedding and the patch kernel)."""
  src = config.pretrained
  if src.source == 'none':
    return None
  if src.source == 'augreg':
    arch, params = _converted('augreg', pt.fetch_augreg(cache_dir=src.cache_dir))
  elif src.source in ('npz', 'timm'):
    arch, params = _converted(src.source, src.path)
  elif src.source == 'hub':
    arch, params = _converted('timm', pt.hub_file(src.name))
  else:
    raise ValueError(f'unknown pretrained.source {src.source!r}; choose one of '
                     f'{", ".join(PRETRAINED_SOURCES)}')
  want = models.vit_arch(config.model)
  clash = {k: (arch[k], want[k]) for k in ('width', 'depth', 'mlp_dim') if arch[k] != want[k]}
  if clash:
    raise ValueError(f'pretrained weights ({src.source}) have {clash} (theirs, configured); '
                     'set --config.model.* to match (model.image_size and model.patch may '
                     'differ: the position embedding and patch kernel are resampled)')
  return params


_LOADED = {}  # the last weights file converted: {(source, path, mtime, size): (arch, params)}


def _converted(source, path):
  """(arch, params) of a weights file, converted once per process: the preflight check and
  the run read the same file (a changed file is read again)."""
  path = os.path.abspath(os.path.expanduser(os.fspath(path)))
  stat = os.stat(path)
  key = (source, path, stat.st_mtime_ns, stat.st_size)
  if key not in _LOADED:
    read = (lambda: pt.big_vision_to_params(pt.load_npz(path))) if source != 'timm' else (
        lambda: pt.timm_to_params(pt.read_safetensors(path)))
    _LOADED.clear()
    _LOADED[key] = read()
  return _LOADED[key]


def _offline_message(errors):
  return ('this run needs data or weights that are not on this machine:\n  - '
          + '\n  - '.join(str(e).strip() for e in errors)
          + '\nWeights already on disk: --config.pretrained.source=npz (big_vision/AugReg .npz) or '
            'timm (.safetensors) with --config.pretrained.path=FILE.'
          + '\nThe offline demo runs on the embedded digits: '
            'python launch.py --config=configs/hybrid.py:quick')


def _inputs(config):
  """(dataset, pretrained params), or one error that lists everything missing."""
  dataset = pretrained = None
  errors = []
  try:
    dataset = load_dataset(config.data)
  except FileNotFoundError as e:
    errors.append(e)
  if config.pretrained.source != 'pretrain':
    try:
      pretrained = load_pretrained(config)
    except FileNotFoundError as e:
      errors.append(e)
  if errors:
    raise FileNotFoundError(_offline_message(errors))
  return dataset, pretrained


def backbone_source(config, workdir):
  """Where the frozen backbone of the runs in `workdir` comes from (backbone.json records it
  beside adapter-only checkpoints; jaxlab.export reads it back)."""
  src = config.pretrained
  if src.source == 'pretrain':
    return {'source': 'pretrain', 'path': os.path.abspath(os.path.join(workdir, 'pretrain'))}
  if src.source in ('npz', 'timm'):
    return {'source': src.source, 'path': os.path.abspath(os.path.expanduser(src.path))}
  if src.source == 'hub':
    return {'source': 'hub', 'name': src.name}
  if src.source == 'augreg':
    return {'source': 'augreg', 'path': os.path.join(src.cache_dir, pt.AUGREG_S16)}
  return {'source': src.source, 'seed': config.seed}  # 'none': initialised from the seed


def run_one(config, workdir, dataset, pretrained, backbone=None):
  """Train one method; returns its summary (also in workdir/summary.json). `backbone`: the
  frozen weights' source (backbone_source), recorded with adapter-only checkpoints."""
  config = copy.deepcopy(config)
  apply_recipe(config)
  if config.data.classes:
    dataset = select_classes(dataset, config.data.classes)
  task = dataclasses.replace(make_task(config, dataset.num_classes, pretrained),
                             backbone=backbone)
  p = config.peft
  name = methods.describe(p.method, p.policy, tuple(p.lora_blocks), methods.freezing_name(
      **{f: p[f] for f in methods.FREEZING_FIELDS}))
  summary, state = fit(config, workdir, task, dataset,
                       summary_extra={'run': name, 'method': p.method, 'policy': p.policy})
  return summary, state


# What a method whose seeds ran one after another reports per seed (over_seeds.combined).
SEED_KEYS = (*peft_stats.METRICS, 'acc1_best', 'avg_step_time_s', 'wall_step_time_s',
             'throughput_img_s')


def run_seeds(config, workdir, dataset, pretrained, backbone):
  """run_one's summary with config.seeds trained together, or, where they do not fit in memory
  together, one after another in WORKDIR/seed_<s>/ (over_seeds.together_or_in_turn: then
  WORKDIR/summary.json holds their per-seed values and means)."""
  return over_seeds.together_or_in_turn(
      config, workdir, lambda c, w: run_one(c, w, dataset, pretrained, backbone)[0], SEED_KEYS)



def pretrain(config, workdir, dataset):
  """Train the whole ViT from scratch on `sweep.pretrain_classes`; returns its params."""
  c = copy.deepcopy(config)
  with c.unlocked():
    c.data.classes = tuple(config.sweep.pretrain_classes)
    c.peft.update(method='full', freeze_lora_steps=0, freeze_norm_steps=0, alt_freeze_every=0,
                  diagnostics=False)
    c.train.epochs = config.sweep.pretrain_epochs
    c.seeds = ()  # one backbone, from config.seed, for every transfer seed
    c.optim.lr = config.sweep.pretrain_lr
    # Every group at pretrain_lr: ConfigDict.update(groups={}) would merge, keeping the
    # transfer's per-group rates for the head and the norms.
    c.optim.groups = ml_collections.ConfigDict()
    c.augment.recipe = 'weights'
  summary, state = run_one(c, workdir, dataset, None)
  print(f'pretrained on classes {list(c.data.classes)}: acc@1 {summary["acc1"]:.4f}')
  return jax.device_get(merge(state.params, state.frozen))


# What augment.recipe sets in every run (apply_recipe): a command-line value would be ignored.
RECIPE_FIELDS = ('resize', 'crop_padding', 'flip', 'normalization')


# What this family reads beyond configs/common.py's shared fields and the optimizers' own.
FIELDS = guards.declare_family('peft', guards.Family(
    reads=('peft.*', 'pretrained.*', 'sweep.*', 'model.*', 'augment.recipe', 'data.classes',
           'seeds'),
    neutral=('peft.diagnostics', 'peft.diagnostics_every', 'model.remat',
             'pretrained.cache_dir'),
    cells=('sweep.runs',),
    ranges={
        'augment.recipe': lambda c, _: check_recipe(c.augment.recipe),  # names renamed ones
        'pretrained.source': rule(one_of, PRETRAINED_SOURCES),
        'peft.head_init': rule(one_of, api.HEAD_INITS),
        'peft.rank': rule(at_least, 1),
        'peft.alpha': rule(positive),
        'peft.dropout': rule(within, 0, 1, high_open=True),
        **{f'peft.{name}': rule(at_least, 0, ' (0 turns it off)')
           for name in ('freeze_lora_steps', 'freeze_norm_steps', 'alt_freeze_every',
                        'diagnostics_every')},
    }))

def validate(config, overridden=frozenset(), devices=1):
  """The family's fields before anything is loaded or computed: methods, LoRA blocks inside
  the depth, freezing, classes inside the data set, the ViT, and overrides that sweep.runs
  or augment.recipe would ignore."""
  c, p = config, config.peft
  if c.model.name != 'vit':
    checks.fail('model.name', f'the peft family fine-tunes a ViT; model.name is '
                f'{c.model.name!r}', 'use --config.model.name=vit')
  arch = preflight.check_vit(c, overridden)
  runs = tuple(c.sweep.runs)
  for spec in (runs or (f'{p.method}/{p.policy}',)):
    method, policy, schedule = methods.split_run(spec)
    field = 'sweep.runs' if runs else 'peft.method'
    if method not in methods.METHODS:
      checks.fail(field, f'unknown method {method!r}', f'choose one of '
                  f'{", ".join(methods.METHODS)}')
    if runs and '@' in spec:
      with checks.about('sweep.runs', 'name a schedule after "@", e.g. '
                        'hybrid_layerwise/deep_lora@alt50'):
        methods.freezing_fields(schedule)
    with checks.about('peft.lora_blocks' if (policy or p.policy) == 'explicit'
                      else ('sweep.runs' if runs else 'peft.policy'),
                      f'policies: {", ".join(methods.POLICIES)}; block indices lie in '
                      f'0..{arch["depth"] - 1}'):
      methods.lora_blocks(method, arch['depth'], policy or p.policy, tuple(p.lora_blocks))
  if runs:
    # A run 'hybrid_layerwise' without '/policy' takes peft.policy; every other run sets both.
    bare = any(spec == 'hybrid_layerwise' for spec in runs)
    for field in ('peft.method',) + (() if bare else ('peft.policy',)):
      checks.ignored_override(field, overridden, f'sweep.runs {runs}',
                              'give the methods in --config.sweep.runs (e.g. '
                              '--config.sweep.runs=norm), or run a single-method variant '
                              'such as --config=hybrid:norm')
    if all('@' in spec for spec in runs):  # every run names its own freezing schedule
      for name in methods.FREEZING_FIELDS:
        checks.ignored_override(f'peft.{name}', overridden, f'sweep.runs {runs}',
                                'name the schedule in the run instead (e.g. '
                                'hybrid_layerwise/deep_lora@warmup_lora200+alt25)')
  for key in RECIPE_FIELDS:
    checks.ignored_override(f'augment.{key}', overridden,
                            f'augment.recipe {c.augment.recipe!r} (resize = model.image_size)',
                            f'choose a recipe with --config.augment.recipe '
                            f'({", ".join(RECIPES)})')
  unread = lambda field, why, fix: checks.unread_override(field, overridden, why, fix)
  src = c.pretrained.source
  if src not in ('npz', 'timm'):
    unread('pretrained.path', f'with pretrained.source={src!r}',
           'set --config.pretrained.source=npz (big_vision .npz) or timm (.safetensors) too')
  if src != 'augreg':
    unread('pretrained.cache_dir', f'with pretrained.source={src!r}',
           'it is where the AugReg download is kept: drop it')
  if src != 'hub':
    unread('pretrained.name', f'with pretrained.source={src!r}',
           'set --config.pretrained.source=hub too (weights by Hugging Face hub name)')
  elif not pt.hub_name(c.pretrained.get('name', '')):
    checks.fail('pretrained.name', f'pretrained.source=hub needs a hub repository name, got '
                f'{c.pretrained.get("name", "")!r}',
                'give e.g. --config.pretrained.name=timm/vit_small_patch16_224.augreg_in21k_ft_in1k')
  if src != 'pretrain':
    for name in ('pretrain_classes', 'pretrain_epochs', 'pretrain_lr'):
      unread(f'sweep.{name}', f'with pretrained.source={src!r}',
             'set --config.pretrained.source=pretrain too (or drop it)')
  specs = [methods.split_run(spec) for spec in (runs or (f'{p.method}/{p.policy}',))]
  used = {m for m, _, _ in specs}
  policies = {pol or p.policy for m, pol, _ in specs if m == 'hybrid_layerwise'}
  if not used & {'lora', 'hybrid_parallel', 'hybrid_layerwise'}:
    for name in ('rank', 'alpha', 'dropout', 'attn_only'):
      unread(f'peft.{name}', f'by the methods run here ({", ".join(sorted(used))}: no LoRA)',
             'run a LoRA method too (lora, hybrid_parallel, hybrid_layerwise), or drop it')
  if not runs and p.method != 'hybrid_layerwise':
    unread('peft.policy', f'by peft.method={p.method!r}',
           'set --config.peft.method=hybrid_layerwise too (or drop it)')
  if 'explicit' not in policies:
    unread('peft.lora_blocks', 'unless a hybrid_layerwise run has policy explicit',
           'set --config.peft.method=hybrid_layerwise --config.peft.policy=explicit too')
  if not p.alt_freeze_every:
    unread('peft.alt_order', 'while peft.alt_freeze_every=0 (no alternation)',
           'set --config.peft.alt_freeze_every too')
  if not p.diagnostics:
    unread('peft.diagnostics_every', 'while peft.diagnostics=false',
           'set --config.peft.diagnostics=true too')
  if c.get('seeds'):
    preflight.check_seeds(c)
    if p.diagnostics:
      checks.fail('peft.diagnostics', 'the gradient diagnostics measure one model, and seeds '
                  f'{tuple(c.seeds)} train several together',
                  'set --config.peft.diagnostics=false, or --config.seeds="()" for one seed')
    if p.lr_parity:
      checks.fail('peft.lr_parity', 'LR parity steers one model\'s learning rates, and seeds '
                  f'{tuple(c.seeds)} train several together',
                  'set --config.peft.lr_parity=false, or --config.seeds="()" for one seed')
  with checks.about('peft.alt_order', f'choose one of {", ".join(methods.ORDERS)}'):
    methods.hold_schedule(order=p.alt_order)
  classes = preflight.num_classes(c)
  preflight.check_classes(c, 'data.classes', classes)
  if c.pretrained.source == 'pretrain':
    if not c.sweep.pretrain_classes:
      checks.fail('sweep.pretrain_classes', 'pretrained.source=pretrain needs the classes to '
                  'pretrain on', 'list them, e.g. --config.sweep.pretrain_classes="(0, 1, 2, 3, 4)"')
    preflight.check_classes(c, 'sweep.pretrain_classes', classes)
    at_least(c, 'sweep.pretrain_epochs', 1)
    positive(c, 'sweep.pretrain_lr')
  if c.pretrained.source in ('npz', 'timm') and not c.pretrained.path:
    checks.fail('pretrained.path', f'pretrained.source={c.pretrained.source} needs a file',
                f'give --config.pretrained.path=FILE (a {"big_vision .npz" if c.pretrained.source == "npz" else "timm .safetensors"})')
  preflight.check_divisible(c, 'train.batch_size', devices)


def check_files(config):
  """The pretrained weights of source npz or timm: a readable file of the configured ViT
  (loaded once here; the run reuses it)."""
  src = config.pretrained
  if src.source == 'augreg':  # the cached file, or a download (offline: not here)
    try:
      load_pretrained(config)
    except FileNotFoundError as e:
      raise checks.Missing('the AugReg ViT-S/16 weights are not here and cannot be downloaded',
                           os.path.join(src.cache_dir, pt.AUGREG_S16),
                           'download the .npz elsewhere and put it there, or give weights on '
                           'disk: --config.pretrained.source=npz|timm '
                           '--config.pretrained.path=FILE') from e
    return
  if src.source == 'hub':
    try:
      load_pretrained(config)
    except FileNotFoundError as e:
      raise checks.Missing(f'the weights {src.name} are not in the Hugging Face cache and cannot '
                           'be downloaded', pt.hub_cache_dir(),
                           'download them where there is internet (e.g. huggingface-cli download '
                           f'{src.name}) into the cache this machine reads (HF_HOME / '
                           'HF_HUB_CACHE), or give the file: --config.pretrained.source=timm '
                           '--config.pretrained.path=FILE') from e
    except ImportError as e:
      raise checks.BadInput(str(e), checks.flag('pretrained.source'),
                            'pip install "jaxlab[hub]", or give the file with '
                            '--config.pretrained.source=timm --config.pretrained.path=FILE') from e
    return
  if src.source not in ('npz', 'timm'):
    return
  path = os.path.expanduser(src.path)
  if not os.path.isfile(path):
    raise checks.BadInput(f'pretrained weights not found ({"a directory" if os.path.isdir(path) else "no such file"})',
                          src.path, 'give the file with --config.pretrained.path')
  try:
    load_pretrained(config)
  except (ValueError, KeyError, OSError, EOFError) as e:
    reason = str(e).replace(f'{os.path.abspath(path)}: ', '')  # the path is named once, below
    raise checks.BadInput(f'unusable pretrained weights: {reason}', src.path,
                          f'give a {"big_vision/AugReg .npz" if src.source == "npz" else "timm .safetensors"} '
                          'file of the configured ViT (model.*), or fix the file') from e


def run(config, workdir):
  dataset, pretrained = _inputs(config)
  if config.pretrained.source == 'pretrain':
    with lock.serial(os.path.join(workdir, 'pretrain')):  # sweep.only jobs: one trains it
      pretrained = pretrain(config, os.path.join(workdir, 'pretrain'), dataset)
  backbone = backbone_source(config, workdir)
  if not config.sweep.runs:
    summary = run_seeds(config, workdir, dataset, pretrained, backbone)
    print_summary(summary, workdir)
    return summary

  def cell(spec):
    c = copy.deepcopy(config)
    method, policy, schedule = methods.split_run(spec)
    with c.unlocked():
      c.peft.method = method
      c.peft.policy = policy or c.peft.policy
      if schedule:
        c.peft.update(methods.freezing_fields(schedule))
    out = os.path.join(workdir, cell_name(spec))
    # The row: the run's summary and its step time epoch by epoch, for the claims that compare
    # step times (peft_stats.COST_CLAIMS).
    return Cell(cell_name(spec), out, lambda: over_seeds.with_epoch_step_times(
        run_seeds(c, out, dataset, pretrained, backbone), out), run_length(c))

  def assemble(finished, final):
    rows = list(finished.values())
    write_report(workdir, rows, config, echo=final)
    return {'runs': rows}

  return run_sweep(config, workdir, [cell(spec) for spec in config.sweep.runs], assemble)


def cell_name(spec):
  """A run of sweep.runs ('method' or 'hybrid_layerwise/policy', either with '@schedule') as its
  cell and folder name."""
  return spec.replace('/', '-')


def cell_names(config):
  """The names of the sweep's cells (what sweep.only chooses from): none for a single run."""
  return [cell_name(spec) for spec in config.sweep.runs]


def write_report(workdir, rows, config, echo=True):
  """workdir/table.md (ours beside the reference run's own rows) and
  workdir/accuracy_vs_trainables.png."""
  mc, classes = config.model, tuple(config.data.classes)

  def span(cs):  # (5, 6, 7, 8, 9) → '5–9'
    if len(cs) > 2 and list(cs) == list(range(cs[0], cs[-1] + 1)):
      return f'{cs[0]}–{cs[-1]}'
    return ', '.join(map(str, cs)) or '(all classes)'

  model = (f'ViT-{mc.variant}' if mc.variant else
           f'ViT (patch {mc.patch}, width {mc.width}, depth {mc.depth}, {mc.image_size} px)')
  data = f'{config.data.name} {span(classes)}' if classes else config.data.name
  title = f'{model} on {data}, {config.train.epochs} epochs'
  if config.pretrained.source == 'pretrain':
    title += (f'; backbone trained from scratch on {config.data.name} '
              f'{span(tuple(config.sweep.pretrain_classes))} ({config.sweep.pretrain_epochs} epochs)')
  elif config.pretrained.source != 'none':
    title += f'; backbone {config.pretrained.source}'
  ece_batch = config.train.get('ece_batch_size', 0)
  note = ('\n\nStep time and img/s are the training step alone (diagnostics run apart); wall '
          'step time is the training loop\'s wall clock a step, batches and diagnostics '
          'included (compiles, checkpoint saves and evaluations not), as the source code timed '
          'its steps. ECE is the global ECE over the test set (15 bins); ECE per batch is the '
          f'mean of the ECEs of test batches of {ece_batch or "(off: train.ece_batch_size=0)"}, '
          'weighted by their sizes, as the source code computed it. Peak '
          'memory is each run\'s own: XLA\'s memory analysis of its compiled training step '
          '(arguments, incl. the device-resident data set, + outputs − donated + temporaries); '
          'the runtime\'s process-wide peak is in each summary.json.')
  finished = [r for r in rows if r.get('diverged_at_step') is None]
  seeds = over_seeds.run_seeds(config)
  reference, reference_title = reference_rows(config)
  results_stats = peft_stats.seed_stats(rows, reference, config.data.name, seeds)
  write_json(os.path.join(workdir, 'stats.json'), results_stats)
  if any('acc1_per_seed' in r for r in finished):
    note += (f'\n\nEvery method trained seeds {list(seeds)} together: each number above is '
             'the seeds\' mean (the best epoch: of the mean; step time and memory: of the '
             'seeds\' joint step).\n\n## Over the seeds\n\n'
             + peft_stats.seeds_table(results_stats)
             + peft_stats.claims_report(results_stats, config.data.name))
  text = (f'# PEFT methods: {title}\n\n'
          + markdown_table([with_status(r, 'acc1') for r in rows], COLUMNS) + note
          + f'\n\n## Reference: {reference_title}\n\n'
          + ('As their code logged them (Tony-lyu/CV, reports/results_week4.csv): the write-up '
             'quotes the best epoch\'s Acc@1. Their step time is the median over the epochs of '
             'the wall clock a step' if reference is REFERENCE else
             'As the note quotes them from its code\'s log (Tony-lyu/CV, '
             'reports/results_week5_clean.csv): Acc@1 after the last epoch; their step time is '
             'the wall clock a step as the code timed it')
          + ', their ECE the per-batch mean at eval batch 128, their '
          'memory torch.cuda.max_memory_allocated on one GPU; compare them with the columns '
          'measured the same way (wall step time, ECE per batch).\n\n'
          + markdown_table(reference, COLUMNS) + '\n')
  write_text(os.path.join(workdir, 'table.md'), text)
  n = max((results_stats['arms'][r['run']]['acc1']['n'] for r in finished), default=1)
  spread = f'; mean of {n} seeds, bars: 95% t-interval' if n > 1 else ''
  scatter_plot(os.path.join(workdir, 'accuracy_vs_trainables.png'),
               [(r['trainable_params'], r['acc1'], r['run']) for r in finished],
               'trainable parameters', 'Acc@1 (final)',
               f'PEFT, {len(rows)} method{"s" * (len(rows) != 1)}: {title}{spread}', logx=True,
               diverged=[(r['trainable_params'], f'{r["run"]}: {r["status"]}') for r in rows
                         if r.get('diverged_at_step') is not None],
               intervals=[results_stats['arms'][r['run']]['acc1']['ci95'] for r in finished])
  write_json(os.path.join(workdir, 'sweep.json'), rows)
  if echo:
    print('\n' + text)
