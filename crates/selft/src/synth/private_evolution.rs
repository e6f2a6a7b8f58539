//! Private Evolution (Aug-PE, Xie et al. 2024), a synthesizer without DP training: an
//! instruct LM writes label-conditioned texts from public prompts, and the private data only
//! *vote* for the texts that resemble them (docs/design.md, §2 (c)).
//!
//! 1. **Label histogram** ([`super::noisy_histogram`]) at `histogram_share` of the stage's ε;
//!    the pool of N texts is apportioned to the labels by it.
//! 2. **Initial pool** (post-processing): N texts from the label prompts.
//! 3. **R rounds**, each: embed the pool with the target encoder; every private example votes
//!    for the pool text of its own label nearest to it (cosine of mean-pooled states); Gaussian
//!    noise N(0, σ_v²) is added to every count; each label's texts are then drawn with
//!    replacement in proportion to their noisy votes above `threshold`·σ_v (clamped at 0): a
//!    text's first draw keeps it, every further draw asks the LM for a variation of it.
//! 4. The pool after the last round is filtered and split into S_train and S_val ([`super::finish`]).
//!
//! Privacy: under add/remove-one, a private example casts exactly one vote per round, so the
//! vector of all pools' counts has L2 sensitivity 1: each round is a Gaussian mechanism of
//! sensitivity 1, recorded in the ledger before its votes are counted. σ_v is calibrated so that
//! histogram and R rounds together meet the stage's ε; everything else (prompts, generation,
//! the embeddings of synthetic texts, the resampling of released counts) is post-processing.
//! The private embeddings are computed once and never leave the process.

use std::time::Instant;

use dpselft_data::{Dataset, Example};
use dpselft_dp::{NoiseRng, Task, fill_gaussian_f64};
use dpselft_model::Model;
use dpselft_privacy::{LedgerEntry, Mechanism, PrivacyLedger, Stage, calibrate_sigma};
use serde::{Deserialize, Serialize};

use super::embed::{embed, nearest};
use super::sampling::{Sampling, generate_texts};
use super::{
    DEFAULT_PROMPT, PromptWords, Provenance, StageBudget, SynthInputs, SynthReport, Synthesizer,
    apportion, finish, names_label, noisy_histogram,
};
use crate::Progress;
use crate::data::{PrivateData, SyntheticData};
use crate::error::{Result, SelftError};

/// The default variation prompt: `{label}` and `{text}` are replaced.
pub const DEFAULT_VARIATION_PROMPT: &str = "<|im_start|>user\nRewrite this {kind} {description} with new details, in the same style:\n{text}<|im_end|>\n<|im_start|>assistant\n";

const NOT_FOR_LM: &str = "synth: private-evolution builds labelled data for classification \
                          tasks; use synthesizer = \"dp-generator\" for language modelling";

/// Characters of a text quoted in a variation prompt at most.
const QUOTED_CHARS: usize = 400;

/// Settings of Private Evolution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvolutionConfig {
    /// Texts in the pool, N (before the final filtering).
    pub num_samples: usize,
    /// Voting rounds R.
    pub rounds: usize,
    /// Share of the stage's ε the histogram alone would spend (sets σ_h).
    pub histogram_share: f64,
    /// Votes up to `threshold`·σ_v count as none when resampling.
    pub threshold: f64,
    /// The prompt of each label (`{label}` or `{description}`).
    pub prompt: String,
    /// The prompt asking for a variation (`{label}` or `{description}`, and `{text}`).
    pub variation_prompt: String,
    /// Tokens generated per text at most.
    pub max_new_tokens: usize,
    /// Sampling temperature.
    pub temperature: f64,
    /// Nucleus mass.
    pub top_p: f64,
    /// Prompts per generation batch (see the DP generator's `generation_batch`).
    pub generation_batch: usize,
    /// Tokens per text when embedding (private and synthetic).
    pub embed_seq_len: usize,
    /// Texts shorter than this many characters are dropped at the end.
    pub min_chars: usize,
    /// Fraction of the kept texts that go to S_val.
    pub val_fraction: f64,
}

