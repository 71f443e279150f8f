"""Residual-stream family: ViT-Tiny (patch 4, 32×32) from scratch on CIFAR-10, plain
residual connections vs manifold-constrained hyper-connections (n = 4 streams).

The reference is white-richard/latent-space's experiments/baseline_cifar10_002 (code at commit
8ebd8c1: src/latent_space/lightning/{config,datamodule,lightning_module,train}.py,
models/vision_transformer/, models/mHC_util/hyper_connections_mhc.py (tokenbender's
mHC-manifold-constrained-hyper-connections), schedulers/warm_hold_decay_scheduler.py).
Default: the three arms regular, mhc_static, mhc_dynamic; AdamW lr 3e-3, wd 0.01 on every
parameter, betas (0.9, 0.999), eps 1e-8, batch 256 (the last batch of an epoch partial: 196
steps), 200 epochs, no clipping, no label smoothing, bf16 compute, axial 2-D RoPE; seeds 42
(the reference's), 43 and 44 trained together in each arm (record.md and stats.json: mean ± std,
95% intervals, the note's conclusions paired over the seeds):
    python launch.py --config=configs/mhc.py
Reference numbers (CIFAR-10, the reference's n = 1 runs): regular acc 0.9241, kNN 0.8958,
silhouette 0.296.

Definitions every variant uses unless it says otherwise (the reference's; the other form of
each stays a named option):
  schedule       whd_latent_space: WHDScheduler with auto-triggered cooldown: warm-up
                 ⌊0.1n⌋ steps from lr/100 (x + (1 − x)/100), hold, cooldown triggered at
                 ⌊0.8n⌋ lasting ⌈0.2·0.8n⌉ = 0.16n steps with 1−sqrt shape, then 0.1·lr from
                 0.96n to the end.  Option: schedule='whd' (warm-up from 0, decay over the
                 last 20% to 0.1·lr at n; variant whd_textbook).
  RoPE           model.rope_form='latent_space': coordinates ((i + 0.5)/8)·2 − 1, angle
                 2π·coord/period, period_k = 100^(k/16) (DINOv3's RopePositionEmbedding,
                 normalize_coords='separate', no shift/jitter/rescale), and model.rope_dtype=
                 'bfloat16' (tables rounded op by op to bfloat16, q and k rotated in bfloat16).
                 Option: rope_form='integer' (positions 0..7, angle position/period), float32.
  init           model.weight_init='latent_space': patch conv kernel and bias U(±1/√48), class
                 token N(0, 0.02), Dense kernels trunc_normal_(std 0.02, cut at ±2), zero
                 biases.  Options: 'trunc_normal' (timm's, class token N(0, 1e-6)), 'default'.
  precision      model.stream_dtype='float32' (the reference's residual stream is float32: its
                 float32 class token promotes the autocast patch embeddings), branches in
                 bfloat16; mhc.embed_dtype='float32' (embeddings for kNN/silhouette computed
                 outside autocast).  Option: '' = the compute dtype.
  mHC            model.hc.res_apply='transpose' (the new streams are H_resᵀ·x: tokenbender's
                 einsum "s t, ... s d -> ... t d", whose rows sum to 1 exactly) and
                 model.hc.final_norm='after_reduce' (streams summed, then the final norm).
                 Options: 'direct' (H_res·x), 'per_stream' (norm each stream, then sum).
                 Static: Sinkhorn rows then columns, 10 iterations, τ 0.05, log space, float32;
                 H_pre, H_post softmax (the reference). Dynamic: the mHC paper's maps (no
                 reference code), 20 iterations, with the same res_apply.
  augmentation   the reference's datamodule.py (its hparams' scale/reprob/jitter fields are
                 not read there): random-resized-crop(32, scale (0.75, 1), ratio 1), flip,
                 RandAugment(2, 9) with nearest interpolation (augment.randaugment_interpolation;
                 option 'bilinear'), ColorJitter(0.2, 0.2, 0.2, 0.1), normalise with the CIFAR-10
                 mean/std, RandomErasing(p 0.5). Train on all 50,000, test on the 10,000 (the
                 reference's "validation" is the test set too); the final parameters are
                 evaluated; kNN = leave-one-out 1-NN (Euclidean) and silhouette (Euclidean,
                 classes as clusters) on the test set's normed class tokens.
Every variant below keeps these definitions except where it names another (whd_textbook and
average use the textbook whd; learned_pos replaces RoPE; quick shrinks the model and data but
keeps them all, RoPE's bfloat16 tables included).
Each run writes WORKDIR/record.md; put runs side by side with
    python -m jaxlab.io.record RUN_DIR RUN_DIR --out=compare.md

Variants combine with commas (python launch.py --config=configs/mhc.py:mhc_static,cosine):
  arms       compare (all three, default) | regular | mhc_static | mhc_dynamic
  schedules  whd (default: the reference's WHDScheduler, 1−sqrt cooldown) | whd_linear |
             whd_cosine (the same with another cooldown shape) | whd_textbook (warm-up from 0,
             1−sqrt decay over the last 20% to 0.1·lr at the end) | cosine | warmup_cosine |
             constant | average (textbook whd's warm-up, then hold to the end, with the
             parameters averaged every 1/50 of the run over the last 20% in place of the
             cooldown)
  others     n1 (one stream: the reference's setting (DinoVisionTransformer's mhc_num_streams=1);
                 warns that mHC is then the plain network)
             learned_pos (learned position embeddings instead of RoPE)
             quick (offline demo on the embedded digits: a 4-block ViT with patch 8, 15 epochs
                    of batch 32, regular vs mhc_dynamic unless arms are named, record + PNGs;
                    seeds 42, 43, 44 trained together: test acc 0.923 ± 0.017
                    regular, 0.924 ± 0.009 dynamic, about 3 minutes on two CPU cores)
The CIFAR-10 data must be on the machine (see docs/runs.md, "Data").
"""

