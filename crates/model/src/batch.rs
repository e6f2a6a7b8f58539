//! Batches of token ids padded per batch (never to a fixed length).

use candle_core::{Device, Tensor};

use crate::error::{ModelError, Result};

/// A padded batch: ids (B, T) u32 and the 0/1 attention mask (B, T) u32.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Token ids, padding filled with the pad id.
    pub ids: Tensor,
    /// 1 for real tokens, 0 for padding.
    pub attn: Tensor,
    /// Real length of each row.
    pub lengths: Vec<usize>,
    /// Whether padding is on the left (generation) or right (training).
    pub left_padded: bool,
}

impl Batch {
    /// Pads `seqs` to the longest one with `pad_id`, on the right (or left if `left_pad`).
    pub fn from_ids(seqs: &[Vec<u32>], pad_id: u32, left_pad: bool, dev: &Device) -> Result<Self> {
        if seqs.is_empty() {
            return Err(ModelError::Invalid("empty batch".into()));
        }
        let t = seqs.iter().map(Vec::len).max().unwrap_or(0);
        if t == 0 {
            return Err(ModelError::Invalid(
                "every sequence of the batch is empty".into(),
            ));
        }
        let b = seqs.len();
        let mut ids = Vec::with_capacity(b * t);
        let mut attn = Vec::with_capacity(b * t);
        for s in seqs {
            let pad = t - s.len();
            if left_pad {
                ids.extend(std::iter::repeat_n(pad_id, pad));
                attn.extend(std::iter::repeat_n(0u32, pad));
            }
            ids.extend_from_slice(s);
            attn.extend(std::iter::repeat_n(1u32, s.len()));
            if !left_pad {
                ids.extend(std::iter::repeat_n(pad_id, pad));
                attn.extend(std::iter::repeat_n(0u32, pad));
            }
        }
        Ok(Self {
            ids: Tensor::from_vec(ids, (b, t), dev)?,
            attn: Tensor::from_vec(attn, (b, t), dev)?,
            lengths: seqs.iter().map(Vec::len).collect(),
            left_padded: left_pad,
        })
    }

    /// Number of rows B.
    pub fn size(&self) -> usize {
        self.lengths.len()
    }

    /// Index of the last real token of each row.
    pub fn last_positions(&self) -> Vec<usize> {
        let t = self.ids.dims().get(1).copied().unwrap_or(0);
        self.lengths
            .iter()
            .map(|&l| {
                if self.left_padded {
                    t - 1
                } else {
                    l.saturating_sub(1)
                }
            })
            .collect()
    }
}
