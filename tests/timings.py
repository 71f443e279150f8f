"""How long each test takes, measured: the three tiers and the order of a run.

SECONDS: setup + call + teardown of every test that took 1 s or more on two CPU cores, the
longer of two measurements: the full suite and the quick tier (a test can be slower there:
the programs an earlier test compiled into the session's cache are not there to load). A test
not listed counts as quick (0 s). From the table, three tiers:

- the quick tier, `python -m pytest -q -n 2 -m "not slow"`: the edit-test loop. A test at
  SLOW_SECONDS or more, or one that needs an EXPENSIVE_FIXTURES fixture, is marked `slow`;
- the suite, `python -m pytest -q -n 2`: every test but the long tier (pyproject.toml's
  addopts deselect `long`);
- the long tier, `python -m pytest -q -n 2 -m long`: a test at LONG_SECONDS or more is marked
  `long` (and `slow`): the headline commands at their real sizes, the tests that train a
  family end to end several times over (killed and rerun, several processes, seeds alone and
  together), and the seeds' bit-for-bit tests again at XLA's default compile level
  (tests/test_default_compile_level.py). README's test command runs the suite and then this
  tier, and so does CI.

After the suite changes, regenerate the table (`-m ""`: every test, the long tier too):

    python -m pytest -q -n 2 -m "" --durations=0 -p no:cacheprovider > full.txt
    python -m pytest -q -n 2 -m "not slow" --durations=0 -p no:cacheprovider > quick.txt
    python tests/timings.py full.txt quick.txt > table.py   # then put it below
"""

import re
import sys

SLOW_SECONDS = 3.0
# The suite without the long tier takes under 7 minutes on two CPU cores; every test together
# takes 12-15 minutes, most of it compiling the programs of the long tier's tests.
LONG_SECONDS = 12.0

# Module-scoped fixtures that cost more than SLOW_SECONDS to build: every test using one is slow
# (in the quick tier the fixture would be built by whichever of them ran first).
EXPENSIVE_FIXTURES = ('two_arms', 'runs', 'reference', 'vit_exports')