import ml_collections

from jaxlab.checks import BadInput
from jaxlab.configs.common import base_config


def default():
  c = base_config()
  c.experiment = 'mhc'
  c.data.name = 'cifar10'
  # residual: plain | static | dynamic (set per arm); hc: streams n, τ (static), Sinkhorn
  # iterations (0: the variant's default, 10 static / 20 dynamic), how streams are reduced.
  c.model = ml_collections.ConfigDict(dict(
      name='vit', variant='Ti/4', image_size=32, patch=4, width=192, depth=12, heads=3,
      mlp_dim=768, gelu_approximate=False, dtype='bfloat16', pos='rope', rope_base=100.0,
      rope_form='latent_space', rope_dtype='bfloat16', stream_dtype='float32',
      residual='plain', hc=dict(streams=4, tau=0.05, iterations=0, reduce='sum',
                                res_apply='transpose', final_norm='after_reduce'),
      weight_init='latent_space', drop_path_rate=0.0, remat=False,
      attention='auto'))
  # embed_dtype: the dtype of the embedding pass ('' = the model's compute dtype).
  c.mhc = ml_collections.ConfigDict(dict(arms=('regular', 'mhc_static', 'mhc_dynamic'),
                                         embed_dtype='float32'))
  # erasing_p 0.5: torchvision's RandomErasing() default; RandAugment() interpolates nearest.
  c.augment.update(resize=0, crop_padding=0, flip=True, normalization='cifar10',
                   color_jitter=(0.2, 0.2, 0.2, 0.1), rrc_scale=(0.75, 1.0), rrc_ratio=(1.0, 1.0),
                   randaugment_ops=2, randaugment_magnitude=9, erasing_p=0.5,
                   randaugment_interpolation='nearest')
  c.optim.update(name='adamw', lr=3e-3, weight_decay=0.01, schedule='whd_latent_space',
                 warmup_fraction=0.1,
                 decay_start_fraction=0.8, decay_shape='1-sqrt', lr_floor=0.1)
  c.train.update(batch_size=256, epochs=200, eval_batch_size=500, log_every_steps=100,
                 eval_every_epochs=10)
  c.checkpoint.every_steps = 2000
  # seeds: random seeds each arm trains together in one program, one model each (its own init,
  # data order and augmentation; the arms share each seed's); the record then shows mean ± std and
  # the paired comparisons of the arms. () trains config.seed alone (42, the reference's).
  c.seeds = (42, 43, 44)
  return c


