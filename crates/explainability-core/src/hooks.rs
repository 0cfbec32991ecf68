//! Hooks that read or replace activations during a forward pass, and the activation cache.
//!
//! A [`Hooks`] value is a list of entries, each a [`HookFilter`] (which sites) and an action:
//! read the activation, replace it, or store it in the [`ActivationCache`]. The model calls
//! [`Hooks::fire`] at every site; entries run in the order they were added, each seeing the
//! activation as left by the previous one. With no entries, firing costs one branch.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use tch::Tensor;

use crate::error::{Error, Result};
use crate::hook_point::{HookKind, HookPoint};

type Predicate = dyn Fn(&HookPoint) -> bool + Send + Sync;

/// Selects hook points. Cheap to clone.
///
/// # Examples
/// ```
/// use explainability_core::{HookFilter, HookKind, HookPoint};
/// let f = HookFilter::kind(HookKind::Pattern).and(HookFilter::layers(0..2));
/// assert!(f.matches(&HookPoint::pattern(1)));
/// assert!(!f.matches(&HookPoint::pattern(2)));
/// assert!(!f.matches(&HookPoint::z(1)));
/// ```
#[derive(Clone)]
pub struct HookFilter {
    predicate: Arc<Predicate>,
    description: String,
}

impl HookFilter {
    /// A filter from any predicate; `description` is shown by `Debug`.
    pub fn predicate(
        description: impl Into<String>,
        f: impl Fn(&HookPoint) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self { predicate: Arc::new(f), description: description.into() }
    }
    /// Every hook point.
    pub fn all() -> Self {
        Self::predicate("all", |_| true)
    }
    /// No hook point.
    pub fn none() -> Self {
        Self::predicate("none", |_| false)
    }
    /// Exactly one hook point.
    pub fn point(point: HookPoint) -> Self {
        Self::predicate(point.to_string(), move |p| *p == point)
    }
    /// A set of hook points.
    pub fn points(points: impl IntoIterator<Item = HookPoint>) -> Self {
        let points: Vec<HookPoint> = points.into_iter().collect();
        let description = points.iter().map(ToString::to_string).collect::<Vec<_>>().join(" | ");
        Self::predicate(description, move |p| points.contains(p))
    }
    /// Every hook point of one kind (all layers).
    pub fn kind(kind: HookKind) -> Self {
        Self::predicate(format!("{kind:?}"), move |p| p.kind() == kind)
    }
    /// Every hook point whose layer lies in `layers` (`hook_embed`/`ln_final` never match).
    pub fn layers(layers: std::ops::Range<usize>) -> Self {
        let description = format!("layers {layers:?}");
        Self::predicate(description, move |p| p.layer().is_some_and(|l| layers.contains(&l)))
    }
    /// Hook points matched by both filters.
    pub fn and(self, other: HookFilter) -> Self {
        let description = format!("({:?}) & ({:?})", self, other);
        Self::predicate(description, move |p| self.matches(p) && other.matches(p))
    }
    /// Hook points matched by either filter.
    pub fn or(self, other: HookFilter) -> Self {
        let description = format!("({:?}) | ({:?})", self, other);
        Self::predicate(description, move |p| self.matches(p) || other.matches(p))
    }
    /// Whether `point` is selected.
    pub fn matches(&self, point: &HookPoint) -> bool {
        (self.predicate)(point)
    }
}

impl fmt::Debug for HookFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description)
    }
}

/// Closure type of a reading hook.
pub type ReadFn<'a> = Box<dyn FnMut(&HookPoint, &Tensor) -> Result<()> + 'a>;
/// Closure type of a replacing hook: returns the tensor that takes the activation's place.
pub type ReplaceFn<'a> = Box<dyn FnMut(&HookPoint, &Tensor) -> Result<Tensor> + 'a>;

enum HookAction<'a> {
    Read(ReadFn<'a>),
    Replace(ReplaceFn<'a>),
    Cache { detach: bool },
}

struct HookEntry<'a> {
    filter: HookFilter,
    action: HookAction<'a>,
}

/// The hooks of one forward pass.
///
/// Closures may borrow from the caller for `'a`, so results can be written straight into
/// local variables.
///
/// # Examples
/// ```
/// use explainability_core::{HookFilter, HookKind, HookPoint, Hooks};
/// use tch::Tensor;
/// let mut seen = Vec::new();
/// {
///     let mut hooks = Hooks::new();
///     hooks.read(HookFilter::kind(HookKind::ResidPost), |p, _t| {
///         seen.push(*p);
///         Ok(())
///     });
///     hooks.replace(HookFilter::point(HookPoint::resid_post(0)), |_, t| Ok(t.zeros_like()));
///     let out = hooks.fire(HookPoint::resid_post(0), Tensor::ones([2], (tch::Kind::Float, tch::Device::Cpu))).unwrap();
///     assert_eq!(out.sum(tch::Kind::Float).double_value(&[]), 0.0);
/// }
/// assert_eq!(seen, vec![HookPoint::resid_post(0)]);
/// ```
#[derive(Default)]
pub struct Hooks<'a> {
    entries: Vec<HookEntry<'a>>,
    cache: ActivationCache,
}

