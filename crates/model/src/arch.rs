//! The architecture boundary: everything that differs between model families, behind one
//! object-safe trait.
//!
//! [`crate::Model`], [`crate::units`], [`crate::trainable`] and [`crate::save`] never ask which
//! family a model is; they ask its [`Architecture`] (from [`crate::ModelConfig::arch`], the
//! single registration point). A family implements the trait on its config struct in its own
//! file ([`crate::bert`], [`crate::llama`]); see the crate documentation for how to add one.

use std::collections::BTreeMap;

use candle_core::Tensor;

use crate::batch::Batch;
use crate::error::{ModelError, Result};
use crate::heads::{Head, Pooling};
use crate::layers::Ctx;
use crate::loader::Weights;
use crate::params::ParamStore;
use crate::tokenizer::SpecialTokens;
use crate::units::{BlockPart, UnitId};

/// A model family (BERT, Llama, …): its sizes, parameter naming, forward pass pieces, trainable
/// units and Hugging Face export. Implemented by each family's config struct; object-safe, so
/// callers hold a `&dyn Architecture`.
///
/// Parameter names are Hugging Face names (the ones in the family's safetensors files, after
/// any prefix the family strips on loading). Forward methods take the model's [`ParamStore`]
/// and a [`Ctx`] and must look every weight up through [`crate::layers`] so that trainable
/// layers record for the DP engine.
pub trait Architecture: std::fmt::Debug {
    // ---- identity and behaviour -------------------------------------------------------------

    /// Human-readable family name used in messages (`"BERT"`, `"Llama"`).
    fn family(&self) -> &'static str;

    /// Whether attention is causal (each position sees only earlier ones). Decides, e.g., that
    /// only the last token has seen the whole sequence.
    fn is_causal(&self) -> bool;

    /// Whether the tokenizer's special tokens (`[CLS]` … `[SEP]`) are added when encoding text
    /// for this model ([`crate::Model::encode_batch`], the DP data pipeline).
    fn adds_special_tokens(&self) -> bool;

    /// Whether the model has a final norm after the last block (the `final_norm` unit).
    fn has_final_norm(&self) -> bool;

    /// Whether the model can be a causal LM: it has an LM head ([`Architecture::lm_head`]), and
    /// a loaded model without a classifier gets [`Head::CausalLm`].
    fn has_lm_head(&self) -> bool;

    /// The pooling of a new classification head: [`Pooling::Mean`] for encoders,
    /// [`Pooling::LastToken`] for causal models.
    fn default_pooling(&self) -> Pooling;

    // ---- sizes and config -------------------------------------------------------------------

    /// Number of transformer blocks L.
    fn num_layers(&self) -> usize;

    /// Model width d.
    fn hidden_size(&self) -> usize;

    /// The longest sequence the model takes (its position table).
    fn max_positions(&self) -> usize;

    /// Vocabulary size.
    fn vocab_size(&self) -> usize;

    /// Checks the config's sizes and options are consistent and supported.
    fn validate(&self) -> Result<()>;

    /// The classifier label names of the config (`id2label`, keys are class ids as text).
    fn id2label(&self) -> Option<&BTreeMap<String, String>>;

    /// The special-token ids the config declares.
    fn special_tokens(&self) -> SpecialTokens;

    // ---- parameters -------------------------------------------------------------------------

    /// Names of every base parameter (no head, no LoRA factors) in a fixed order: the order
    /// [`crate::Model::random`] draws them in.
    fn base_param_names(&self) -> Vec<String>;

    /// The expected shape of base parameter `name`.
    fn shape_of(&self, name: &str) -> Vec<usize>;

    /// Takes the base parameters out of `w` (normalising names, e.g. stripping a prefix),
    /// checking their shapes. Head tensors stay in `w`.
    fn params_from_weights(&self, w: &mut Weights) -> Result<ParamStore>;

    /// Parameter names of a classifier head: weight (C, d) and optional bias (C), as the
    /// family's `…ForSequenceClassification` names them.
    fn classifier_param_names(&self) -> (&'static str, Option<&'static str>);

    /// Parameters of the causal-LM head that are its own (none when tied to the embeddings, or
    /// when the family has no LM head).
    fn lm_head_param_names(&self) -> Vec<String> {
        Vec::new()
    }

    // ---- forward ----------------------------------------------------------------------------

    /// Embeddings. ids (B, T) → (B, T, d).
    fn embed(&self, p: &ParamStore, ids: &Tensor, ctx: Ctx) -> Result<Tensor>;

