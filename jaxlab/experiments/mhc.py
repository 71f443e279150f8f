"""Residual-stream family: a ViT trained from scratch with plain residual connections or
manifold-constrained hyper-connections, compared arm by arm, reimplementing
white-richard/latent-space's CIFAR-10 runs (experiments/baseline_cifar10_002, code at commit
8ebd8c1: src/latent_space/lightning/, models/vision_transformer/, models/mHC_util/,
schedulers/warm_hold_decay_scheduler.py).

Each arm (regular, mhc_static, mhc_dynamic) is a cell of jaxlab.train.sweep: it trains in
its own sub-workdir (resumable; sweep.only runs one) with the shared trainer; afterwards its
test embeddings (the normed class token of the final parameters) give the 1-NN accuracy,
the silhouette and a 2-D picture. `record.md` / `record.json` are assembled from the
finished arms.

Model fields read here besides models.vit_arch's (configs/mhc.py): model.rope_form,
model.rope_dtype, model.stream_dtype, model.hc.res_apply, model.hc.final_norm, and
mhc.embed_dtype (the dtype the embeddings are computed in: the reference computes them in
lightning_module.py `on_test_epoch_end`, outside the bf16 autocast of its test steps).
"""

import copy
import dataclasses
import os
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab import checks, models
from jaxlab.checks import one_of, rule
from jaxlab.models import hyper_connections, vit
from jaxlab.data.augment import make_eval_preprocess
from jaxlab.data.datasets import load_dataset
from jaxlab.data.pipeline import IMAGE_SHAPE, steps_per_epoch
from jaxlab.experiments import over_seeds, preflight
from jaxlab.io import record
from jaxlab.io.figures import embedding_plot
from jaxlab.io.writers import read_json, read_jsonl, write_json
from jaxlab.metrics.classification import count_params
from jaxlab.metrics.embedding import embedding_metrics
from jaxlab.optim import averaging, schedules
from jaxlab.parallel.mesh import make_mesh, replicate
from jaxlab.params import flatten, merge
from jaxlab.train.evaluate import make_outputs_fn, predict
from jaxlab.train.loop import fit
from jaxlab.train.sweep import Cell, run_length, run_sweep
from jaxlab.train.task import Task, flax_apply
from jaxlab.train import guards


# arm name → model.residual
ARMS = {'regular': 'plain', 'mhc_static': 'static', 'mhc_dynamic': 'dynamic'}

# The reference rows (docs/references.md): white-richard/latent-space
# experiments/baseline_cifar10_002/2026-01-25_22-57-11/results.md and
# mhc/results.md (CIFAR-10, 200 epochs, seed 42; the mHC arm is vit_tiny(use_mhc=True) with
# mhc_num_streams left at 1: in fact the plain network).
REFERENCE = (
    dict(arm='regular (latent-space baseline_cifar10_002)', residual='plain', loss=0.330783,
         acc=0.9241, knn_acc=0.8958, silhouette=0.296391),
    dict(arm='"mHC" (latent-space baseline_cifar10_002)',
         residual='static with n = 1: in fact plain', loss=0.330276,
         acc=0.9217, knn_acc=0.8964, silhouette=0.289719),
)


# What each arm reports per seed, and the note's conclusions about mHC against the regular
# arm as paired comparisons over the seeds (jaxlab.experiments.over_seeds): (claim id in
# jaxlab.reference_claims, the claim, the metric, arm a, arm b, the claimed sign of a − b).
# The note's runs 002 used the WHD schedule, run 003 cosine without warm-up: a sweep is held to
# the claims of its own schedule. The note's "mHC" was the static variant with one stream.
METRICS = ('acc', 'loss', 'knn_acc', 'silhouette')
DESCRIPTIONS = {'acc': 'test accuracy of the final parameters', 'loss': 'test loss (NLL)',
                'knn_acc': 'leave-one-out 1-NN accuracy of the test embeddings',
                'silhouette': 'silhouette of the test embeddings, classes as clusters',
                'wall_step_time_s': ('the loop\'s wall clock a step of the seeds\' joint step, '
                                     'each epoch but the first (values: per epoch)')}
