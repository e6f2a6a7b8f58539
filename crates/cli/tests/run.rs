//! `dpselft run`, `synth` and `select` end to end on a tiny random BERT (target) and a tiny
//! random Llama (generator), both saved in the Hugging Face layout with a word-level tokenizer:
//! the run folder's contents, the ledger's total against the target, and that the selection
//! stage runs with the private data gone.

mod common;

use std::path::Path;

use common::toy_run::{EVOLUTION_SYNTH, config_with_synth, grid_bench, selection_bench, setup};
use common::{dpselft, json, ok};

#[test]
fn run_writes_a_complete_run_folder_within_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let mut args = setup(tmp.path());
    let out = tmp.path().join("run");
    args.extend([
        "--out".into(),
        out.to_string_lossy().into_owned(),
        "--json".into(),
    ]);
    let mut argv = vec!["run"];
    argv.extend(args.iter().map(String::as_str));
    let result = dpselft(&argv);
    ok(&result);
    for f in [
        "config.toml",
        "ledger.json",
        "synthetic/train.jsonl",
        "synthetic/val.jsonl",
        "synthetic/manifest.json",
        "synth.json",
        "selection.json",
        "model/config.json",
        "model/model.safetensors",
        "metrics.json",
        "report.md",
        "selection.svg",
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    let metrics: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    let eps = metrics["epsilon_pld"].as_f64().unwrap();
    assert!(eps <= 4.0, "ledger total {eps} exceeds the target");
    assert!(eps > 3.99, "the budget should be spent: {eps}");
    let stages = metrics["stages"].as_array().unwrap();
    let synth_eps = stages[0]["epsilon"].as_f64().unwrap();
    assert!(
        (synth_eps - 1.0).abs() < 1e-3,
        "synth ε {synth_eps} ≠ 0.25 · 4"
    );
    assert_eq!(stages[1]["epsilon"].as_f64(), Some(0.0));
    assert!(metrics["test"]["accuracy"].as_f64().is_some());
    // The ledger names every mechanism: histogram, generator, fine-tuning.
    let ledger: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("ledger.json")).unwrap()).unwrap();
    let entries = ledger["entries"].as_array().unwrap();
    assert_eq!(
        ledger_stages(&out),
        ["synth-histogram", "synth-generator", "train"]
    );
    assert!(
        entries.iter().all(|e| e["seeded"] == true),
        "a seeded run says so in every ledger entry: {ledger}"
    );
    let selection: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("selection.json")).unwrap())
            .unwrap();
    let n = selection["candidates"].as_array().unwrap().len();
    assert!(
        (4..=6).contains(&n),
        "the head alone, then greedy:2 over 3 blocks: 1 + 3 + 2 at most, got {n}"
    );
    let chosen_lr = selection["chosen_lr"].as_f64().unwrap();
    let trial_lrs: Vec<f64> = selection["lr_trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["lr"].as_f64().unwrap())
        .collect();
    assert!(
        trial_lrs.len() == 3 && trial_lrs.contains(&chosen_lr),
        "{trial_lrs:?}"
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("selection.svg") && report.contains("Test accuracy"));
    // A second run into the same folder is refused (the ledger would be double-counted).
    let again = dpselft(&argv);
    assert!(!again.status.success());
}

