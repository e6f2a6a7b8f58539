//! Forward throughput (tokens/s) of our MiniLM and SmolLM2 against candle-transformers in the
//! same run, and a MiniLM training step (forward + backward) with the top-2 blocks + head
//! trainable vs everything trainable.
//!
//! `cargo bench -p dpselft-model --bench forward` (env: DPSELFT_ASSETS, BENCH_BATCH=32,
//! BENCH_LEN=128, BENCH_REPS=3, BENCH_SKIP_LLAMA=1 to skip SmolLM2).

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert as ref_bert;
use candle_transformers::models::quantized_llama::ModelWeights;
use dpselft_model::ops::loss::classification_loss_per_example;
use dpselft_model::trainable::{self, TrainableSpec};
use dpselft_model::{Batch, Ctx, Model, Pooling};

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn assets() -> PathBuf {
    std::env::var_os("DPSELFT_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets"))
}

/// Median seconds of `reps` runs after one warm-up.
fn time<F: FnMut()>(reps: usize, mut f: F) -> f64 {
    f();
    let mut v: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ids(b: usize, t: usize, vocab: u32) -> Vec<Vec<u32>> {
    (0..b)
        .map(|i| {
            (0..t)
                .map(|j| 1000 + ((i * 131 + j * 17) as u32 % (vocab - 2000)))
                .collect()
        })
        .collect()
}

fn main() {
    let (b, t, reps) = (
        env_usize("BENCH_BATCH", 32),
        env_usize("BENCH_LEN", 128),
        env_usize("BENCH_REPS", 3),
    );
    let dev = Device::Cpu;
    let tokens = (b * t) as f64;
    println!("batch {b} x {t} tokens, median of {reps}");

    // MiniLM
    let dir = assets().join("minilm");
    let ours = Model::load(&dir, &dev).expect("MiniLM: run `dpselft fetch-assets`");
    let batch = Batch::from_ids(&ids(b, t, 30000), 0, false, &dev).unwrap();
    let cfg: ref_bert::Config =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    // SAFETY: the file is not modified while mapped.
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(&[dir.join("model.safetensors")], DType::F32, &dev)
            .unwrap()
    };
    let reference = ref_bert::BertModel::load(vb, &cfg).unwrap();
    let types = batch.ids.zeros_like().unwrap();
    let to = time(reps, || {
        ours.hidden_states(&batch, Ctx::plain()).unwrap();
    });
    let tr = time(reps, || {
        reference
            .forward(&batch.ids, &types, Some(&batch.attn))
            .unwrap();
    });
    println!(
        "MiniLM forward: ours {:.0} tok/s, candle-transformers {:.0} tok/s, ratio {:.2}",
        tokens / to,
        tokens / tr,
        tr / to
    );

    let labels = Tensor::new(vec![0u32; b].as_slice(), &dev).unwrap();
    for spec in ["last:2,head", "all"] {
        let mut m = ours.clone();
        m.set_classifier(vec!["a".into(), "b".into()], Pooling::Mean, 0)
            .unwrap();
        trainable::apply(&mut m, &TrainableSpec::parse(spec).unwrap(), 0).unwrap();
        let s = time(reps, || {
            let out = m.forward_train(&batch, Ctx::plain()).unwrap();
            classification_loss_per_example(&out, &labels)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
        });
        println!(
            "MiniLM train step ({spec}): {s:.3} s ({:.0} tok/s)",
            tokens / s
        );
        let rec = dpselft_model::Recorder::new();
        let r = time(reps, || {
            let out = m.forward_train(&batch, Ctx::recording(&rec)).unwrap();
            classification_loss_per_example(&out, &labels)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            rec.clear();
        });
        println!(
            "MiniLM train step ({spec}), recording per-example records: {r:.3} s (x{:.2} the plain step)",
            r / s
        );
    }

    if std::env::var("BENCH_SKIP_LLAMA").is_ok() {
        return;
    }
    // SmolLM2: hidden states + last-position logits, like quantized_llama's forward.
    let gguf = assets().join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    let ours = Model::load(&gguf, &dev).unwrap();
    let batch = Batch::from_ids(&ids(b, t, 49152), 2, false, &dev).unwrap();
    let to = time(reps, || {
        ours.hidden_states(&batch, Ctx::plain()).unwrap();
    });
    // SAFETY: set before the reference model reads it; single-threaded here.
    unsafe { std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1") };
    let mut f = std::fs::File::open(&gguf).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
    let mut reference = ModelWeights::from_gguf(content, &mut f, &dev).unwrap();
    let tr = time(reps, || {
        reference.forward(&batch.ids, 0).unwrap();
    });
    println!(
        "SmolLM2 forward (f32): ours {:.0} tok/s, candle-transformers {:.0} tok/s, ratio {:.2}",
        tokens / to,
        tokens / tr,
        tr / to
    );
}