impl Default for EvolutionConfig {
    /// The small default: minutes on two CPU cores with SmolLM2-135M and MiniLM.
    fn default() -> Self {
        Self {
            num_samples: 320,
            rounds: 2,
            histogram_share: 0.2,
            threshold: 0.0,
            prompt: DEFAULT_PROMPT.to_string(),
            variation_prompt: DEFAULT_VARIATION_PROMPT.to_string(),
            max_new_tokens: 48,
            temperature: 0.7,
            top_p: 0.9,
            generation_batch: 96,
            embed_seq_len: 128,
            min_chars: 40,
            val_fraction: 0.2,
        }
    }
}

impl EvolutionConfig {
    /// Checks every value.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| {
            Err(SelftError::Config(format!(
                "synth (private-evolution): {m}"
            )))
        };
        if self.num_samples < 2 || self.rounds == 0 {
            return bad(format!(
                "num_samples {} must be ≥ 2 and rounds {} ≥ 1",
                self.num_samples, self.rounds
            ));
        }
        for (name, v) in [
            ("histogram_share", self.histogram_share),
            ("val_fraction", self.val_fraction),
        ] {
            if !super::in_unit_interval(v) {
                return bad(format!("{name} {v} must be in (0, 1)"));
            }
        }
        if !(self.threshold.is_finite() && self.threshold >= 0.0) {
            return bad(format!("threshold {} must be ≥ 0", self.threshold));
        }
        if !names_label(&self.prompt)
            || !names_label(&self.variation_prompt)
            || !self.variation_prompt.contains("{text}")
        {
            return bad(
                "prompt needs {label} or {description}, variation_prompt needs \
                 {label} or {description}, and {text}"
                    .to_string(),
            );
        }
        if self.generation_batch == 0 || self.max_new_tokens == 0 || self.embed_seq_len < 2 {
            return bad(
                "generation_batch and max_new_tokens must be > 0, embed_seq_len ≥ 2".into(),
            );
        }
        Ok(())
    }

    fn sampling(&self) -> Sampling {
        Sampling {
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            batch: self.generation_batch,
        }
    }
}

/// Private Evolution as a [`Synthesizer`].
pub struct PrivateEvolution<'a> {
    /// Its settings.
    pub config: &'a EvolutionConfig,
}

impl Synthesizer for PrivateEvolution<'_> {
    fn name(&self) -> &'static str {
        "private-evolution"
    }

    fn validate(&self) -> Result<()> {
        self.config.validate()
    }

    /// Privacy: see the module documentation.
    fn synthesize(
        &self,
        private: &PrivateData,
        inputs: SynthInputs<'_>,
        budget: StageBudget,
        progress: &mut dyn Progress,
    ) -> Result<(SyntheticData, SynthReport)> {
        run(self.config, private, inputs, budget, progress)
    }
}

/// A text of the pool: its label and text.
type Pooled = (usize, String);

