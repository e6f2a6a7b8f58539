//! The selection stage on a tiny random BERT and a small synthetic folder: the perturbation
//! regimes (worst-case radius = the final run's noise displacement under its optimizer, ∝ √d;
//! κ = 0 and σ = 0 reduce to plain clipped training; gaussian noise of the DP scale changes the
//! result), the score and its spread, the learning-rate grid (for the winner or per candidate),
//! the candidate strategies, and the helpers of the synthetic stage.

use std::path::Path;

use dpselft_dp::{LrSchedule, NoiseStep, OptimizerKind, Task};
use dpselft_model::Model;
use dpselft_selft::select::{
    CandidateResult, Candidates, Perturbation, RateSearch, SelectConfig, candidate_sets, select,
    spread_order,
};
use dpselft_selft::synth::{apportion, filter_texts, label_prompt};
use dpselft_selft::{SelftError, SyntheticData};
use dpselft_testkit::{PAD_UNK, random_model, tiny_bert_config, write_colour_animal_jsonl};

/// Three blocks of different widths would need different configs; instead the sets differ in
/// size (1 or 2 blocks), which is what the radius must track.
fn tiny_bert() -> dpselft_selft::Result<Model> {
    Ok(random_model(tiny_bert_config(16, 3), 0.2, 11, PAD_UNK))
}

fn write_split(path: &Path, n: usize, seed: usize) {
    write_colour_animal_jsonl(path, n, seed, 2);
}

fn synthetic(dir: &Path) -> SyntheticData {
    write_split(&dir.join("train.jsonl"), 64, 1);
    write_split(&dir.join("val.jsonl"), 20, 2);
    let manifest = serde_json::json!({
        "generator": "test", "labels": ["colour", "animal"], "epsilon": 0.5, "delta": 1e-5,
        "sampled": 84, "dropped_short": 0, "dropped_duplicate": 0, "train": 64, "val": 20,
        "private_examples": 1000
    });
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
    SyntheticData::load(dir).unwrap()
}

fn config(perturbation: Perturbation) -> SelectConfig {
    SelectConfig {
        task: Task::Classify,
        candidates: Candidates::Windows(2),
        max_candidates: None,
        sub_blocks: false,
        perturbation,
        steps: 4,
        final_steps: 8,
        final_warmup_steps: 0,
        batch_size: 16,
        kappa: 1.0,
        seeds: 1,
        noise_multiplier: 1.5,
        final_batch_size: 64.0,
        clip: 1.0,
        lr: 0.05,
        lr_grid: Vec::new(),
        rate_search: RateSearch::Winner,
        // The trials in the candidates' regime unless a test says otherwise.
        lr_perturbation: perturbation,
        lr_steps: 4,
        optimizer: OptimizerKind::default(),
        max_seq_len: 16,
        max_tokens: 128,
        init_seed: 3,
        seed: 9,
    }
}

#[test]
fn worst_case_radius_is_the_final_runs_noise_displacement_under_its_optimizer() {
    let tmp = tempfile::tempdir().unwrap();
    let data = synthetic(tmp.path());
    let c = config(Perturbation::WorstCase);
    let sel = select(&data, &tiny_bert, &c, &mut ()).unwrap();
    assert_eq!(
        sel.candidates.len(),
        1 + 3 + 2,
        "the head alone, then windows:2 over 3 blocks"
    );
    assert!(sel.candidates[0].blocks.is_empty());
    assert_eq!(sel.candidates[0].spec.to_string(), "head");
    // Candidate step k stands for final step 2k (τ = 4 of T = 8); the radius is κ times the
    // AdamW noise displacement there, averaged over the τ steps.
    let noise = NoiseStep {
        optimizer: c.optimizer,
        schedule: LrSchedule {
            peak_lr: c.lr,
            warmup_steps: 0,
            total_steps: 8,
        },
        noise_std: c.noise_multiplier * c.clip / c.final_batch_size,
    };
    for r in &sel.candidates {
        let want = (1..=4u64)
            .map(|k| c.kappa * noise.displacement(2 * k, r.params))
            .sum::<f64>()
            / 4.0;
        assert!(
            (r.radius - want).abs() <= 1e-12 * want,
            "{} vs {want}",
            r.radius
        );
    }
    let one = sel.candidates.iter().find(|r| r.blocks.len() == 1).unwrap();
    let two = sel.candidates.iter().find(|r| r.blocks.len() == 2).unwrap();
    assert!(two.params > one.params && two.radius > one.radius);
    let ratio = two.radius / one.radius;
    assert!((ratio - (two.params as f64 / one.params as f64).sqrt()).abs() < 1e-9);
    assert!(sel.chosen_spec.to_string().starts_with("head"));
}