MHC_ARMS = ('mhc_static', 'mhc_dynamic')
WHD_CLAIMS = tuple(
    claim for arm in MHC_ARMS for claim in (
        ('mhc-7', f'{arm} above the regular arm in test accuracy (the run\'s hypothesis)',
         'acc', arm, 'regular', +1),
        ('mhc-8', f'{arm} marginally below the regular arm in test accuracy', 'acc', arm,
         'regular', -1),
        ('mhc-9', f'{arm} marginally above the regular arm in kNN accuracy', 'knn_acc', arm,
         'regular', +1)))
COSINE_CLAIMS = tuple(
    ('mhc-14', f'{arm} above the regular arm in {metric} (cosine, no warm-up)', metric, arm,
     'regular', sign)
    for arm in MHC_ARMS for metric, sign in (('acc', +1), ('knn_acc', +1), ('silhouette', +1),
                                             ('loss', -1)))


def claims_of(config):
  """The note's conclusions a sweep with this config's schedule is held to."""
  oc = config.optim
  if oc.schedule.startswith('whd'):
    return WHD_CLAIMS
  if oc.schedule == 'cosine' and not oc.warmup_fraction and not oc.warmup_epochs:
    return COSINE_CLAIMS
  return ()


def seed_stats(config, rows, dataset_name):
  """stats.json of the sweep (over_seeds.seed_stats): the arms' per-seed metrics and the
  note's conclusions for its schedule, with the note's own numbers (REFERENCE) as theirs."""
  regular, note_mhc = ({k: r[k] for k in METRICS} for r in REFERENCE)
  reference = {'regular': regular, **{arm: note_mhc for arm in MHC_ARMS}}
  arms = set(config.mhc.arms)
  claims = [c for c in claims_of(config) if {c[3], c[4]} <= arms]  # the arms this sweep runs
  # Each arm's averaged parameters (checkpoint averaging) as an arm of their own.
  rows = rows + [{**r['averaged'], 'arm': f'{r["arm"]} (averaged)'} for r in rows
                 if r.get('averaged')]
  return over_seeds.seed_stats(rows, 'arm', METRICS, claims, dataset_name,
                               over_seeds.run_seeds(config), DESCRIPTIONS, reference,
                               per_epoch=('wall_step_time_s',))


def over_seeds_text(results_stats, dataset_name):
  """record.md's section of the arms over their seeds and the note's conclusions."""
  where = over_seeds.where_verdicts_apply(dataset_name, 'the note\'s CIFAR-10',
                                         dataset_name == 'cifar10')
  return ('### Over the seeds\n\n' + over_seeds.seeds_table(
      results_stats, (('acc', 'test/acc'), ('loss', 'test/loss'), ('knn_acc', 'test/knn_acc'),
                      ('silhouette', 'test/silhouette'),
                      ('wall_step_time_s', 'wall step time (s) over epochs')), 'acc')
          + over_seeds.claims_report(results_stats, where, 'the note (one run each)')
          .replace('\n## ', '\n### '))


def arm_config(config, arm):
  c = copy.deepcopy(config)
  with c.unlocked():
    c.model.residual = ARMS[arm]
  return c


def build_model(model_cfg, num_classes):
  """models.model_from_config's ViT with this family's fields (see the module docstring); defaults when a
  config lacks them: integer RoPE in float32, the compute dtype's stream, and HyperSpec's
  own (res_apply 'transpose', final_norm 'after_reduce')."""
  model = models.model_from_config(model_cfg, num_classes)
  stream = model_cfg.get('stream_dtype', '')
  extra = dict(rope_form=model_cfg.get('rope_form', 'integer'),
               rope_dtype=model_cfg.get('rope_dtype', 'float32'),
               stream_dtype=jnp.dtype(stream) if stream else None)
  if model.residual is not None:
    hc = model_cfg.hc
    extra['residual'] = dataclasses.replace(
        model.residual, res_apply=hc.get('res_apply', model.residual.res_apply),
        final_norm=hc.get('final_norm', model.residual.final_norm))
  return model.clone(**extra)