fn run(
    config: &EvolutionConfig,
    private: &PrivateData,
    inputs: SynthInputs<'_>,
    budget: StageBudget,
    progress: &mut dyn Progress,
) -> Result<(SyntheticData, SynthReport)> {
    let started = Instant::now();
    let data = private.dataset();
    if inputs.task != Task::Classify || data.labels.is_empty() {
        return Err(SelftError::Config(NOT_FOR_LM.into()));
    }
    let mut rng = inputs.noise_rng(0x9e01)?;
    // 1. The histogram, then σ_v for the R rounds within what is left of the stage's budget.
    let (histogram_sigma, noisy_counts) = noisy_histogram(
        data,
        config.histogram_share,
        budget,
        inputs.ledger,
        &mut rng,
    )?;
    let vote_sigma = calibrate_votes(config.rounds, budget, inputs.ledger)?;
    let per_label = apportion(&noisy_counts, config.num_samples);
    let voters = Voters::of(data, inputs.target, config.embed_seq_len, progress)?;

    // 2. The initial pool (post-processing: public prompts only).
    let gen_started = Instant::now();
    let mut sample_rng = rng.split();
    let resampling = Resampling {
        per_label: &per_label,
        floor: config.threshold * vote_sigma,
        config,
        generator: &inputs.generator,
        labels: &data.labels,
        words: inputs.words,
    };
    let mut pool = resampling.initial_pool(&mut sample_rng, progress)?;

    // 3. The rounds: a recorded noisy vote, then resampling and variations (post-processing).
    let vote = Vote {
        sigma: vote_sigma,
        ledger: inputs.ledger,
        target: inputs.target,
        labels: &data.labels,
        embed_seq_len: config.embed_seq_len,
    };
    for round in 1..=config.rounds {
        let noisy = vote.run(&voters, &pool, &mut rng, progress)?;
        let n = pool.len();
        progress.message(&format!(
            "synth: round {round}: σ_v = {vote_sigma:.2}, {n} texts"
        ));
        pool = resampling.evolve(&pool, &noisy, &mut sample_rng, progress)?;
    }
    let generate_s = gen_started.elapsed().as_secs_f64();

    // 4. Post-processing.
    let texts = pool.into_iter().map(|(l, t)| (Some(l), t)).collect();
    let finished = finish(
        texts,
        &data.labels,
        (config.min_chars, config.val_fraction),
        &mut sample_rng,
        Provenance {
            ledger: inputs.ledger,
            generator: inputs.generator_name,
            delta: budget.delta,
            private_examples: data.len(),
        },
    )?;
    let released = Released {
        histogram_sigma,
        noisy_counts,
        per_label,
        vote_sigma,
        rounds: config.rounds,
    };
    let report = released.report(
        budget,
        &finished,
        (generate_s, started.elapsed().as_secs_f64()),
    );
    Ok((finished.data, report))
}

/// What the stage released (DP outputs and their noise scales), for the report.
struct Released {
    histogram_sigma: f64,
    noisy_counts: Vec<f64>,
    per_label: Vec<usize>,
    vote_sigma: f64,
    rounds: usize,
}

impl Released {
    fn report(
        self,
        budget: StageBudget,
        finished: &super::Finished,
        (generate_s, wall_s): (f64, f64),
    ) -> SynthReport {
        SynthReport {
            epsilon_target: budget.epsilon,
            epsilon_spent: finished.epsilon_spent,
            histogram_sigma: Some(self.histogram_sigma),
            noisy_counts: self.noisy_counts,
            samples_per_label: self.per_label,
            generator_sigma: None,
            generator_perplexity: None,
            generator_sampling_rate: None,
            vote_sigma: Some(self.vote_sigma),
            vote_rounds: self.rounds,
            train_s: 0.0,
            generate_s,
            wall_s,
            val_examples: finished.data.val().len(),
            examples: finished.examples.clone(),
        }
    }
}

/// The private examples as voters: their embeddings (computed once, never written) and labels.
struct Voters {
    emb: Vec<Vec<f32>>,
    labels: Vec<usize>,
}

impl Voters {
    fn of(
        data: &Dataset,
        target: &Model,
        embed_seq_len: usize,
        progress: &mut dyn Progress,
    ) -> Result<Self> {
        let labels: Vec<usize> = data.examples.iter().filter_map(|e| e.label).collect();
        if labels.len() != data.len() {
            return Err(SelftError::Config(
                "synth: private-evolution needs every private example labelled".into(),
            ));
        }
        progress.stage("synth: embedding the private examples", data.len() as u64);
        let emb = embed(target, data, embed_seq_len, progress)?;
        progress.finish();
        Ok(Self { emb, labels })
    }
}

/// One round's vote: how to embed the pool and where to record the mechanism.
struct Vote<'a> {
    sigma: f64,
    ledger: &'a std::path::Path,
    target: &'a Model,
    labels: &'a [String],
    embed_seq_len: usize,
}