#[test]
fn selection_runs_without_the_private_data() {
    let tmp = tempfile::tempdir().unwrap();
    let mut args = setup(tmp.path());
    let out = tmp.path().join("run");
    args.extend(["--out".into(), out.to_string_lossy().into_owned()]);
    let mut argv = vec!["synth"];
    argv.extend(args.iter().map(String::as_str));
    ok(&dpselft(&argv));
    let ledger_before = std::fs::read_to_string(out.join("ledger.json")).unwrap();
    // The private split disappears: selection must not need it.
    std::fs::remove_file(tmp.path().join("train.jsonl")).unwrap();
    std::fs::remove_file(tmp.path().join("test.jsonl")).unwrap();
    let out_s = out.to_string_lossy().into_owned();
    let result = dpselft(&["select", "--out", &out_s, "--json"]);
    ok(&result);
    let selection: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    assert!(
        selection["chosen_spec"]
            .as_str()
            .unwrap()
            .starts_with("head")
    );
    // Selection spends nothing.
    assert_eq!(
        std::fs::read_to_string(out.join("ledger.json")).unwrap(),
        ledger_before
    );
    // Its own options apply and are recorded in the folder; any other is refused by name.
    let config_before = std::fs::read_to_string(out.join("config.toml")).unwrap();
    let refused = dpselft(&["select", "--out", &out_s, "--epsilon", "8", "--clip", "2"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("--epsilon, --clip"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(out.join("config.toml")).unwrap(),
        config_before
    );
    let rerun = dpselft(&[
        "select",
        "--out",
        &out_s,
        "--perturbation",
        "none",
        "--candidates",
        "singles",
        "--lr",
        "0.02",
        "--lr-grid",
        "1",
        "--json",
    ]);
    ok(&rerun);
    let selection: serde_json::Value = serde_json::from_slice(&rerun.stdout).unwrap();
    assert_eq!(selection["config"]["perturbation"], "none");
    assert_eq!(selection["chosen_lr"].as_f64(), Some(0.02));
    let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(
        config.contains("perturbation = \"none\"") && config.contains("lr = 0.02"),
        "{config}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("ledger.json")).unwrap(),
        ledger_before
    );
}

/// `select` on a finished run would plan its radius from the budget left after the fine-tuning:
/// it is refused, and the folder is left as it was.
#[test]
fn selection_refuses_a_folder_whose_fine_tuning_has_spent() {
    let tmp = tempfile::tempdir().unwrap();
    let args = setup(tmp.path());
    let out = tmp.path().join("run");
    ok(&run_into(&args, &out));
    let selection_before = std::fs::read(out.join("selection.json")).unwrap();
    let out_s = out.to_string_lossy().into_owned();
    let config_before = std::fs::read(out.join("config.toml")).unwrap();
    let refused = dpselft(&["select", "--out", &out_s, "--perturbation", "none"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("ledger.json") && stderr.contains("already spent"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(out.join("selection.json")).unwrap(),
        selection_before
    );
    assert_eq!(
        std::fs::read(out.join("config.toml")).unwrap(),
        config_before
    );
}

/// Candidates at several rates (the head at one more) and a second selection design, all
/// against one oracle: each candidate's oracle score is its best rate's, the variant's choice
/// comes from its own selection on the same synthetic data, and a rerun trains nothing.
#[test]
fn the_selection_bench_scores_rates_and_variants_against_one_oracle() {
    use dpselft_bench::selection::{Variant, run_selection_bench, spearman};
    use dpselft_selft::select::rate_key;
    let tmp = tempfile::tempdir().unwrap();
    setup(tmp.path());
    let mut bench = selection_bench(tmp.path());
    bench.oracle_lrs = vec![5e-3, 5e-2];
    bench.oracle_head_lrs = vec![0.2];
    let mut select = bench.config.select.clone();
    select.perturbation = dpselft_selft::Perturbation::Gaussian;
    select.rate_search = dpselft_selft::RateSearch::PerCandidate;
    select.lr_grid = vec![0.5, 2.0];
    bench.variants = vec![Variant {
        name: "gaussian-per-candidate".into(),
        settings: dpselft_selft::pipeline::SelectSettings {
            select,
            lr: bench.config.train.lr,
        },
    }];
    let out = tmp.path().join("selection.json");
    let report = run_selection_bench(&bench, &out, &mut ()).unwrap();
    let n = report.candidates.len();
    // Each candidate at both rates, the head at one more, and each design's own choice (its
    // set at its rate) where that is not among them: the run's and the variant's.
    let v = &report.variants[0];
    let listed = |spec: &dpselft_model::TrainableSpec, lr: f64| {
        let rates: &[f64] = if spec.to_string() == "head" {
            &[5e-3, 5e-2, 0.2]
        } else {
            &[5e-3, 5e-2]
        };
        rates.iter().any(|r| (r - lr).abs() < 1e-9)
    };
    let mut extra = vec![];
    for (spec, lr) in [(&report.chosen, report.chosen_lr), (&v.chosen, v.chosen_lr)] {
        if !listed(spec, lr) && !extra.contains(&(spec, lr)) {
            extra.push((spec, lr));
        }
    }
    assert_eq!(
        report.runs.len(),
        2 * n + 1 + extra.len(),
        "{:?}",
        report.runs
    );
    let run_at = |spec: &dpselft_model::TrainableSpec, lr: f64| {
        let r = report
            .runs
            .iter()
            .find(|r| r.spec == *spec && r.lr == Some(lr));
        r.unwrap().test_accuracy
    };
    let best = report.candidates.iter().map(|c| c.test_accuracy);
    let best = best.fold(f64::MIN, f64::max);
    for (at, regret, spec, lr) in [
        (
            report.chosen_rate_accuracy,
            report.chosen_rate_regret,
            &report.chosen,
            report.chosen_lr,
        ),
        (
            v.chosen_rate_accuracy,
            v.chosen_rate_regret,
            &v.chosen,
            v.chosen_lr,
        ),
    ] {
        assert_eq!(at, Some(run_at(spec, lr)), "{spec} at {lr}");
        assert_eq!(regret, Some(best - at.unwrap()));
    }
    // Cheapest first: the head alone, then the candidates by their lowest block, highest first.
    let lowest = |r: &dpselft_bench::selection::OracleRow| {
        let spec = r.spec.to_string();
        let blocks = spec.split(',').filter_map(|part| {
            let digits = part.strip_prefix("block.")?.split('.').next()?;
            digits.parse::<usize>().ok()
        });
        blocks.min().map_or(usize::MAX, |b| b)
    };
    let order: Vec<usize> = report.runs.iter().map(lowest).collect();
    assert!(order.windows(2).all(|w| w[0] >= w[1]), "{order:?}");
    for c in &report.candidates {
        let runs: Vec<_> = report.runs.iter().filter(|r| r.spec == c.spec).collect();
        let want = if c.spec.to_string() == "head" { 3 } else { 2 };
        let extras = extra.iter().filter(|(spec, _)| **spec == c.spec).count();
        assert_eq!(runs.len(), want + extras, "{}", c.spec);
        let key = |r: &dpselft_bench::selection::OracleRow| {
            rate_key(Some(r.test_accuracy), r.held_out_loss.unwrap())
        };
        assert!(
            runs.iter().all(|r| key(r) <= key(c)),
            "{} is not its best",
            c.spec
        );
    }
    assert_eq!(
        (v.perturbation.as_str(), v.rate_search.as_str()),
        ("gaussian", "per-candidate")
    );
    let selection: dpselft_selft::Selection = serde_json::from_str(
        &std::fs::read_to_string(
            bench
                .work
                .join("variants/gaussian-per-candidate/selection.json"),
        )
        .unwrap(),
    )
    .unwrap();
    // Every candidate at both multiples: its best among the candidates, the other kept.
    assert_eq!(selection.other_rates.len(), selection.candidates.len());
    assert_eq!(selection.lr_trials.len(), 2);
    let eta = bench.config.train.lr;
    assert!(
        [0.5 * eta, 2.0 * eta].contains(&selection.chosen_lr),
        "{}",
        selection.chosen_lr
    );
    assert_eq!(v.chosen, selection.chosen_spec);
    let accuracy = |spec: &dpselft_model::TrainableSpec| {
        report
            .candidates
            .iter()
            .find(|c| c.spec == *spec)
            .unwrap()
            .test_accuracy
    };
    let best = report
        .candidates
        .iter()
        .map(|c| c.test_accuracy)
        .fold(f64::MIN, f64::max);
    assert!((v.regret.unwrap() - (best - accuracy(&v.chosen))).abs() < 1e-12);
    let xs: Vec<f64> = v.scores.iter().map(|s| s.synthetic_score).collect();
    let ys: Vec<f64> = v.scores.iter().map(|s| accuracy(&s.spec)).collect();
    assert_eq!(v.spearman, spearman(&xs, &ys));
    // The variant's folder is a copy: the main run's ledger is untouched by it.
    let log = std::fs::read_to_string(bench.work.join("oracle.jsonl")).unwrap();
    let again = run_selection_bench(&bench, &out, &mut ()).unwrap();
    assert_eq!(again.variants, report.variants);
    assert_eq!(
        std::fs::read_to_string(bench.work.join("oracle.jsonl")).unwrap(),
        log
    );
    // Stopped after an oracle run finished but before its row was written: the rerun takes the
    // finished run's result and trains nothing.
    let mut lines: Vec<&str> = log.lines().collect();
    let last: dpselft_bench::selection::OracleRow =
        serde_json::from_str(lines.pop().unwrap()).unwrap();
    std::fs::write(bench.work.join("oracle.jsonl"), lines.join("\n") + "\n").unwrap();
    let name = last.spec.to_string().replace([',', ':', ';', '='], "_");
    let metrics = bench.work.join(format!(
        "oracle/{name}-lr{:e}/train/metrics.jsonl",
        last.lr.unwrap()
    ));
    let trained = std::fs::read_to_string(&metrics).unwrap();
    let third = run_selection_bench(&bench, &out, &mut ()).unwrap();
    assert_eq!(std::fs::read_to_string(&metrics).unwrap(), trained);
    let back = third
        .runs
        .iter()
        .find(|r| r.spec == last.spec && r.lr == last.lr);
    let back = back.unwrap();
    assert_eq!(
        (back.test_accuracy, back.held_out_loss, back.epsilon_spent),
        (last.test_accuracy, last.held_out_loss, last.epsilon_spent)
    );
}

/// Private Evolution as the synthesizer: no DP training, one ledger entry per voting round after
/// the histogram, the stage's ε met, a labelled synthetic set.
#[test]
fn private_evolution_spends_its_share_in_histogram_and_votes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut args = setup(tmp.path());
    std::fs::write(
        tmp.path().join("config.toml"),
        config_with_synth(EVOLUTION_SYNTH),
    )
    .unwrap();
    let out = tmp.path().join("run");
    args.extend(["--out".into(), out.to_string_lossy().into_owned()]);
    let mut argv = vec!["synth"];
    argv.extend(args.iter().map(String::as_str));
    ok(&dpselft(&argv));
    assert_eq!(
        ledger_stages(&out),
        ["synth-histogram", "synth-vote", "synth-vote"]
    );
    let synth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("synth.json")).unwrap()).unwrap();
    let (target, spent) = (
        synth["epsilon_target"].as_f64().unwrap(),
        synth["epsilon_spent"].as_f64().unwrap(),
    );
    assert!(
        spent <= target + 1e-9 && spent > 0.99 * target,
        "{spent} vs {target}"
    );
    assert_eq!(synth["vote_rounds"], 2);
    assert!(synth["generator_sigma"].is_null());
    let train = std::fs::read_to_string(out.join("synthetic/train.jsonl")).unwrap();
    assert!(train.lines().count() > 0 && train.contains("\"label\""));
}

/// The DP generator's held-out perplexity (`synth.perplexity_examples`): measured on the test
/// split before and after the tuning, reported in synth.json and report.md, spending nothing
/// (the ledger holds the same two mechanisms); absent when not asked for.
#[test]
fn the_generators_held_out_perplexity_is_measured_around_its_tuning() {
    let tmp = tempfile::tempdir().unwrap();
    let mut args = setup(tmp.path());
    // A tuning that learns: ε_synth = 3.6, 12 steps of 64 at a large rate.
    let config = config_with_synth(
        "[synth]\nnum_samples = 40\nsteps = 12\nbatch_size = 64\nlr = 0.03\nmax_seq_len = 12\n\
         max_new_tokens = 8\ngeneration_batch = 20\nmin_chars = 4\nperplexity_examples = 24\n",
    )
    .replace("synth_fraction = 0.25", "synth_fraction = 0.9");
    std::fs::write(tmp.path().join("config.toml"), config).unwrap();
    let out = tmp.path().join("run");
    args.extend(["--out".into(), out.to_string_lossy().into_owned()]);
    let mut argv = vec!["run"];
    argv.extend(args.iter().map(String::as_str));
    ok(&dpselft(&argv));
    let synth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("synth.json")).unwrap()).unwrap();
    let pair = synth["generator_perplexity"].as_array().unwrap();
    let (before, after) = (pair[0].as_f64().unwrap(), pair[1].as_f64().unwrap());
    // The toy vocabulary has a few dozen words: a random generator is near uniform over it,
    // the tuned one has learnt which words follow a label's prompt.
    assert!(
        before.is_finite() && after.is_finite() && after > 1.0,
        "{pair:?}"
    );
    assert!(after < 0.8 * before, "perplexity {before} → {after}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains(&format!("held-out perplexity {before:.2} → {after:.2}")),
        "{report}"
    );
    assert_eq!(
        ledger_stages(&out),
        ["synth-histogram", "synth-generator", "train"]
    );

    // Not asked for: no measurement, no key.
    let mut args = setup(tmp.path());
    let plain = tmp.path().join("plain");
    args.extend(["--out".into(), plain.to_string_lossy().into_owned()]);
    let mut argv = vec!["synth"];
    argv.extend(args.iter().map(String::as_str));
    ok(&dpselft(&argv));
    let synth = std::fs::read_to_string(plain.join("synth.json")).unwrap();
    assert!(!synth.contains("generator_perplexity"), "{synth}");
}