impl<'a> Hooks<'a> {
    /// No hooks: the forward pass runs untouched (and may take fused kernels).
    pub fn new() -> Self {
        Self { entries: Vec::new(), cache: ActivationCache::default() }
    }

    /// Hooks that only store the selected activations in the cache.
    pub fn caching(filter: HookFilter) -> Self {
        let mut hooks = Self::new();
        hooks.cache(filter);
        hooks
    }

    /// Adds a hook that reads the selected activations.
    pub fn read(
        &mut self,
        filter: HookFilter,
        f: impl FnMut(&HookPoint, &Tensor) -> Result<()> + 'a,
    ) -> &mut Self {
        self.entries.push(HookEntry { filter, action: HookAction::Read(Box::new(f)) });
        self
    }

    /// Adds a hook that replaces the selected activations by what `f` returns (same shape).
    pub fn replace(
        &mut self,
        filter: HookFilter,
        f: impl FnMut(&HookPoint, &Tensor) -> Result<Tensor> + 'a,
    ) -> &mut Self {
        self.entries.push(HookEntry { filter, action: HookAction::Replace(Box::new(f)) });
        self
    }

    /// Stores the selected activations in the cache as they are (still attached to the
    /// autograd graph when the forward pass records one).
    pub fn cache(&mut self, filter: HookFilter) -> &mut Self {
        self.entries.push(HookEntry { filter, action: HookAction::Cache { detach: false } });
        self
    }

    /// Stores detached copies of the selected activations in the cache.
    pub fn cache_detached(&mut self, filter: HookFilter) -> &mut Self {
        self.entries.push(HookEntry { filter, action: HookAction::Cache { detach: true } });
        self
    }

    /// Whether any entry selects `point`. Models use this to skip work (and to take the
    /// explicit attention path whenever scores or patterns are wanted).
    pub fn wants(&self, point: &HookPoint) -> bool {
        self.entries.iter().any(|e| e.filter.matches(point))
    }

    /// Whether no entries exist.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Runs every entry selecting `point` on `activation`, in insertion order, and returns the
    /// activation the forward pass continues with.
    ///
    /// # Errors
    /// Whatever a hook returns, and [`Error::HookShapeMismatch`] when a replacement changes
    /// the shape.
    pub fn fire(&mut self, point: HookPoint, activation: Tensor) -> Result<Tensor> {
        if self.entries.is_empty() {
            return Ok(activation);
        }
        let mut activation = activation;
        for entry in &mut self.entries {
            if !entry.filter.matches(&point) {
                continue;
            }
            match &mut entry.action {
                HookAction::Read(f) => f(&point, &activation)?,
                HookAction::Replace(f) => {
                    let replacement = f(&point, &activation)?;
                    if replacement.size() != activation.size() {
                        return Err(Error::HookShapeMismatch {
                            point: point.to_string(),
                            expected: activation.size(),
                            actual: replacement.size(),
                        });
                    }
                    activation = replacement;
                }
                HookAction::Cache { detach } => {
                    let stored =
                        if *detach { activation.detach() } else { activation.shallow_clone() };
                    self.cache.insert(point, stored);
                }
            }
        }
        Ok(activation)
    }

    /// The activations cached so far.
    pub fn cached(&self) -> &ActivationCache {
        &self.cache
    }

    /// Takes the cache out, leaving an empty one.
    pub fn take_cache(&mut self) -> ActivationCache {
        std::mem::take(&mut self.cache)
    }
}

impl fmt::Debug for Hooks<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let filters: Vec<String> = self
            .entries
            .iter()
            .map(|e| {
                let action = match e.action {
                    HookAction::Read(_) => "read",
                    HookAction::Replace(_) => "replace",
                    HookAction::Cache { .. } => "cache",
                };
                format!("{action} {:?}", e.filter)
            })
            .collect();
        f.debug_struct("Hooks").field("entries", &filters).field("cached", &self.cache).finish()
    }
}

/// Activations stored by hook point, ordered as the forward pass fires them.
#[derive(Default)]
pub struct ActivationCache {
    activations: BTreeMap<HookPoint, Tensor>,
}

impl ActivationCache {
    /// Stores (or overwrites) an activation.
    pub fn insert(&mut self, point: HookPoint, activation: Tensor) {
        self.activations.insert(point, activation);
    }
    /// The activation at `point`, if captured.
    pub fn get(&self, point: &HookPoint) -> Option<&Tensor> {
        self.activations.get(point)
    }
    /// The activation at `point`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the point when it was not captured.
    pub fn require(&self, point: &HookPoint) -> Result<&Tensor> {
        self.get(point).ok_or_else(|| {
            Error::invalid_argument(format!(
                "activation {point} was not captured (add it to the cache filter)"
            ))
        })
    }
    /// Removes and returns the activation at `point`.
    pub fn remove(&mut self, point: &HookPoint) -> Option<Tensor> {
        self.activations.remove(point)
    }
    /// Captured points and activations in forward order.
    pub fn iter(&self) -> impl Iterator<Item = (&HookPoint, &Tensor)> {
        self.activations.iter()
    }
    /// Captured points in forward order.
    pub fn points(&self) -> impl Iterator<Item = &HookPoint> {
        self.activations.keys()
    }
    /// Number of captured activations.
    pub fn len(&self) -> usize {
        self.activations.len()
    }
    /// Whether nothing was captured.
    pub fn is_empty(&self) -> bool {
        self.activations.is_empty()
    }
    /// The captured activations of one kind, by layer (`None` where a layer is missing).
    pub fn by_layer(&self, kind: HookKind, n_layers: usize) -> Vec<Option<&Tensor>> {
        (0..n_layers).map(|l| self.get(&HookPoint::new(kind, l))).collect()
    }
}

