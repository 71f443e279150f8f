"""What every family checks before anything is computed or written: the fields all configs
share (ranges and the relations between them), the devices, and the files and directories
a run will read or write. Each failure is a checks.BadInput naming the field or path."""

import os

from absl import logging

from jaxlab import checks
from jaxlab.checks import BadInput, at_least, positive, within

from jaxlab.io import trackers
from jaxlab.optim import averaging, optimizers, schedules

CPU_COLLECTIVES = ('gloo', 'mpi')


def check_fields(c):
  """Ranges of the shared fields (base_config) and the relations between them."""
  for field in ('train.batch_size', 'train.epochs', 'train.eval_batch_size',
                'train.steps_per_dispatch', 'train.log_every_steps', 'train.eval_every_epochs',
                'checkpoint.every_steps', 'checkpoint.keep'):
    at_least(c, field, 1)
  at_least(c, 'train.steps', 0, ' (0 runs every epoch)')
  if checks.has(c, 'train.label_smoothing'):
    within(c, 'train.label_smoothing', 0, 1, high_open=True)
  if checks.has(c, 'model.drop_path_rate'):
    within(c, 'model.drop_path_rate', 0, 1, high_open=True)
  if checks.has(c, 'train.ema_decay'):
    within(c, 'train.ema_decay', 0, 1, high_open=True)
  if checks.has(c, 'train.grad_accumulation'):
    at_least(c, 'train.grad_accumulation', 1, ' (1: the whole batch at once)')
    check_divisible(c, 'train.batch_size', c.train.grad_accumulation,
                    'micro-batches of train.grad_accumulation')
  checks.check_declared(c, 'averaging', averaging.FIELDS)
  trackers.check_config(c)

  from jaxlab.data import datasets, stream  # pylint: disable=g-import-not-at-top
  checks.one_of(c, 'data.placement', stream.PLACEMENTS)
  checks.one_of(c, 'data.label', tuple(datasets.NUM_CLASSES[c.data.name]))
  within(c, 'data.validation_fraction', 0, 1, high_open=True)
  at_least(c, 'data.device_budget_mb', 0, ' (0 = half the device memory)')
  at_least(c, 'data.prefetch', 0)

  for field in ('augment.resize', 'augment.crop_padding', 'augment.rotation',
                'augment.randaugment_ops'):
    at_least(c, field, 0, ' (0 turns it off)')
  for field in ('augment.perspective', 'augment.perspective_p', 'augment.erasing_p'):
    within(c, field, 0, 1)
  for field in ('augment.mixup_alpha', 'augment.cutmix_alpha'):
    if checks.has(c, field):
      at_least(c, field, 0, ' (0 turns it off)')
  for field in ('augment.mix_prob', 'augment.mix_switch_prob'):
    if checks.has(c, field):
      within(c, field, 0, 1)
  within(c, 'augment.randaugment_magnitude', 0, 30, why=' (RandAugment\'s 31 bins)')
  _color_jitter(c)
  _pair(c, 'augment.rrc_scale', 'random-resized-crop area fractions', upper=1.0, off=(0, 0))
  _pair(c, 'augment.rrc_ratio', 'random-resized-crop aspect ratios', upper=None)

  _optimizer(c)
  if checks.has(c, 'simulated_cpu_devices'):
    at_least(c, 'simulated_cpu_devices', 0, ' (0: the real devices)')
  _distributed(c)