def model_and_params(config, num_classes, seed=None):
  """(model, initial params) of the configured ViT, from `seed` (default config.seed)."""
  model = build_model(config.model, num_classes)
  seed = config.seed if seed is None else seed
  # vit.init_vit: one compiled init for every seed of the arm (the model is its static key).
  return model, vit.init_vit(model, seed)


def embedding_model(model, config):
  """The ViT of the embedding pass: `model` in mhc.embed_dtype ('' = its own dtype), with XLA's
  attention where cuDNN's cannot compute in that dtype (vit.with_dtype)."""
  dtype = config.mhc.get('embed_dtype', '')
  return vit.with_dtype(model, dtype) if dtype else model


def make_embed(task, model, config, mesh):
  """The sharded outputs function (`make_outputs_fn`) of the task, returning the normed class
  token [B, width] ([seeds, B, width] for a task of several seeds) in place of the logits;
  `predict` gathers them."""
  embed_model = embedding_model(model, config)
  apply = lambda p, x, train, rng: embed_model.apply({'params': p}, x, embed=True)
  return make_outputs_fn(dataclasses.replace(task, apply=apply),
                         make_eval_preprocess(config.augment), mesh,
                         replicas=task.seeds is not None)


def hres_stats(model, config, seed_params, images):
  """How the H_res the network uses on `images` look after training, the worst of the seeds'
  parameters `seed_params` (a list): hres_row_error, the largest |row sum − 1| (columns sum to
  1 by construction: how far the configured Sinkhorn iterations are from doubly stochastic), and
  hres_from_identity, the largest |H_res − I| (0 means the streams never mixed). One compiled
  program measures every seed."""
  preprocess = make_eval_preprocess(config.augment)

  @jax.jit
  def measure(p, x):
    _, inter = model.apply({'params': p}, preprocess(x), mutable=['intermediates'])
    maps = [m for path, m in flatten(inter['intermediates']).items() if 'maps' in path]
    res = [jax.tree.leaves(m)[2] for m in maps]
    eye = jnp.eye(res[0].shape[-1])
    return (jnp.max(jnp.stack([jnp.max(jnp.abs(r.sum(-1) - 1)) for r in res])),
            jnp.max(jnp.stack([jnp.max(jnp.abs(r - eye)) for r in res])))
  rows, ident = zip(*(jax.device_get(measure(p, images)) for p in seed_params))
  return dict(hres_row_error=float(max(rows)), hres_from_identity=float(max(ident)))


def _describe_residual(spec):
  return 'plain residual' if spec is None else spec.describe()


def step_time(summary, workdir):
  """The arm's mean training-step time (s): the summary's, or, when this process timed no
  step (an arm resumed at its last step), the step-weighted mean of the train records of
  workdir/metrics.jsonl; None if neither has one."""
  if summary.get('avg_step_time_s'):
    return summary['avg_step_time_s']
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return None
  records = [r for r in read_jsonl(path) if r.get('split') == 'train']
  seconds = steps = 0.0
  last = 0
  for r in sorted(records, key=lambda r: r['step']):
    if r.get('step_time_s') is not None and r['step'] > last:
      seconds += r['step_time_s'] * (r['step'] - last)
      steps += r['step'] - last
    last = r['step']
  return seconds / steps if steps else None


# What an arm whose seeds ran one after another reports per seed (over_seeds.combined).
SEED_KEYS = (*METRICS, 'acc_best', 'step_time_s', 'img_s', 'compile_time_s')
HRES_KEYS = ('hres_row_error', 'hres_from_identity')