/// The selection bench on the tiny models: every candidate gets an oracle run scored on the
/// held-out part of the training split, the summary is consistent with the rows, and a rerun
/// resumes (it trains nothing again).
#[test]
fn the_selection_bench_scores_every_candidate_and_resumes() {
    use dpselft_bench::selection::{run_selection_bench, spearman};
    let tmp = tempfile::tempdir().unwrap();
    setup(tmp.path());
    let bench = selection_bench(tmp.path());
    let out = tmp.path().join("selection.json");
    let report = run_selection_bench(&bench, &out, &mut ()).unwrap();
    let selection: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(bench.work.join("run/selection.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        report.candidates.len(),
        selection["candidates"].as_array().unwrap().len()
    );
    assert_eq!((report.train_examples, report.held_out_examples), (120, 40));
    let best = report
        .candidates
        .iter()
        .map(|c| c.test_accuracy)
        .fold(f64::MIN, f64::max);
    let chosen = report
        .candidates
        .iter()
        .find(|c| c.spec == report.chosen)
        .unwrap();
    assert!((report.regret - (best - chosen.test_accuracy)).abs() < 1e-12);
    let xs: Vec<f64> = report
        .candidates
        .iter()
        .map(|c| c.synthetic_score)
        .collect();
    let ys: Vec<f64> = report.candidates.iter().map(|c| c.test_accuracy).collect();
    assert_eq!(report.spearman, spearman(&xs, &ys));
    for c in &report.candidates {
        assert!(
            c.epsilon_spent <= 4.0 + 1e-9 && c.epsilon_spent > 3.9,
            "{c:?}"
        );
    }
    assert!(out.with_extension("svg").is_file());
    assert!(report.missing.is_empty());
    let log = std::fs::read_to_string(bench.work.join("oracle.jsonl")).unwrap();
    let again = run_selection_bench(&bench, &out, &mut ()).unwrap();
    let scores = |r: &dpselft_bench::selection::SelectionReport| -> Vec<(String, f64, f64)> {
        r.candidates
            .iter()
            .map(|c| (c.spec.to_string(), c.synthetic_score, c.test_accuracy))
            .collect()
    };
    assert_eq!(scores(&again), scores(&report));
    assert_eq!(
        (again.spearman, again.regret),
        (report.spearman, report.regret)
    );
    assert_eq!(
        std::fs::read_to_string(bench.work.join("oracle.jsonl")).unwrap(),
        log
    );
}

/// The utility grid on the tiny models: every cell runs once, a second call runs nothing, and
/// the table marks the best private mean per ε.
#[test]
fn the_utility_grid_runs_each_cell_once_and_resumes() {
    use dpselft_bench::run_grid;
    let tmp = tempfile::tempdir().unwrap();
    setup(tmp.path());
    let bench = grid_bench(
        tmp.path(),
        &["dp-selft", "last-k", "random-k", "non-private"],
        &[2.0, 6.0],
    );
    let results = run_grid(&bench, &mut ()).unwrap();
    assert_eq!(
        results.len(),
        3 * 2 + 1,
        "three private methods × two ε, non-private once"
    );
    for r in &results {
        match r.epsilon {
            Some(e) => assert!(r.epsilon_spent.unwrap() <= e + 1e-9, "{r:?}"),
            None => assert_eq!(r.epsilon_spent, None),
        }
        assert!((0.0..=1.0).contains(&r.accuracy.unwrap()));
    }
    let lines = std::fs::read_to_string(bench.out.join("results.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 7);
    let again = run_grid(&bench, &mut ()).unwrap();
    assert_eq!(again.len(), results.len());
    assert_eq!(
        std::fs::read_to_string(bench.out.join("results.jsonl")).unwrap(),
        lines,
        "a finished grid reruns nothing"
    );
    let table = std::fs::read_to_string(bench.out.join("table.md")).unwrap();
    assert!(
        table.contains("| ε = 2 |") && table.contains("**"),
        "{table}"
    );
    assert!(
        std::fs::read_to_string(bench.out.join("chart.svg"))
            .unwrap()
            .contains("<polyline")
    );
}

/// Two workers sharing one grid folder (`bench utility --parallel 2`) run every cell exactly
/// once and compute what one worker computes; each baseline keeps the learning rate with the
/// best validation accuracy and trains on the split less its validation share.
#[test]
fn two_workers_share_a_grid_and_compute_what_one_does() {
    use dpselft_bench::{CellResult, run_grid};
    let tmp = tempfile::tempdir().unwrap();
    setup(tmp.path());
    let methods = ["head", "last-k", "non-private"];
    let one = grid_bench(tmp.path(), &methods, &[2.0]);
    let mut two = one.clone();
    two.out = tmp.path().join("grid-two");
    let single = run_grid(&one, &mut ()).unwrap();
    std::thread::scope(|s| {
        let a = s.spawn(|| run_grid(&two, &mut ()).unwrap());
        let b = s.spawn(|| run_grid(&two, &mut ()).unwrap());
        a.join().unwrap();
        b.join().unwrap();
    });
    let read = |b: &dpselft_bench::UtilityBench| -> Vec<CellResult> {
        let text = std::fs::read_to_string(b.out.join("results.jsonl")).unwrap();
        let mut rows: Vec<CellResult> = text
            .lines()
            .map(|l| {
                let mut r: CellResult = serde_json::from_str(l).unwrap();
                r.wall_s = 0.0;
                r
            })
            .collect();
        rows.sort_by(|x, y| x.method.cmp(&y.method));
        rows
    };
    let (a, b) = (read(&one), read(&two));
    assert_eq!(a.len(), 3, "one row per cell: {a:?}");
    assert_eq!(a, b, "two workers computed other results than one");
    for r in &single {
        let best = r
            .lr_trials
            .iter()
            .map(|t| t.accuracy.unwrap())
            .fold(f64::MIN, f64::max);
        let chosen = r.lr_trials.iter().find(|t| Some(t.lr) == r.lr).unwrap();
        assert_eq!(chosen.accuracy.unwrap(), best, "{r:?}");
        assert_eq!(r.lr_trials.len(), 2, "every rate of the grid tried: {r:?}");
        // 160 training examples, 20% held out.
        assert_eq!(
            (r.train_examples, r.validation_examples),
            (Some(128), Some(32)),
            "{r:?}"
        );
    }
}

/// Every input is checked before the first mechanism: a test split with a label the training
/// split lacks fails with no ledger written (nothing spent), and the same folder can then be
/// used once the file is fixed.
#[test]
fn a_bad_test_split_fails_before_anything_is_spent() {
    let tmp = tempfile::tempdir().unwrap();
    let args = setup(tmp.path());
    let test = tmp.path().join("test.jsonl");
    let good = std::fs::read_to_string(&test).unwrap();
    std::fs::write(
        &test,
        format!("{good}{{\"text\": \"a fern\", \"label\": \"plant\"}}\n"),
    )
    .unwrap();
    let out = tmp.path().join("run");
    let stderr = fails_before_spending(&args, &out);
    assert!(
        stderr.contains("plant") && stderr.contains("test.jsonl"),
        "{stderr}"
    );
    std::fs::write(&test, good).unwrap();
    ok(&run_into(&args, &out));
}

/// `dpselft run ARGS --out OUT`.
/// The stage of each entry of the run folder's ledger, in order.
fn ledger_stages(out: &Path) -> Vec<String> {
    let ledger: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("ledger.json")).unwrap()).unwrap();
    let entries = ledger["entries"].as_array().unwrap();
    entries
        .iter()
        .map(|e| e["stage"].as_str().unwrap().to_string())
        .collect()
}

fn run_into(args: &[String], out: &Path) -> std::process::Output {
    let out = out.to_string_lossy().into_owned();
    let mut argv = vec!["run"];
    argv.extend(args.iter().map(String::as_str));
    argv.extend(["--out", &out]);
    dpselft(&argv)
}

/// `dpselft run ARGS --out OUT` fails and writes no ledger (nothing spent); returns its stderr.
fn fails_before_spending(args: &[String], out: &Path) -> String {
    let failed = run_into(args, out);
    assert!(!failed.status.success());
    assert!(
        !out.join("ledger.json").exists(),
        "privacy was spent: a ledger exists"
    );
    String::from_utf8_lossy(&failed.stderr).into_owned()
}

#[test]
fn a_one_label_training_set_fails_before_anything_is_spent() {
    let tmp = tempfile::tempdir().unwrap();
    let args = setup(tmp.path());
    let train = tmp.path().join("train.jsonl");
    let text = std::fs::read_to_string(&train).unwrap();
    let first_label = text
        .lines()
        .next()
        .unwrap()
        .rsplit("\"label\":")
        .next()
        .unwrap()
        .to_string();
    let kept: String = text
        .lines()
        .filter(|l| l.ends_with(&first_label))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&train, kept).unwrap();
    let stderr = fails_before_spending(&args, &tmp.path().join("run"));
    assert!(
        stderr.contains("train.jsonl") && stderr.contains("two labels"),
        "{stderr}"
    );
}

