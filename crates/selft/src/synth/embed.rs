//! Text embeddings in the target encoder's space, and nearest neighbours among them: what
//! Private Evolution's vote measures distance with.

use candle_core::D;
use dpselft_data::Dataset;
use dpselft_dp::{EncodedSet, Task, split_by_tokens};
use dpselft_model::heads::pool;
use dpselft_model::{Ctx, Model, Pooling};

use crate::Progress;
use crate::error::Result;

/// Unit-normalised mean-pooled final hidden states of every example of `data` (labelled) under
/// `model`, each cut to `max_seq_len` tokens; one row per example.
pub fn embed(
    model: &Model,
    data: &Dataset,
    max_seq_len: usize,
    progress: &mut dyn Progress,
) -> Result<Vec<Vec<f32>>> {
    let set = EncodedSet::new(model, data, Task::Classify, max_seq_len)?;
    let all: Vec<usize> = (0..set.len()).collect();
    let mut out = Vec::with_capacity(set.len());
    for mb in split_by_tokens(&all, &set.lengths, 4096)? {
        let (batch, _) = set.batch(model, &mb)?;
        let h = model.hidden_states(&batch, Ctx::plain())?;
        let pooled = pool(&h, &batch, Pooling::Mean)?;
        let norms = pooled.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
        let unit = pooled.broadcast_div(&(norms + 1e-12)?)?;
        out.extend(unit.to_vec2::<f32>()?);
        progress.advance(mb.len() as u64);
    }
    Ok(out)
}

/// The index in `among` of the row of `rows` nearest to `query` (largest dot product: the rows
/// are unit vectors), or `None` if `among` is empty. Ties go to the first.
pub fn nearest(query: &[f32], rows: &[Vec<f32>], among: &[usize]) -> Option<usize> {
    let dot = |r: &[f32]| -> f32 { r.iter().zip(query).map(|(a, b)| a * b).sum() };
    let mut best: Option<(usize, f32)> = None;
    for &j in among {
        let d = dot(&rows[j]);
        if best.is_none_or(|(_, b)| d > b) {
            best = Some((j, d));
        }
    }
    best.map(|(j, _)| j)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_is_the_largest_cosine_among_the_allowed_rows() {
        let rows = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![0.6, 0.8]];
        // Cosines with [0.8, 0.6]: 0.8, 0.6, 0.96.
        assert_eq!(nearest(&[0.8, 0.6], &rows, &[0, 1, 2]), Some(2));
        assert_eq!(nearest(&[0.8, 0.6], &rows, &[0, 1]), Some(0));
        assert_eq!(nearest(&[0.8, 0.6], &rows, &[1]), Some(1));
        assert_eq!(nearest(&[0.8, 0.6], &rows, &[]), None);
    }
}
