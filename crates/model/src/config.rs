//! Model configurations: serde structs mirroring the Hugging Face `config.json` of the BERT and
//! Llama families, and the architecture dispatch.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_hidden_act() -> String {
    "gelu".into()
}
fn default_type_vocab() -> usize {
    2
}
fn default_max_pos() -> usize {
    512
}
fn default_rms_eps() -> f64 {
    1e-5
}
fn default_rope_theta() -> f64 {
    10000.0
}
fn default_bert_model_type() -> String {
    "bert".into()
}
fn default_llama_model_type() -> String {
    "llama".into()
}

/// A BERT-family encoder config (`BertModel`), as in Hugging Face's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Always `["BertModel"]` when we write it.
    #[serde(default)]
    pub architectures: Vec<String>,
    /// `"bert"`.
    #[serde(default = "default_bert_model_type")]
    pub model_type: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width d.
    pub hidden_size: usize,
    /// Number of encoder blocks L.
    pub num_hidden_layers: usize,
    /// Number of attention heads (head_dim = d / heads).
    pub num_attention_heads: usize,
    /// FFN width.
    pub intermediate_size: usize,
    /// Activation: `gelu` (erf form) or `gelu_new`/`gelu_pytorch_tanh` (tanh form) or `relu`.
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    /// Maximum number of positions.
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// Number of token types (segments).
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// Padding id.
    #[serde(default)]
    pub pad_token_id: u32,
    /// Dropout (ignored: DP training runs without dropout), kept for round-trips.
    #[serde(default)]
    pub hidden_dropout_prob: f64,
    /// Attention dropout (ignored), kept for round-trips.
    #[serde(default)]
    pub attention_probs_dropout_prob: f64,
    /// Classifier label names (`id2label`), when this is a classifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id2label: Option<std::collections::BTreeMap<String, String>>,
}

impl BertConfig {
    /// A tiny BERT for tests and examples: vocabulary 23, 2 blocks of width 8 with 2 heads,
    /// FFN 12, 16 positions, no dropout. Change fields with struct-update syntax.
    pub fn tiny() -> Self {
        BertConfig {
            architectures: vec!["BertModel".into()],
            model_type: "bert".into(),
            vocab_size: 23,
            hidden_size: 8,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            intermediate_size: 12,
            hidden_act: "gelu".into(),
            max_position_embeddings: 16,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
            hidden_dropout_prob: 0.0,
            attention_probs_dropout_prob: 0.0,
            id2label: None,
        }
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Checks the sizes are consistent.
    pub fn validate(&self) -> Result<()> {
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(ModelError::Invalid(format!(
                "BERT config: hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        match self.hidden_act.as_str() {
            "gelu" | "gelu_new" | "gelu_pytorch_tanh" | "relu" => Ok(()),
            a => Err(ModelError::Invalid(format!(
                "BERT config: hidden_act `{a}` unsupported (gelu, gelu_new, gelu_pytorch_tanh, relu)"
            ))),
        }
    }
}

/// A Llama-family decoder config (`LlamaForCausalLM`), as in Hugging Face's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// Always `["LlamaForCausalLM"]` when we write it.
    #[serde(default)]
    pub architectures: Vec<String>,
    /// `"llama"`.
    #[serde(default = "default_llama_model_type")]
    pub model_type: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width d.
    pub hidden_size: usize,
    /// SwiGLU width.
    pub intermediate_size: usize,
    /// Number of decoder blocks L.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key/value heads (grouped-query attention); defaults to the query heads.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Head width; defaults to hidden_size / num_attention_heads.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// RMSNorm epsilon.
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// Maximum number of positions.
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// Whether the LM head shares the token embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// BOS id.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// EOS id.
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    /// Padding id.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// Activation of the gated MLP (`silu`).
    #[serde(default = "default_silu")]
    pub hidden_act: String,
    /// Classifier label names (`id2label`), when this is a classifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id2label: Option<std::collections::BTreeMap<String, String>>,
}

fn default_silu() -> String {
    "silu".into()
}

impl LlamaConfig {
    /// A tiny Llama for tests and examples: vocabulary 23, 2 blocks of width 8 with grouped-query
    /// attention (4 query / 2 key-value heads), FFN 12, 32 positions; `tied` ties the LM head to
    /// the token embeddings.
    pub fn tiny(tied: bool) -> Self {
        LlamaConfig {
            architectures: vec!["LlamaForCausalLM".into()],
            model_type: "llama".into(),
            vocab_size: 23,
            hidden_size: 8,
            intermediate_size: 12,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: Some(2),
            head_dim: None,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            max_position_embeddings: 32,
            tie_word_embeddings: tied,
            bos_token_id: Some(1),
            eos_token_id: Some(2),
            pad_token_id: Some(2),
            hidden_act: "silu".into(),
            id2label: None,
        }
    }

    /// Number of key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }
    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }
    /// Checks the sizes are consistent.
    pub fn validate(&self) -> Result<()> {
        let h = self.num_attention_heads;
        let kv = self.kv_heads();
        if h == 0 || kv == 0 || !h.is_multiple_of(kv) {
            return Err(ModelError::Invalid(format!(
                "Llama config: num_attention_heads {h} is not a multiple of num_key_value_heads {kv}"
            )));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(ModelError::Invalid(format!(
                "Llama config: head_dim {} must be even for RoPE",
                self.head_dim()
            )));
        }
        if self.hidden_act != "silu" {
            return Err(ModelError::Invalid(format!(
                "Llama config: hidden_act `{}` unsupported (silu)",
                self.hidden_act
            )));
        }
        Ok(())
    }
}

/// A config of one of the supported architectures.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelConfig {
    /// A BERT encoder.
    Bert(BertConfig),
    /// A Llama decoder.
    Llama(LlamaConfig),
}

