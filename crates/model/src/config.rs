//! Model configurations: the [`ModelConfig`] of one of the supported families, read from a
//! Hugging Face `config.json` (family detection by `model_type` / `architectures`), and
//! [`ModelConfig::arch`], the single place that maps a family to its [`Architecture`].
//!
//! The family configs themselves live with their family: [`BertConfig`] in [`crate::bert`],
//! [`LlamaConfig`] in [`crate::llama`].

use std::path::Path;

use serde::Deserialize;

use crate::arch::Architecture;
pub use crate::bert::BertConfig;
use crate::error::{ModelError, Result};
pub use crate::llama::LlamaConfig;

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
                || is_arch("LlamaModel")
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

    /// The family's [`Architecture`]: the registration point of a model family (add an arm
    /// per family) and the only `match` over families outside config parsing.
    pub fn arch(&self) -> &dyn Architecture {
        match self {
            ModelConfig::Bert(c) => c,
            ModelConfig::Llama(c) => c,
        }
    }

    /// Number of transformer blocks.
    pub fn num_layers(&self) -> usize {
        self.arch().num_layers()
    }

    /// The longest sequence the model takes (its position table).
    pub fn max_positions(&self) -> usize {
        self.arch().max_positions()
    }

    /// Model width.
    pub fn hidden_size(&self) -> usize {
        self.arch().hidden_size()
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.arch().vocab_size()
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