impl fmt::Debug for ActivationCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.activations.iter().map(|(p, t)| (p.to_string(), t.size())))
            .finish()
    }
}

impl IntoIterator for ActivationCache {
    type Item = (HookPoint, Tensor);
    type IntoIter = std::collections::btree_map::IntoIter<HookPoint, Tensor>;
    fn into_iter(self) -> Self::IntoIter {
        self.activations.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn ones(n: i64) -> Tensor {
        Tensor::ones([n], (Kind::Float, Device::Cpu))
    }

    #[test]
    fn entries_run_in_order_and_see_replacements() {
        let mut log = Vec::new();
        let mut hooks = Hooks::new();
        hooks
            .read(HookFilter::all(), |_, t| {
                log.push(t.sum(Kind::Float).double_value(&[]));
                Ok(())
            })
            .replace(HookFilter::kind(HookKind::ResidPost), |_, t| Ok(t * 3.0))
            .cache(HookFilter::all());
        let out = hooks.fire(HookPoint::resid_post(1), ones(2)).unwrap();
        let out2 = hooks.fire(HookPoint::resid_pre(1), ones(2)).unwrap();
        assert_eq!(out.sum(Kind::Float).double_value(&[]), 6.0);
        assert_eq!(out2.sum(Kind::Float).double_value(&[]), 2.0);
        let cache = hooks.take_cache();
        assert_eq!(cache.len(), 2);
        // The cache sees the replaced value.
        let cached = cache.require(&HookPoint::resid_post(1)).unwrap();
        assert_eq!(cached.sum(Kind::Float).double_value(&[]), 6.0);
        assert!(matches!(
            cache.require(&HookPoint::embed()),
            Err(Error::InvalidArgument { reason }) if reason.contains("hook_embed")
        ));
        drop(hooks);
        assert_eq!(log, vec![2.0, 2.0]);
    }

    #[test]
    fn replacement_of_another_shape_is_rejected() {
        let mut hooks = Hooks::new();
        hooks.replace(HookFilter::all(), |_, _| Ok(ones(3)));
        let err = hooks.fire(HookPoint::embed(), ones(2)).unwrap_err();
        assert!(matches!(
            err,
            Error::HookShapeMismatch { point, expected, actual }
                if point == "hook_embed" && expected == vec![2] && actual == vec![3]
        ));
    }

    #[test]
    fn filters_select_what_they_say() {
        let f = HookFilter::points([HookPoint::embed(), HookPoint::pattern(3)]);
        assert!(f.matches(&HookPoint::embed()));
        assert!(f.matches(&HookPoint::pattern(3)));
        assert!(!f.matches(&HookPoint::pattern(2)));
        assert!(!HookFilter::layers(0..5).matches(&HookPoint::embed()));
        assert!(
            HookFilter::kind(HookKind::Z)
                .or(HookFilter::point(HookPoint::embed()))
                .matches(&HookPoint::embed())
        );
        assert!(!HookFilter::none().matches(&HookPoint::embed()));
        let hooks = Hooks::caching(HookFilter::kind(HookKind::Pattern));
        assert!(hooks.wants(&HookPoint::pattern(0)));
        assert!(!hooks.wants(&HookPoint::attn_scores(0)));
        assert!(Hooks::new().is_empty());
    }

    #[test]
    fn hook_errors_propagate() {
        let mut hooks = Hooks::new();
        hooks.read(HookFilter::all(), |p, _| Err(Error::invalid_argument(format!("stop at {p}"))));
        let err = hooks.fire(HookPoint::z(0), ones(1)).unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument { reason } if reason == "stop at blocks.0.attn.hook_z")
        );
    }

    #[test]
    fn detached_cache_drops_the_graph() {
        let x = ones(2).set_requires_grad(true);
        let y = &x * 2.0;
        let mut hooks = Hooks::new();
        hooks.cache_detached(HookFilter::point(HookPoint::embed()));
        hooks.cache(HookFilter::point(HookPoint::ln_final()));
        let _ = hooks.fire(HookPoint::embed(), y.shallow_clone()).unwrap();
        let _ = hooks.fire(HookPoint::ln_final(), y).unwrap();
        assert!(!hooks.cached().get(&HookPoint::embed()).unwrap().requires_grad());
        assert!(hooks.cached().get(&HookPoint::ln_final()).unwrap().requires_grad());
    }
}
