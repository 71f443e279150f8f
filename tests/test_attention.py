"""The ViT's attention implementation (model.attention): XLA's ops everywhere, cuDNN's fused
kernel where it can train the model, chosen for the device and recorded in summary.json; and
a CUDA export of a bfloat16 ViT step with cuDNN attention, built on the CPU."""

import re

import jax
import jax.numpy as jnp
import pytest

from configs import hybrid, mhc
from jaxlab import checks, experiments, models
from jaxlab.models.vit import ViT, attention_implementation, cudnn_attention_refusal


def test_auto_is_cudnn_only_where_it_can_train_the_model():
  bf16, f32 = jnp.bfloat16, jnp.float32
  assert attention_implementation('auto', bf16, 64, 50, platform='cuda') == 'cudnn'
  assert attention_implementation('cudnn', bf16, 64, 50, platform='cuda') == 'cudnn'
  assert attention_implementation('xla', bf16, 64, 50, platform='cuda') == 'xla'
  for args, why in [((bf16, 64, 50, 'cpu'), 'NVIDIA GPUs only'),
                    ((bf16, 64, 50, 'rocm'), 'NVIDIA GPUs only'),
                    ((f32, 64, 50, 'cuda'), 'bfloat16 compute'),
                    ((bf16, 12, 50, 'cuda'), 'multiple of 8'),
                    ((bf16, 256, 50, 'cuda'), 'at most 128'),
                    ((bf16, 64, 197, 'cuda'), 'odd sequence length')]:
    assert why in cudnn_attention_refusal(*args)
    assert attention_implementation('auto', *args[:3], platform=args[3]) == 'xla'
    with pytest.raises(ValueError, match=why):
      attention_implementation('cudnn', *args[:3], platform=args[3])
  with pytest.raises(ValueError, match='choose one of auto, xla, cudnn'):
    attention_implementation('flash', bf16, 64, 50, platform='cuda')


def test_the_families_vits_on_a_gpu():
  """What 'auto' gives the shipped ViTs on an NVIDIA GPU: XLA's attention for the PEFT ViT-S/16
  (float32, as the reference trains it) and the residual-stream ViT-Ti/4 (65 tokens: odd);
  cuDNN for ViT-S/16 in bfloat16 at 224 px only if the grid were odd — it is 14×14 + 1 = 197."""
  for config, why in ((hybrid.get_config(), 'bfloat16 compute'),
                      (mhc.get_config(), 'odd sequence length')):
    m = config.model
    arch = models.vit_arch(m, attention='xla')
    tokens = (m.image_size // arch['patch']) ** 2 + 1
    assert why in cudnn_attention_refusal(jnp.dtype(m.dtype), arch['width'] // arch['heads'],
                                          tokens, 'cuda')
    assert m.attention == 'auto'
    assert models.vit_arch(m)['attention'] == 'xla'  # this machine: a CPU


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


@pytest.mark.parametrize('attention', ['cudnn', 'xla'])
def test_cuda_export_of_a_bf16_vit_step_holds_cudnn_attention(attention, monkeypatch):
  """The value and gradient of a bfloat16 ViT (7×7 patches + class token = 50 tokens), exported
  for CUDA on this CPU: with attention='cudnn' each block's forward and backward attention is
  one cuDNN fused call; with 'xla' there is none."""
  _pretend_cudnn(monkeypatch)
  kw = dict(num_classes=4, image_size=56, patch=8, width=64, depth=2, heads=2, mlp_dim=128)
  model = ViT(dtype=jnp.bfloat16, attention=attention, **kw)
  params = jax.eval_shape(lambda: ViT(**kw).init(jax.random.key(0), jnp.zeros((2, 56, 56, 3))))
  images = jax.ShapeDtypeStruct((2, 56, 56, 3), jnp.float32)

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