/// A candidate budget caps the sets trained: the head, round 1 spread over depth (top block
/// first), then a greedy round from the blocks nearest the current set.
#[test]
fn a_candidate_budget_caps_the_search_coarse_to_fine() {
    assert_eq!(spread_order(5), [4, 0, 2, 1, 3]);
    assert_eq!(spread_order(1), [0]);
    let mut order = spread_order(30);
    assert_eq!(&order[..4], [29, 0, 14, 7]);
    order.sort_unstable();
    assert_eq!(order, (0..30).collect::<Vec<_>>());
    let tmp = tempfile::tempdir().unwrap();
    let data = synthetic(tmp.path());
    let mut c = config(Perturbation::None);
    c.candidates = Candidates::Greedy(2);
    c.max_candidates = Some(4);
    let sel = select(&data, &tiny_bert, &c, &mut ()).unwrap();
    let specs: Vec<String> = sel.candidates.iter().map(|r| r.spec.to_string()).collect();
    assert!(specs.len() <= 4, "{specs:?}");
    // Round 1 gets half the budget: the head and the top block.
    assert_eq!(&specs[..2], ["head", "head,block.2"], "{specs:?}");
    // The smallest budgets: the head and the top block; the head alone.
    for (budget, want) in [(2, &["head", "head,block.2"][..]), (1, &["head"][..])] {
        c.max_candidates = Some(budget);
        let sel = select(&data, &tiny_bert, &c, &mut ()).unwrap();
        let specs: Vec<String> = sel.candidates.iter().map(|r| r.spec.to_string()).collect();
        assert_eq!(specs, want, "budget {budget}");
    }
    // Without a budget: the head, 3 singles, then up to 2 pairs.
    c.max_candidates = None;
    let all = select(&data, &tiny_bert, &c, &mut ()).unwrap();
    assert!(all.candidates.len() >= 4, "{}", all.candidates.len());
}

#[test]
fn the_score_is_the_negative_val_loss_with_its_spread_over_seeds() {
    let tmp = tempfile::tempdir().unwrap();
    let data = synthetic(tmp.path());
    let mut c = config(Perturbation::Gaussian);
    c.seeds = 3;
    c.candidates = Candidates::Singles;
    let sel = select(&data, &tiny_bert, &c, &mut ()).unwrap();
    for r in &sel.candidates {
        assert_eq!(r.seed_scores.len(), 3);
        let mean = r.seed_scores.iter().sum::<f64>() / 3.0;
        let var = r
            .seed_scores
            .iter()
            .map(|s| (s - mean).powi(2))
            .sum::<f64>()
            / 2.0;
        assert!((r.score - mean).abs() < 1e-12 && (r.loss + mean).abs() < 1e-12);
        assert!((r.score_std - var.sqrt()).abs() < 1e-12 && r.score_std > 0.0);
        let acc = r.accuracy.unwrap();
        assert!((0.0..=1.0).contains(&acc));
    }
}

/// `per-candidate` rate search: every set at every multiple, compared at its best rate (by the
/// sets' key: the score, then accuracy, then fewer parameters), and the chosen set's best rate
/// is the final one.
#[test]
fn per_candidate_search_scores_every_set_at_its_best_rate() {
    let tmp = tempfile::tempdir().unwrap();
    let data = synthetic(tmp.path());
    let mut c = config(Perturbation::Gaussian);
    c.candidates = Candidates::Singles;
    c.rate_search = RateSearch::PerCandidate;
    c.lr_grid = vec![0.1, 1.0, 4.0];
    let sel = select(&data, &tiny_bert, &c, &mut ()).unwrap();
    assert_eq!(sel.candidates.len(), 1 + 3, "the head and 3 singles");
    assert_eq!(sel.other_rates.len(), 2 * sel.candidates.len());
    let key = |t: &CandidateResult| (t.score, t.accuracy.unwrap(), -(t.params as f64));
    for best in &sel.candidates {
        let runs: Vec<&CandidateResult> = sel
            .other_rates
            .iter()
            .filter(|r| r.spec == best.spec)
            .chain([best])
            .collect();
        let mut lrs: Vec<f64> = runs.iter().map(|r| r.lr).collect();
        lrs.sort_by(f64::total_cmp);
        assert_eq!(lrs, [c.lr * 0.1, c.lr, c.lr * 4.0], "{}", best.spec);
        assert!(runs.iter().all(|r| key(r) <= key(best)), "{}", best.spec);
    }
    let top = sel
        .candidates
        .iter()
        .max_by(|a, b| key(a).partial_cmp(&key(b)).unwrap())
        .unwrap();
    assert_eq!(sel.chosen_spec, top.spec);
    assert_eq!(sel.chosen_lr, top.lr);
    let trial_lrs: Vec<f64> = sel.lr_trials.iter().map(|t| t.lr).collect();
    assert_eq!(trial_lrs, [c.lr * 0.1, c.lr, c.lr * 4.0]);
    assert!(sel.lr_trials.iter().all(|t| t.spec == sel.chosen_spec));
    // Every run is listed once.
    assert_eq!(sel.trained().count(), 3 * sel.candidates.len());
}

