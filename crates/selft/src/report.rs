//! `report.md` and `selection.svg`: the run explained to a person.

use std::fmt::Write as _;
use std::path::Path;

use dpselft_chart::{Bar, BarChart, Chart};
use dpselft_model::TrainableSpec;

use crate::error::{Result, io_err};
use crate::pipeline::{RunConfig, RunMetrics};
use crate::select::{CandidateResult, RateSearch, Selection};
use crate::synth::SynthReport;

/// Writes `report.md` and the candidate chart `selection.svg` (and `.png`) into the run folder.
pub fn write_report(
    out: &Path,
    config: &RunConfig,
    synth: &SynthReport,
    selection: &Selection,
    metrics: &RunMetrics,
) -> Result<()> {
    let chart = candidates_chart(&selection.candidates, &selection.chosen_spec);
    dpselft_chart::write(&chart, &out.join("selection.svg"))?;
    let md = report_markdown(config, synth, selection, metrics);
    let md_path = out.join("report.md");
    dpselft_fsio::write_bytes_atomic(&md_path, md.as_bytes()).map_err(|e| io_err(&md_path, e))
}

/// The Markdown report.
pub fn report_markdown(
    config: &RunConfig,
    synth: &SynthReport,
    selection: &Selection,
    m: &RunMetrics,
) -> String {
    let mut s = String::new();
    write_summary(&mut s, config, m);
    write_stages(&mut s, config, synth, selection, m);
    write_selection(&mut s, synth, selection);
    write_synthetic_examples(&mut s, synth);
    s
}

/// The title, the test result (accuracy and macro-F1, or perplexity) and the privacy spent.
fn write_summary(s: &mut String, config: &RunConfig, m: &RunMetrics) {
    let r = &config.run;
    let _ = writeln!(
        s,
        "# dpselft run: {} on {}\n",
        r.model,
        r.train_data.display()
    );
    if let Some(t) = &m.test {
        match (t.accuracy, t.macro_f1) {
            (Some(acc), Some(f1)) => {
                let _ = writeln!(
                    s,
                    "**Test accuracy {acc:.4}**, macro-F1 {f1:.4} on {} held-out examples{}.\n",
                    t.examples,
                    m.majority_accuracy
                        .map(|a| format!(" (majority class: {a:.4})"))
                        .unwrap_or_default()
                );
            }
            _ => {
                let _ = writeln!(
                    s,
                    "**Test perplexity {:.3}** on {} held-out examples.\n",
                    t.perplexity.unwrap_or(f64::NAN),
                    t.examples
                );
            }
        }
    }
    let _ = writeln!(
        s,
        "Privacy: (ε, δ) = ({:.4}, {:e}) spent of the target ({}, {:e}) — PLD accountant, \
         add/remove-one adjacency, all mechanisms composed{}.{}\n",
        m.epsilon_pld,
        m.delta,
        m.target_epsilon,
        m.delta,
        m.epsilon_rdp
            .map(|e| format!("; RDP would certify ε = {e:.4}"))
            .unwrap_or_default(),
        if m.seeded {
            " **Seeded run: the noise is reproducible from the seed (an experiment, not a \
             release).**"
        } else {
            ""
        }
    );
    if m.lost_epsilon > 0.0 {
        let _ = writeln!(
            s,
            "**Interrupted attempts**: a stage was killed with nothing to continue from and ran \
             again (`run --resume`); the mechanisms its lost attempt executed (ε = {:.4} alone) \
             are marked `lost` in ledger.json and count in the total above.\n",
            m.lost_epsilon
        );
    }
}

/// `## Stages`: one row per stage (wall time, ε alone, what it did), then the total wall time.
fn write_stages(
    s: &mut String,
    config: &RunConfig,
    synth: &SynthReport,
    selection: &Selection,
    m: &RunMetrics,
) {
    let _ = writeln!(s, "## Stages\n");
    let _ = writeln!(s, "| stage | wall time | ε alone (PLD) | what it did |");
    let _ = writeln!(s, "|---|---:|---:|---|");
    let what = stage_descriptions(config, synth, selection, m);
    for (st, w) in m.stages.iter().zip(&what) {
        let _ = writeln!(
            s,
            "| {} | {:.0} s | {:.4} | {} |",
            st.stage, st.wall_s, st.epsilon, w
        );
    }
    let _ = writeln!(s, "\nTotal wall time: {:.0} s.\n", m.wall_s);
}

