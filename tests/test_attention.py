"""The ViT's attention implementation (model.attention): XLA's ops everywhere, cuDNN's fused
kernel where it can train the model, chosen for the device and recorded in summary.json; and
a CUDA export of a bfloat16 ViT step with cuDNN attention, built on the CPU."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import hybrid, mhc
from jaxlab import checks, experiments, models
from jaxlab.models.vit import (ViT, attend, attention_implementation, cudnn_attention_refusal,
                               device_platform)


def test_auto_is_cudnn_only_where_it_can_train_the_model():
  bf16, f32 = jnp.bfloat16, jnp.float32
  assert attention_implementation('auto', bf16, 64, platform='cuda') == 'cudnn'
  assert attention_implementation('cudnn', bf16, 64, platform='cuda') == 'cudnn'
  assert attention_implementation('xla', bf16, 64, platform='cuda') == 'xla'
  for args, why in [((bf16, 64, 'cpu'), 'NVIDIA GPUs only'),
                    ((bf16, 64, 'rocm'), 'NVIDIA GPUs only'),
                    ((f32, 64, 'cuda'), 'bfloat16 compute'),
                    ((bf16, 12, 'cuda'), 'multiple of 8'),
                    ((bf16, 256, 'cuda'), 'at most 128')]:
    assert why in cudnn_attention_refusal(*args)
    assert attention_implementation('auto', *args[:2], platform=args[2]) == 'xla'
    with pytest.raises(ValueError, match=why):
      attention_implementation('cudnn', *args[:2], platform=args[2])
  with pytest.raises(ValueError, match='choose one of auto, xla, cudnn'):
    attention_implementation('flash', bf16, 64, platform='cuda')


def test_the_families_vits_on_a_gpu():
  """What 'auto' gives the shipped ViTs on an NVIDIA GPU: XLA's attention for the PEFT ViT-S/16
  (float32, as the reference trains it), cuDNN's for the residual-stream ViT-Ti/4 (bfloat16;
  its 65 tokens padded to 66). On a CPU: XLA's for both; on this machine: its platform's."""
  here = device_platform()
  for config, on_gpu in ((hybrid.get_config(), 'xla'), (mhc.get_config(), 'cudnn')):
    m = config.model
    arch = models.vit_arch(m, attention='xla')
    assert attention_implementation(m.attention, jnp.dtype(m.dtype), arch['width'] // arch['heads'],
                                     platform='cuda') == on_gpu
    assert m.attention == 'auto'
    assert models.vit_arch(m)['attention'] == (on_gpu if here == 'cuda' else 'xla')


def test_an_odd_sequence_padded_for_cudnn_is_the_same_attention():
  """attend's padding (one extra token the keys mask out, its query row dropped), run through
  XLA's attention: the same outputs and gradients, bit for bit, as the unpadded attention."""
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.standard_normal((2, 17, 2, 8)), jnp.float32) for _ in range(3))
  plain, padded = attend(q, k, v, 'xla'), attend(q, k, v, 'xla', pad_odd=True)
  np.testing.assert_array_equal(np.asarray(plain), np.asarray(padded))
  grads = lambda pad: jax.grad(lambda *x: jnp.sum(jnp.sin(attend(*x, 'xla', pad_odd=pad))),
                               argnums=(0, 1, 2))(q, k, v)
  for a, b in zip(grads(False), grads(True)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.skipif(device_platform() != 'cpu', reason='what a CPU says')
def test_cudnn_on_a_cpu_is_one_line_naming_the_fix():
  c = hybrid.get_config('quick')
  c.model.attention = 'cudnn'
  with pytest.raises(checks.BadInput, match='NVIDIA GPUs only') as e:
    experiments.validate(c, devices=1)
  assert e.value.where == '--config.model.attention'


def _pretend_cudnn(monkeypatch):
  """JAX asks the installed cuDNN for its version and the GPU for its compute capability while
  it traces a cuDNN attention; on a CPU there is neither, so the test names them (cuDNN 9.10,
  a Hopper GPU). Skipped when JAX's internals have moved."""
  fused = pytest.importorskip('jax._src.cudnn.fused_attention_stablehlo')
  for name in ('check_cudnn_version', 'check_compute_capability',
               'is_cuda_compute_capability_equal'):
    if not hasattr(fused, name):
      pytest.skip(f'jax._src.cudnn.fused_attention_stablehlo.{name} is gone')
  monkeypatch.setattr(fused, 'check_cudnn_version', lambda: 91000)
  monkeypatch.setattr(fused, 'check_compute_capability', lambda capability: True)
  monkeypatch.setattr(fused, 'is_cuda_compute_capability_equal', lambda capability: False)


@pytest.mark.parametrize('attention, size', [('cudnn', 56), ('cudnn', 32), ('xla', 56)])
def test_cuda_export_of_a_bf16_vit_step_holds_cudnn_attention(attention, size, monkeypatch):
  """The value and gradient of a bfloat16 ViT (56 px: 7×7 patches + class token = 50 tokens;
  32 px: 17, padded to 18), exported for CUDA on this CPU: with attention='cudnn' each block's
  forward and backward attention is one cuDNN fused call; with 'xla' there is none."""
  _pretend_cudnn(monkeypatch)
  kw = dict(num_classes=4, image_size=size, patch=8, width=64, depth=2, heads=2, mlp_dim=128)
  model = ViT(dtype=jnp.bfloat16, attention=attention, **kw)
  params = jax.eval_shape(lambda: ViT(**kw).init(jax.random.key(0),
                                                 jnp.zeros((2, size, size, 3))))
  images = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)

  def loss(p, x):
    return jnp.sum(model.apply({'params': p}, x))
  # cuDNN's calls carry no export-compatibility guarantee: the program is built, not serialised.
  unchecked = [jax.export.DisabledSafetyCheck.custom_call(f'__cudnn$fmhaSoftmax{part}')
               for part in ('', 'Backward')]
  exported = jax.export.export(jax.jit(jax.value_and_grad(loss)), platforms=['cuda'],
                               disabled_checks=unchecked)(params['params'], images)
  calls = re.findall(r'custom_call @([\w$]+)', exported.mlir_module())
  fused = [c for c in calls if c.startswith('__cudnn$fmha')]
  if attention == 'xla':
    assert not fused
  else:
    assert sorted(set(fused)) == ['__cudnn$fmhaSoftmax', '__cudnn$fmhaSoftmaxBackward']
    assert fused.count('__cudnn$fmhaSoftmax') == 2 and fused.count('__cudnn$fmhaSoftmaxBackward') == 2


