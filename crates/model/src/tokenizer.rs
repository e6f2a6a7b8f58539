//! Tokenizers: the SmolLM2 byte-level BPE rebuilt from GGUF metadata, and Hugging Face
//! `tokenizer.json` files loaded with padding and truncation turned off (we pad per batch).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer};

use crate::error::{ModelError, Result};

/// GGUF token type of a control (special) token, e.g. `<|im_start|>`.
const GGUF_TOKEN_CONTROL: i32 = 3;
/// GGUF token type of a user-defined added token.
const GGUF_TOKEN_USER_DEFINED: i32 = 4;

/// The special-token ids a model declares (GGUF metadata or HF config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpecialTokens {
    /// Beginning-of-sequence id.
    pub bos: Option<u32>,
    /// End-of-sequence id (generation stops there).
    pub eos: Option<u32>,
    /// Padding id (used to fill short rows of a batch; masked out anyway).
    pub pad: Option<u32>,
}

fn md_err(path: &Path, key: &str, what: &str) -> ModelError {
    ModelError::GgufMetadata {
        path: path.to_path_buf(),
        key: key.to_string(),
        what: what.to_string(),
    }
}

fn md_array<'a>(
    md: &'a HashMap<String, gguf_file::Value>,
    path: &Path,
    key: &str,
) -> Result<&'a Vec<gguf_file::Value>> {
    md.get(key)
        .ok_or_else(|| md_err(path, key, "missing"))?
        .to_vec()
        .map_err(|_| md_err(path, key, "expected an array"))
}

fn md_u32(md: &HashMap<String, gguf_file::Value>, key: &str) -> Option<u32> {
    md.get(key).and_then(|v| v.to_u32().ok())
}

/// Reads the special-token ids (`tokenizer.ggml.{bos,eos,padding}_token_id`) of a GGUF file.
pub fn gguf_special_tokens(md: &HashMap<String, gguf_file::Value>) -> SpecialTokens {
    SpecialTokens {
        bos: md_u32(md, "tokenizer.ggml.bos_token_id"),
        eos: md_u32(md, "tokenizer.ggml.eos_token_id"),
        pad: md_u32(md, "tokenizer.ggml.padding_token_id"),
    }
}

/// Builds a byte-level BPE tokenizer (GPT-2 style, as SmolLM2 and most GGUF `gpt2` vocabularies
/// use) from GGUF metadata: `tokenizer.ggml.tokens`, `.merges`, `.token_type`.
///
/// Pre-tokenization: digits split one by one, then the byte-level regex split (the `smollm`
/// pre-tokenizer of llama.cpp). No BOS/EOS is added on encoding. Control tokens become special
/// added tokens, user-defined ones plain added tokens. `path` is used in error messages only.
pub fn tokenizer_from_gguf_metadata(
    md: &HashMap<String, gguf_file::Value>,
    path: &Path,
) -> Result<Tokenizer> {
    let model = md
        .get("tokenizer.ggml.model")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    if model != "gpt2" {
        return Err(md_err(
            path,
            "tokenizer.ggml.model",
            &format!("`{model}` is not supported (only byte-level BPE `gpt2`)"),
        ));
    }
    let tokens = md_array(md, path, "tokenizer.ggml.tokens")?;
    let merges = md_array(md, path, "tokenizer.ggml.merges")?;
    let types: Vec<i32> = match md.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()
            .map_err(|_| md_err(path, "tokenizer.ggml.token_type", "expected an array"))?
            .iter()
            .map(|t| t.to_i32().unwrap_or(1))
            .collect(),
        None => vec![1; tokens.len()],
    };
    let mut vocab = tokenizers::models::bpe::Vocab::default();
    let mut token_strings = Vec::with_capacity(tokens.len());
    for (id, t) in tokens.iter().enumerate() {
        let s = t
            .to_string()
            .map_err(|_| md_err(path, "tokenizer.ggml.tokens", "expected strings"))?;
        vocab.insert(s.clone(), id as u32);
        token_strings.push(s.clone());
    }
    let mut merge_pairs = Vec::with_capacity(merges.len());
    for (i, m) in merges.iter().enumerate() {
        let s = m
            .to_string()
            .map_err(|_| md_err(path, "tokenizer.ggml.merges", "expected strings"))?;
        let (a, b) = s.split_once(' ').ok_or_else(|| {
            md_err(
                path,
                "tokenizer.ggml.merges",
                &format!("merge {i} `{s}` is not two tokens separated by a space"),
            )
        })?;
        merge_pairs.push((a.to_string(), b.to_string()));
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merge_pairs)
        .build()
        .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))?;
    let mut tok = Tokenizer::new(bpe);
    let pre = Sequence::new(vec![
        PreTokenizerWrapper::Digits(Digits::new(true)),
        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
    ]);
    tok.with_pre_tokenizer(Some(pre));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    let mut special = Vec::new();
    let mut plain = Vec::new();
    for (s, ty) in token_strings.iter().zip(types.iter()) {
        match *ty {
            GGUF_TOKEN_CONTROL => special.push(AddedToken::from(s.clone(), true)),
            GGUF_TOKEN_USER_DEFINED => plain.push(AddedToken::from(s.clone(), false)),
            _ => {}
        }
    }
    let tok_err = |e: tokenizers::Error| ModelError::Tokenizer(format!("{}: {e}", path.display()));
    tok.add_special_tokens(special).map_err(tok_err)?;
    tok.add_tokens(plain).map_err(tok_err)?;
    Ok(tok)
}

