//! Setting a pretrained model up for a task, in one place: the task head (pooling chosen by
//! architecture) and the trainable set. Training, selection, inspection and the benchmarks all
//! call [`prepare_model`].

use dpselft_model::trainable::{self, TrainableSpec};
use dpselft_model::{Head, Model, Pooling};

use crate::error::{DpError, Result};
use crate::task::Task;

/// Which classification head to train.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadChoice {
    /// A new classifier over these labels (initialised from the init seed). Ignored for `lm`.
    New(Vec<String>),
    /// The head the model already has (a fine-tuned classifier, or the LM head).
    Existing,
}

/// The pooling of a new classification head, the architecture's default
/// ([`Model::default_pooling`]): mean over tokens for encoders, the last token for causal models
/// (the only position that has seen the whole sequence).
pub fn classifier_pooling(model: &Model) -> Pooling {
    model.default_pooling()
}

/// The trainable spec of a block set: the head (classification) and `block.i` per block.
pub fn blocks_spec(blocks: &[usize], task: Task) -> TrainableSpec {
    TrainableSpec::head_and_blocks(task == Task::Classify, blocks)
}

/// The trainable spec of `k` blocks of `num_blocks` drawn at random with `seed` (public
/// randomness, independent of the data), plus the head: the `random-k` baseline.
pub fn random_blocks_spec(k: usize, num_blocks: usize, seed: u64) -> TrainableSpec {
    let blocks = dpselft_data::SeededChoice::new(seed).sorted_choice(k, num_blocks);
    blocks_spec(&blocks, Task::Classify)
}

/// Puts the task head on `model` and makes `trainable` (a spec such as `head,last:2`) its
/// trainable set: for classification a classifier over the labels of `head`
/// ([`classifier_pooling`], initialised from `init_seed`) or the model's own classifier; for
/// language modelling the model's own LM head. `init_seed` also seeds LoRA factors (public
/// randomness; not the noise).
pub fn prepare_model(
    model: &mut Model,
    task: Task,
    head: HeadChoice,
    trainable: &TrainableSpec,
    init_seed: u64,
) -> Result<()> {
    match (task, head) {
        (Task::Classify, HeadChoice::New(labels)) => {
            if labels.is_empty() {
                return Err(DpError::Config(
                    "task classify: the training data have no labels (pass a labelled data \
                     set)"
                        .into(),
                ));
            }
            let pooling = classifier_pooling(model);
            model.set_classifier(labels, pooling, init_seed)?;
        }
        (Task::Classify, HeadChoice::Existing) => {
            if !matches!(model.head, Head::Classifier { .. }) {
                return Err(DpError::Config(
                    "task classify: this model has no classification head to keep".into(),
                ));
            }
        }
        (Task::Lm, _) => {
            if model.head != Head::CausalLm {
                return Err(DpError::Config(
                    "task lm needs a causal LM (its LM head); this model has none".into(),
                ));
            }
        }
    }
    trainable::apply(model, trainable, init_seed)?;
    Ok(())
}
