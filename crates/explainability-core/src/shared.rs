//! Passes that several explainers of one input can share: explaining the same token ids for
//! the same target with saliency and gradient × input needs one forward and backward pass,
//! not two; attention rollout, last-layer attention and flow need one capture; every method
//! needs the target resolved on the clean logits once. A caller explaining one input by
//! several methods ([`Explainer::explain_ids_shared`](crate::Explainer::explain_ids_shared))
//! passes one [`SharedPasses`] to each; a method finds what an earlier one stored, or
//! computes it and stores it for the next.

use std::any::Any;
use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::explanation::Target;
use crate::hooks::Hooks;
use crate::model::{ForwardOptions, LanguageModel};

/// The target resolved on the clean logits (argmax fixed, ids checked) and its value
/// `F(x)`: stored under [`RESOLVED_TARGET`] by the first method that runs the clean forward.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedTarget {
    /// The resolved target (the caller's position kept).
    pub target: Target,
    /// `F(x)` on the clean input.
    pub value: f64,
}

impl ResolvedTarget {
    /// Resolves `target` on one no-grad forward pass of `ids` and evaluates it there.
    ///
    /// # Errors
    /// [`Error::EmptyText`] for no ids; as [`Target::resolve`] and the model's forward pass.
    pub fn of(model: &dyn LanguageModel, ids: &[i64], target: &Target) -> Result<Self> {
        if ids.is_empty() {
            return Err(Error::EmptyText);
        }
        let input = tch::Tensor::f_from_slice(ids)?.f_unsqueeze(0)?.f_to_device(model.device())?;
        let _guard = tch::no_grad_guard();
        let logits =
            model.forward_ids(&input, &ForwardOptions::default(), &mut Hooks::new())?.logits;
        let resolved = target.resolve(&logits)?;
        let value = resolved.evaluate(&logits)?.f_double_value(&[0])?;
        Ok(Self { target: resolved, value })
    }
}

/// Key of the [`ResolvedTarget`] entry.
pub const RESOLVED_TARGET: &str = "explainability_core::resolved_target";

/// Results of passes over one input (token ids) for one target, keyed by name, of any type.
///
/// The input and target are part of the value: [`SharedPasses::get`] and
/// [`SharedPasses::insert`] for other ids or another target find nothing and store nothing,
/// so a pass can never be reused for an input it was not computed on. One `SharedPasses`
/// belongs to one model, which the caller guarantees by scoping it to one call.
pub struct SharedPasses {
    ids: Vec<i64>,
    target: Target,
    entries: HashMap<&'static str, Box<dyn Any>>,
}

impl SharedPasses {
    /// Empty passes for `ids` and `target`.
    pub fn new(ids: &[i64], target: &Target) -> Self {
        Self { ids: ids.to_vec(), target: target.clone(), entries: HashMap::new() }
    }

    /// Whether these passes are about `ids` and `target`.
    pub fn is_for(&self, ids: &[i64], target: &Target) -> bool {
        self.ids == ids && &self.target == target
    }

    /// The entry `key` of type `T` for `ids` and `target`, if one was stored.
    pub fn get<T: 'static>(&self, key: &str, ids: &[i64], target: &Target) -> Option<&T> {
        if !self.is_for(ids, target) {
            return None;
        }
        self.entries.get(key).and_then(|v| v.downcast_ref::<T>())
    }

    /// Stores `value` under `key` when these passes are for `ids` and `target` (returns
    /// whether it was stored); an earlier entry of that key is replaced.
    pub fn insert<T: 'static>(
        &mut self,
        key: &'static str,
        ids: &[i64],
        target: &Target,
        value: T,
    ) -> bool {
        if !self.is_for(ids, target) {
            return false;
        }
        self.entries.insert(key, Box::new(value));
        true
    }

    /// The resolved target, when a pass stored one.
    pub fn resolved_target(&self, ids: &[i64], target: &Target) -> Option<&ResolvedTarget> {
        self.get(RESOLVED_TARGET, ids, target)
    }

    /// The resolved target a pass stored, or [`ResolvedTarget::of`] computed now (and stored
    /// when these passes are for `ids` and `target`).
    ///
    /// # Errors
    /// As [`ResolvedTarget::of`].
    pub fn resolve(
        &mut self,
        model: &dyn LanguageModel,
        ids: &[i64],
        target: &Target,
    ) -> Result<ResolvedTarget> {
        if let Some(r) = self.resolved_target(ids, target) {
            return Ok(r.clone());
        }
        let r = ResolvedTarget::of(model, ids, target)?;
        self.insert(RESOLVED_TARGET, ids, target, r.clone());
        Ok(r)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl std::fmt::Debug for SharedPasses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut keys: Vec<&&str> = self.entries.keys().collect();
        keys.sort();
        f.debug_struct("SharedPasses")
            .field("tokens", &self.ids.len())
            .field("target", &self.target)
            .field("entries", &keys)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_belong_to_their_input_and_target() {
        let t = Target::argmax();
        let mut shared = SharedPasses::new(&[1, 2, 3], &t);
        assert!(shared.is_empty());
        assert!(shared.insert("k", &[1, 2, 3], &t, 7u32));
        assert_eq!(shared.get::<u32>("k", &[1, 2, 3], &t), Some(&7));
        // Another type, input or target finds nothing; nothing is stored for another input.
        assert_eq!(shared.get::<u64>("k", &[1, 2, 3], &t), None);
        assert_eq!(shared.get::<u32>("k", &[1, 2], &t), None);
        let other = Target::log_prob(5);
        assert_eq!(shared.get::<u32>("k", &[1, 2, 3], &other), None);
        assert!(!shared.insert("k", &[9], &t, 1u32));
        assert_eq!(shared.len(), 1);
        assert!(shared.resolved_target(&[1, 2, 3], &t).is_none());
        assert!(format!("{shared:?}").contains("\"k\""));
    }
}
