//! The selection's sub-block round (`sub_blocks`): after the block search, the chosen blocks'
//! attention alone, MLP alone and norms alone, as candidates of their own.

use dpselft_dp::Task;
use dpselft_model::{BlockPart, TrainableSpec};

use super::{CandidateResult, Runner, best, better};
use crate::Progress;
use crate::error::Result;

impl Runner<'_, '_> {
    /// The round after the block search: the attention alone, the MLP alone and the norms alone
    /// of the chosen blocks `current` (as many as the budget leaves), appended to `results`.
    /// Returns the better of `current` and the best of them. Nothing to split when the head
    /// alone was chosen.
    pub(super) fn split_into_parts(
        &mut self,
        results: &mut Vec<CandidateResult>,
        current: CandidateResult,
        progress: &mut dyn Progress,
    ) -> Result<CandidateResult> {
        if current.blocks.is_empty() {
            return Ok(current);
        }
        let left = self
            .config
            .max_candidates
            .map_or(usize::MAX, |b| b.saturating_sub(results.len()));
        let round = results.iter().map(|r| r.round).max().unwrap_or(1) + 1;
        let mut parts = Vec::new();
        for part in BlockPart::ALL.into_iter().take(left) {
            let set = (current.blocks.clone(), Some(part));
            parts.push(self.candidate(set, round, progress)?);
        }
        if parts.is_empty() {
            return Ok(current);
        }
        let top = best(&parts).clone();
        results.extend(parts);
        Ok(if better(&top, &current) { top } else { current })
    }
}

/// The trainable set of a candidate: the head (classification), and the blocks, whole or only
/// `part` of each.
pub(crate) fn candidate_spec(
    blocks: &[usize],
    part: Option<BlockPart>,
    task: Task,
) -> TrainableSpec {
    TrainableSpec::head_and_block_parts(task == Task::Classify, blocks, part)
}