def _optimizer(c):
  """The ranges that the optimizers, schedules and averaging declare (optim.optimizers.FIELDS,
  optim.schedules.FIELDS, optim.averaging.FIELDS), and the relations between fields."""
  checks.check_declared(c, 'optim', optimizers.FIELDS)
  checks.check_declared(c, 'optim', schedules.FIELDS)
  for label in c.optim.groups:
    group = f'optim.groups.{label}'
    if checks.has(c, f'{group}.lr'):
      positive(c, f'{group}.lr')
    if checks.has(c, f'{group}.weight_decay'):
      at_least(c, f'{group}.weight_decay', 0)
  # Relations: the warm-up ends inside the run (and before whd's decay starts).
  o = c.optim
  warmup = 'warmup_epochs' in schedules.SCHEDULE_READS.get(o.schedule, ())
  if warmup and not o.warmup_fraction and o.warmup_epochs >= c.train.epochs:
    checks.fail('optim.warmup_epochs',
                f'the warm-up ({o.warmup_epochs:g} epochs) is not shorter than the run '
                f'(train.epochs={c.train.epochs})',
                f'set --config.optim.warmup_epochs below {c.train.epochs}, or raise '
                '--config.train.epochs')
  if o.schedule == 'whd' and o.warmup_fraction > o.decay_start_fraction:
    checks.fail('optim.warmup_fraction',
                f'whd\'s warm-up ({o.warmup_fraction:g} of the run) ends after its decay starts '
                f'(optim.decay_start_fraction={o.decay_start_fraction:g})',
                'set --config.optim.warmup_fraction at most optim.decay_start_fraction')
  cooldown = 1 - schedules.LATENT_SPACE_FRAC_DECAY
  if o.schedule == 'whd_latent_space' and o.warmup_fraction > cooldown:
    checks.fail('optim.warmup_fraction',
                f'whd_latent_space\'s warm-up ({o.warmup_fraction:g} of the run) ends after its '
                f'cooldown starts ({cooldown:g} of the run, as the reference WHDScheduler\'s)',
                f'set --config.optim.warmup_fraction at most {cooldown:g}, or use '
                '--config.optim.schedule=whd to choose where the decay starts')


def _unread(reads, chosen):
  """{field: [the choices that read it]} for each field some choice of `reads` ({choice:
  fields}) reads and `chosen` does not."""
  users = {}
  for choice, fields in reads.items():
    for field in fields:
      users.setdefault(field, []).append(choice)
  return {field: who for field, who in users.items() if field not in reads[chosen]}


def check_unread(c, overridden):
  """Command-line overrides of shared fields that this run would never read: what the
  optimizer, the schedule and the averaging mode declare they read (OPTIMIZER_READS,
  SCHEDULE_READS, averaging.READS)."""
  o = c.optim
  if o.name in optimizers.OPTIMIZER_READS:
    for name, users in _unread(optimizers.OPTIMIZER_READS, o.name).items():
      checks.unread_override(f'optim.{name}', overridden, f'by optim.name={o.name!r}',
                             f'only {", ".join(users)} read it: set --config.optim.name too, '
                             'or drop it')
  if o.schedule in schedules.SCHEDULE_READS:
    for name, users in _unread(schedules.SCHEDULE_READS, o.schedule).items():
      because = schedules.UNREAD_BECAUSE.get((o.schedule, name))
      checks.unread_override(f'optim.{name}', overridden, f'by optim.schedule={o.schedule!r}'
                             + (f' ({because})' if because else ''),
                             f'only the schedules {", ".join(users)} read it: set '
                             '--config.optim.schedule too, or drop it')
    if o.warmup_fraction:
      checks.unread_override('optim.warmup_epochs', overridden,
                             f'while optim.warmup_fraction={o.warmup_fraction:g} sets the warm-up',
                             'add --config.optim.warmup_fraction=0.0 to give it in epochs')
  mode = averaging.mode(c.averaging)
  for name in _unread(averaging.READS, mode):
    checks.unread_override(f'averaging.{name}', overridden, 'while averaging.every_steps=0 '
                           '(averaging off)', 'set --config.averaging.every_steps too')
  from jaxlab.data import datasets  # pylint: disable=g-import-not-at-top
  d, origin = c.data, datasets.origin(c.data)
  if origin in datasets.ORIGIN_READS:
    for name, users in _unread(datasets.ORIGIN_READS, origin).items():
      if origin == 'digits':
        checks.unread_override(f'data.{name}', overridden, 'for the embedded digits',
                               'set --config.data.name=cifar10 or cifar100 too (or drop it)')
      else:
        checks.unread_override(f'data.{name}', overridden, f'with data.source={d.source!r}',
                               f'set --config.data.source={users[0]} too (or drop it)')