def arms(*names):
  return lambda c: c.mhc.update(dict(arms=names))


def schedule(kind, **kw):
  return lambda c: c.optim.update(dict(schedule=kind, **kw))


def average(c):
  c.optim.update(dict(schedule='whd', decay_start_fraction=1.0))
  total = c.train.epochs * -(-50_000 // c.train.batch_size)  # every example: ceil(n / B) steps
  c.averaging.update(dict(every_steps=max(total // 50, 1), start_fraction=0.8, window=0))


def quick(c):
  """The offline demo: a 4-block ViT (patch 8, width 64, 8 heads) on the embedded digits.

  8 heads of width 8 rather than 2 of 32: from a (trunc-)normal(0.02) init on ~1,400 images
  they leave the loss plateau at ln 10 within an epoch or two (2 heads: after 3-4). Batch 32:
  on two CPU cores mHC's step costs ~2.5 ms an image at batch 16-32 and ~3.6 at 64. The
  augmentation is what digits take: small shifts and zooms (random-resized-crop 0.75-1, square)
  and rotations up to 10°; no flip (a mirrored 2 is not a digit), no colour (grey images),
  no RandAugment or erasing (too strong for 8×8 glyphs in 15 epochs).
  """
  c.data.name = 'digits'
  c.model.update(dict(variant='', patch=8, width=64, depth=4, heads=8, mlp_dim=128,
                      dtype='float32'))
  c.augment.update(dict(normalization='half', flip=False, rotation=10.0, randaugment_ops=0,
                        color_jitter=(0.0, 0.0, 0.0, 0.0), erasing_p=0.0))
  # One dispatch per epoch: 45 steps of 32 over the 1,437 training images (the last one partial).
  c.train.update(dict(batch_size=32, epochs=15, eval_batch_size=120, log_every_steps=45,
                      steps_per_dispatch=45, eval_every_epochs=5))
  c.checkpoint.every_steps = 10_000  # the end of each arm only: a CPU save stalls seconds
  if c.averaging.every_steps:
    c.averaging.every_steps = 9  # five snapshots an epoch, dividing the dispatch evenly


VARIANTS = {
    'compare': arms('regular', 'mhc_static', 'mhc_dynamic'),
    'regular': arms('regular'),
    'mhc_static': arms('mhc_static'),
    'mhc_dynamic': arms('mhc_dynamic'),
    'whd': schedule('whd_latent_space', decay_shape='1-sqrt'),
    'whd_linear': schedule('whd_latent_space', decay_shape='linear'),
    'whd_cosine': schedule('whd_latent_space', decay_shape='cosine'),
    'whd_textbook': schedule('whd', decay_shape='1-sqrt'),
    'cosine': schedule('cosine', lr_floor=0.0),
    'warmup_cosine': schedule('warmup_cosine', lr_floor=0.1),
    'constant': schedule('constant'),
    'average': average,
    'n1': lambda c: c.model.hc.update(dict(streams=1)),
    'learned_pos': lambda c: c.model.update(dict(pos='learned')),
    'quick': quick,
    'quick_arms': arms('regular', 'mhc_dynamic'),  # quick without named arms: the two to compare
}
ARM_VARIANTS = ('compare', 'regular', 'mhc_static', 'mhc_dynamic')


def get_config(arg=None):
  """The default config with each comma-separated variant of `arg` applied in order
  (quick last, so that it shrinks whatever the others chose)."""
  names = [n for n in (arg or '').split(',') if n]
  unknown = [n for n in names if n not in VARIANTS]
  if unknown:
    raise BadInput(f'unknown config variant(s) {unknown}', '--config',
                   f'choose from {", ".join(VARIANTS)} (combine them with commas)')
  c = default()
  if 'quick' in names and not set(names) & set(ARM_VARIANTS):
    names.insert(0, 'quick_arms')
  for name in sorted(names, key=lambda n: n == 'quick'):
    VARIANTS[name](c)
  return c