/// Reads the metadata of a GGUF file (not its tensors).
pub fn read_gguf_content(gguf_path: &Path) -> Result<gguf_file::Content> {
    let mut f = std::fs::File::open(gguf_path).map_err(|e| ModelError::io(gguf_path, e))?;
    gguf_file::Content::read(&mut f).map_err(|e| {
        ModelError::Invalid(format!(
            "{}: not a readable GGUF file: {e}",
            gguf_path.display()
        ))
    })
}

/// Builds the tokenizer stored in a GGUF file's metadata (see [`tokenizer_from_gguf_metadata`]).
pub fn load_gguf_tokenizer(gguf_path: &Path) -> Result<Tokenizer> {
    let content = read_gguf_content(gguf_path)?;
    tokenizer_from_gguf_metadata(&content.metadata, gguf_path)
}

/// Derives a Hugging Face `tokenizer.json` from a GGUF file's metadata and writes it to
/// `out_path` atomically (a temporary file in the same folder, then a rename).
pub fn write_gguf_tokenizer_json(gguf_path: &Path, out_path: &Path) -> Result<()> {
    let tok = load_gguf_tokenizer(gguf_path)?;
    save_tokenizer_json(&tok, out_path)
}

/// [`write_gguf_tokenizer_json`] with the error as a message: the GGUF hook that the assets
/// crate's `loader_files` takes (it derives SmolLM2's `tokenizer.json` after unpacking).
pub fn derive_gguf_tokenizer(gguf_path: &Path, out_path: &Path) -> std::result::Result<(), String> {
    write_gguf_tokenizer_json(gguf_path, out_path).map_err(|e| e.to_string())
}

/// Writes a tokenizer as `tokenizer.json` atomically (temporary file + rename).
pub fn save_tokenizer_json(tok: &Tokenizer, out_path: &Path) -> Result<()> {
    let json = tok
        .to_string(false)
        .map_err(|e| ModelError::Tokenizer(format!("serialising tokenizer: {e}")))?;
    crate::save::write_atomic(out_path, json.as_bytes())
}

/// The `tokenizer_config.json` that makes `transformers`' `AutoTokenizer` load our
/// `tokenizer.json` as it is (`PreTrainedTokenizerFast`: the file's own normalizer, template
/// and special tokens, nothing added by a model-specific class) with the padding, BOS and EOS
/// tokens of `special`, giving the model the inputs it takes (`model_input_names`).
pub fn hf_tokenizer_config(
    tok: &Tokenizer,
    special: &SpecialTokens,
    max_positions: usize,
    model_input_names: &[&str],
) -> serde_json::Value {
    let mut v = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_positions,
        "model_input_names": model_input_names,
        "clean_up_tokenization_spaces": false,
    });
    for (key, id) in [
        ("pad_token", special.pad),
        ("bos_token", special.bos),
        ("eos_token", special.eos),
    ] {
        if let Some(token) = id.and_then(|id| tok.id_to_token(id)) {
            v[key] = serde_json::json!(token);
        }
    }
    v
}

/// Loads a Hugging Face `tokenizer.json` with padding and truncation turned off (batches are
/// padded per batch by the caller, never to a fixed length).
pub fn load_tokenizer_json(path: &Path) -> Result<Tokenizer> {
    let mut tok = Tokenizer::from_file(path)
        .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))?;
    tok.with_padding(None);
    tok.with_truncation(None)
        .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))?;
    Ok(tok)
}

/// Encodes `text` to ids, with or without the tokenizer's special tokens (`[CLS]`/`[SEP]` for
/// BERT; nothing for SmolLM2 either way).
pub fn encode(tok: &Tokenizer, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
    let enc = tok
        .encode(text, add_special_tokens)
        .map_err(|e| ModelError::Tokenizer(format!("encoding {text:?}: {e}")))?;
    Ok(enc.get_ids().to_vec())
}

/// Decodes ids to text, skipping special tokens if asked.
pub fn decode(tok: &Tokenizer, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
    tok.decode(ids, skip_special_tokens)
        .map_err(|e| ModelError::Tokenizer(format!("decoding: {e}")))
}

/// Where a model's tokenizer lives: next to the weights as `tokenizer.json`, or in a GGUF file.
pub fn tokenizer_path_for(model_dir: &Path) -> PathBuf {
    model_dir.join("tokenizer.json")
}
