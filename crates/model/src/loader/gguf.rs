//! GGUF files (llama.cpp): Llama-architecture weights dequantized to f32 and renamed to the
//! Hugging Face layout, the q/k row permutation undone so that the non-interleaved (Hugging Face)
//! RoPE applies, and the config rebuilt from the metadata.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};

use super::Weights;
use crate::config::{LlamaConfig, ModelConfig};
use crate::error::{ModelError, Result};
use crate::tokenizer::gguf_special_tokens;

fn md_err(path: &Path, key: &str, what: &str) -> ModelError {
    ModelError::GgufMetadata {
        path: path.to_path_buf(),
        key: key.to_string(),
        what: what.to_string(),
    }
}

fn md_usize(md: &HashMap<String, gguf_file::Value>, path: &Path, key: &str) -> Result<usize> {
    let v = md.get(key).ok_or_else(|| md_err(path, key, "missing"))?;
    v.to_u32()
        .map(|x| x as usize)
        .or_else(|_| v.to_u64().map(|x| x as usize))
        .map_err(|_| md_err(path, key, "expected an unsigned integer"))
}

fn md_f64(md: &HashMap<String, gguf_file::Value>, key: &str) -> Option<f64> {
    md.get(key).and_then(|v| v.to_f32().ok().map(f64::from))
}

/// Builds the Hugging Face Llama config from GGUF metadata (`llama.*` keys).
pub fn llama_config_from_gguf(
    md: &HashMap<String, gguf_file::Value>,
    path: &Path,
    has_output_weight: bool,
) -> Result<LlamaConfig> {
    let arch = md
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    if arch != "llama" {
        return Err(ModelError::UnknownArchitecture {
            path: path.to_path_buf(),
            arch,
        });
    }
    let hidden = md_usize(md, path, "llama.embedding_length")?;
    let heads = md_usize(md, path, "llama.attention.head_count")?;
    let kv = md_usize(md, path, "llama.attention.head_count_kv").unwrap_or(heads);
    let vocab = match md_usize(md, path, "llama.vocab_size") {
        Ok(v) => v,
        Err(_) => md
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.to_vec().ok())
            .map(|v| v.len())
            .ok_or_else(|| md_err(path, "llama.vocab_size", "missing (and no token list)"))?,
    };
    let rope_dim = md_usize(md, path, "llama.rope.dimension_count").unwrap_or(hidden / heads);
    let special = gguf_special_tokens(md);
    let cfg = LlamaConfig {
        architectures: vec!["LlamaForCausalLM".into()],
        model_type: "llama".into(),
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: md_usize(md, path, "llama.feed_forward_length")?,
        num_hidden_layers: md_usize(md, path, "llama.block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: Some(kv),
        head_dim: Some(rope_dim),
        rms_norm_eps: md_f64(md, "llama.attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
        rope_theta: md_f64(md, "llama.rope.freq_base").unwrap_or(10000.0),
        max_position_embeddings: md_usize(md, path, "llama.context_length").unwrap_or(2048),
        tie_word_embeddings: !has_output_weight,
        bos_token_id: special.bos,
        eos_token_id: special.eos,
        pad_token_id: special.pad,
        hidden_act: "silu".into(),
        id2label: None,
    };
    cfg.validate()?;
    Ok(cfg)
}

/// Undoes llama.cpp's q/k row permutation (`w.reshape(h, 2, hd/2, in).swap(1, 2)`), giving the
/// Hugging Face row order used with the non-interleaved (rotate-half) RoPE.
///
/// `w`: (n_head·head_dim) × d_in, rows ordered (head, pair index, member) as in GGUF.
pub fn unpermute_qk(w: &Tensor, n_head: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let hd = rows / n_head;
    // GGUF rows: [head][i in 0..hd/2][two] -> HF rows: [head][two][i].
    let t = w
        .reshape((n_head, hd / 2, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))?;
    Ok(t)
}

/// Maps a GGUF tensor name to its Hugging Face Llama name, if it is one we know.
pub fn hf_name(gguf: &str) -> Option<String> {
    match gguf {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (idx, tail) = rest.split_once('.')?;
    let idx: usize = idx.parse().ok()?;
    let hf_tail = match tail {
        "attn_norm.weight" => "input_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        _ => return None,
    };
    Some(format!("model.layers.{idx}.{hf_tail}"))
}

/// Loads a Llama GGUF file: config from metadata, every tensor dequantized to f32 on `device`
/// under its Hugging Face name, q/k un-permuted. Tied embeddings: when the file has no
/// `output.weight`, the config says `tie_word_embeddings = true` and no `lm_head.weight` exists.
pub fn load_gguf(
    path: &Path,
    device: &Device,
) -> Result<(ModelConfig, Weights, gguf_file::Content)> {
    let mut f = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let content = gguf_file::Content::read(&mut f).map_err(|e| {
        ModelError::Invalid(format!("{}: not a readable GGUF file: {e}", path.display()))
    })?;
    let has_output = content.tensor_infos.contains_key("output.weight");
    let cfg = llama_config_from_gguf(&content.metadata, path, has_output)?;
    let mut tensors = BTreeMap::new();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let Some(hf) = hf_name(name) else { continue };
        let q = content.tensor(&mut f, name, device).map_err(|e| {
            ModelError::Invalid(format!("{}: tensor `{name}`: {e}", path.display()))
        })?;
        let mut t = q.dequantize(device)?;
        if name.ends_with("attn_q.weight") {
            t = unpermute_qk(&t, cfg.num_attention_heads)?;
        } else if name.ends_with("attn_k.weight") {
            t = unpermute_qk(&t, cfg.kv_heads())?;
        }
        tensors.insert(hf, t);
    }
    Ok((
        ModelConfig::Llama(cfg),
        Weights::new(tensors, path),
        content,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permute() -> Result<()> {
        // HF rows for 2 heads of dim 4, 1 column: values = row index.
        let hf = Tensor::arange(0f32, 8., &Device::Cpu)?.reshape((8, 1))?;
        // llama.cpp: reshape(h, 2, hd/2, in).swapaxes(1, 2)
        let gguf = hf
            .reshape((2, 2, 2, 1))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((8, 1))?;
        let back = unpermute_qk(&gguf, 2)?;
        assert_eq!(
            back.flatten_all()?.to_vec1::<f32>()?,
            hf.flatten_all()?.to_vec1::<f32>()?
        );
        Ok(())
    }

    #[test]
    fn names_map() {
        assert_eq!(
            hf_name("blk.3.attn_q.weight").as_deref(),
            Some("model.layers.3.self_attn.q_proj.weight")
        );
        assert_eq!(hf_name("rope_freqs.weight"), None);
    }
}
