//! The built-in privacy audit on a tiny random BERT: canaries are fair coins over distinct
//! random-word texts; with the noise switched off the trained model gives its members away (a
//! lower bound well above a small claimed ε), and a real DP run at that ε stays below its claim.

use dpselft_data::{Dataset, Example};
use dpselft_dp::audit::{audit, make_canaries, with_members};
use dpselft_dp::{
    AuditConfig, Checkpoints, Duration, NoiseRng, OptimizerKind, PrivacyTarget, Task, TrainConfig,
};
use dpselft_model::Model;
use dpselft_testkit::{PAD_UNK, WORDS, random_model, tiny_bert_config};

fn tiny_bert() -> Model {
    random_model(tiny_bert_config(64, 2), 0.2, 5, PAD_UNK)
}

/// Six classes of two words each, three words per example. Many labels matter to the audit: a
/// non-member canary's random label agrees with what an overfit model predicts for it with
/// chance 1/labels, and such a canary scores like a member.
fn real_data(n: usize) -> Dataset {
    let examples = (0..n)
        .map(|i| {
            let label = i % 6;
            let words: Vec<&str> = (0..3).map(|j| WORDS[2 * label + (i / 6 + j) % 2]).collect();
            Example {
                text: words.join(" "),
                label: Some(label),
                group: None,
            }
        })
        .collect();
    Dataset {
        examples,
        labels: (0..6).map(|l| format!("class{l}")).collect(),
    }
}

fn config(privacy: PrivacyTarget) -> TrainConfig {
    TrainConfig {
        task: Task::Classify,
        trainable: "all".parse().unwrap(),
        duration: Duration::Epochs(100.0),
        batch_size: 32,
        clip: 1.0,
        automatic_clip_gamma: None,
        lr: 0.01,
        optimizer: OptimizerKind::default(),
        warmup_steps: 0,
        privacy,
        max_tokens: 4096,
        max_seq_len: 12,
        eval_every: None,
        log_every: 50,
        checkpoints: Checkpoints::Off,
        seed: Some(11),
        init_seed: 0,
        log_private_metrics: false,
        allow_large_delta: false,
    }
}

const AUDIT: AuditConfig = AuditConfig {
    canaries: 200,
    words: 8,
    confidence: 0.95,
};

#[test]
fn canaries_are_fair_coins_over_distinct_vocabulary_texts() {
    let model = tiny_bert();
    let mut rng = NoiseRng::from_seed(3);
    let c = make_canaries(&model, 6, &AUDIT, &mut rng).unwrap();
    let members = c.included.iter().filter(|&&m| m).count();
    assert!((70..=130).contains(&members), "{members} of 200");
    let distinct: std::collections::BTreeSet<&str> =
        c.examples.iter().map(|e| e.text.as_str()).collect();
    assert_eq!(distinct.len(), 200);
    assert!(
        c.examples.iter().all(
            |e| e.text.split(' ').count() == 8 && e.text.split(' ').all(|w| WORDS.contains(&w))
        )
    );
    let labels: Vec<usize> = c.examples.iter().map(|e| e.label.unwrap()).collect();
    assert!((0..6).all(|l| labels.contains(&l)), "{labels:?}");
    let data = real_data(24);
    assert_eq!(with_members(&data, &c).len(), 24 + members);
}

#[test]
fn noise_off_gives_its_members_away_and_dp_stays_below_its_claim() {
    let data = real_data(60);
    let claimed = 1.0;
    let run = |privacy| {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = NoiseRng::from_seed(21);
        audit(
            config(privacy),
            tiny_bert(),
            &data,
            dir.path(),
            &AUDIT,
            &mut rng,
            &mut (),
        )
        .unwrap()
    };
    let off = run(PrivacyTarget::NonPrivate);
    assert!(
        off.mean_score_members > off.mean_score_non_members,
        "members fit better: {off:?}"
    );
    assert!(
        off.epsilon_lower_bound > 2.0 * claimed,
        "noise off: lower bound {} should be far above ε = {claimed}",
        off.epsilon_lower_bound
    );
    let dp = run(PrivacyTarget::Private {
        epsilon: claimed,
        delta: 1e-5,
    });
    assert!(dp.noise_multiplier > 0.5);
    assert!(
        dp.epsilon_lower_bound <= claimed,
        "a DP run at ε = {claimed} audited at {}",
        dp.epsilon_lower_bound
    );
}