def _color_jitter(c):
  jitter = tuple(c.augment.color_jitter)
  if len(jitter) != 4:
    checks.fail('augment.color_jitter', f'augment.color_jitter has {len(jitter)} entries',
                'give four: (brightness, contrast, saturation, hue), e.g. '
                '--config.augment.color_jitter="(0.2, 0.2, 0.2, 0.1)"')
  names = ('brightness', 'contrast', 'saturation', 'hue')
  for name, value, high in zip(names, jitter, (float('inf'),) * 3 + (0.5,)):
    if not 0 <= value <= high:
      checks.fail('augment.color_jitter',
                  f'augment.color_jitter {name} is {value!r}; it must lie in [0, {high:g}]',
                  'give four non-negative values (brightness, contrast, saturation, hue ≤ 0.5)')


def _pair(c, field, what, upper, off=None):
  pair = tuple(checks.get(c, field))
  if off is not None and pair == off:
    return
  ok = len(pair) == 2 and 0 < pair[0] <= pair[1] and (upper is None or pair[1] <= upper)
  if not ok:
    bound = f' ≤ {upper:g}' if upper is not None else ''
    checks.fail(field, f'{field} is {pair!r}; {what} need 0 < low ≤ high{bound}',
                f'set {checks.flag(field)}="(low, high)"'
                + (f', or {off!r} to turn it off' if off is not None else ''))


def _distributed(c):
  d = c.distributed
  checks.one_of(c, 'distributed.cpu_collectives', CPU_COLLECTIVES)
  if d.num_processes != -1:
    at_least(c, 'distributed.num_processes', 1, ' (or -1 to detect it)')
  if d.process_id != -1:
    at_least(c, 'distributed.process_id', 0, ' (or -1 to detect it)')
    if d.num_processes != -1 and d.process_id >= d.num_processes:
      checks.fail('distributed.process_id',
                  f'distributed.process_id {d.process_id} is not below num_processes '
                  f'{d.num_processes}', f'use 0..{d.num_processes - 1}')


def num_classes(c):
  from jaxlab.data import datasets  # pylint: disable=g-import-not-at-top
  return datasets.NUM_CLASSES[c.data.name][c.data.label]


def check_classes(c, field, num_classes):
  """A tuple of labels (data.classes, sweep.pretrain_classes) inside the data set."""
  classes = tuple(checks.get(c, field))
  bad = [k for k in classes if not 0 <= k < num_classes]
  if bad or len(set(classes)) != len(classes):
    checks.fail(field, f'{field} {classes} must be distinct labels of {c.data.name} '
                f'({num_classes} classes: 0..{num_classes - 1})',
                f'list labels in 0..{num_classes - 1}')


def check_seeds(c):
  """config.seeds, when set, names each random seed once."""
  if len(set(c.seeds)) != len(c.seeds):
    checks.fail('seeds', f'seeds {tuple(c.seeds)} repeats a seed',
                'list each seed once, e.g. --config.seeds="(42, 43, 44)"')