    /// Runs blocks `from..to` (already checked to lie within 0..L) on hidden states `h`
    /// (B, T, d) of `batch`. (B, T, d) → (B, T, d).
    fn run_blocks(
        &self,
        p: &ParamStore,
        h: &Tensor,
        batch: &Batch,
        from: usize,
        to: usize,
        ctx: Ctx,
    ) -> Result<Tensor>;

    /// The final norm, or the identity for a family without one. (B, T, d) → (B, T, d).
    fn final_norm(&self, p: &ParamStore, h: &Tensor, ctx: Ctx) -> Result<Tensor>;

    /// The output of a model with [`Head::None`] from final hidden states `h` (B, T, d):
    /// mean-pooled (B, d) for an encoder, `h` itself for a decoder.
    fn headless_output(&self, h: &Tensor, batch: &Batch) -> Result<Tensor>;

    /// Causal-LM logits from final hidden states. (B, T, d) → (B, T, V). By default an error:
    /// the family has no LM head.
    fn lm_head(&self, p: &ParamStore, h: &Tensor, ctx: Ctx) -> Result<Tensor> {
        let _ = (p, h, ctx);
        Err(ModelError::Invalid(format!(
            "{} models have no causal-LM head",
            self.family()
        )))
    }

    // ---- trainable units --------------------------------------------------------------------

    /// The common prefix of block parameter names, without the block index
    /// (`"encoder.layer."`, `"model.layers."`).
    fn blocks_prefix(&self) -> &'static str;

    /// The prefix of block `i`'s parameter names, with its trailing dot (`"model.layers.3."`).
    fn block_prefix(&self, i: usize) -> String {
        format!("{}{i}.", self.blocks_prefix())
    }

    /// The block index of a parameter name under [`Architecture::blocks_prefix`], if any.
    fn block_of(&self, name: &str) -> Option<usize> {
        name.strip_prefix(self.blocks_prefix())?
            .split('.')
            .next()?
            .parse()
            .ok()
    }

    /// The base parameters of unit `id` (embeddings, a block, the final norm), in a fixed order;
    /// empty for [`UnitId::Head`], whose parameters depend on the head (see
    /// [`Architecture::classifier_param_names`], [`Architecture::lm_head_param_names`]).
    fn unit_param_names(&self, id: UnitId) -> Vec<String>;

    /// The unit parameter `name` belongs to (LoRA factors of a block belong to the block).
    fn unit_of(&self, name: &str) -> Option<UnitId>;

    /// The part of a block (attention, MLP, norms) a base parameter of the block belongs to,
    /// from its name inside the block (`"self_attn.q_proj.weight"`); `None` for a name that is
    /// not one of the family's block parameters.
    fn block_part_of(&self, name_in_block: &str) -> Option<BlockPart>;

    /// The module LoRA adapts in a block for a target among q, k, v, o, gate, up, down
    /// (`"self_attn.q_proj"`), or `None` if the family has no such projection.
    fn lora_module(&self, target: &str) -> Option<&'static str>;

    /// The weight LoRA adapts in block `i` for `target` (`"model.layers.3.self_attn.q_proj.weight"`).
    fn lora_weight_name(&self, i: usize, target: &str) -> Option<String> {
        let module = self.lora_module(target)?;
        Some(format!("{}{module}.weight", self.block_prefix(i)))
    }

    // ---- Hugging Face export ----------------------------------------------------------------

    /// The config as Hugging Face `config.json` JSON (before the head's fields are set).
    fn config_json(&self) -> Result<serde_json::Value>;

    /// The Hugging Face class (`architectures`) of a model of this family with `head`.
    fn hf_architecture(&self, head: &Head) -> &'static str;

    /// The inputs the Hugging Face class takes from its tokenizer (`model_input_names` of
    /// `tokenizer_config.json`).
    fn hf_model_input_names(&self) -> &'static [&'static str] {
        &["input_ids", "attention_mask"]
    }

    /// The module path of parameter `name` in the Hugging Face class saved for `head`, as PEFT
    /// names an adapter's tensors (after `base_model.model.`).
    fn peft_module_name(&self, name: &str, head: &Head) -> String {
        let _ = head;
        name.to_string()
    }
}

/// Serialises a family config as `config.json` JSON, with a clear error.
pub(crate) fn to_json<T: serde::Serialize>(cfg: &T) -> Result<serde_json::Value> {
    serde_json::to_value(cfg).map_err(|e| ModelError::Invalid(format!("serialising config: {e}")))
}