impl Vote<'_> {
    /// Embeds the pool, records the round's Gaussian mechanism (sensitivity 1) in the ledger,
    /// then counts the votes and adds N(0, σ_v²) to each count.
    fn run(
        &self,
        voters: &Voters,
        pool: &[Pooled],
        rng: &mut NoiseRng,
        progress: &mut dyn Progress,
    ) -> Result<Vec<f64>> {
        let pool_set = as_dataset(pool, self.labels);
        progress.stage("synth: embedding the pool", pool.len() as u64);
        let pool_emb = embed(self.target, &pool_set, self.embed_seq_len, progress)?;
        progress.finish();
        let mut ledger = PrivacyLedger::open(self.ledger)?;
        ledger.record(
            LedgerEntry::gaussian(self.sigma, 1.0, 1, Stage::SynthVote).seeded(rng.is_seeded()),
        )?;
        drop(ledger);
        let votes = count_votes(&voters.emb, &voters.labels, &pool_emb, pool);
        let mut noise = vec![0.0; votes.len()];
        fill_gaussian_f64(&mut noise, self.sigma, rng)?;
        Ok(votes
            .iter()
            .zip(&noise)
            .map(|(&v, z)| v as f64 + z)
            .collect())
    }
}

/// σ_v: the smallest noise for which this attempt's mechanisms so far (the histogram; not those
/// of a lost attempt, which stage 3's calibration against the total counts) and `rounds`
/// Gaussian votes of sensitivity 1 meet the stage's ε.
fn calibrate_votes(rounds: usize, budget: StageBudget, ledger: &std::path::Path) -> Result<f64> {
    let ledger = PrivacyLedger::open(ledger)?;
    let template = Mechanism::gaussian(1.0, 1.0, rounds as u64)?;
    Ok(calibrate_sigma(
        ledger.guarantee_accountant().as_ref(),
        &ledger.live_mechanisms()?,
        &template,
        budget.epsilon,
        budget.delta,
    )?)
}

/// Each private example's vote: the index of the pool text of its own label nearest to it.
/// Returns the count of every pool text (a label without texts receives its votes nowhere).
pub fn count_votes(
    private_emb: &[Vec<f32>],
    private_labels: &[usize],
    pool_emb: &[Vec<f32>],
    pool: &[Pooled],
) -> Vec<u64> {
    let labels = private_labels.iter().copied().max().map_or(0, |m| m + 1);
    let mut by_label: Vec<Vec<usize>> = vec![Vec::new(); labels];
    for (j, (l, _)) in pool.iter().enumerate() {
        if let Some(v) = by_label.get_mut(*l) {
            v.push(j);
        }
    }
    let mut votes = vec![0u64; pool.len()];
    for (e, &l) in private_emb.iter().zip(private_labels) {
        if let Some(j) = nearest(e, pool_emb, &by_label[l]) {
            votes[j] += 1;
        }
    }
    votes
}

/// How the next pool is drawn from the noisy votes.
struct Resampling<'a> {
    per_label: &'a [usize],
    /// Votes up to this count as none.
    floor: f64,
    config: &'a EvolutionConfig,
    generator: &'a Model,
    labels: &'a [String],
    /// The public words of the prompts.
    words: PromptWords<'a>,
}