def run_arm(config, workdir, dataset, arm):
  """Train one arm; returns its row of the record (also in workdir/arm.json). Its seeds train
  together, or, where they do not fit in memory together, one after another in
  WORKDIR/seed_<s>/ (over_seeds.together_or_in_turn)."""
  row = over_seeds.together_or_in_turn(
      arm_config(config, arm), workdir, lambda c, w: _train_arm(c, w, dataset, arm),
      SEED_KEYS, combine=_combined_rows, result_file='arm.json')
  if row.get('seeds_run') == 'one after another':
    first = os.path.join(over_seeds.seed_dir(workdir, row['seeds'][0]), 'embeddings.png')
    if os.path.exists(first):  # the record's picture: the first seed's, as when together
      shutil.copyfile(first, os.path.join(workdir, 'embeddings.png'))
  return over_seeds.with_epoch_step_times(row, workdir)  # the step time's spread over epochs


def _combined_rows(rows, seeds, keys):
  """One arm's row from its seeds' rows (each run alone): per-seed values and means, the worst
  seed's H_res figures, the averaged parameters' row likewise."""
  out = over_seeds.combined(rows, seeds, keys)
  for key in HRES_KEYS:
    if all(r.get(key) is not None for r in rows):
      out[key] = max(r[key] for r in rows)
  if all(r.get('averaged') for r in rows):
    out['averaged'] = over_seeds.combined([r['averaged'] for r in rows], seeds, METRICS)
  return out


def _train_arm(c, workdir, dataset, arm):
  """Train one arm (`c`: its arm_config) with its seeds together; its row, in workdir/arm.json."""
  seeds = over_seeds.run_seeds(c)
  inits = [model_and_params(c, dataset.num_classes, seed) for seed in seeds]
  model, params = inits[0]
  spec = model.residual
  if spec is not None:
    spec.warn_if_trivial()
  together = bool(c.get('seeds'))  # the seeds train together in one program (Replicas)
  if together:
    params = over_seeds.stacked([p for _, p in inits])
  task = Task(params=params, apply=flax_apply(model), rules=(('.*', 'all'),),
              seeds=seeds if together else None)
  mesh = make_mesh()
  summary, state = fit(c, workdir, task, dataset, mesh=mesh,
                       summary_extra={'arm': arm, 'residual': _describe_residual(spec)})
  arm_path = os.path.join(workdir, 'arm.json')
  if summary.get('finished_earlier') and os.path.exists(arm_path):  # embeddings measured then
    row = read_json(arm_path, f'delete {arm_path}: the rerun measures the arm again')
    if row.get('step_time_s') is None:  # an arm.json written without it
      row['step_time_s'] = step_time(summary, workdir)
    return row
  final = merge(state.params, state.frozen)
  images, labels = dataset.test.images, dataset.test.labels
  embed_fn = make_embed(task, model, c, mesh)
  test_data = replicate({'image': images, 'label': labels}, mesh)
  embed = lambda p: predict(embed_fn, p, test_data, len(labels), c.train.eval_batch_size, mesh)
  emb = embed(final)
  per_seed = [emb] if not together else list(emb)  # [seeds, N, D] when trained together
  title = f'{arm}: test embeddings ({dataset.name}' + (f', seed {seeds[0]})' if together else ')')
  method = embedding_plot(os.path.join(workdir, 'embeddings.png'), per_seed[0], labels, title)
  measured = [embedding_metrics(e, labels) for e in per_seed]
  row = dict(arm=arm, residual=_describe_residual(spec), loss=summary['nll'],
             acc=summary['acc1'], acc_best=summary.get('acc1_best'),
             best_epoch=summary.get('best_epoch'),
             **{k: float(np.mean([m[k] for m in measured])) for k in measured[0]},
             params=summary['total_params'], step_time_s=step_time(summary, workdir),
             img_s=summary['throughput_img_s'], compile_time_s=summary.get('compile_time_s'),
             projection=method)
  if spec is not None:
    host = jax.device_get(final)  # each seed's slice on the host: no program per leaf
    seed_params = [host] if not together else [jax.tree.map(lambda x, i=i: x[i], host)
                                                for i in range(len(seeds))]
    row.update(hres_stats(model, c, seed_params, images[:c.train.eval_batch_size]))
  if together:
    row.update(seeds=list(seeds), loss_per_seed=summary['nll_per_seed'],
               acc_per_seed=summary['acc1_per_seed'],
               **{f'{k}_per_seed': [m[k] for m in measured] for k in measured[0]})
  averaged = summary.get('averaged')
  if averaged and averaged['snapshots']:
    avg = averaging.from_config(c.averaging, summary['planned_steps']).average(
        state.extra['average'], state.params, together)
    avg_emb = embed(merge(avg, state.frozen))
    avg_measured = [embedding_metrics(e, labels) for e in ([avg_emb] if not together
                                                            else list(avg_emb))]
    row['averaged'] = dict(arm=f'{arm} (averaged, {averaged["snapshots"]} snapshots)',
                           residual=row['residual'], loss=averaged['nll'], acc=averaged['acc1'],
                           **{k: float(np.mean([m[k] for m in avg_measured]))
                              for k in avg_measured[0]})
    if together:
      row['averaged'].update(
          seeds=list(seeds), loss_per_seed=averaged['nll_per_seed'],
          acc_per_seed=averaged['acc1_per_seed'],
          **{f'{k}_per_seed': [m[k] for m in avg_measured] for k in avg_measured[0]})
  write_json(os.path.join(workdir, 'arm.json'), row)
  return row


