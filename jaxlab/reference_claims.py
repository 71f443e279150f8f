"""Every conclusion the five reference notes draw, with the note's own numbers, and which
sweep measures it or why none does yet (docs/references.md describes the notes). Read by
`python -m jaxlab.claims`; a sweep that measures a claim names its id in its stats.json."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Claim:
  id: str
  note: str  # which reference note draws it
  text: str  # the claim, in a sentence
  numbers: str  # the note's own numbers
  measured_by: str = ''  # the family whose stats.json holds its comparison ('' if none)
  why_not: str = ''  # why no sweep measures it yet


NOTES = {
    'peft4': 'PEFT: hybrids and the layerwise split (ViT-S/16, CIFAR-100)',
    'peft5': 'PEFT: selective freezing (ViT-S/16, CIFAR-100)',
    'ladder': 'Trainable-depth ladder, BP / FA / DFA (ResMLP, CIFAR-10)',
    'mhc': 'Residual streams: plain vs mHC, schedules (ViT-Tiny, CIFAR-10)',
    'dist': 'Distributed training: baselines, large batch, local SGD (LeNet-5, CIFAR-100)',
}

PEFT_PLACEMENT = ('needs deep_lora, odd_lora and even_lora run over the same seeds; their '
                  'comparisons are not in the PEFT sweep\'s stats.json yet')
PEFT_LONGER = ('compares 10-epoch alternation runs with the 5-epoch baseline: two sweeps of '
               'different lengths (hybrid.py:freezing, and its alternation runs with '
               '--config.train.epochs=10), and no stats.json pairs runs across sweeps yet')
MHC_FIRST = ('about the note\'s first mHC (wrapped around whole blocks), which is not an arm here '
             '(the arms wrap the attention and MLP branches)')
INTERPRETATION = 'an interpretation or explanation, not a comparison a run measures'
DIST_TUNING = ('a ranking of the note\'s ten AdamW tuning runs: the tune_adamw grid runs AdamW '
               'settings over seeds (grid.md shows their means), but no stats.json compares its '
               'cells pairwise yet')
DIST_SWAPPED = ('its two arms differ in learning rate as well as augmentation (V7 lr 1e-3 against '
                'the lr 5e-4 runs): no pair of arms isolates the swap yet')

CLAIMS = (
    Claim('peft4-1', 'peft4',
          ('LoRA and Norm gradients show no systematic destructive alignment, so there is no '
           'gradient-direction collapse.'),
          'cosine(grad_LoRA, grad_Norm) ≈ 0 (or undefined when one side is absent)',
          why_not=('a diagnostic of the gradients (cos/lora_norm in metrics.jsonl), not yet summarised '
                   'over seeds')),
    Claim('peft4-2', 'peft4',
          ('The earlier "hybrid collapse to norm" came from where updates are placed and how large'
           ' the steps are, not from gradient conflict (the gradient-conflict explanation is '
           'rejected).'),
          '*(no numbers beyond peft4-1)*',
          why_not=INTERPRETATION),
    Claim('peft4-3', 'peft4',
          ('In the parallel hybrid (LoRA and Norm in every block), LoRA tended to dominate the '
           'step under the earlier settings while the head/setup limited additivity, so the hybrid'
           ' behaved "Norm-like".'),
          '*(no numbers)*',
          why_not=INTERPRETATION),
    Claim('peft4-4', 'peft4',
          ('The layerwise deep_lora hybrid (LoRA only in later blocks, Norm earlier) reaches the '
           'same accuracy as the parallel hybrid.'),
          'Acc@1 (best) 89.6% vs 89.5%',
          measured_by='peft'),
    Claim('peft4-5', 'peft4',
          'deep_lora, parallel hybrid and LoRA-only are about equal in accuracy.',
          '89.6% / 89.5% / 89.3%',
          measured_by='peft'),
    Claim('peft4-6', 'peft4',
          ('Norm-only nearly solves the task and slightly edges LoRA and the hybrids, making it '
           'the best (or tied) method in that study.'),
          'Norm-only 89.8% vs 89.6% (deep_lora), 89.5% (parallel), 89.3% (LoRA-only)',
          measured_by='peft'),
    Claim('peft4-7', 'peft4',
          ('Because Norm-only already nearly solves this transfer, the hybrid often looked '
           '"Norm-like".'),
          '*(no numbers beyond peft4-6)*',
          why_not=INTERPRETATION),
    Claim('peft4-8', 'peft4',
          'deep_lora uses about 62% fewer trainable parameters than the parallel hybrid.',
          '247,396 vs 647,524 (−62%)',
          why_not=('a parameter count, the same on every seed: the PEFT table reports it (trainables '
                   'column)')),
    Claim('peft4-9', 'peft4',
          'Norm-only has by far the fewest trainable parameters.',
          '57,700 vs 247,396 (deep_lora), 628,324 (LoRA-only), 647,524 (parallel)',
          why_not=('a parameter count, the same on every seed: the PEFT table reports it (trainables '
                   'column)')),
    Claim('peft4-10', 'peft4',
          "deep_lora's step time is about 22% shorter than the parallel hybrid's.",
          '~0.57 s vs ~0.73 s (−22%)',
          measured_by='peft'),
    Claim('peft4-11', 'peft4',
          'Norm-only is the fastest method per step.',
          '~0.50 s vs ~0.57 s (deep_lora), ~0.73 s (parallel), ~0.72–0.81 s (LoRA-only)',
          measured_by='peft'),
    Claim('peft4-12', 'peft4',
          'deep_lora needs less peak VRAM than the parallel hybrid.',
          '~6.1 GB vs ~7.5–8.0 GB',
          measured_by='peft'),
    Claim('peft4-13', 'peft4',
          'Norm-only is the cheapest method in memory as well.',
          '~5.2 GB vs ~6.1 (deep_lora), ~7.5–8.0 (parallel), ~8.0 GB (LoRA-only)',
          measured_by='peft'),
    Claim('peft4-14', 'peft4',
          'Norm-only is the best calibrated method.',
          'ECE ~0.058–0.062 vs ~0.074–0.077 for the others',
          measured_by='peft'),
    Claim('peft4-15', 'peft4',
          'LoRA-only is the worst calibrated method.',
          'ECE ~0.077',
          measured_by='peft'),
    Claim('peft4-16', 'peft4',
          "The two hybrids' calibration falls between Norm-only and LoRA-only.",
          'layerwise ~0.075, parallel ~0.074',
          measured_by='peft'),
    Claim('peft4-17', 'peft4',
          ('The layerwise deep_lora split balances LoRA and Norm update norms and converges stably'
           ' at far lower cost.'),
          'LoRA/Norm update-norm ratio ≈ 1–1.6×',
          why_not='a diagnostic of the update norms, not yet summarised over seeds'),
    Claim('peft4-18', 'peft4',
          ('Placement ablation: deep_lora beats odd_lora, which is much better than even_lora '
           '(even-LoRA clearly worse).'),
          '*(no numbers)*',
          why_not=PEFT_PLACEMENT),
    Claim('peft4-19', 'peft4',
          'From the ablations, LoRA belongs in later ViT blocks and Norm in earlier ones.',
          '*(no numbers)*',
          why_not=INTERPRETATION),
    Claim('peft4-20', 'peft4',
          ("the earlier recipe's LoRA-over-Norm edge came from an effectively larger LoRA step and"
           ' different augmentations.'),
          '~90.8% vs ~89.3%',
          why_not=('about an earlier recipe of the note (a larger LoRA step, other augmentations), not an '
                   'arm here')),
    Claim('peft4-21', 'peft4',
          ('the earlier recipe (LoRA > Norm) and the layerwise-split study (tie or Norm slightly '
           'ahead) do not contradict each other: the ranking depends on the recipe (WD layout, '
           'augmentations, LR splits).'),
          '*(no numbers)*',
          why_not=INTERPRETATION),
    Claim('peft4-22', 'peft4',
          ('The earlier collapse is not inherent to hybrids: whether LoRA and Norm add up depends '
           'on where they update and how hard they are pushed.'),
          '*(no numbers)*',
          why_not=INTERPRETATION),
    Claim('peft4-23', 'peft4',
          ('Best trade-off: deep_lora gives parallel-hybrid accuracy with far fewer parameters, '
           'lower VRAM and faster steps (summary of peft4-4, -8, -10, -12).'),
          'see peft4-4/8/10/12',
          why_not=INTERPRETATION),
    Claim('peft5-1', 'peft5',
          ('Freezing LoRA for the first 200 batches (warm-up LoRA) raises final accuracy over the '
           'baseline.'),
          'Acc@1 0.9004 → 0.9021 (+0.17 pp)',
          measured_by='peft'),
    Claim('peft5-2', 'peft5',
          'Warm-up LoRA also improves calibration by about 6%.',
          'ECE 0.0637 → 0.0600 (−0.0037, ~−5.8%)',
          measured_by='peft'),
    Claim('peft5-3', 'peft5',
          ('Warm-up LoRA costs the same step time / throughput as the baseline ("identical '
           'compute").'),
          '0.5714 s vs 0.5698 s; 224.0 vs 224.7 img/s',
          measured_by='peft'),
    Claim('peft5-4', 'peft5',
          'Warm-up LoRA uses the same peak memory as the baseline.',
          '6,145,093,632 B vs 6,145,093,632 B (~0%)',
          measured_by='peft'),
    Claim('peft5-5', 'peft5',
          ('Alternating which group trains every 50 batches, starting with LoRA frozen, gives '
           'about 19% more throughput.'),
          '267.7 vs 224.7 img/s (+19.1%); step 0.4781 s vs 0.5698 s',
          measured_by='peft'),
    Claim('peft5-6', 'peft5',
          'Alternation K=50 cuts peak memory by about 13%.',
          '5,355,933,696 B vs 6,145,093,632 B (−12.8%)',
          measured_by='peft'),
    Claim('peft5-7', 'peft5',
          'Alternation K=50 improves calibration, by more than warm-up LoRA does.',
          'ECE 0.0592 vs 0.0637 (−0.0045, ~−7.0%); warm-up 0.0600',
          measured_by='peft'),
    Claim('peft5-8', 'peft5',
          'Alternation K=50 gives up only about 0.1 pp of accuracy ("within 0.1 pp of baseline").',
          '0.8993 vs 0.9004 (−0.0011)',
          measured_by='peft'),
    Claim('peft5-9', 'peft5',
          'Across K ∈ {25, 50, 100} (LoRA-first), alternation keeps its efficiency gains.',
          '*(no numbers)*',
          measured_by='peft'),
    Claim('peft5-10', 'peft5',
          'Across the K sweep, accuracy stays slightly below baseline.',
          'Acc ~0.897–0.899 vs 0.9004',
          measured_by='peft'),
    Claim('peft5-11', 'peft5',
          'ECE improves for every K in the sweep.',
          '*(no numbers)*',
          measured_by='peft'),
    Claim('peft5-12', 'peft5',
          'Warm-up LoRA (200) followed by alternation K=25 keeps the efficiency gains.',
          '*(no numbers)*',
          measured_by='peft'),
    Claim('peft5-13', 'peft5',
          'Warm-up LoRA + alternation K=25 keeps the ECE gains.',
          '*(no numbers)*',
          measured_by='peft'),
    Claim('peft5-14', 'peft5',
          'Warm-up LoRA + alternation K=25 costs a small accuracy dip.',
          'Acc ≈ baseline −0.03 to −0.1 pp',
          measured_by='peft'),
    Claim('peft5-15', 'peft5',
          ('Training alternation for 10 epochs (K=25/50, and one run with LoRA LR raised to 7e-4) '
           'does not bring accuracy above the 5-epoch baseline.'),
          '*(no numbers)*',
          why_not=PEFT_LONGER),
    Claim('peft5-16', 'peft5',
          'In those 10-epoch alternation trials, ECE sometimes got slightly worse.',
          '*(no numbers)*',
          why_not=PEFT_LONGER),
    Claim('peft5-17', 'peft5',
          ('Warm-up Norm (200) and symmetric 100/100 warm-ups are neutral or slightly worse in '
           'accuracy, so they are dropped.'),
          '*(no numbers)*',
          measured_by='peft'),
    Claim('peft5-18', 'peft5',
          ('Warm-up Norm (200) and symmetric 100/100 warm-ups are neutral or slightly worse in '
           'ECE.'),
          '*(no numbers)*',
          measured_by='peft'),
    Claim('peft5-19', 'peft5',
          ('Early interference matters: letting Norm adapt first (~200 batches, LoRA frozen) '
           'stabilizes training and gives a small but consistent gain in accuracy and calibration.'),
          'see peft5-1/2',
          why_not=INTERPRETATION),
    Claim('peft5-20', 'peft5',
          ('For alternation, freezing LoRA first (Norm trains first) beats the opposite order; '
           'freezing Norm first hurt accuracy noticeably.'),
          '*(no numbers)*',
          measured_by='peft'),
    Claim('peft5-21', 'peft5',
          ('Switching one branch off half the time (alternation) cuts compute and memory while '
           'improving calibration, which helps when wall-clock time or memory is the bottleneck.'),
          'see peft5-5/6/7',
          why_not=INTERPRETATION),
    Claim('peft5-22', 'peft5',
          'More epochs did not close the alternation accuracy gap.',
          '*(no numbers)*',
          why_not=PEFT_LONGER),
    Claim('peft5-23', 'peft5',
          ('Alternation acts as a mild bias: it banks efficiency and ECE but gives up some '
           'accuracy.'),
          'concede ~0.1–0.3 pp Acc',
          measured_by='peft'),
    Claim('peft5-24', 'peft5',
          ('The GradMonitor cosine prints 0/NaN, probably because per-layer vector pairing often '
           'finds no same-size pairs; a global concatenated LoRA-vs-Norm cosine is planned.'),
          'cosine 0 / NaN',
          why_not="about the reference code's gradient monitor, not a property of a run"),
    Claim('ladder-1', 'ladder',
          ('With BP, test accuracy rises monotonically as more of the last blocks become trainable'
           ' (d=256, L=4).'),
          'k=0..4: 0.389 → 0.565 → 0.598 → 0.608 → 0.617 (+23 pp)',
          measured_by='ladder'),
    Claim('ladder-2', 'ladder',
          'BP also climbs monotonically in the d=512, L=2 config.',
          'k=0..2: 0.386 → 0.583 → 0.603 (+22 pp)',
          measured_by='ladder'),
    Claim('ladder-3', 'ladder',
          ('Because BP gains from every block made trainable, depth is genuinely usable, so the D3'
           ' precondition (BP benefits from depth) holds.'),
          '+22–23 pp',
          why_not=INTERPRETATION),
    Claim('ladder-4', 'ladder',
          ('For DFA the frozen rung k=0 is the best accuracy in both configs; every configuration '
           'with trained blocks lands below it.'),
          'd=256: 0.349 vs 0.244 / 0.286 / 0.296 / 0.301; d=512: 0.349 vs 0.226 / 0.302',
          measured_by='ladder'),
    Claim('ladder-5', 'ladder',
          'Fully trained DFA (d=256) is worse than its frozen baseline.',
          '0.301 vs 0.349 (−4.8 pp)',
          measured_by='ladder'),
    Claim('ladder-6', 'ladder',
          'Fully trained DFA (d=512) is worse than its frozen baseline.',
          '0.302 vs 0.349 (−4.7 pp)',
          measured_by='ladder'),
    Claim('ladder-7', 'ladder',
          ('Training deep DFA blocks does more than fail to help: it destroys about 5 pp, so the '
           'D3 failure holds at every granularity of the ladder, not only at the two extremes.'),
          '~5 pp (−4.8 / −4.7 pp)',
          why_not=INTERPRETATION),
    Claim('ladder-8', 'ladder',
          'FA with d=256 ends above its frozen baseline but climbs non-monotonically.',
          '0.355 → 0.382 → 0.349 → 0.398 → 0.402 (+4.7 pp over frozen)',
          measured_by='ladder'),
    Claim('ladder-9', 'ladder',
          ('FA with d=512 gains nothing net from depth, which reproduces the known FA-failure '
           'case.'),
          'k=L 0.361 vs frozen 0.359 (k=1 0.412)',
          measured_by='ladder'),
    Claim('ladder-10', 'ladder',
          ('FA sits between BP and DFA: it uses some depth in the easier config and none in the '
           'harder one.'),
          'see ladder-8/9',
          why_not=INTERPRETATION),
    Claim('ladder-11', 'ladder',
          ("FA's dips at k=2 in both configs fit its mis-scaled sequential credit occasionally "
           'hurting; k=1 > k=2 is noted but not investigated.'),
          'd=256 k=1 0.382 vs k=2 0.349; d=512 k=1 0.412 vs k=2 0.361',
          measured_by='ladder'),
    Claim('ladder-12', 'ladder',
          ("Fully trained FA is at or slightly above its frozen baseline and far below BP, so FA's"
           ' non-monotonicity does not change the headline.'),
          'd=256 0.402 vs BP 0.617; d=512 0.361 vs BP 0.603',
          measured_by='ladder'),
    Claim('ladder-13', 'ladder',
          ('Training the output-side blocks first is the best case for each method, because the '
           "deepest block gets the most direct credit (FA's last block sees the exact output "
           'gradient).'),
          '*(no numbers; design rationale, untested)*',
          why_not='a design rationale the note did not test'),
    Claim('ladder-14', 'ladder',
          'The in-script BP full run reproduces the existing full-audit BP anchor.',
          '0.617 vs 0.615',
          why_not="a consistency check between the note's own scripts, not a comparison of arms"),
    Claim('ladder-15', 'ladder',
          'The in-script DFA full run reproduces the existing DFA anchor.',
          '0.301 vs 0.301 / 0.306',
          why_not="a consistency check between the note's own scripts, not a comparison of arms"),
    Claim('ladder-16', 'ladder',
          'The in-script FA full run reproduces the existing FA anchor.',
          '0.402 vs 0.401',
          why_not="a consistency check between the note's own scripts, not a comparison of arms"),
    Claim('ladder-17', 'ladder',
          ('The frozen k=0 rung comes out at ≈0.349 for every method, matching the existing '
           'frozen-blocks baseline.'),
          '≈0.349 vs 0.349',
          why_not="a consistency check between the note's own scripts, not a comparison of arms"),
    Claim('ladder-18', 'ladder',
          ('At init the frozen blocks form a near-norm-preserving random feature map, not a strict'
           ' identity, because the residual branches are small but not negligible.'),
          ('per-block ‖f_l(h_l)‖/‖h_l‖ ≈ 0.10; ‖h_L−h_0‖/‖h_0‖ = 0.196 ± 0.003; cos(h_L, h_0) = '
           '0.981 ± 0.001 (3 seeds, d=256 L=4 stack)'),
          why_not=('measured by every ladder sweep (identity_check.json: mean and std over its seeds), '
                   'without a verdict')),
    Claim('ladder-19', 'ladder',
          ('k=0 is well above chance because it amounts to a trained embedding and readout around '
           'that fixed map, effectively a (near-)linear classifier on pixels.'),
          'k=0 ≈ 0.35 vs 10% chance',
          why_not='a comparison with chance, not with another arm'),
    Claim('ladder-20', 'ladder',
          ('A parameter-matched shallow baseline (capacity vs depth) has not been run, but the D3 '
           'precondition is judged safe anyway given the +22–23 pp BP gain.'),
          '+22–23 pp',
          why_not='an open item of the note (a parameter-matched shallow baseline was not run)'),
    Claim('mhc-1', 'mhc',
          ('In baseline_cifar10_001 (mHC wrapped around whole blocks), mHC learns worse than the regular'
           ' residual, as the run\'s hypothesis predicted ("slightly worse because of its loose '
           'implementation").'),
          'test/acc 0.8522 vs 0.8768 (−2.46 pp); test/loss 0.463315 vs 0.413534',
          why_not=MHC_FIRST),
    Claim('mhc-2', 'mhc',
          ("In baseline_cifar10_001, mHC's class separation in the embedding is more interconnected. The"
           " regular model's classes are clearly separated, but its wrong predictions sit inside "
           'clusters.'),
          '*(no numbers; qualitative)*',
          why_not='qualitative (a projection of the embeddings): no number to compare'),
    Claim('mhc-3', 'mhc',
          ('In baseline_cifar10_001 the learning curves are clean and nearly identical, with mHC '
           'trailing slightly.'),
          '*(no numbers)*',
          why_not='qualitative (learning curves): no number to compare'),
    Claim('mhc-4', 'mhc',
          ('In baseline_cifar10_001 the warmup-hold-decay (WHD) scheduler was broken: the LR rose '
           'linearly and never decreased.'),
          '*(no numbers)*',
          why_not="about a bug of the reference code's scheduler, not a property of a run"),
    Claim('mhc-5', 'mhc',
          ("Experiment baseline_cifar10_001's lower mHC score is blamed mainly on the mHC implementation (not checked "
           'enough against the paper).'),
          'see mhc-1',
          why_not=INTERPRETATION),
    Claim('mhc-6', 'mhc',
          ('Hypothesis for baseline_cifar10_002: the rewritten mHC (wrapping the attention and MLP '
           'branches separately, following the tokenbender repo) will beat the previous mHC.'),
          'baseline_cifar10_002 mHC 0.9217 vs baseline_cifar10_001 mHC 0.8522',
          why_not=MHC_FIRST),
    Claim('mhc-7', 'mhc',
          'Hypothesis for baseline_cifar10_002: mHC will surpass the baseline (regular) architecture.',
          '0.9217 vs 0.9241',
          measured_by='mhc'),
    Claim('mhc-8', 'mhc',
          "In baseline_cifar10_002, mHC's test accuracy is marginally below the regular model's.",
          ('test/acc 0.9217 vs 0.9241 (−0.24 pp); test/loss 0.330276 vs 0.330783; silhouette '
           '0.289719 vs 0.296391'),
          measured_by='mhc'),
    Claim('mhc-9', 'mhc',
          "In baseline_cifar10_002, mHC's kNN accuracy is marginally above the regular model's.",
          'test/knn_acc 0.8964 vs 0.8958',
          measured_by='mhc'),
    Claim('mhc-10', 'mhc',
          ("In baseline_cifar10_002's UMAP, mHC locally shows two more separated clusters than the "
           'regular model.'),
          '*(no numbers; qualitative)*',
          why_not='qualitative (a projection of the embeddings): no number to compare'),
    Claim('mhc-11', 'mhc',
          ('So far there is little difference between mHC and regular; CIFAR-10 may be too easy, '
           'and CIFAR-100 or ImageNet might tell them apart better.'),
          'see mhc-8/9',
          why_not=INTERPRETATION),
    Claim('mhc-12', 'mhc',
          ('Hypothesis for baseline_cifar10_003: cosine without warmup will do slightly worse than WHD '
           'for lack of warmup, and with warmup it would be hardly better or worse than WHD.'),
          '*(untested in the note)*',
          why_not='a hypothesis the note left untested'),
    Claim('mhc-13', 'mhc',
          'Run 003 (cosine, no warmup) shows a strong learning collapse for both models.',
          ('regular acc 0.3498 / loss 1.79887; mHC acc 0.3987 / loss 1.68943 (vs 0.9241 / 0.9217 '
           'in baseline_cifar10_002 under WHD)'),
          why_not=('compares two sweeps (cosine without warm-up against WHD), not two arms of one; '
                   'each sweep\'s record gives its accuracy over the seeds')),
    Claim('mhc-14', 'mhc',
          ('Under cosine without warmup, mHC scores above the regular model on every reported '
           'metric.'),
          ('acc 0.3987 vs 0.3498; knn_acc 0.289 vs 0.2375; silhouette −0.0533 vs −0.0737; loss '
           '1.68943 vs 1.79887'),
          measured_by='mhc'),
    Claim('mhc-15', 'mhc',
          ("In baseline_cifar10_003, mHC's training plots are much more stable than the regular model's,"
           ' but neither converged.'),
          '*(no numbers)*',
          why_not='qualitative (learning curves): no number to compare'),
    Claim('mhc-16', 'mhc',
          ('Hypothesis for baseline_cifar10_004: a linear warmup (cosine + linear warmup) will stabilize'
           " training but not reach WHD's performance."),
          '*(no results recorded)*',
          why_not='a hypothesis the note left untested (no results recorded)'),
    Claim('dist-1', 'dist',
          'The best AdamW configuration is S6.',
          ('S6 (bs 64, β 0.9, wd 4e-4, lr 5e-4): val acc 49.95%; next best L1 49.21%; range '
           '44.80–49.95% over 10 runs'),
          why_not=DIST_TUNING),
    Claim('dist-2', 'dist',
          ("SGDM's chosen learning rate is 0.01 (its batch size, momentum and weight-decay entries"
           ' are left blank).'),
          'lr 0.01',
          why_not='a chosen setting, not a result'),
    Claim('dist-3', 'dist',
          ('SGDM needs a more complex data augmentation and AdamW a less complex one, so a '
           'compromise augmentation was needed to compare them on equal terms.'),
          '*(no numbers)*',
          why_not='about the recipe search (which augmentation each optimizer needs), not one comparison'),
    Claim('dist-4', 'dist',
          'With the augmentations swapped, AdamW reaches only 42.83%.',
          'V7 (AdamW, bs 64, wd 4e-4, lr 1e-3): 42.83%',
          why_not=DIST_SWAPPED),
    Claim('dist-5', 'dist',
          'With the augmentations swapped, SGDM overfits.',
          'V8 (SGDM, bs 64, momentum 0.9, wd 4e-4, lr 1e-2): "the model overfit" (no number)',
          why_not='qualitative ("overfit"): no number to compare'),
    Claim('dist-6', 'dist',
          ('With the shared final augmentation (the SGDM transforms minus RandomAffine), SGDM '
           'beats AdamW.'),
          'SGDM 53.38% vs AdamW 45.94% (+7.44 pp)',
          measured_by='distributed'),
    Claim('dist-7', 'dist',
          ("LARS scales each layer's learning rate by weight and gradient norms, which the note "
           'says removes the need for traditional LR schedulers.'),
          'update x_{t+1} = x_t − η_t·(g_t/‖g_t‖)·φ(‖x_t‖); no experiment',
          why_not='a description of the method: the note ran no LARS experiment'),
    Claim('dist-8', 'dist',
          ("LAMB adapts each layer's learning rate using running mean/variance estimates of the "
           'gradient and, like LARS, does not rely on conventional schedulers.'),
          'update x_{t+1} = x_t − η_t·m_t/(√v_t + ε); no experiment',
          why_not='a description of the method: the note ran no LAMB experiment'),
)
