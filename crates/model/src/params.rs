//! The parameter store: every weight of a model by its Hugging Face name, frozen (plain
//! tensor) or trainable (a candle `Var`).

use std::collections::BTreeMap;

use candle_core::{Tensor, Var};

use crate::error::{ModelError, Result};

/// Weights by Hugging Face name. Trainable ones are backed by a [`Var`]: autograd tracks them
/// and an optimizer updates them in place with [`Var::set`].
#[derive(Debug, Clone, Default)]
pub struct ParamStore {
    tensors: BTreeMap<String, Tensor>,
    vars: BTreeMap<String, Var>,
    /// LoRA scale α/r applied to every `…lora_B` product (when LoRA factors exist).
    pub lora_scale: f64,
}

impl ParamStore {
    /// A store of frozen tensors.
    pub fn new(tensors: BTreeMap<String, Tensor>) -> Self {
        Self {
            tensors,
            vars: BTreeMap::new(),
            lora_scale: 1.0,
        }
    }

    /// The tensor `name` (a `Var`'s tensor if trainable).
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| ModelError::Invalid(format!("model has no parameter `{name}`")))
    }

    /// Whether parameter `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Inserts or replaces a (frozen) tensor.
    pub fn insert(&mut self, name: impl Into<String>, t: Tensor) {
        let name = name.into();
        self.vars.remove(&name);
        self.tensors.insert(name, t);
    }

    /// All parameters, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Tensor)> {
        self.tensors.iter()
    }

    /// Names of all parameters.
    pub fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    /// The trainable variables, by name.
    pub fn vars(&self) -> &BTreeMap<String, Var> {
        &self.vars
    }

    /// Makes exactly the named parameters trainable (all others frozen). Values are kept.
    pub fn set_trainable<S: AsRef<str>>(&mut self, names: &[S]) -> Result<()> {
        for n in names {
            if !self.tensors.contains_key(n.as_ref()) {
                return Err(ModelError::Invalid(format!(
                    "cannot train `{}`: no such parameter",
                    n.as_ref()
                )));
            }
        }
        let vars = std::mem::take(&mut self.vars);
        for (name, v) in vars {
            self.tensors.insert(name, v.as_tensor().detach());
        }
        for n in names {
            let n = n.as_ref();
            let t = self.get(n)?.detach();
            let v = Var::from_tensor(&t)?;
            self.tensors.insert(n.to_string(), v.as_tensor().clone());
            self.vars.insert(n.to_string(), v);
        }
        Ok(())
    }

    /// The LoRA factor names (A, B) of weight `w` (`x.weight` → `x.lora_A.weight`,
    /// `x.lora_B.weight`, the PEFT naming) if the model has them.
    pub fn lora_of(&self, w: &str) -> Option<(String, String)> {
        let base = w.strip_suffix(".weight")?;
        let a = format!("{base}.lora_A.weight");
        let b = format!("{base}.lora_B.weight");
        (self.tensors.contains_key(&a) && self.tensors.contains_key(&b)).then_some((a, b))
    }

    /// Total number of scalars in the named parameters.
    pub fn count<S: AsRef<str>>(&self, names: &[S]) -> usize {
        names
            .iter()
            .filter_map(|n| self.tensors.get(n.as_ref()))
            .map(|t| t.elem_count())
            .sum()
    }
}