def plain_params(config, num_classes):
  """Parameter count of the configured ViT with plain residual connections."""
  c = arm_config(config, 'regular')
  model = build_model(c.model, num_classes)
  size = c.model.image_size
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)))
  return count_params(shapes['params'])


def describe_model(mc):
  arch = models.vit_arch(mc)
  name = f'ViT {mc.variant}' if mc.variant else 'ViT'
  form = mc.get('rope_form', 'integer')
  pos = (f'axial 2-D RoPE (base {mc.rope_base:g}, {form} coordinates'
         + (f', {mc.get("rope_dtype", "float32")} tables' if form == 'latent_space' else '')
         + ')') if arch['pos'] == 'rope' else 'learned'
  return (f'{name}: patch {arch["patch"]}, width {arch["width"]}, depth {arch["depth"]}, '
          f'{arch["heads"]} heads, MLP {arch["mlp_dim"]}, {mc.image_size}×{mc.image_size} input, '
          f'position {pos}, init {arch.get("weight_init", "default")}')


def describe_augment(ac):
  parts = []
  if ac.get('rrc_scale') and max(ac.rrc_scale) > 0:
    parts.append(f'random-resized-crop(scale {tuple(ac.rrc_scale)}, ratio {tuple(ac.rrc_ratio)})')
  if ac.crop_padding:
    parts.append(f'crop with padding {ac.crop_padding}')
  if ac.flip:
    parts.append('flip')
  if ac.get('rotation'):
    parts.append(f'rotation up to {ac.rotation:g}°')
  if ac.get('perspective'):
    parts.append(f'perspective {ac.perspective:g} (p {ac.get("perspective_p", 0.5):g})')
  if ac.get('randaugment_ops'):
    parts.append(f'RandAugment({ac.randaugment_ops}, {ac.randaugment_magnitude}, '
                 f'{ac.get("randaugment_interpolation", "bilinear")})')
  if any(ac.color_jitter):
    parts.append(f'colour jitter {tuple(ac.color_jitter)}')
  parts.append(f'normalise ({ac.normalization})')
  if ac.get('erasing_p'):
    parts.append(f'random erasing (p {ac.erasing_p:g})')
  return ', '.join(parts)


