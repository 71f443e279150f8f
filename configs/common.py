"""Fields every jaxlab config has; each family's file starts from `base_config()`."""

import ml_collections

from jaxlab.checks import BadInput


def base_config():
  """The shared skeleton: data, model, augmentation, optimizer, trainer, checkpoints."""
  c = ml_collections.ConfigDict()
  c.experiment = ''
  c.seed = 42
  c.progress = True  # tqdm bar with loss and img/s

  # name: digits | cifar10 | cifar100. source: tfds | archive (the original python archives).
  # placement: device (the whole training split on every device, batches gathered in the step)
  # | stream (the host delivers each step's batch, `prefetch` steps ahead on background threads)
  # | auto (device when the split fits device_budget_mb, else stream; 0 = half the device's
  # memory as the runtime reports it). Both give the same parameters.
  c.data = ml_collections.ConfigDict(dict(
      name='digits', source='tfds', dir='', tfds_dir='', label='fine',
      validation_fraction=0.0, split_seed=0, placement='auto', device_budget_mb=0.0,
      prefetch=2))
  c.model = ml_collections.ConfigDict(dict(name='lenet5'))
  # resize 0 keeps the data's size; normalization: none | half | cifar10 | cifar100 | imagenet.
  # rotation: max degrees; perspective: distortion scale, applied with probability perspective_p;
  # color_jitter: (brightness, contrast, saturation, hue). 0 turns each off.
  # rrc_scale/rrc_ratio: random-resized-crop (area fraction, aspect ratio; scale (0, 0) is off);
  # randaugment_ops/_magnitude: RandAugment (0 ops is off); erasing_p: random erasing probability.
  # mixup_alpha / cutmix_alpha > 0: timm's Mixup / CutMix on each device's batch (Beta(α, α),
  # applied with probability mix_prob; CutMix rather than mixup with mix_switch_prob when both
  # are on); 0 turns each off.
  c.augment = ml_collections.ConfigDict(dict(
      resize=0, crop_padding=0, flip=False, normalization='half', rotation=0.0,
      perspective=0.0, perspective_p=0.5, color_jitter=(0.0, 0.0, 0.0, 0.0),
      rrc_scale=(0.0, 0.0), rrc_ratio=(3 / 4, 4 / 3), randaugment_ops=0,
      randaugment_magnitude=9, erasing_p=0.0, mixup_alpha=0.0, cutmix_alpha=0.0, mix_prob=1.0,
      mix_switch_prob=0.5))
  # name: sgd | sgdm | adamw | lars | lamb. schedule: constant | cosine | warmup_cosine | whd
  # (floor = lr_floor · lr). Warm-up: warmup_fraction of the steps when > 0, else warmup_epochs.
  # whd (warmup-hold-decay): hold until decay_start_fraction of the steps, then decay_shape
  # (linear | cosine | 1-sqrt) down to the floor; decay_start_fraction=1 holds to the end.
  # groups: per-label overrides {label: {lr, weight_decay}} of the partition rules' labels.
  # clip_grad_norm > 0: the gradients first scaled to that global L2 norm at most (PyTorch's
  # clip_grad_norm_, timm's --clip-grad); 0 leaves them.
  c.optim = ml_collections.ConfigDict(dict(
      name='sgdm', lr=0.01, weight_decay=0.0, momentum=0.9, nesterov=False, clip_grad_norm=0.0,
      b1=0.9, b2=0.999, eps=1e-8, trust_coefficient=0.001, schedule='cosine', warmup_epochs=0.0, lr_floor=0.0,
      warmup_fraction=0.0, decay_start_fraction=0.8, decay_shape='1-sqrt',
      lr_scaling='none', base_batch=64, groups=ml_collections.ConfigDict()))
  # lr_scaling: none | sqrt | linear — lr × (batch_size / base_batch) ** {0, 1/2, 1}.
  # steps_per_dispatch: steps fused in one jitted lax.scan (raise it for small models).
  # steps: stop after this many steps (0: epochs × steps per epoch); the schedules still span
  # the whole run of `epochs` epochs, so a short smoke run trains with the real run's settings.
  # drop_last: False (as the reference code's PyTorch DataLoader) pads the last, partial batch
  # of each epoch
  # and masks it, so every example is seen every epoch (391 steps of 128 on 50,000 images);
  # True drops it (390).
  # ece_batch_size > 0: evaluations also report ece_per_batch, the mean of the ECEs of
  # consecutive test batches of that size weighted by their sizes (what the PEFT source code
  # reported; `ece` is always the global ECE over the whole split). The eval batch is then
  # rounded up to a multiple of ece_batch_size × devices.
  # label_smoothing: the training loss's targets (1 − ε)·one-hot + ε/classes (PyTorch's
  # CrossEntropyLoss(label_smoothing=ε), timm's --smoothing); evaluations report the plain NLL.
  # grad_accumulation = k: each step's batch computed in k micro-batches one after another (1/k
  # of the activations' memory), the gradient the whole batch's up to float rounding.
  # ema_decay > 0: an exponential moving average of the parameters, updated after every step
  # (timm's ModelEmaV2), evaluated at the end beside the final parameters (summary.json 'ema').
  c.train = ml_collections.ConfigDict(dict(
      batch_size=64, epochs=1, eval_batch_size=500, steps_per_dispatch=1,
      log_every_steps=50, eval_every_epochs=1, steps=0, drop_last=False, ece_batch_size=0,
      label_smoothing=0.0, grad_accumulation=1, ema_decay=0.0))
  # params: all | trainable (leave the frozen parameters, e.g. a PEFT backbone, out of every
  # checkpoint; workdir/backbone.json records their source and fingerprint, and a resume or an
  # export rebuilds them from the same config).
  c.checkpoint = ml_collections.ConfigDict(dict(every_steps=1000, keep=2, params='all'))
  # Checkpoint averaging (off while every_steps = 0): a snapshot of the parameters every
  # every_steps steps after start_fraction of the run; the mean of all of them (window = 0)
  # or of the last `window`, evaluated at the end beside the final parameters.
  c.averaging = ml_collections.ConfigDict(dict(every_steps=0, start_fraction=0.8, window=0))
  # tensorboard: TensorBoard scalars of every metrics.jsonl record in workdir/tensorboard
  # (pip install 'jaxlab[tensorboard]'; view with tensorboard --logdir WORKDIR).
  # mlflow / wandb: each training run also an MLflow / Weights & Biases run (the config as
  # params, every record as metrics at its step, the summary, the figures; a resume continues
  # it): pip install 'jaxlab[mlflow]' / 'jaxlab[wandb]'. mlflow_uri ('' = MLFLOW_TRACKING_URI),
  # mlflow_experiment ('' = the config's experiment); wandb_project, wandb_entity ('' = your
  # default), wandb_mode ('' = WANDB_MODE | online | offline | disabled). See docs/runs.md.
  c.log = ml_collections.ConfigDict(dict(
      tensorboard=False, mlflow=False, mlflow_uri='', mlflow_experiment='', wandb=False,
      wandb_project='jaxlab', wandb_entity='', wandb_mode=''))
  # initialize: call jax.distributed.initialize() before anything touches a JAX backend
  # (multi-process runs; see docs/devices.md). coordinator_address ('host:port'), num_processes and
  # process_id: empty / -1 let JAX detect them (SLURM, Open MPI, Kubernetes, Cloud TPU).
  # cpu_collectives: how CPU devices of different processes talk (gloo | mpi).
  # ordered_sums: gradients and parameter averages summed over the devices in device order
  # (all-gather, then sum), so a run is the same on 1 process × 4 devices or 2 × 2 (bit for
  # bit where XLA:CPU compiles both alike: not for synchronous steps on AVX2-only CPUs);
  # false: psum (less memory and traffic; the rounding then depends on the layout).
  c.distributed = ml_collections.ConfigDict(dict(
      initialize=False, coordinator_address='', num_processes=-1, process_id=-1,
      cpu_collectives='gloo', ordered_sums=True))
  # only: run this one cell of a sweep (its name: a ladder's bp_k2, an arm, a grid cell, a
  # PEFT run); '' runs every cell. Jobs for different cells may share one workdir.
  c.sweep = ml_collections.ConfigDict(dict(only=''))
  return c


def pick(variants, arg, default, renamed=None):
  """variants[arg or default](), or an error that lists the variants. `renamed`: {old name:
  new name} of variants given up; an old name is an error that names the new one."""
  name = arg or default
  if renamed and name in renamed:
    raise BadInput(f'config variant {name!r} was renamed {renamed[name]!r}', '--config',
                   f'use --config=FILE:{renamed[name]}')
  if name not in variants:
    raise BadInput(f'unknown config variant {name!r}', '--config',
                   f'choose one of {", ".join(variants)} (--config=FILE:variant)')
  return variants[name]()
