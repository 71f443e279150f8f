"""Shared test setup: eight simulated CPU devices, set before JAX starts (tests that need
four take the first four), and one persistent compilation cache for the whole session."""

import os
import shutil
import socket
import sys
import tempfile

import pytest

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# JAX's persistent compilation cache, shared by every test of the session: the in-process ones,
# the pytest-xdist workers (they inherit the controller's environment, so they find the folder
# it made) and every command the tests start (launch.py, the installed jaxlab, the
# multi-process runs), which inherit it too. Every program is still compiled, and checked, by
# the first test that needs it; another test compiling the same program (the same tiny LeNet,
# ViT or ResMLP step in many runs, a resumed run, a rerun) loads it instead. Entries are keyed
# by the program, the compile options, the devices and the JAX version, so a hit is the
# identical executable. JAXLAB_TEST_XLA_CACHE=DIR keeps it between sessions (opt-in),
# JAXLAB_TEST_XLA_CACHE=off compiles everything in every process; a JAX_COMPILATION_CACHE_DIR
# already set is respected.
_SESSION_CACHE = '_JAXLAB_TEST_SESSION_XLA_CACHE'
_OWN_CACHE = None
if (not os.environ.get('JAX_COMPILATION_CACHE_DIR')
    and os.environ.get('JAXLAB_TEST_XLA_CACHE', '').lower() != 'off'):
  if os.environ.get('JAXLAB_TEST_XLA_CACHE'):
    os.environ['JAX_COMPILATION_CACHE_DIR'] = os.environ['JAXLAB_TEST_XLA_CACHE']
  else:
    if not os.environ.get(_SESSION_CACHE):  # the first process of the session: it cleans up
      _OWN_CACHE = os.environ[_SESSION_CACHE] = tempfile.mkdtemp(prefix='jaxlab-test-xla-cache-')
    os.environ['JAX_COMPILATION_CACHE_DIR'] = os.environ[_SESSION_CACHE]
  # Every program, however quick to compile: a test's tiny programs add up.
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '-1')
  if 'jax' in sys.modules:  # imported before this file (by a plugin): it read its settings
    import jax
    jax.config.update('jax_compilation_cache_dir', os.environ['JAX_COMPILATION_CACHE_DIR'])
    jax.config.update('jax_persistent_cache_min_compile_time_secs',
                      float(os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS']))
    jax.config.update('jax_persistent_cache_min_entry_size_bytes',
                      int(os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES']))


def pytest_unconfigure(config):
  if _OWN_CACHE:
    shutil.rmtree(_OWN_CACHE, ignore_errors=True)


@pytest.fixture(name='no_network')
def _no_network(monkeypatch):
  """Makes any attempt to open a network connection fail the test."""

  def refuse(*args, **kwargs):
    raise AssertionError(f'network access attempted: {args}')

  monkeypatch.setattr(socket.socket, 'connect', refuse)
  monkeypatch.setattr(socket, 'create_connection', refuse)


# ---------------------------------------------------------------------------------------------
# Under pytest-xdist (python -m pytest -n 2): the slowest tests first, each worker taking the
# next one when it is free, so that the run does not end with one worker alone on a long test.
#
# A work unit is one test, or a whole module where its tests share an expensive module-scoped
# fixture (the fixture is then built once, on one worker). Units run longest first, by the
# seconds below (measured with -n 2 on two CPU cores; the others count as 0 and keep their
# collection order, after these). A renamed or new slow test only runs later: the results are
# the same either way.
_TOGETHER = (
    'tests/test_mhc.py',  # two_arms: two full runs of the family
    'tests/test_export.py',  # runs: three PEFT runs
    'tests/test_multiprocess.py',  # reference: a one-process run of both arms
)
_SECONDS = {
    'tests/test_headline.py::test_headline_command[mhc]': 220,
    'tests/test_headline.py::test_headline_command[ladder]': 85,
    'tests/test_headline.py::test_headline_command[hybrid]': 65,
    'tests/test_headline.py::test_headline_command[distributed]': 16,
    'tests/test_headline.py::test_headline_command[large_batch]': 13,
    'tests/test_multiprocess.py': 110,
    'tests/test_faults.py::test_a_smoke_run_of_a_transfer_sweep_then_the_full_run_equals_a_fresh_one': 52,
    'tests/test_faults.py::test_killed_at_random_moments_and_rerun_it_ends_as_the_uninterrupted_run': 34,
    'tests/test_faults.py::test_smoke_run_then_the_full_run_in_the_same_workdir_equals_a_fresh_full_run': 32,
    'tests/test_faults.py::test_ctrl_c_saves_the_step_reached_and_exits_130': 23,
    'tests/test_mhc.py': 85,
    'tests/test_export.py': 45,
    'tests/test_guards.py::test_grid_records_diverged_cells_and_each_cells_own_memory': 42,
    'tests/test_guards.py::test_rerun_with_another_lr_is_refused_naming_the_field': 20,
    'tests/test_guards.py::test_diverged_run_exits_nonzero_naming_the_step': 15,
    'tests/test_peft.py::test_diagnostics_match_numpy': 33,
    'tests/test_peft.py::test_held_group_is_bit_identical_and_head_moves': 23,
    'tests/test_peft.py::test_lr_parity_trains_and_scales': 8,
    'tests/test_placement.py::test_stream_equals_device_on_digits[none]': 32,
    'tests/test_placement.py::test_stream_equals_device_on_digits[local_sgd]': 15,
    'tests/test_placement.py::test_stream_equals_device_on_tfds_cifar': 15,
    'tests/test_local.py::test_grid_sweep_resumes_cell_by_cell': 25,
    'tests/test_fast_path.py::test_bf16_loss_within_two_percent_of_fp32_with_fp32_parameters': 22,
    'tests/test_fast_path.py::test_remat_gives_the_same_loss_and_gradients': 11,
    'tests/test_benchmark_reports.py::test_loop_efficiency_row_times_the_trainer_and_the_bare_loop': 18,
    'tests/test_benchmarks.py::test_local_sgd_workload_counts_flops_and_spreads_the_average': 16,
    'tests/test_trainer.py::test_padded_and_masked_step_equals_the_step_on_the_real_examples[4]': 15,
    'tests/test_trainer.py::test_checkpoint_averaging_is_the_mean_of_the_snapshots_and_resumes': 9,
    'tests/test_trainer.py::test_four_devices_equal_one_device': 9,
    'tests/test_trainer.py::test_summary_reports_the_best_epoch': 8,
    'tests/test_trainer.py::test_metrics_fetched_lazily_equal_the_eager_ones': 8,
    'tests/test_packaging.py::test_installed_wheel_runs_a_family_from_another_directory': 15,
    'tests/test_vit_grads.py::test_hyper_connection_products_have_autodiffs_gradients': 13,
    'tests/test_api.py::test_own_loop_example_learns_digits': 10,
    'tests/test_api.py::test_from_timm_and_big_vision_with_another_num_classes': 10,
    'tests/test_ladder.py::test_vmapped_seeds_equal_separate_runs[bp]': 10,
    'tests/test_ladder.py::test_sweep_resumes_without_recomputing_finished_cells': 9,
    'tests/test_ladder.py::test_frozen_blocks_are_bit_identical_and_not_differentiated': 8,
    'tests/test_ladder.py::test_vmapped_seeds_equal_separate_runs[dfa]': 8,
    'tests/test_hyper_connections.py::test_one_stream_static_equals_plain_residual_and_warns[rope]': 8,
    'tests/test_resample.py::test_peft_forward_at_other_sizes[64-8]': 8,
}


def _unit(nodeid):
  module = nodeid.split('::', 1)[0]
  return module if module in _TOGETHER else nodeid


def _seconds(unit):
  return _SECONDS.get(unit, 0)


def pytest_collection_modifyitems(config, items):
  if not hasattr(config, 'workerinput'):  # one process: the order makes no difference
    return
  units = {}
  for item in items:  # a unit's tests stay together, in their order
    units.setdefault(_unit(item.nodeid), []).append(item)
  items[:] = [item for unit in sorted(units, key=lambda u: -_seconds(u)) for item in units[unit]]


def pytest_xdist_make_scheduler(config, log):
  """The default distribution (--dist load) by work units, in the order collected."""
  if config.getvalue('dist') != 'load':
    return None
  from xdist.scheduler import LoadScopeScheduling

  class LongestFirst(LoadScopeScheduling):
    """LoadScopeScheduling with our units for scopes: a worker is given the next unit when it
    has at most two tests left to run."""

    def _split_scope(self, nodeid):
      return _unit(nodeid)

  config.option.loadscopereorder = False  # the units' order is the collection's (above)
  return LongestFirst(config, log)