/// What the synthetic stage did: its histogram, then the generator's training or the votes.
fn synth_description(config: &RunConfig, synth: &SynthReport) -> String {
    let histogram = synth
        .histogram_sigma
        .map_or_else(|| "–".into(), |x| format!("{x:.2}"));
    let texts = synth.samples_per_label.iter().sum::<usize>();
    let name = config.synth.synthesizer().name();
    match (
        config.synth.generator(),
        synth.generator_sigma,
        synth.vote_sigma,
    ) {
        (Some(g), Some(sigma), _) => format!(
            "{name}: histogram σ = {histogram}, generator `{}` σ = {sigma:.4} (q = {:.4}, {} \
             steps{}); {texts} texts sampled",
            g.trainable,
            synth.generator_sampling_rate.unwrap_or(0.0),
            g.steps,
            synth
                .generator_perplexity
                .map_or_else(String::new, |(before, after)| format!(
                    ", held-out perplexity {before:.2} → {after:.2}"
                ))
        ),
        (_, _, Some(vote)) => format!(
            "{name}: histogram σ = {histogram}, {} voting rounds σ = {vote:.2}; {texts} texts in \
             the pool",
            synth.vote_rounds
        ),
        _ => format!("{name}: histogram σ = {histogram}; {texts} texts"),
    }
}

/// What each stage did (synthesis, selection, training), in stage order.
fn stage_descriptions(
    config: &RunConfig,
    synth: &SynthReport,
    selection: &Selection,
    m: &RunMetrics,
) -> [String; 3] {
    [
        synth_description(config, synth),
        format!(
            "{} candidates, {} perturbation, {} rate search, τ = {} of T = {} steps → `{}` at \
             lr {:.2e}",
            selection.candidates.len(),
            selection.config.perturbation,
            selection.config.rate_search,
            selection.config.steps,
            selection.config.final_steps,
            selection.chosen_spec,
            selection.chosen_lr
        ),
        format!(
            "σ = {:.4}, q = {:.4}, {} steps on n = {}, {} trainable parameters",
            m.train_sigma,
            m.train_sampling_rate,
            m.train_steps,
            m.train_examples,
            m.trainable_params
        ),
    ]
}

/// `## Layer selection`: the chart, how to read the scores, one row per candidate (the chosen
/// set marked).
fn write_selection(s: &mut String, synth: &SynthReport, selection: &Selection) {
    let _ = writeln!(s, "## Layer selection\n");
    let _ = writeln!(s, "![candidate scores](selection.svg)\n");
    let rates = match selection.config.rate_search {
        RateSearch::Winner => format!(
            "round 0 rows are the chosen set at the learning rates of the grid, trained under the \
             `{}` perturbation",
            selection.config.lr_perturbation
        ),
        RateSearch::PerCandidate => "every set was trained at every learning rate of the grid \
                                     and is compared at its best"
            .to_string(),
    };
    let _ = writeln!(
        s,
        "Scores are −(mean loss) on the synthetic validation split ({} examples), averaged over \
         {} seed(s) (± their standard deviation); {rates}.\n",
        synth.val_examples, selection.config.seeds
    );
    // The final rate's row: a learning-rate trial, or the chosen candidate's own run when the
    // trials ran as the candidates did and η won.
    let rate_row = selection
        .lr_trials
        .iter()
        .any(|t| t.round == 0 && t.lr == selection.chosen_lr);
    let _ = writeln!(
        s,
        "| round | set | lr | parameters | radius ρ | S_val score | S_val accuracy |"
    );
    let _ = writeln!(s, "|---:|---|---:|---:|---:|---:|---:|");
    for c in selection.trained() {
        let chosen = c.spec == selection.chosen_spec
            && c.lr == selection.chosen_lr
            && (c.round == 0) == rate_row;
        let mark = if chosen { " **←**" } else { "" };
        let _ = writeln!(
            s,
            "| {} | `{}`{} | {:.1e} | {} | {:.3e} | {:.4} ± {:.4} | {} |",
            c.round,
            c.spec,
            mark,
            c.lr,
            c.params,
            c.radius,
            c.score,
            c.score_std,
            c.accuracy.map_or("–".into(), |a| format!("{a:.3}"))
        );
    }
}

/// `## Synthetic examples`: each kept example's label and first 200 characters.
fn write_synthetic_examples(s: &mut String, synth: &SynthReport) {
    let _ = writeln!(s, "\n## Synthetic examples\n");
    for (label, text) in &synth.examples {
        let short: String = text.chars().take(200).collect();
        let _ = writeln!(s, "- *{label}*: {short}");
    }
}

/// A horizontal bar chart of the candidates' scores (the chosen set highlighted).
pub fn candidates_chart(candidates: &[CandidateResult], chosen: &TrainableSpec) -> Chart {
    Chart::Bars(BarChart {
        title: "S_val score per candidate set (chosen in orange)".into(),
        value_label: "S_val score (higher is better)".into(),
        bars: candidates
            .iter()
            .map(|c| Bar {
                label: c.spec.to_string(),
                value: c.score,
                highlight: c.spec == *chosen,
            })
            .collect(),
    })
}