def check_divisible(c, field, devices, what='devices'):
  """A batch (or a worker count) that the mesh's devices must split evenly."""
  value = checks.get(c, field)
  if value % devices:
    low, high = max(value // devices * devices, devices), -(-value // devices) * devices
    example = low if low == high else f'{low} or {high}'
    checks.fail(field, f'{field} {value} is not divisible by the {devices} {what}',
                f'choose a multiple of {devices}, e.g. {checks.flag(field)}={example}')


# ---------------------------------------------------------------------------------------------
# Files and directories.


# The room a run needs below its workdir: a sweep cell's folder and orbax's temporary step
# folders, e.g. 'cell/checkpoints/1000000.orbax-checkpoint-tmp/default.orbax-checkpoint-tmp/
# ocdbt.process_0/d/<32 hex digits>' (about 130 characters besides the cell's name).
BELOW_WORKDIR = 256


def check_workdir(workdir):
  """A workdir that is a directory this process may write, or that it can create, with a path
  short enough for what the run writes below it (checks.EnvFailure otherwise)."""
  path = os.path.abspath(os.path.expanduser(workdir))
  _check_path_length(workdir, path)
  if os.path.exists(path) and not os.path.isdir(path):
    raise BadInput('the workdir is a file, not a directory', workdir,
                   'choose another --workdir (or move the file away)')
  probe = checks.existing_ancestor(path)
  if not os.path.isdir(probe):
    raise BadInput(f'the workdir cannot be created: {probe} is a file', workdir,
                   'choose another --workdir')
  if not os.access(probe, os.W_OK | os.X_OK):
    what = ('the workdir is not writable' if probe == path
            else f'the workdir cannot be created: {probe} is not writable')
    raise BadInput(what, workdir, 'choose a --workdir you can write, or fix its permissions')


def check_checkpoints(workdir):
  """Every checkpoints/ folder under the workdir whose latest step (what a rerun restores)
  orbax could not read: the step is named, with how to go on."""
  from jaxlab.io import checkpoint  # pylint: disable=g-import-not-at-top  (imports orbax)
  if not os.path.isdir(workdir):
    return
  for root, dirs, _ in os.walk(workdir):
    if os.path.basename(root) != 'checkpoints':
      continue
    dirs[:] = []  # step folders hold no further runs
    problem = checkpoint.unreadable_latest(root)
    if problem:
      step, folder, reason = problem
      raise checks.Damaged(f'checkpoint step {step} cannot be read: {reason}', folder,
                     f'delete {folder} to resume from the step before it (or from the start), '
                     'or use another --workdir')


def check_data(c):
  """The data set's files: the original archive present, complete and not truncated, or the
  TFDS data set prepared (its first example of each split readable). Digits ship inside."""
  if c.data.name == 'digits':
    return
  from jaxlab.data import cifar  # pylint: disable=g-import-not-at-top
  if c.data.source == 'tfds':
    where = c.data.tfds_dir or '--config.data.tfds_dir'
    level = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)  # TFDS warns about what the one line below says
    try:
      for split in ('train', 'test'):
        cifar.open_tfds_split(c.data.name, split, c.data.tfds_dir)
    except FileNotFoundError as e:
      cause = e.__cause__
      raise checks.Missing(
          f'TFDS data set {c.data.name} is not prepared (array_record) under '
          f'{c.data.tfds_dir or "the TFDS default data_dir"}'
          + (f' ({type(cause).__name__}: {cause})' if cause else ''), where,
          f'with network: python -m jaxlab.data.prepare --dataset={c.data.name}; or the '
          f'original archive ({cifar.CIFAR_URL}): --config.data.source=archive '
          '--config.data.dir=PATH; or the offline demo on digits: --config=NAME:quick') from e
    finally:
      logging.set_verbosity(level)
    return
  where = c.data.dir or '--config.data.dir'
  try:
    cifar.check_archive(c.data.name, c.data.dir)
  except FileNotFoundError:
    folder = cifar.LAYOUTS[c.data.name].archive_folder
    raise checks.Missing(f'{c.data.name} python archive not found ({folder}/ is neither the '
                         'folder nor inside it)', where,
                         f'extract the "python version" from {cifar.CIFAR_URL} and pass '
                         f'--config.data.dir=PATH (PATH is {folder}/ or its parent)') from None
  except ValueError as e:
    raise BadInput(str(e), where, 'download or copy the archive again (every file whole)') from e


# ---------------------------------------------------------------------------------------------
# Models shared by families.

VIT_SHAPE = ('patch', 'width', 'depth', 'heads', 'mlp_dim')
# float16 is refused: its narrow range needs dynamic loss scaling to train (small gradients
# underflow to 0), which jaxlab does not implement, and XLA:CPU and TPUs cannot run its dots.
DTYPES = ('float32', 'bfloat16')


