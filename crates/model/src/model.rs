//! The model: a config, its parameters, a head and a tokenizer, with forward passes split at
//! block boundaries (for the prefix cache and for stopping backward at the lowest trainable unit).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use tokenizers::Tokenizer;

use crate::arch::Architecture;
use crate::batch::Batch;
use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::heads::{Head, Pooling, pool};
use crate::layers::{Ctx, linear};
use crate::loader::{self, Weights};
use crate::params::ParamStore;
use crate::save::sentence_transformers::read_head;
use crate::tokenizer::{SpecialTokens, load_tokenizer_json, tokenizer_from_gguf_metadata};

/// A loaded model.
#[derive(Debug, Clone)]
pub struct Model {
    /// Architecture and sizes.
    pub config: ModelConfig,
    /// All weights by Hugging Face name (trainable ones are `Var`s).
    pub params: ParamStore,
    /// The task head.
    pub head: Head,
    /// The tokenizer, when one was found next to the weights or in the GGUF file.
    pub tokenizer: Option<Tokenizer>,
    /// Special-token ids.
    pub special: SpecialTokens,
    /// Device of the weights.
    pub device: Device,
    /// The folder or file [`Model::load`] read (for error messages).
    source: Option<std::path::PathBuf>,
}

impl Model {
    /// Builds a model from a config and weights (consumed), with the default head: the
    /// causal-LM head for a family that has one, else none; a classifier (pooled by the
    /// family's default) when the weights contain one and the config has `id2label`.
    pub fn from_weights(config: ModelConfig, mut w: Weights, device: &Device) -> Result<Self> {
        let arch = config.arch();
        let mut params = arch.params_from_weights(&mut w)?;
        let (wname, bname) = arch.classifier_param_names();
        let head = match arch.id2label().cloned() {
            Some(map) if w.contains(wname) => {
                let mut labels: Vec<(usize, String)> = map
                    .into_iter()
                    .map(|(k, v)| {
                        k.parse::<usize>().map(|k| (k, v)).map_err(|_| {
                            ModelError::Invalid(format!("id2label key `{k}` is not an integer"))
                        })
                    })
                    .collect::<Result<_>>()?;
                labels.sort();
                let labels: Vec<String> = labels.into_iter().map(|(_, v)| v).collect();
                params.insert(wname, w.take(wname, "classifier head")?);
                if let Some(b) = bname {
                    params.insert(b, w.take(b, "classifier head")?);
                }
                let pooling = arch.default_pooling();
                Head::Classifier { labels, pooling }
            }
            _ if arch.has_lm_head() => Head::CausalLm,
            _ => Head::None,
        };
        let special = arch.special_tokens();
        Ok(Self {
            config,
            params,
            head,
            tokenizer: None,
            special,
            device: device.clone(),
            source: None,
        })
    }

    /// [`Model::load`] on the device `spec` names (opened once per process, [`crate::DeviceSpec::open`]).
    pub fn load_on(path: &Path, spec: crate::DeviceSpec) -> Result<Self> {
        Self::load(path, &spec.open()?)
    }

