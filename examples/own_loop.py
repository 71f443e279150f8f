"""Fine-tune a ViT with LoRA in a plain JAX loop: no configs, no trainer.

    python examples/own_loop.py                       # a random tiny ViT on the embedded digits
    python examples/own_loop.py --weights vit_small_patch16_224.safetensors --steps 500

With --weights (a timm .safetensors or big_vision .npz), the backbone comes from the file and
runs at 32 px with patch 4 (position embedding and patch kernel resampled). Only the
trainable leaves (head and LoRA) are differentiated: `split` keeps the frozen backbone out of
jax.grad.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxlab
from jaxlab.data.digits import load_digits_splits

TINY = dict(patch=8, width=64, depth=2, heads=2, mlp_dim=128)  # the ViT when no weights are given


def main(steps=300, weights=None, batch_size=32, seed=0, log_every=50):
  train, test = load_digits_splits()  # uint8 [N, 32, 32, 3] and int32 labels, 10 classes
  model, params, labels = jaxlab.vit_with_peft(
      weights, num_classes=10, method='lora', rank=4, alpha=8.0, image_size=32, seed=seed,
      **(TINY if weights is None else dict(patch=4)))
  trainable, frozen = jaxlab.split(params, labels)  # frozen: labelled 'frozen', never differentiated
  tx = jaxlab.make_optimizer(jaxlab.subtree_labels(trainable, labels), name='adamw', lr=3e-3,
                             weight_decay=1e-4, schedule='cosine', total_steps=steps,
                             groups={'lora': dict(lr=1e-3, weight_decay=0.0)})
  opt_state = tx.init(trainable)

  def loss_fn(trainable, frozen, images, labels):
    x = images.astype(jnp.float32) / 127.5 - 1.0  # [0, 255] -> [-1, 1]
    logits = model.apply({'params': jaxlab.merge(trainable, frozen)}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  @jax.jit
  def step(trainable, opt_state, frozen, images, labels):
    loss, grads = jax.value_and_grad(loss_fn)(trainable, frozen, images, labels)
    updates, opt_state = tx.update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, updates), opt_state, loss

  rng = np.random.default_rng(seed)
  losses = []
  for i in range(steps):
    idx = rng.integers(0, len(train.labels), batch_size)
    trainable, opt_state, loss = step(trainable, opt_state, frozen, train.images[idx],
                                      train.labels[idx])
    losses.append(float(loss))
    if (i + 1) % log_every == 0 or i == 0:
      print(f'step {i + 1:4d}  loss {np.mean(losses[-log_every:]):.4f}')

  predict = jax.jit(lambda t, f, x: model.apply({'params': jaxlab.merge(t, f)},
                                                x.astype(jnp.float32) / 127.5 - 1.0).argmax(-1))
  accuracy = float(np.mean(np.asarray(predict(trainable, frozen, test.images)) == test.labels))
  print(f'test accuracy {accuracy:.4f} ({len(test.labels)} images, chance 0.1)')
  return losses, accuracy


if __name__ == '__main__':
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=300)
  parser.add_argument('--weights', default=None, help='timm .safetensors or big_vision .npz')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()
  main(args.steps, args.weights, seed=args.seed)