def make_record(config, workdir, dataset, rows):
  tc, oc = config.train, config.optim
  spe = steps_per_epoch(len(dataset.train.labels), tc.batch_size, tc.drop_last)
  total = tc.epochs * spe
  base = plain_params(config, dataset.num_classes)
  regular = next((r for r in rows if r['arm'] == 'regular'), None)
  for r in rows:
    if r.get('params') is None:  # a diverged arm
      continue
    r['extra_params'] = r['params'] - base
    if regular is not None and r.get('step_time_s') and regular.get('step_time_s'):
      r['step_overhead'] = r['step_time_s'] / regular['step_time_s'] - 1
  avg = averaging.from_config(config.averaging, total)
  warnings, notes = [], []
  hc = config.model.hc
  if hc.streams == 1 and any(ARMS[a] != 'plain' for a in config.mhc.arms):
    warnings.append('mHC with n = 1 stream: every H is a scalar and the static variant is exactly '
                    'the plain residual network, so "mHC vs regular" measures noise. Use '
                    '--config.model.hc.streams=4.')
  errors = [r['hres_row_error'] for r in rows if r.get('hres_row_error') is not None]
  if errors:
    notes.append('H_res after training, on test images: rows sum to 1 within ' + ', '.join(
        f'{r["arm"]} {r["hres_row_error"]:.1e}' for r in rows if 'hres_row_error' in r)
        + ' (columns exactly, after the configured Sinkhorn iterations; with res_apply '
        + "'transpose' the columns are each new stream's weights); largest |H_res − I|: "
        + ', '.join(f'{r["arm"]} {r["hres_from_identity"]:.1e}' for r in rows
                    if 'hres_from_identity' in r) + '.')
    if any(r.get('hres_from_identity') == 0.0 for r in rows):
      notes.append('An H_res still exactly the identity: with logits −8 off the diagonal and '
                   'τ = 0.05, exp(−160) underflows in float32, so those logits get no gradient '
                   'and the streams never mix (the static reference initialisation).')
  if any(r.get('step_time_s') for r in rows):
    notes.append('Step time: the mean time of one training step (up to '
                 f'{max(tc.steps_per_dispatch, 1)} steps per dispatch; compilation, evaluation '
                 'and embeddings excluded; device-synchronised). Step-time overhead: the arm\'s '
                 'step time over the regular arm\'s, minus 1.')
  projection = {r['projection'] for r in rows if r.get('projection')}
  notes.append(f'Embedding pictures: {", ".join(sorted(projection)).upper()} of the normed class '
               'token of each test image, coloured by class.')
  rec = dict(
      title=f'Residual streams: {" vs ".join(r["arm"] for r in rows)} on {dataset.name}',
      datetime=record.now(),
      dataset=f'{dataset.name} ({len(dataset.train.labels)} train / {len(dataset.test.labels)} '
              f'{dataset.eval_split} images, {dataset.num_classes} classes)',
      model=describe_model(config.model),
      optimizer=f'{oc.name}, base lr {oc.lr:g}, weight decay {oc.weight_decay:g}, batch '
                f'{tc.batch_size}, {tc.epochs} epochs ({total} steps), '
                + (f'seeds {list(config.seeds)} (trained together; each number below is their '
                   'mean)' if config.get('seeds') else f'seed {config.seed}'),
      schedule=schedules.describe(oc, total, spe),
      averaging=(f'mean of the parameters every {avg.every} steps after step {avg.start}'
                 + (f', last {avg.window} snapshots' if avg.window else '')) if avg else '',
      augmentation=describe_augment(config.augment),
      precision=(f'{config.model.dtype} compute, '
                 f'{config.model.get("stream_dtype", "") or config.model.dtype} residual stream, '
                 f'{config.mhc.get("embed_dtype", "") or config.model.dtype} embeddings, '
                 'float32 parameters and optimizer state'),
      workdir=os.path.abspath(workdir),
      command='python ' + ' '.join(sys.argv),
      git_commit=record.git_commit(),
      arms=rows, warnings=warnings, notes=notes,
      figures=[(r['arm'], f'{r["arm"]}/embeddings.png') for r in rows if r.get('projection')],
      config=config.to_dict())
  return rec