    /// Loads a Hugging Face folder (config.json, *.safetensors, tokenizer.json) or a `.gguf` file.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        if loader::is_gguf(path) {
            let (cfg, w, content) = loader::gguf::load_gguf(path, device)?;
            let mut m = Self::from_weights(cfg, w, device)?;
            m.tokenizer = Some(tokenizer_from_gguf_metadata(&content.metadata, path)?);
            m.source = Some(path.to_path_buf());
            Ok(m)
        } else if path.is_dir() && !path.join("config.json").exists() {
            // A folder holding one GGUF file (e.g. assets/smollm2).
            let ggufs: Vec<_> = std::fs::read_dir(path)
                .map_err(|e| ModelError::io(path, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| loader::is_gguf(p))
                .collect();
            match ggufs.as_slice() {
                [one] => Self::load(one, device),
                _ => Err(ModelError::Invalid(format!(
                    "{}: no config.json, and not exactly one .gguf file",
                    path.display()
                ))),
            }
        } else if path.is_dir() {
            let (cfg, mut w) = loader::hf::load_hf_dir(path, device)?;
            // A classifier saved by `save_hf` keeps its head as a sentence-transformers Dense
            // module and its pooling in 1_Pooling; folders of earlier versions kept both in the
            // root (`classifier.*` tensors, `classifier_pooling` in config.json).
            let (wname, bname) = cfg.arch().classifier_param_names();
            let pooling = match read_head(path, wname, bname, device)? {
                Some((head, pooling)) => {
                    w.tensors.extend(head);
                    Some(pooling)
                }
                None => legacy_classifier_pooling(&path.join("config.json"))?,
            };
            let mut m = Self::from_weights(cfg, w, device)?;
            if let (Head::Classifier { pooling: p, .. }, Some(pooling)) = (&mut m.head, pooling) {
                *p = pooling;
            }
            let tp = path.join("tokenizer.json");
            if tp.exists() {
                m.tokenizer = Some(load_tokenizer_json(&tp)?);
            }
            m.source = Some(path.to_path_buf());
            Ok(m)
        } else {
            Err(ModelError::Invalid(format!(
                "{}: not a model folder (config.json + *.safetensors) or a .gguf file",
                path.display()
            )))
        }
    }

    /// The folder or `.gguf` file the model was loaded from (`None` for a built one).
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// The model family's [`Architecture`] (everything family-specific).
    pub fn arch(&self) -> &dyn Architecture {
        self.config.arch()
    }

    /// The family name (`"BERT"`, `"Llama"`), for messages.
    pub fn family(&self) -> &'static str {
        self.arch().family()
    }

    /// Whether attention is causal (each position sees only earlier ones).
    pub fn is_causal(&self) -> bool {
        self.arch().is_causal()
    }

    /// Whether text is encoded with the tokenizer's special tokens (`[CLS]` … `[SEP]`).
    pub fn adds_special_tokens(&self) -> bool {
        self.arch().adds_special_tokens()
    }

    /// Whether the model has a final norm (the `final_norm` unit).
    pub fn has_final_norm(&self) -> bool {
        self.arch().has_final_norm()
    }

    /// Whether the model can be a causal LM (its family has an LM head).
    pub fn has_lm_head(&self) -> bool {
        self.arch().has_lm_head()
    }

    /// The pooling of a new classification head (mean for encoders, last token for causal
    /// models).
    pub fn default_pooling(&self) -> Pooling {
        self.arch().default_pooling()
    }

    /// Number of blocks L.
    pub fn num_blocks(&self) -> usize {
        self.config.num_layers()
    }

    /// The tokenizer, or an error saying none was loaded.
    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer.as_ref().ok_or_else(|| {
            ModelError::Invalid(match &self.source {
                Some(dir) => format!(
                    "{}: no tokenizer.json beside the weights (this model has no tokenizer)",
                    dir.display()
                ),
                None => "this model has no tokenizer".into(),
            })
        })
    }

    /// Tokenizes texts into a right-padded batch (special tokens added if the family adds them,
    /// see [`Model::adds_special_tokens`]).
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Batch> {
        let tok = self.tokenizer()?;
        let add = self.adds_special_tokens();
        let seqs = texts
            .iter()
            .map(|t| crate::tokenizer::encode(tok, t, add))
            .collect::<Result<Vec<_>>>()?;
        Batch::from_ids(&seqs, self.special.pad.unwrap_or(0), false, &self.device)
    }

    /// Embeddings. ids (B, T) → (B, T, d).
    pub fn embed(&self, ids: &Tensor, ctx: Ctx) -> Result<Tensor> {
        self.arch().embed(&self.params, ids, ctx)
    }

    /// Runs blocks `from..to` on hidden states h (B, T, d) of `batch`.
    pub fn run_blocks(
        &self,
        h: &Tensor,
        batch: &Batch,
        from: usize,
        to: usize,
        ctx: Ctx,
    ) -> Result<Tensor> {
        if from > to || to > self.num_blocks() {
            return Err(ModelError::Invalid(format!(
                "block range {from}..{to} outside 0..{}",
                self.num_blocks()
            )));
        }
        self.arch()
            .run_blocks(&self.params, h, batch, from, to, ctx)
    }

    /// The final norm, or the identity for a family without one. (B, T, d) → (B, T, d).
    pub fn final_norm(&self, h: &Tensor, ctx: Ctx) -> Result<Tensor> {
        self.arch().final_norm(&self.params, h, ctx)
    }

    /// Final hidden states (after the final norm). → (B, T, d).
    pub fn hidden_states(&self, batch: &Batch, ctx: Ctx) -> Result<Tensor> {
        let h = self.embed(&batch.ids, ctx)?;
        let h = self.run_blocks(&h, batch, 0, self.num_blocks(), ctx)?;
        self.final_norm(&h, ctx)
    }

    /// Prefix cache, part 1: the hidden states entering block `upto` (0 = the embeddings'
    /// output), computed without any autograd graph. (B, T, d).
    pub fn forward_prefix(&self, batch: &Batch, upto: usize) -> Result<Tensor> {
        let h = self.embed(&batch.ids, Ctx::plain())?.detach();
        Ok(self.run_blocks(&h, batch, 0, upto, Ctx::plain())?.detach())
    }

    /// Prefix cache, part 2: runs blocks `from..L`, the final norm and the head on states `h`
    /// entering block `from` (from [`Model::forward_prefix`]). Returns the head output.
    pub fn forward_from(&self, h: &Tensor, batch: &Batch, from: usize, ctx: Ctx) -> Result<Tensor> {
        let h = self.run_blocks(&h.detach(), batch, from, self.num_blocks(), ctx)?;
        let h = self.final_norm(&h, ctx)?;
        self.head_forward(&h, batch, ctx)
    }

    /// The lowest block that holds a trainable parameter; 0 if the embeddings are trainable;
    /// L if only the final norm / head are.
    pub fn lowest_trainable_block(&self) -> usize {
        let l = self.num_blocks();
        let mut lowest = l;
        for name in self.params.vars().keys() {
            match crate::units::unit_of(self, name) {
                Some(crate::units::UnitId::Embeddings) => return 0,
                Some(crate::units::UnitId::Block(i)) => lowest = lowest.min(i),
                _ => {}
            }
        }
        lowest
    }

    /// Training forward: the frozen prefix runs without a graph (backward stops at the lowest
    /// trainable unit), the rest with autograd (recording if `ctx` says so). Returns the head
    /// output: logits (B, T, V) for a causal LM, (B, C) for a classifier, pooled (B, d) / hidden
    /// states for no head.
    pub fn forward_train(&self, batch: &Batch, ctx: Ctx) -> Result<Tensor> {
        if self.embeddings_trainable() {
            let h = self.embed(&batch.ids, ctx)?;
            let h = self.run_blocks(&h, batch, 0, self.num_blocks(), ctx)?;
            let h = self.final_norm(&h, ctx)?;
            return self.head_forward(&h, batch, ctx);
        }
        let low = self.lowest_trainable_block();
        let h = self.forward_prefix(batch, low)?;
        self.forward_from(&h, batch, low, ctx)
    }

    /// Whether a parameter of the `embeddings` unit is trainable (backward then reaches the
    /// bottom of the model).
    pub fn embeddings_trainable(&self) -> bool {
        self.params
            .vars()
            .keys()
            .any(|n| crate::units::unit_of(self, n) == Some(crate::units::UnitId::Embeddings))
    }

    /// Applies the head to final hidden states (B, T, d).
    pub fn head_forward(&self, h: &Tensor, batch: &Batch, ctx: Ctx) -> Result<Tensor> {
        match &self.head {
            Head::None => self.arch().headless_output(h, batch),
            Head::CausalLm => self.arch().lm_head(&self.params, h, ctx),
            Head::Classifier { pooling, .. } => {
                let pooled = pool(h, batch, *pooling)?; // (B, d)
                let (w, b) = self.arch().classifier_param_names();
                let y = linear(&self.params, ctx, &pooled.unsqueeze(1)?, w, b)?; // (B, 1, C)
                Ok(y.squeeze(1)?)
            }
        }
    }

    /// Sentence embeddings of an encoder: mean-pooled over real tokens, L2-normalised. (B, d).
    pub fn sentence_embeddings(&self, batch: &Batch) -> Result<Tensor> {
        let h = self.hidden_states(batch, Ctx::plain())?;
        crate::bert::l2_normalize(&crate::bert::mean_pool(&h, &batch.attn)?)
    }

    /// Causal-LM logits at every position. (B, T, V).
    pub fn lm_logits(&self, batch: &Batch) -> Result<Tensor> {
        if !self.has_lm_head() {
            return Err(ModelError::Invalid(format!(
                "{} models have no LM head",
                self.family()
            )));
        }
        let h = self.hidden_states(batch, Ctx::plain())?;
        self.arch().lm_head(&self.params, &h, Ctx::plain())
    }

    /// Replaces the head by a classifier with `labels`, initialised from `seed`
    /// (N(0, 0.02²) weights, zero bias), pooled by `pooling`.
    pub fn set_classifier(
        &mut self,
        labels: Vec<String>,
        pooling: Pooling,
        seed: u64,
    ) -> Result<()> {
        let d = self.config.hidden_size();
        let (w, b) = crate::heads::init_classifier(labels.len(), d, 0.02, seed, &self.device)?;
        let dtype = self
            .params
            .iter()
            .next()
            .map(|(_, t)| t.dtype())
            .unwrap_or(DType::F32);
        let (w, b) = (w.to_dtype(dtype)?, b.to_dtype(dtype)?);
        let (wn, bn) = self.arch().classifier_param_names();
        self.params.insert(wn, w);
        if let Some(bn) = bn {
            self.params.insert(bn, b);
        }
        self.head = Head::Classifier { labels, pooling };
        Ok(())
    }

    /// Converts every parameter to `dtype` (f64 for gradient checks).
    pub fn to_dtype(&mut self, dtype: DType) -> Result<()> {
        let names = self.params.names();
        for n in names {
            let t = self.params.get(&n)?.to_dtype(dtype)?;
            self.params.insert(n, t);
        }
        Ok(())
    }
}