def check_vit(c, overridden):
  """The ViT of model.*: a known variant (whose shape fields a command line cannot change),
  positive sizes, a patch that tiles the image and heads that split the width."""
  from jaxlab import models  # pylint: disable=g-import-not-at-top
  from jaxlab.models import vit  # pylint: disable=g-import-not-at-top
  m = c.model
  checks.one_of(c, 'model.variant', ('', *vit.VARIANTS))
  if m.variant:
    for name in VIT_SHAPE:
      checks.ignored_override(f'model.{name}', overridden, f'model.variant {m.variant!r}',
                              "set --config.model.variant='' as well to give the ViT's "
                              'shape field by field')
  arch = models.vit_arch(m, attention='xla')  # the shape; the attention is checked below
  where = (lambda name: 'model.variant') if m.variant else (lambda name: f'model.{name}')
  for name in VIT_SHAPE:
    if arch[name] < 1:
      checks.fail(where(name), f'model.{name} is {arch[name]}; it must be at least 1',
                  f'set --config.model.{name} to 1 or more')
  at_least(c, 'model.image_size', 1)
  if m.image_size % arch['patch']:
    checks.fail('model.image_size', f'model.image_size {m.image_size} is not a multiple of the '
                f'patch {arch["patch"]}',
                f'set --config.model.image_size to a multiple of {arch["patch"]}')
  if arch['width'] % arch['heads']:
    checks.fail(where('heads'), f'model.heads {arch["heads"]} does not divide model.width '
                f'{arch["width"]}', 'choose heads that divide the width')
  if m.dtype == 'float16':
    checks.fail('model.dtype', 'model.dtype float16 is not supported: it needs dynamic loss '
                'scaling (small gradients underflow to 0 in float16), which jaxlab does not '
                'implement, and XLA:CPU cannot run its matrix products',
                'use --config.model.dtype=bfloat16 (float32 parameters and optimizer state, '
                "float32's range) or float32")
  checks.one_of(c, 'model.dtype', DTYPES)
  if checks.has(c, 'model.attention'):
    checks.one_of(c, 'model.attention', vit.ATTENTION_CHOICES)
    if m.attention == 'cudnn':
      why = vit.cudnn_attention_refusal(m.dtype, arch['width'] // arch['heads'],
                                        vit.device_platform())
      if why:
        checks.fail('model.attention', why, "use --config.model.attention=auto (cuDNN where it "
                    "can run, XLA's attention elsewhere) or xla")
  if checks.has(c, 'model.pos'):
    checks.one_of(c, 'model.pos', vit.POSITIONS)
    if m.pos == 'rope' and (arch['width'] // arch['heads']) % 4:
      checks.fail(where('heads'), f'axial RoPE needs a head width divisible by 4; width '
                  f'{arch["width"]} / {arch["heads"]} heads = {arch["width"] // arch["heads"]}',
                  "choose heads so that width/heads is a multiple of 4, or --config.model.pos=learned")
    positive(c, 'model.rope_base')
  if checks.has(c, 'model.weight_init'):
    checks.one_of(c, 'model.weight_init', vit.INITS)
  if checks.has(c, 'model.residual'):
    checks.one_of(c, 'model.residual', models.RESIDUALS)
    at_least(c, 'model.hc.streams', 1)
    positive(c, 'model.hc.tau', ' (the Sinkhorn temperature)')
    at_least(c, 'model.hc.iterations', 0, ' (0: the variant\'s default)')
    if m.hc.reduce not in ('sum', 'mean'):
      checks.fail('model.hc.reduce', f"model.hc.reduce must be 'sum' or 'mean' (got {m.hc.reduce!r})",
                  "set --config.model.hc.reduce=sum or mean")
  return arch


def _check_path_length(workdir, path):
  probe = checks.existing_ancestor(path)
  try:
    name_max = os.pathconf(probe, 'PC_NAME_MAX')
    path_max = os.pathconf(probe, 'PC_PATH_MAX')
  except (OSError, ValueError):  # the file system does not say
    return
  longest = max(path.split(os.sep), key=len)
  if len(longest.encode()) > name_max:
    raise checks.EnvFailure(f'a folder name of the workdir is {len(longest.encode())} bytes long; '
                            f'this file system allows {name_max}', workdir,
                            'choose a --workdir with shorter folder names')
  if len(path.encode()) + BELOW_WORKDIR > path_max:
    raise checks.EnvFailure(
        f'the workdir path is {len(path.encode())} bytes long; with the {BELOW_WORKDIR} the run '
        f'writes below it (sweep cells, checkpoint files) it passes this file system\'s limit '
        f'of {path_max}', workdir[:60] + '…' if len(workdir) > 80 else workdir,
        f'choose a --workdir whose absolute path is under {path_max - BELOW_WORKDIR} bytes')
