"""Numbers that mean what the reference numbers mean (docs/references.md): tuning splits,
LAMB's own base lr, tables that report the best epoch beside the final one."""

import math

from configs import distributed as dist_configs
from jaxlab.experiments import distributed, peft
from jaxlab.train.sweep import parse_grid


def test_distributed_tuning_variants_hold_out_20_percent_with_split_seed_42():
  for name in ('tune_sgdm', 'tune_adamw'):
    c = dist_configs.get_config(name)
    assert c.data.validation_fraction == 0.2 and c.data.split_seed == 42
    assert len(parse_grid(c.grid)) >= 4
  assert dist_configs.get_config('tune_adamw').optim.name == 'adamw'


def test_lamb_has_its_own_base_lr():
  c = dist_configs.get_config('large_batch')
  # The original code (lucavgn/AML_Project5, Results/LargeBatch/*/test_model/*_8192 notebooks):
  # LARS 25e-2 · sqrt(B/64), LAMB 5e-4 · sqrt(B/64).
  assert distributed.scaled_lr(c.optim, 8192) == 0.25 * math.sqrt(8192 / 64)  # LARS
  c.optim.name = 'lamb'
  assert distributed.scaled_lr(c.optim, 8192) == 5e-4 * math.sqrt(8192 / 64)


def test_peft_table_puts_the_reference_in_the_best_epoch_column(tmp_path, capsys, monkeypatch):
  from configs import hybrid
  titles = []
  draw = peft.scatter_plot
  monkeypatch.setattr(peft, 'scatter_plot', lambda *a, **k: titles.append(a[4]) or draw(*a, **k))
  rows = [dict(run='norm', trainable_params=100, avg_step_time_s=0.1, wall_step_time_s=0.12,
               throughput_img_s=10.0, peak_mem_bytes=1000, acc1=0.5, acc1_best=0.6,
               best_epoch=2, ece=0.1, ece_per_batch=0.15),
          dict(run='lora', trainable_params=200, status='diverged at step 7', diverged_at_step=7,
               diverged_metric='loss')]
  peft.write_report(str(tmp_path), rows, hybrid.get_config('quick'))
  table = open(tmp_path / 'table.md').read()
  assert 'Acc@1 (best epoch)' in table and 'Acc@1 (final)' in table
  assert ('| norm | 100 | 0.1000 | 0.1200 | 10 | 1,000 | 0.5000 | 0.6000 | 2 | 0.1000 | '
          '0.1500 |') in table
  assert '| lora | 200 | – | – | – | – | diverged at step 7 |' in table
  assert 'reports/results_week4.csv' in table
  # The source's figures sit in the columns measured as it measured them: its wall clock a
  # step and its per-batch ECE; the pure step time and the global ECE stay empty.
  assert ('| hybrid_parallel | 647,524 | – | 0.7298 | – | 8,037,466,112 | 0.8950 | 0.8950 | '
          '10 | – | 0.0738 |') in table
  assert (tmp_path / 'accuracy_vs_trainables.png').exists()
  # The title says what ran: model, data, epochs, where the backbone came from, how many methods.
  what = ('ViT (patch 8, width 64, depth 4, 32 px) on digits 5–9, 15 epochs; backbone trained '
          'from scratch on digits 0–4 (60 epochs)')
  assert f'# PEFT methods: {what}' in table
  assert titles == [f'PEFT, 2 methods: {what}']
