"""The speed suite's tables: ratios computed from the rows, and the loop-efficiency row."""

import pytest

from benchmarks import ladder_time, loop, run


def _row(workload, step_time, batch=64, copies=1, **extra):
  return {'workload': workload, 'batch': batch, 'copies': copies, 'dtype': 'float32',
          'img_s': batch * copies / step_time, 'step_time_s': step_time,
          'step_time_median_s': step_time, 'gflop_per_image': None, 'achieved_tflop_s': None,
          'fraction_of_peak': None, 'peak_mem_bytes': 2 ** 20, **extra}


def test_main_table_races_eager_and_compiled_pytorch():
  row = _row('lenet/64', 0.1, torch={'img_s': 320.0}, torch_compile={'img_s': 1280.0})
  failed = _row('peft/lora', 1.0, batch=8, torch={'img_s': 4.0},
                torch_compile={'error': 'torch.compile failed: RuntimeError: no', 'torch_compile': True})
  # A PyTorch child that died (here: an import error) is 'failed', not a blank '–'.
  died = {'error': "exit status 1: ModuleNotFoundError: No module named 'ml_collections'"}
  crashed = _row('lenet/1024', 1.0, batch=1024, torch=died, torch_compile=died)
  table = run.markdown([row, failed, crashed,
                        {'workload': 'loop/ladder', 'loop_efficiency': 0.99}])
  lines = table.splitlines()
  assert len(lines) == 5  # head, rule, three step rows: the loop row has its own table
  assert lines[2].endswith('| 320 | 2.00 | 1,280 | 0.50 |')  # 640 img/s: 2× eager, ½× compiled
  assert lines[3].endswith('| 4 | 2.00 | did not compile | – |')
  assert lines[4].endswith('| failed | – | failed | – |')


def test_mhc_and_local_reports_divide_by_the_plain_and_sync_rows():
  rows = [_row('vit_tiny/plain', 0.05), _row('vit_tiny/mhc_static', 0.06),
          _row('vit_tiny/mhc_dynamic', 0.1)]
  table = run.mhc_report(rows)
  assert '| mhc_static | 0.0600 | 1.20 | ≤ 1.3 |' in table
  assert '| mhc_dynamic | 0.1000 | 2.00 | ≤ 1.6 |' in table
  sync = _row('local/sync', 0.1)  # 640 img/s
  j8 = {**_row('local/j8', 0.1, batch=16, copies=4, average_s=0.2, sync_every=8),
        'step_time_s': 0.125}  # each step 0.1 s plus 0.2 / 8 of the average: 512 img/s
  j8['img_s'] = 64 / 0.125
  table = run.local_report([sync, j8])
  assert '| j8 | 512 | 0.80 | 0.2000 | 20.0% |' in table  # 0.2 / (0.2 + 8 × 0.1)


def test_seeds_report_divides_three_seeds_by_one():
  rows = [_row('seeds/lenet/1', 0.02), _row('seeds/lenet/3', 0.05, copies=3),
          _row('seeds/ladder/1', 0.01, batch=128), {'workload': 'seeds/ladder/3', 'error': 'x'}]
  table = run.seeds_report(rows)
  assert '| lenet (batch 64) | 0.0200 | 0.0500 | 2.50 | ≤ 2 |' in table
  assert 'ladder' not in table  # its 3-seed row failed: no ratio


def test_seeds_workloads_train_one_model_or_three_seeds_together():
  from benchmarks.workloads import make_workload
  for model in ('lenet', 'ladder'):
    one, three = (make_workload(f'seeds/{model}/{n}', small=True)[0] for n in (1, 3))
    assert len(three.seeds) == 3 and len(one.seeds) <= 1, model
    assert one.train.batch_size == three.train.batch_size, model


def test_ladder_projection_sums_the_cells_of_each_rule():
  per_rule = {r: {'train_epoch_s': 10.0, 'compile_s': 3.0, 'rest_s': 2.0}
              for r in ('bp', 'fa', 'dfa')}
  per_rule['dfa']['train_epoch_s'] = 20.0
  run_s, total = ladder_time.project(per_rule, 5, epochs=100, eval_every=10)
  assert run_s == {'bp': 1023.0, 'fa': 1023.0, 'dfa': 2023.0}  # 3 + 100 × epoch + 10 × 2
  assert total == 5 * (1023 + 1023 + 2023)
  row = {'workload': 'ladder_time/d256_L4', 'variant': 'd256_L4', 'width': 256, 'depth': 4,
         'seeds': 3, 'cells_per_rule': 5, 'per_rule': per_rule, 'projected_h': total / 3600}
  table = ladder_time.markdown([row])
  assert '| d256_L4 (d 256, L 4) | 15 × 3 | 10.0 / 10.0 / 20.0 | 3.0 / 3.0 / 3.0 | 5.65 |' in table
  assert 'about 7 GPU-hours' in table


def test_loop_efficiency_row_times_the_trainer_and_the_bare_loop():
  r = loop.time_loop('ladder', True, steps=6, rounds=1)
  assert r['workload'] == 'loop/ladder' and r['copies'] == 3
  assert r['bare_img_s'][0] > 0 and r['trainer_img_s'][0] > 0
  assert r['loop_efficiency'] == pytest.approx(r['trainer_img_s'][0] / r['bare_img_s'][0])
  assert 'loop/ladder' in loop.markdown([r])