#[test]
fn a_description_of_an_unknown_label_fails_before_anything_is_spent() {
    let tmp = tempfile::tempdir().unwrap();
    let args = setup(tmp.path());
    let config = tmp.path().join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let described = text.replace(
        "[synth]",
        "[run.label_descriptions]\nplant = \"from a book about plants\"\n\n[synth]",
    );
    std::fs::write(&config, described).unwrap();
    let stderr = fails_before_spending(&args, &tmp.path().join("run"));
    assert!(
        stderr.contains("label_descriptions")
            && stderr.contains("\"plant\"")
            && stderr.contains("train.jsonl"),
        "{stderr}"
    );
}

/// `run` with the toy setup's decoder (the tiny Llama) as the target too, for `task`.
fn decoder_run(
    task: &str,
    extra: &[&str],
) -> (serde_json::Value, std::path::PathBuf, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let mut args = setup(tmp.path());
    let model = args.iter().position(|a| a == "--model").unwrap() + 1;
    args[model] = tmp.path().join("generator").to_string_lossy().into_owned();
    let out = tmp.path().join("run");
    args.extend(["--task".into(), task.into(), "--json".into()]);
    args.extend(extra.iter().map(|a| a.to_string()));
    let result = run_into(&args, &out);
    ok(&result);
    let metrics = serde_json::from_slice(&result.stdout).unwrap();
    (metrics, out, tmp)
}

