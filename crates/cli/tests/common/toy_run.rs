//! The toy DP-SelFT run shared by the pipeline tests: a tiny random BERT (target) and a tiny
//! random Llama (generator), both saved in the Hugging Face layout with a word-level tokenizer,
//! colours-vs-animals data, a run configuration sized for seconds, and a utility grid over them.

use std::path::Path;

use dpselft_bench::{MethodsFile, UtilityBench};
use dpselft_selft::pipeline::{ResolvedPaths, Scale};
use dpselft_testkit::{
    save_random_model, tiny_bert_config, tiny_llama_config, write_colour_animal_jsonl,
};

/// 0 [PAD], 1 [BOS], 2 [EOS], 3 [UNK], the label names, then the words.
pub const SPECIALS: &[&str] = &["[PAD]", "[BOS]", "[EOS]", "[UNK]", "colour", "animal"];

fn tiny_models(root: &Path) {
    save_random_model(
        &root.join("target"),
        tiny_bert_config(20, 3),
        0.2,
        11,
        SPECIALS,
    );
    save_random_model(
        &root.join("generator"),
        tiny_llama_config(20, true),
        0.3,
        5,
        SPECIALS,
    );
}

/// Colours vs animals, as JSONL.
fn data(path: &Path, n: usize, seed: usize) {
    write_colour_animal_jsonl(path, n, seed, 3);
}

const CONFIG: &str = r#"
[run]
epsilon = 4.0
delta = 1e-5
synth_fraction = 0.25

[synth]
num_samples = 40
steps = 3
batch_size = 16
max_seq_len = 12
max_new_tokens = 8
generation_batch = 20
min_chars = 4

[select]
candidates = "greedy:2"
step_fraction = 0.3
batch_size = 8
lr_grid = [0.3, 1.0, 3.0]

[train]
batch_size = 32
epochs = 2.0
lr = 0.01
max_seq_len = 12
max_tokens = 256
"#;

/// The `[synth]` section of [`CONFIG`] for Private Evolution (sized for seconds).
pub const EVOLUTION_SYNTH: &str = r#"[synth]
synthesizer = "private-evolution"
num_samples = 40
rounds = 2
max_new_tokens = 8
generation_batch = 20
embed_seq_len = 12
min_chars = 4
"#;

/// [`CONFIG`] with its `[synth]` section replaced by `synth`.
pub fn config_with_synth(synth: &str) -> String {
    let start = CONFIG.find("[synth]").unwrap();
    let end = CONFIG.find("[select]").unwrap();
    format!("{}{synth}\n{}", &CONFIG[..start], &CONFIG[end..])
}

pub fn setup(root: &Path) -> Vec<String> {
    tiny_models(root);
    data(&root.join("train.jsonl"), 160, 1);
    data(&root.join("test.jsonl"), 40, 2);
    std::fs::write(root.join("config.toml"), CONFIG).unwrap();
    let p = |name: &str| root.join(name).to_string_lossy().into_owned();
    vec![
        "--config".into(),
        p("config.toml"),
        "--model".into(),
        p("target"),
        "--generator".into(),
        p("generator"),
        "--train-data".into(),
        p("train.jsonl"),
        "--test-data".into(),
        p("test.jsonl"),
        "--seed".into(),
        "3".into(),
    ]
}
/// The grid's per-method settings (small enough for seconds per cell).
const METHODS: &str = r#"
[defaults]
batch_size = 32
epochs = 1.0
clip = 1.0
max_seq_len = 12
delta = 1e-5
lr_grid = [0.003, 0.03]
validation_fraction = 0.2

[methods.dp-selft]

[methods.head]
trainable = "head"

[methods.last-k]
trainable = "head,last:1"

[methods.random-k]
random_k = 1

[methods.non-private]
trainable = "all"
"#;

/// A utility grid over the toy models and data of [`setup`] (call it first), writing to
/// `root/grid`.
pub fn grid_bench(root: &Path, methods: &[&str], epsilons: &[f64]) -> UtilityBench {
    std::fs::write(root.join("methods.toml"), METHODS).unwrap();
    UtilityBench {
        task: "tiny".into(),
        objective: dpselft_dp::Task::Classify,
        train_data: root.join("train.jsonl"),
        test_data: root.join("test.jsonl"),
        data_kind: "text".into(),
        label_descriptions: Default::default(),
        paths: ResolvedPaths {
            model: root.join("target"),
            generator: root.join("generator"),
            device: Default::default(),
        },
        model_name: "target".into(),
        generator_name: "generator".into(),
        methods: methods.iter().map(|m| m.parse().unwrap()).collect(),
        epsilons: epsilons.to_vec(),
        seeds: 1,
        scale: Scale::Small,
        train_limit: None,
        test_limit: None,
        methods_file: MethodsFile::load(&root.join("methods.toml")).unwrap(),
        out: root.join("grid"),
    }
}

/// The selection-vs-oracle bench over the toy models and data of [`setup`] (call it first),
/// working in `root/selection-bench`.
pub fn selection_bench(root: &Path) -> dpselft_bench::selection::SelectionBench {
    let mut config = dpselft_selft::RunConfig::load(&root.join("config.toml")).unwrap();
    config.run.train_data = root.join("train.jsonl");
    config.run.train_limit = None;
    config.run.data_kind = "text".into();
    config.run.seed = Some(3);
    dpselft_bench::selection::SelectionBench {
        task: "tiny".into(),
        config,
        paths: ResolvedPaths {
            model: root.join("target"),
            generator: root.join("generator"),
            device: Default::default(),
        },
        held_out_fraction: 0.25,
        work: root.join("selection-bench"),
        report_only: false,
        oracle_lrs: Vec::new(),
        oracle_head_lrs: Vec::new(),
        variants: Vec::new(),
    }
}