# What this family reads beyond configs/common.py's shared fields and the optimizers' own.
FIELDS = guards.declare_family('mhc', guards.Family(
    reads=('mhc.*', 'model.*', 'augment.randaugment_interpolation', 'seeds'),
    neutral=('model.remat',),
    cells=('mhc.arms',),
    ranges={
        'model.rope_form': rule(one_of, vit.ROPE_FORMS),
        'model.rope_dtype': rule(one_of, vit.ROPE_DTYPES),
        'model.stream_dtype': rule(one_of, ('', 'float32', 'bfloat16')),
        'model.hc.res_apply': rule(one_of, hyper_connections.RES_APPLY),
        'model.hc.final_norm': rule(one_of, hyper_connections.FINAL_NORMS),
        'mhc.embed_dtype': rule(one_of, ('', 'float32', 'bfloat16')),
        'augment.randaugment_interpolation': rule(one_of, ('bilinear', 'nearest')),
    }))

def validate(config, overridden=frozenset(), devices=1):
  """Arms, the ViT and its hyper-connections, the image size the data gives; each arm sets
  model.residual, so an override of it would be ignored."""
  c = config
  arms = tuple(c.mhc.arms)
  unknown = [a for a in arms if a not in ARMS]
  if not arms or unknown:
    checks.fail('mhc.arms', f'mhc.arms {arms} must name one or more known arms',
                f'choose from {", ".join(ARMS)}, e.g. --config.mhc.arms="(\'regular\',)"')
  checks.ignored_override('model.residual', overridden, f'mhc.arms {arms}',
                          'name the arms instead: --config.mhc.arms (regular = plain, '
                          'mhc_static, mhc_dynamic)')
  if set(arms) == {'regular'}:
    for name in ('streams', 'tau', 'iterations', 'reduce', 'res_apply', 'final_norm'):
      checks.unread_override(f'model.hc.{name}', overridden, 'by the regular arm alone (plain '
                             'residual connections)', 'add an mHC arm to --config.mhc.arms')
  if c.get('seeds'):
    preflight.check_seeds(c)
  preflight.check_vit(c, overridden)
  size = c.augment.resize or IMAGE_SHAPE[0]
  if size != c.model.image_size:
    checks.fail('model.image_size', f'model.image_size {c.model.image_size} is not the size of '
                f'the images the model gets ({size}: '
                + ('augment.resize)' if c.augment.resize else f'{c.data.name}, augment.resize=0)'),
                f'set --config.model.image_size={size} (or --config.augment.resize to the model\'s '
                'size)')
  preflight.check_divisible(c, 'train.batch_size', devices)


def cell_names(config):
  """The names of the sweep's cells (what sweep.only chooses from): the arms."""
  return list(config.mhc.arms)


def run(config, workdir):
  dataset = load_dataset(config.data)

  def assemble(finished, final):
    # A diverged arm is a row of its own ('diverged at step N'); the other arms still run.
    rows = list(finished.values())
    results_stats = seed_stats(config, rows, dataset.name)
    write_json(os.path.join(workdir, 'stats.json'), results_stats)
    rec = make_record(config, workdir, dataset, rows)
    if any('acc_per_seed' in r for r in rows):
      rec['over_seeds'] = over_seeds_text(results_stats, dataset.name)
    text = record.write(workdir, rec, REFERENCE)
    if final:
      results = text.split('## Results', 1)[1].split('## Config', 1)[0]
      print('\n## Results' + results + f'Record: {os.path.join(workdir, "record.md")}')
    return {'arms': rows}

  return run_sweep(config, workdir, [
      Cell(arm, os.path.join(workdir, arm),
           lambda arm=arm: run_arm(config, os.path.join(workdir, arm), dataset, arm),
           run_length(config)) for arm in config.mhc.arms], assemble)