#[derive(Deserialize)]
struct ArchProbe {
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    model_type: Option<String>,
}

impl ModelConfig {
    /// Reads a Hugging Face `config.json`, dispatching on `model_type` / `architectures`.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        Self::from_json_str(&text, path)
    }

    /// Parses a `config.json` text; `path` only names the file in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let json_err = |source| ModelError::Json {
            path: path.to_path_buf(),
            source,
        };
        let probe: ArchProbe = serde_json::from_str(text).map_err(json_err)?;
        let mt = probe.model_type.clone().unwrap_or_default();
        let is_arch = |a: &str| probe.architectures.iter().any(|x| x == a);
        let cfg =
            if mt == "bert" || is_arch("BertModel") || is_arch("BertForSequenceClassification") {
                let c: BertConfig = serde_json::from_str(text).map_err(json_err)?;
                c.validate()?;
                ModelConfig::Bert(c)
            } else if mt == "llama"
                || is_arch("LlamaForCausalLM")
                || is_arch("LlamaForSequenceClassification")
            {
                let c: LlamaConfig = serde_json::from_str(text).map_err(json_err)?;
                c.validate()?;
                ModelConfig::Llama(c)
            } else {
                let arch = if mt.is_empty() {
                    probe.architectures.join(",")
                } else {
                    mt
                };
                return Err(ModelError::UnknownArchitecture {
                    path: path.to_path_buf(),
                    arch,
                });
            };
        Ok(cfg)
    }

    /// Number of transformer blocks.
    pub fn num_layers(&self) -> usize {
        match self {
            ModelConfig::Bert(c) => c.num_hidden_layers,
            ModelConfig::Llama(c) => c.num_hidden_layers,
        }
    }

    /// The longest sequence the model takes (its position table).
    pub fn max_positions(&self) -> usize {
        match self {
            ModelConfig::Bert(c) => c.max_position_embeddings,
            ModelConfig::Llama(c) => c.max_position_embeddings,
        }
    }

    /// Model width.
    pub fn hidden_size(&self) -> usize {
        match self {
            ModelConfig::Bert(c) => c.hidden_size,
            ModelConfig::Llama(c) => c.hidden_size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_architecture_is_named() {
        let err = ModelConfig::from_json_str(
            r#"{"model_type":"mamba","architectures":["MambaForCausalLM"]}"#,
            Path::new("x/config.json"),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("mamba") && msg.contains("x/config.json"),
            "{msg}"
        );
    }

    #[test]
    fn llama_defaults() {
        let c = ModelConfig::from_json_str(
            r#"{"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":16,
                "num_hidden_layers":2,"num_attention_heads":2,"num_key_value_heads":1}"#,
            Path::new("c.json"),
        )
        .unwrap();
        match c {
            ModelConfig::Llama(c) => {
                assert_eq!(c.head_dim(), 4);
                assert_eq!(c.kv_heads(), 1);
                assert_eq!(c.rope_theta, 10000.0);
            }
            _ => panic!("expected llama"),
        }
    }
}