#[test]
fn the_learning_rate_grid_picks_the_best_rate_for_the_chosen_set() {
    let tmp = tempfile::tempdir().unwrap();
    let data = synthetic(tmp.path());
    let mut c = config(Perturbation::WorstCase);
    c.candidates = Candidates::Singles;
    c.lr_grid = vec![0.1, 1.0, 4.0];
    let sel = select(&data, &tiny_bert, &c, &mut ()).unwrap();
    let lrs: Vec<f64> = sel.lr_trials.iter().map(|t| t.lr).collect();
    assert_eq!(lrs, vec![c.lr, c.lr * 0.1, c.lr * 4.0]);
    for t in &sel.lr_trials {
        assert_eq!(t.blocks, sel.chosen);
    }
    let top = sel
        .lr_trials
        .iter()
        .max_by(|a, b| {
            let key = |t: &dpselft_selft::select::CandidateResult| (t.accuracy.unwrap(), -t.loss);
            key(a).partial_cmp(&key(b)).unwrap()
        })
        .unwrap();
    assert_eq!(
        sel.chosen_lr, top.lr,
        "the higher accuracy, ties to the lower loss"
    );
    // The radius scales with the learning rate (AdamW: ‖Δw‖ ∝ η).
    let (base, big) = (&sel.lr_trials[0], &sel.lr_trials[2]);
    assert!((big.radius / base.radius - 4.0).abs() < 1e-9);
}

#[test]
fn learning_rate_trials_in_their_own_regime_are_that_regimes_candidate_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = synthetic(tmp.path());
    let mut c = config(Perturbation::WorstCase);
    c.lr_grid = vec![0.1, 1.0, 4.0];
    c.lr_perturbation = Perturbation::Gaussian;
    let sel = select(&data, &tiny_bert, &c, &mut ()).unwrap();
    // η is trained again, in the grid's order, under Gaussian noise (no radius).
    let lrs: Vec<f64> = sel.lr_trials.iter().map(|t| t.lr).collect();
    assert_eq!(lrs, vec![c.lr * 0.1, c.lr, c.lr * 4.0]);
    assert!(
        sel.lr_trials
            .iter()
            .all(|t| t.radius == 0.0 && t.round == 0)
    );
    // The trial at η is exactly the Gaussian selection's candidate run of the chosen set.
    let gaussian = select(&data, &tiny_bert, &config(Perturbation::Gaussian), &mut ()).unwrap();
    let same = gaussian
        .candidates
        .iter()
        .find(|r| r.blocks == sel.chosen)
        .expect("windows:2 tries every set");
    assert_eq!(sel.lr_trials[1].score, same.score);
    assert_eq!(sel.lr_trials[1].accuracy, same.accuracy);
    // More steps change the trials, not the candidates.
    let mut longer = c.clone();
    longer.lr_steps = 8;
    let sel8 = select(&data, &tiny_bert, &longer, &mut ()).unwrap();
    let scores = |s: &dpselft_selft::select::Selection| -> Vec<f64> {
        s.candidates.iter().map(|r| r.score).collect()
    };
    assert_eq!(scores(&sel8), scores(&sel));
    assert_ne!(sel8.lr_trials[1].score, sel.lr_trials[1].score);
}

#[test]
fn zero_radius_and_zero_noise_reduce_to_plain_clipped_training() {
    let tmp = tempfile::tempdir().unwrap();
    let data = synthetic(tmp.path());
    let scores = |c: &SelectConfig| -> Vec<(f64, f64)> {
        let sel = select(&data, &tiny_bert, c, &mut ()).unwrap();
        sel.candidates.iter().map(|r| (r.score, r.loss)).collect()
    };
    let none = scores(&config(Perturbation::None));
    let mut kappa0 = config(Perturbation::WorstCase);
    kappa0.kappa = 0.0;
    let mut sigma0 = config(Perturbation::Gaussian);
    sigma0.noise_multiplier = 0.0;
    assert_eq!(scores(&kappa0), none);
    assert_eq!(scores(&sigma0), none);
    // With the real radius and real noise the training changes.
    assert_ne!(scores(&config(Perturbation::WorstCase)), none);
    assert_ne!(scores(&config(Perturbation::Gaussian)), none);
}