def test_the_mhc_embedding_pass_of_a_cudnn_vit_exports_for_cuda(monkeypatch):
  """The residual-stream family trains in bfloat16 (cuDNN's attention on a GPU) and computes the
  embeddings for kNN and silhouette in float32 (mhc.embed_dtype), where cuDNN cannot run: the
  embedding ViT takes XLA's attention. Exported for CUDA on this CPU: the training model holds
  the fused calls, the embedding pass none (before, its export failed as the GPU run did: 'Q
  must be fp16/bf16')."""
  from jaxlab.experiments.mhc import build_model, embedding_model
  _pretend_cudnn(monkeypatch)
  c = mhc.get_config('quick')
  c.model.dtype = 'bfloat16'
  assert c.mhc.embed_dtype == 'float32'
  model = build_model(c.model, 10).clone(attention='cudnn')
  embed = embedding_model(model, c)
  assert (embed.attention, jnp.dtype(embed.dtype)) == ('xla', jnp.dtype(jnp.float32))
  shape = (2, c.model.image_size, c.model.image_size, 3)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape)))['params']
  images = jax.ShapeDtypeStruct(shape, jnp.float32)
  unchecked = [jax.export.DisabledSafetyCheck.custom_call('__cudnn$fmhaSoftmax')]
  for m, fused in ((model, True), (embed, False)):
    exported = jax.export.export(jax.jit(lambda p, x, m=m: m.apply({'params': p}, x, embed=True)),
                                 platforms=['cuda'], disabled_checks=unchecked)(params, images)
    assert ('__cudnn$fmhaSoftmax' in exported.mlir_module()) == fused
  c.mhc.embed_dtype = ''
  assert embedding_model(model, c) is model