impl Resampling<'_> {
    /// `per_label[l]` texts from each label's prompt.
    fn initial_pool(&self, rng: &mut NoiseRng, progress: &mut dyn Progress) -> Result<Vec<Pooled>> {
        let prompts: Vec<Pooled> = self
            .per_label
            .iter()
            .enumerate()
            .flat_map(|(l, &n)| {
                std::iter::repeat_n(
                    (l, self.words.fill(&self.config.prompt, &self.labels[l])),
                    n,
                )
            })
            .collect();
        generate_texts(
            self.generator,
            &prompts,
            &self.config.sampling(),
            rng,
            "synth: initial pool",
            progress,
        )
    }

    /// The next pool: per label, `per_label[l]` draws with replacement in proportion to the noisy
    /// votes above the floor (uniform if none is); a text's first draw keeps it, each further
    /// draw becomes a variation of it.
    fn evolve(
        &self,
        pool: &[Pooled],
        noisy: &[f64],
        rng: &mut NoiseRng,
        progress: &mut dyn Progress,
    ) -> Result<Vec<Pooled>> {
        let mut kept: Vec<Pooled> = Vec::new();
        let mut to_vary: Vec<Pooled> = Vec::new();
        for (l, &n) in self.per_label.iter().enumerate() {
            let members: Vec<usize> = (0..pool.len()).filter(|&j| pool[j].0 == l).collect();
            if members.is_empty() {
                continue;
            }
            let weights: Vec<f64> = members
                .iter()
                .map(|&j| (noisy[j] - self.floor).max(0.0))
                .collect();
            let mut seen = vec![false; members.len()];
            for _ in 0..n {
                let k = draw(&weights, rng);
                let text = &pool[members[k]].1;
                if std::mem::replace(&mut seen[k], true) {
                    to_vary.push((l, self.variation_prompt(l, text)));
                } else {
                    kept.push((l, text.clone()));
                }
            }
        }
        let varied = generate_texts(
            self.generator,
            &to_vary,
            &self.config.sampling(),
            rng,
            "synth: variations",
            progress,
        )?;
        kept.extend(varied);
        Ok(kept)
    }

    fn variation_prompt(&self, label: usize, text: &str) -> String {
        let quoted: String = text.chars().take(QUOTED_CHARS).collect();
        self.words
            .fill(&self.config.variation_prompt, &self.labels[label])
            .replace("{text}", &quoted)
    }
}

/// An index drawn in proportion to `weights` (uniformly if they sum to 0).
fn draw(weights: &[f64], rng: &mut NoiseRng) -> usize {
    let total: f64 = weights.iter().sum();
    let u = rng.uniform_f64();
    if total <= 0.0 {
        return ((u * weights.len() as f64) as usize).min(weights.len() - 1);
    }
    let mut acc = 0.0;
    for (i, w) in weights.iter().enumerate() {
        acc += w / total;
        if u < acc {
            return i;
        }
    }
    weights.iter().rposition(|w| *w > 0.0).unwrap_or(0)
}

fn as_dataset(pool: &[Pooled], labels: &[String]) -> Dataset {
    Dataset {
        examples: pool
            .iter()
            .map(|(l, t)| Example {
                text: t.clone(),
                label: Some(*l),
                group: None,
            })
            .collect(),
        labels: labels.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_private_example_votes_once_for_the_nearest_text_of_its_label() {
        let pool: Vec<Pooled> = vec![(0, "a".into()), (0, "b".into()), (1, "c".into())];
        let pool_emb = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![1.0, 0.0]];
        let private_emb = vec![
            vec![0.9, 0.1],
            vec![0.1, 0.9],
            vec![0.0, 1.0],
            vec![0.0, 1.0],
        ];
        // The last example (label 1) is nearer to text 1 (label 0) but votes within its label.
        let votes = count_votes(&private_emb, &[0, 0, 0, 1], &pool_emb, &pool);
        assert_eq!(votes, vec![1, 2, 1]);
        assert_eq!(
            votes.iter().sum::<u64>(),
            4,
            "one vote per example: sensitivity 1"
        );
    }

    #[test]
    fn draws_follow_the_weights_and_skip_zero_weights() {
        let mut rng = NoiseRng::from_seed(3);
        let mut counts = [0usize; 3];
        for _ in 0..6000 {
            counts[draw(&[1.0, 0.0, 3.0], &mut rng)] += 1;
        }
        assert_eq!(counts[1], 0);
        let share = counts[2] as f64 / 6000.0;
        assert!((share - 0.75).abs() < 0.03, "{counts:?}");
        // All zero: uniform.
        let mut hit = [false; 2];
        for _ in 0..100 {
            hit[draw(&[0.0, 0.0], &mut rng)] = true;
        }
        assert_eq!(hit, [true, true]);
    }
}