#[test]
fn greedy_grows_only_while_the_score_improves() {
    let tmp = tempfile::tempdir().unwrap();
    let data = synthetic(tmp.path());
    let mut c = config(Perturbation::WorstCase);
    c.candidates = Candidates::Greedy(3);
    let sel = select(&data, &tiny_bert, &c, &mut ()).unwrap();
    let first: Vec<_> = sel.candidates.iter().filter(|r| r.round == 1).collect();
    assert_eq!(first.len(), 1 + 3, "the head alone and the singles");
    // Every later round extends the best set of the round before by one block.
    for round in 2..=3 {
        let this: Vec<_> = sel.candidates.iter().filter(|r| r.round == round).collect();
        for r in &this {
            assert_eq!(r.blocks.len(), round);
        }
    }
    let chosen = sel
        .candidates
        .iter()
        .find(|r| r.blocks == sel.chosen)
        .unwrap();
    for r in &sel.candidates {
        assert!(
            r.score <= chosen.score,
            "chosen {chosen:?} but {r:?} scored higher"
        );
    }
}

#[test]
fn candidate_strategies_parse_and_enumerate() {
    assert_eq!(
        "greedy:2".parse::<Candidates>().unwrap(),
        Candidates::Greedy(2)
    );
    assert_eq!(
        "windows:3".parse::<Candidates>().unwrap(),
        Candidates::Windows(3)
    );
    assert_eq!(
        "singles".parse::<Candidates>().unwrap(),
        Candidates::Singles
    );
    for bad in ["greedy", "greedy:0", "window:2", "all"] {
        assert!(
            matches!(bad.parse::<Candidates>(), Err(SelftError::Config(_))),
            "{bad}"
        );
    }
    assert_eq!(
        candidate_sets(Candidates::Windows(2), 3),
        vec![vec![0], vec![1], vec![2], vec![0, 1], vec![1, 2]]
    );
    assert_eq!(
        candidate_sets(Candidates::Singles, 2),
        vec![vec![0], vec![1]]
    );
}

#[test]
fn synthetic_folders_need_their_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    write_split(&tmp.path().join("train.jsonl"), 10, 1);
    write_split(&tmp.path().join("val.jsonl"), 4, 2);
    let err = SyntheticData::load(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("manifest.json") && err.contains("dpselft synth"),
        "{err}"
    );
}

#[test]
fn apportion_follows_the_noisy_histogram() {
    assert_eq!(apportion(&[10.0, 30.0, -5.0, 60.0], 10), vec![1, 3, 0, 6]);
    assert_eq!(apportion(&[1.0, 1.0, 1.0], 10).iter().sum::<usize>(), 10);
    assert_eq!(apportion(&[-1.0, -2.0], 5), vec![3, 2], "all ≤ 0: uniform");
    assert_eq!(apportion(&[], 5), Vec::<usize>::new());
}

#[test]
fn filtering_drops_short_and_duplicate_texts() {
    let texts = vec![
        (Some(0), "a fine  long\ntext".to_string()),
        (Some(1), "A fine long text".to_string()),
        (Some(0), "tiny".to_string()),
        (Some(1), "another text here".to_string()),
    ];
    let (kept, short, dup) = filter_texts(texts, 8);
    assert_eq!((short, dup), (1, 1));
    assert_eq!(kept[0].1, "a fine long text");
    assert_eq!(kept.len(), 2);
    assert_eq!(
        label_prompt("{label}\n", "text", "science_fiction", None),
        "science fiction\n"
    );
    // Without a description the default prompt is the one of earlier runs, byte for byte.
    assert_eq!(
        label_prompt(
            dpselft_selft::synth::DEFAULT_PROMPT,
            "email",
            "science_fiction",
            None
        ),
        "<|im_start|>user\nWrite a short email of the category \"science fiction\".<|im_end|>\n\
         <|im_start|>assistant\n"
    );
    assert_eq!(
        label_prompt(
            dpselft_selft::synth::DEFAULT_PROMPT,
            "email message",
            "spam",
            Some("that is spam: an unsolicited bulk email")
        ),
        "<|im_start|>user\nWrite a short email message that is spam: an unsolicited bulk \
         email.<|im_end|>\n<|im_start|>assistant\n"
    );
    // The run's words: a described label gets its phrase, another its name.
    let descriptions = [("spam".to_string(), "that is spam".to_string())].into();
    let words = dpselft_selft::synth::PromptWords {
        kind: "email",
        descriptions: &descriptions,
    };
    assert_eq!(
        words.fill("{kind} {description}", "spam"),
        "email that is spam"
    );
    assert_eq!(
        words.fill("{kind} {description}", "ham"),
        "email of the category \"ham\""
    );
    // Unlabelled text (an LM task): the label's words drop out, the instruction stays.
    assert_eq!(
        words.fill_text(dpselft_selft::synth::DEFAULT_PROMPT),
        "<|im_start|>user\nWrite a short email.<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(words.fill_text("{label}: {kind}"), ": email");
}