impl Model {
    /// A model with seeded random weights (tests, benchmarks): matrices N(0, std²), norm
    /// weights 1 + N(0, std²), biases N(0, std²). No tokenizer.
    pub fn random(
        config: ModelConfig,
        std: f64,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        use rand::SeedableRng;
        use rand_distr::{Distribution, Normal};
        let arch = config.arch();
        arch.validate()?;
        let names = arch.base_param_names();
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        let normal = Normal::new(0.0, std)
            .map_err(|e| ModelError::Invalid(format!("random init std {std}: {e}")))?;
        let mut tensors = std::collections::BTreeMap::new();
        for n in names {
            let shape = arch.shape_of(&n);
            let count: usize = shape.iter().product();
            let is_norm = n.contains("LayerNorm.weight") || n.ends_with("norm.weight");
            let v: Vec<f64> = (0..count)
                .map(|_| normal.sample(&mut rng) + if is_norm { 1.0 } else { 0.0 })
                .collect();
            tensors.insert(n, Tensor::from_vec(v, shape, device)?.to_dtype(dtype)?);
        }
        Self::from_weights(config, Weights::new(tensors, "<random>"), device)
    }
}

/// The `classifier_pooling` of a `config.json` written by an earlier version of `save_hf`.
fn legacy_classifier_pooling(cfg_path: &Path) -> Result<Option<Pooling>> {
    loader::read_json(cfg_path)?
        .get("classifier_pooling")
        .and_then(|p| p.as_str())
        .map(Pooling::parse)
        .transpose()
}