/// The specs of the candidates `selection.json` in the run folder `out` lists, in order.
fn candidate_specs(out: &Path) -> Vec<String> {
    let selection: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("selection.json")).unwrap())
            .unwrap();
    selection["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["spec"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_decoder_target_classifies_through_the_whole_pipeline() {
    let (metrics, out, _tmp) = decoder_run("classify", &[]);
    let eps = metrics["epsilon_pld"].as_f64().unwrap();
    assert!(eps <= 4.0 && eps > 3.99, "ledger total {eps}");
    let acc = metrics["test"]["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc), "{metrics}");
    // The tiny Llama has 2 blocks: the head alone, both singles, then one pair.
    let specs = candidate_specs(&out);
    assert!(specs.iter().any(|s| s == "head"), "{specs:?}");
    assert!(specs.len() >= 3, "{specs:?}");
}

#[test]
fn a_decoder_target_learns_the_texts_as_a_language_model() {
    // A budget of 3 candidate sets: two singles (top block first), then one greedy pair.
    let (metrics, out, _tmp) = decoder_run("lm", &["--select-budget", "3"]);
    let eps = metrics["epsilon_pld"].as_f64().unwrap();
    assert!(eps <= 4.0 && eps > 3.99, "ledger total {eps}");
    let ppl = metrics["test"]["perplexity"].as_f64().unwrap();
    // The word-level toy vocabulary has 20 tokens: a model that learned nothing sits near 20.
    assert!(ppl.is_finite() && ppl > 1.0, "{metrics}");
    // It learned: the test perplexity fell from the untrained decoder's.
    let eval = |model: &Path| {
        let m = model.to_string_lossy().into_owned();
        let test = out.parent().unwrap().join("test.jsonl");
        let test = test.to_string_lossy().into_owned();
        let r = dpselft(&[
            "eval",
            "--model",
            &m,
            "--data",
            &test,
            "--max-seq-len",
            "12",
            "--json",
        ]);
        ok(&r);
        json(&r)["perplexity"].as_f64().unwrap()
    };
    let before = eval(&out.parent().unwrap().join("generator"));
    let after = eval(&out.join("model"));
    assert!(
        (after - ppl).abs() < 1e-6 * ppl,
        "the saved model gives {after}, the run said {ppl}"
    );
    assert!(after < 0.9 * before, "perplexity {before} → {after}");
    assert!(metrics["test"]["accuracy"].is_null(), "{metrics}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("Test perplexity"), "{report}");
    // Unlabelled synthetic text: no label field in the synthetic split.
    let first = std::fs::read_to_string(out.join("synthetic/train.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    assert!(first.get("label").is_none(), "{first}");
    let specs = candidate_specs(&out);
    assert_eq!(
        specs,
        ["block.1", "block.0", "block.0,block.1"],
        "{specs:?}"
    );
}

/// `--sub-blocks`: after the block search, the chosen blocks' attention, MLP and norms alone
/// are candidates of their own; their parameters partition the chosen blocks, and the final
/// run trains whichever scored best (the tiny decoder as a language model: every candidate is
/// a block set, none is the head alone).
#[test]
fn sub_block_candidates_follow_the_block_search() {
    let (metrics, out, _tmp) = decoder_run("lm", &["--sub-blocks"]);
    let selection: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("selection.json")).unwrap())
            .unwrap();
    let candidates = selection["candidates"].as_array().unwrap();
    let (search, parts) = candidates.split_at(candidates.len() - 3);
    // The block search's choice: the best of its candidates by score, then fewer parameters.
    let key =
        |c: &serde_json::Value| (c["score"].as_f64().unwrap(), -c["params"].as_f64().unwrap());
    let searched = search
        .iter()
        .reduce(|a, c| if key(c) > key(a) { c } else { a })
        .unwrap();
    let blocks: Vec<u64> = searched["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap())
        .collect();
    let mut part_params = 0;
    for (c, part) in parts.iter().zip(["attn", "mlp", "norms"]) {
        assert_eq!(c["part"], part, "{c}");
        assert_eq!(c["blocks"], searched["blocks"], "{c}");
        let spec: Vec<String> = blocks.iter().map(|b| format!("block.{b}.{part}")).collect();
        assert_eq!(c["spec"], spec.join(","), "{c}");
        part_params += c["params"].as_u64().unwrap();
    }
    assert_eq!(
        part_params,
        searched["params"].as_u64().unwrap(),
        "the parts partition the blocks"
    );
    let chosen = &selection["chosen_spec"];
    let best = candidates
        .iter()
        .reduce(|a, c| if key(c) > key(a) { c } else { a })
        .unwrap();
    assert_eq!(chosen, &best["spec"]);
    assert_eq!(&metrics["chosen_spec"], chosen);
    // Under a budget of 4: two singles, one greedy pair, then only the attention of the best.
    let (_, out, _tmp) = decoder_run("lm", &["--sub-blocks", "--select-budget", "4"]);
    let specs = candidate_specs(&out);
    assert_eq!(specs.len(), 4, "{specs:?}");
    assert!(specs[3].ends_with(".attn"), "{specs:?}");
}

/// The methods of a language-modelling grid on the tiny decoder: block sets without a head.
const LM_METHODS: &str = r#"
[defaults]
batch_size = 32
epochs = 2.0
clip = 1.0
max_seq_len = 12
delta = 1e-5
lr_grid = [0.01, 0.1]
validation_fraction = 0.2

[methods."dp-selft:budget=2"]

[methods.last-k]
trainable = "last:1"

[methods.non-private]
trainable = "all"
"#;

/// The utility grid of a language-modelling task on a tiny decoder: every cell is scored by
/// test perplexity (no accuracy), the floor is the pretrained model's perplexity, dp-selft's
/// budget caps its search, and the table ranks the lowest perplexity first.
#[test]
fn a_language_modelling_grid_scores_test_perplexity() {
    use dpselft_bench::{MethodsFile, run_grid};
    let tmp = tempfile::tempdir().unwrap();
    setup(tmp.path());
    let mut bench = grid_bench(tmp.path(), &[], &[3.0]);
    std::fs::write(tmp.path().join("methods-lm.toml"), LM_METHODS).unwrap();
    bench.methods_file = MethodsFile::load(&tmp.path().join("methods-lm.toml")).unwrap();
    bench.methods = ["dp-selft:budget=2", "last-k", "non-private"]
        .iter()
        .map(|m| m.parse().unwrap())
        .collect();
    bench.objective = dpselft_dp::Task::Lm;
    bench.paths.model = tmp.path().join("generator");
    let results = run_grid(&bench, &mut ()).unwrap();
    assert_eq!(results.len(), 3);
    let pretrained = results[0].pretrained_perplexity.unwrap();
    for r in &results {
        assert_eq!(
            (r.accuracy, r.macro_f1, r.majority_accuracy),
            (None, None, None)
        );
        assert_eq!(r.pretrained_perplexity, Some(pretrained));
        let ppl = r.perplexity.unwrap();
        assert!(ppl.is_finite() && ppl > 1.0, "{r:?}");
        if let Some(e) = r.epsilon {
            assert!(r.epsilon_spent.unwrap() <= e + 1e-9, "{r:?}");
        }
        let trainable = r.trainable.as_ref().unwrap().to_string();
        assert!(!trainable.contains("head"), "{trainable}");
        // Every cell learns the texts (36.6 → 12.1, 14.8 and 3.9 when written).
        assert!(ppl < 0.5 * pretrained, "{r:?}");
    }
    let selft = &results[0];
    let candidates = candidate_specs(&bench.out.join("runs/dp-selft_budget_2-eps3-seed0"));
    assert_eq!(
        candidates,
        ["block.1", "block.0"],
        "a budget of 2: the top and bottom blocks"
    );
    assert!(candidates.contains(&selft.trainable.as_ref().unwrap().to_string()));
    // Training all of the tiny decoder without noise learns the texts.
    let non_private = &results[2];
    assert!(
        non_private.perplexity.unwrap() < pretrained,
        "{non_private:?}"
    );
    let table = std::fs::read_to_string(bench.out.join("table.md")).unwrap();
    assert!(
        table.starts_with("## Test perplexity (lower is better)"),
        "{table}"
    );
    assert!(
        table.contains(&format!(
            "The pretrained model, not fine-tuned: {pretrained:.4}."
        )),
        "{table}"
    );
}