SECONDS = {
    'tests/test_headline.py::test_headline_command[mhc]': 167.7,
    'tests/test_default_compile_level.py::test_seeds_are_bit_identical_at_the_default_compile_level': 129.0,
    'tests/test_headline.py::test_headline_command[ladder]': 85.2,
    'tests/test_headline.py::test_headline_command[hybrid]': 76.3,
    'tests/test_multiprocess.py::test_two_processes_equal_one_and_write_once_even_killed_and_restarted': 55.1,
    'tests/test_mhc.py::test_seeds_trained_together_equal_each_seed_alone': 71.4,
    'tests/test_faults.py::test_killed_at_random_moments_and_rerun_it_ends_as_the_uninterrupted_run': 45.0,
    'tests/test_faults.py::test_a_smoke_run_of_a_transfer_sweep_then_the_full_run_equals_a_fresh_one': 43.6,
    'tests/test_guards.py::test_grid_records_diverged_cells_and_each_cells_own_memory': 31.9,
    'tests/test_faults.py::test_smoke_run_then_the_full_run_in_the_same_workdir_equals_a_fresh_full_run': 30.4,
    'tests/test_multiprocess.py::test_one_process_run_writes_its_files': 29.0,
    'tests/test_guards.py::test_rerun_with_another_lr_is_refused_naming_the_field': 27.9,
    'tests/test_mhc.py::test_record_has_every_field_and_both_arms': 27.3,
    'tests/test_headline.py::test_headline_command[large_batch]': 25.4,
    'tests/test_peft.py::test_seeds_trained_together_equal_each_seed_alone': 30.9,
    'tests/test_peft.py::test_seeds_that_do_not_fit_together_run_one_after_another': 20.1,
    'tests/test_peft.py::test_freezing_sweep_over_seeds_tests_the_notes_freezing_claims': 23.0,
    'tests/test_benchmarks.py::test_recount_flops_fills_a_gpu_rows_columns_from_the_step_lowered_here': 6.4,
    'tests/test_adapters.py::test_saved_files_are_peft_layout_and_load_back': 5.9,
    'tests/test_adapters.py::test_other_lora_methods_round_trip[lora]': 3.4,
    'tests/test_adapters.py::test_other_lora_methods_round_trip[hybrid_parallel]': 8.7,
    'tests/test_adapters.py::test_what_peft_lora_cannot_hold_is_refused': 3.3,
    'tests/test_knobs.py::test_the_trainer_reads_both_knobs': 4.3,
    'tests/test_hub.py::test_vit_with_peft_by_hub_name_reads_the_offline_cache': 4.0,
    'tests/test_hub.py::test_config_source_hub': 3.0,
    'tests/test_knobs.py::test_mixup_and_cutmix_are_timms': 5.8,
    'tests/test_knobs.py::test_the_step_mixes_the_loss_of_both_labels': 4.7,
    'tests/test_knobs.py::test_stochastic_depth_is_timms_drop_path': 5.9,
    'tests/test_peft.py::test_remat_run_of_two_steps_trains_the_plain_runs_model': 8.5,
    'tests/test_peft.py::test_bf16_compute_is_an_option_beside_the_float32_recipe': 12.4,
    'tests/test_peft.py::test_remat_is_a_config_field_with_the_same_gradient[mhc]': 7.9,
    'tests/test_peft.py::test_remat_is_a_config_field_with_the_same_gradient[hybrid]': 4.8,
    'tests/test_knobs.py::test_parameter_ema_follows_each_step_and_is_evaluated_beside': 3.3,
    'tests/test_knobs.py::test_gradient_accumulation_equals_the_whole_batch[2]': 3.5,
    'tests/test_knobs.py::test_gradient_accumulation_equals_the_whole_batch[1]': 3.0,
    'tests/test_export.py::test_seeds_share_one_backbone_and_each_seeds_model_exports': 17.9,
    'tests/test_faults.py::test_a_resume_on_fewer_devices_keeps_the_run_and_says_it_is_not_bit_identical': 21.4,
    'tests/test_headline.py::test_headline_command[distributed]': 21.4,
    'tests/test_trackers.py::test_mlflow_run_holds_the_config_every_record_once_the_summary_and_files': 8.9,
    'tests/test_trackers.py::test_a_sweep_tracks_each_cell_and_its_own_figures': 6.9,
    'tests/test_benchmark_reports.py::test_seeds_workloads_train_one_model_or_three_seeds_together': 7.3,
    'tests/test_faults.py::test_ctrl_c_saves_the_step_reached_and_exits_130': 19.3,
    'tests/test_peft.py::test_diagnostics_match_numpy': 18.6,
    'tests/test_export.py::test_adapter_only_checkpoints_resume_exactly': 18.4,
    'tests/test_faults.py::test_a_damaged_checkpoint_is_one_line_without_asyncio_noise': 17.2,
    'tests/test_guards.py::test_diverged_run_exits_nonzero_naming_the_step': 17.1,
    'tests/test_packaging.py::test_installed_wheel_runs_a_family_from_another_directory': 16.4,
    'tests/test_local.py::test_grid_sweep_resumes_cell_by_cell': 15.3,
    'tests/test_op_table.py::test_the_jax_side_traces_every_bucket_of_a_real_step': 9.8,
    'tests/test_op_table.py::test_the_jax_side_places_every_part_of_a_vit_step': 9.8,
    'tests/test_seed_axis.py::test_seeds_one_after_another_in_one_program_equal_each_seed_alone': 9.1,
    'tests/test_distributed_seeds.py::test_seeds_trained_together_equal_each_seed_alone': 15.3,
    'tests/test_multiprocess.py::test_sigterm_saves_the_step_reached_and_the_rerun_ends_as_uninterrupted': 15.3,
    'tests/test_placement.py::test_stream_equals_device_on_digits[none]': 13.9,
    'tests/test_ladder.py::test_sweep_resumes_without_recomputing_finished_cells': 13.5,
    'tests/test_benchmark_reports.py::test_loop_efficiency_row_times_the_trainer_and_the_bare_loop': 13.2,
    'tests/test_peft.py::test_lr_parity_trains_and_scales': 13.2,
    'tests/test_trainer.py::test_metrics_fetched_lazily_equal_the_eager_ones': 11.7,
    'tests/test_benchmarks.py::test_local_sgd_workload_counts_flops_and_spreads_the_average': 10.8,
    'tests/test_api.py::test_own_loop_example_learns_digits': 10.4,
    'tests/test_placement.py::test_stream_equals_device_on_digits[local_sgd]': 10.1,
    'tests/test_mhc.py::test_one_stream_warns_and_the_record_says_so': 9.5,
    'tests/test_fast_path.py::test_bf16_loss_within_two_percent_of_fp32_with_fp32_parameters': 9.5,
    'tests/test_distributed_seeds.py::test_optimizer_arms_over_seeds_write_the_notes_comparison': 9.3,
    'tests/test_distributed_seeds.py::test_seeds_that_do_not_fit_together_run_one_after_another': 11.2,
    'tests/test_distributed_seeds.py::test_a_family_without_seeds_in_turn_refuses_seeds_that_do_not_fit': 3.5,
    'tests/test_peft.py::test_held_group_is_bit_identical_and_head_moves': 9.1,
    'tests/test_api.py::test_from_timm_and_big_vision_with_another_num_classes': 8.6,
    'tests/test_placement.py::test_stream_equals_device_on_tfds_cifar': 8.2,
    'tests/test_trainer.py::test_four_devices_equal_one_device': 7.8,
    'tests/test_bad_input.py::test_as_a_process_one_line_and_exit_2_traceback_on_request': 7.5,
    'tests/test_trainer.py::test_padded_and_masked_step_equals_the_step_on_the_real_examples[4]': 7.4,
    'tests/test_fast_path.py::test_remat_gives_the_same_loss_and_gradients': 7.2,
    'tests/test_distributed_seeds.py::test_local_method_seeds_run_one_after_another_and_resume': 7.2,
    'tests/test_faults.py::test_a_full_disk_is_one_line_naming_the_path_and_the_space': 6.8,
    'tests/test_local.py::test_local_sgd_j1_with_momentum_is_synchronous_sgd': 6.7,
    'tests/test_credit.py::test_fa_with_feedback_equal_to_weights_is_bp': 6.6,
    'tests/test_trainer.py::test_checkpoint_averaging_is_the_mean_of_the_snapshots_and_resumes': 6.6,
    'tests/test_faults.py::test_a_second_launch_on_a_busy_workdir_is_refused_naming_the_holder': 6.3,
    'tests/test_tensorboard.py::test_events_mirror_metrics_jsonl_after_a_crash_and_resume': 6.2,
    'tests/test_ladder.py::test_seeds_together_equal_separate_runs_bit_for_bit[dfa]': 6.2,
    'tests/test_trainer.py::test_workdir_files': 6.0,
    'tests/test_sweep.py::test_sweep_only_jobs_on_one_workdir_each_run_their_cell': 6.0,
    'tests/test_hyper_connections.py::test_one_stream_static_equals_plain_residual_and_warns[rope]': 5.8,
    'tests/test_export.py::test_merge_lora_gives_the_same_logits': 5.4,
    'tests/test_trainer.py::test_padded_and_masked_step_equals_the_step_on_the_real_examples[1]': 5.3,
    'tests/test_credit.py::test_frozen_blocks_get_no_gradient': 5.3,
    'tests/test_vit_grads.py::test_hyper_connection_products_have_autodiffs_gradients': 5.1,
    'tests/test_faults.py::test_a_truncated_json_file_is_named[cell.json]': 5.0,
    'tests/test_trainer.py::test_the_loop_times_the_device_not_the_dispatch': 4.9,
    'tests/test_trainer.py::test_summary_reports_the_best_epoch': 4.6,
    'tests/test_fidelity_distributed.py::test_lamb_matches_the_original_and_textbook_transcriptions[textbook]': 4.5,
    'tests/test_resample.py::test_peft_forward_at_other_sizes[64-8]': 4.5,
    'tests/test_hyper_connections.py::test_four_streams_differ_from_plain_and_count_their_parameters': 4.5,
    'tests/test_ladder.py::test_seeds_together_equal_separate_runs_bit_for_bit[bp]': 4.4,
    'tests/test_ladder.py::test_seeds_together_equal_separate_runs_bit_for_bit[fa]': 4.0,
    'tests/test_faults.py::test_ctrl_c_before_training_still_prints_its_line': 4.3,
    'tests/test_fidelity_mhc.py::test_randaugment_geometric_ops_interpolate_nearest': 4.3,
    'tests/test_faults.py::test_a_truncated_json_file_is_named[metrics.jsonl]': 4.2,
    'tests/test_faults.py::test_a_run_extended_after_it_finished_equals_an_uninterrupted_run[workers]': 4.1,
    'tests/test_export.py::test_exported_lora_model_reproduces_timm_logits_and_loads_in_timm': 3.9,
    'tests/test_faults.py::test_an_unavailable_platform_is_one_line': 3.9,
    'tests/test_local.py::test_eight_workers_on_four_devices_equal_eight_devices': 3.9,
    'tests/test_hyper_connections.py::test_one_stream_static_equals_plain_residual_and_warns[learned]': 3.9,
    'tests/test_trainer.py::test_kill_and_resume_equals_uninterrupted': 3.8,
    'tests/test_launch.py::test_launch_errors_are_one_clean_line': 3.8,
    'tests/test_faults.py::test_checkpoints_without_a_readable_config_record_are_refused': 3.7,
    'tests/test_hyper_connections.py::test_dynamic_maps_are_per_token_and_doubly_stochastic': 3.6,
    'tests/test_fidelity_peft.py::test_per_batch_ece_is_the_source_codes_aggregate[1000]': 3.6,
    'tests/test_peft.py::test_training_step_carries_no_diagnostics': 3.5,
    'tests/test_local.py::test_diloco_one_plain_sgd_step_outer_lr1_is_synchronous_sgd': 3.5,
    'tests/test_fidelity_distributed.py::test_lamb_matches_the_original_and_textbook_transcriptions[original]': 3.5,
    'tests/test_local.py::test_dynamic_local_steps_follow_the_formula': 3.5,
    'tests/test_ladder.py::test_frozen_blocks_are_bit_identical_and_not_differentiated': 3.3,
    'tests/test_augment.py::test_full_sgdm_set_is_deterministic_and_in_range': 3.2,
    'tests/test_resample.py::test_peft_forward_at_other_sizes[32-4]': 3.1,
    'tests/test_fidelity_mhc.py::test_final_norm_after_reduce': 3.0,
    'tests/test_conv.py::test_lenet_same_loss_and_gradients_with_either_conv': 3.0,
    'tests/test_faults.py::test_a_truncated_json_file_is_named[summary.json]': 3.0,
    'tests/test_fidelity_mhc.py::test_dynamic_hres_applied_transposed': 3.0,
    'tests/test_evaluate.py::test_device_reduced_metrics_equal_full_logits': 3.0,
    'tests/test_api.py::test_vit_with_peft_builds_what_the_config_path_builds': 2.9,
    'tests/test_faults.py::test_a_run_extended_after_it_finished_equals_an_uninterrupted_run[data]': 2.9,
    'tests/test_hyper_connections.py::test_per_token_sinkhorn_in_linear_space_is_the_log_space_one[1.0]': 2.9,
    'tests/test_augment.py::test_shapes_and_resize': 2.8,
    'tests/test_augment.py::test_random_resized_crop_is_a_window_at_random_positions': 2.8,
    'tests/test_vit_grads.py::test_low_rank_gradient_equals_autodiff': 2.6,
    'tests/test_fidelity_peft.py::test_per_batch_ece_is_the_source_codes_aggregate[1016]': 2.6,
    'tests/test_trainer.py::test_indivisible_batch_is_an_error': 2.5,
    'tests/test_augment.py::test_train_augment_with_rrc_randaugment_and_erasing': 2.4,
    'tests/test_fidelity_peft.py::test_per_batch_ece_through_sharded_evaluation': 2.3,
    'tests/test_local.py::test_slowmo_alpha1_beta0_is_local_sgd': 2.2,
    'tests/test_vit_init.py::test_default_init_is_todays': 2.2,
    'tests/test_fidelity_distributed.py::test_dynamic_rounds_end_to_end_use_the_last_gradients': 2.1,
    'tests/test_augment.py::test_color_jitter_random_order_and_factors': 2.1,
    'tests/test_packaging.py::test_wheel_holds_exactly_the_source_tree': 2.0,
    'tests/test_fidelity_distributed.py::test_slowmo_gamma_is_the_workers_current_lr': 1.9,
    'tests/test_vit_init.py::test_trunc_normal_kernels_have_std_002_within_the_bound': 1.9,
    'tests/test_fidelity_peft.py::test_fresh_head_is_timms_for_a_new_label_set': 1.9,
    'tests/test_fast_path.py::test_dot_product_attention_matches_numpy_softmax_attention': 1.9,
    'tests/test_faults.py::test_the_lock_nests_within_a_process_and_refuses_another_holder': 1.9,
    'tests/test_export.py::test_exported_model_reproduces_the_runs_accuracy': 1.8,
    'tests/test_augment.py::test_random_resized_crop_boxes_by_hand': 1.8,
    'tests/test_fidelity_distributed.py::test_lars_matches_the_original_and_textbook_transcriptions[textbook]': 1.8,
    'tests/test_hyper_connections.py::test_axial_rope_scores_depend_on_relative_position_only': 1.7,
    'tests/test_packaging.py::test_wheel_metadata_lists_the_requirements': 1.7,
    'tests/test_sweep.py::test_a_stopped_sweep_rerun_does_not_rerun_its_finished_cell': 1.7,
    'tests/test_ladder.py::test_identity_check_values': 1.7,
    'tests/test_vit_init.py::test_trunc_normal_biases_zero': 1.7,
    'tests/test_export.py::test_export_refuses_what_timm_cannot_hold': 1.6,
    'tests/test_fidelity_mhc.py::test_static_hres_applied_transposed_as_reference': 1.6,
    'tests/test_fidelity_distributed.py::test_lars_matches_the_original_and_textbook_transcriptions[original]': 1.5,
    'tests/test_api.py::test_vit_with_peft_from_timm_keeps_the_backbone_and_a_fresh_head': 1.5,
    'tests/test_augment.py::test_perspective_with_corners_in_place_is_identity': 1.5,
    'tests/test_trainer.py::test_rerun_with_another_config_is_refused_and_a_finished_run_is_not_retrained': 1.5,
    'tests/test_fidelity_mhc.py::test_latent_space_init_statistics': 1.4,
    'tests/test_conv.py::test_conv_valid_gradients_match_hand_derived_and_xla': 1.3,
    'tests/test_metrics.py::test_accuracy_and_nll': 1.3,
    'tests/test_credit.py::test_dfa_signal_is_the_projected_output_error': 1.3,
    'tests/test_trainer.py::test_nonfinite_loss_stops_the_run_and_nothing_nonfinite_is_saved': 1.3,
    'tests/test_evaluate.py::test_predict_returns_rows_in_order': 1.2,
    'tests/test_ladder.py::test_a_diverged_cell_is_a_result_and_the_ladder_goes_on': 1.2,
    'tests/test_metrics.py::test_ece_bin_edges_are_right_closed': 1.1,
    'tests/test_architecture.py::test_every_module_has_a_layer': 1.1,
    'tests/test_api.py::test_make_optimizer_is_optax_adamw_per_group_without_a_global_step': 1.1,
    'tests/test_packaging.py::test_wheel_declares_the_console_script': 1.1,
    'tests/test_architecture.py::test_no_module_cycle': 1.1,
    'tests/test_fidelity_mhc.py::test_whd_multiplier_every_step[39200-1-sqrt]': 1.1,
    'tests/test_trainer.py::test_steps_per_epoch_keep_the_last_partial_batch': 1.0,
    'tests/test_hyper_connections.py::test_sinkhorn_random_logits_are_doubly_stochastic[20-1.0-1.0]': 1.0,
}


def table(*reports, minimum=1.0):
  """SECONDS from pytest --durations=0 reports: per test, the longest of its measurements."""
  longest = {}
  for text in reports:
    totals = {}
    for seconds, nodeid in re.findall(r'^([0-9.]+)s (?:setup|call|teardown)\s+(\S+)$', text,
                                       re.M):
      totals[nodeid] = totals.get(nodeid, 0.0) + float(seconds)
    for nodeid, s in totals.items():
      longest[nodeid] = max(longest.get(nodeid, 0.0), s)
  return {nodeid: round(s, 1) for nodeid, s in sorted(longest.items(), key=lambda kv: -kv[1])
          if s >= minimum}


if __name__ == '__main__':
  texts = []
  for path in sys.argv[1:]:
    with open(path) as f:
      texts.append(f.read())
  print('SECONDS = {')
  for nodeid, s in table(*texts).items():
    print(f'    {nodeid!r}: {s},')
  print('}')
