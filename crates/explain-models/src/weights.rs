//! A checkpoint's tensors by key, with shape checks and accounting of unused weights.
//!
//! Loaders fill a [`Checkpoint`] under the file's own keys: safetensors tensors as they are
//! stored (their own dtype, no f32 detour), GGUF tensors lazily (each is dequantised only
//! when the model takes it, straight into the precision asked for, so a bf16 load never
//! holds an f32 copy of the model). A model takes each weight by key with the shape its
//! config implies, and finally asks [`Checkpoint::finish`] to name anything it did not use.

use std::collections::BTreeMap;
use std::ops::Range;

use explainability_core::{Error, Result};
use tch::{Device, Kind, Tensor};

/// Where a lazily loaded tensor comes from. A source can be asked again and again (a model
/// with streamed weights dequantises each weight every time it uses it), whole or by rows.
pub(crate) trait TensorSource: Send {
    /// The whole tensor in `kind` (a CPU tensor).
    ///
    /// # Errors
    /// The source's read and conversion errors.
    fn load(&self, kind: Kind) -> Result<Tensor>;

    /// Rows `rows` (along the first dimension) in `kind`. The default loads everything and
    /// slices; a source that can read only the rows asked for overrides it.
    ///
    /// # Errors
    /// As [`TensorSource::load`].
    fn rows(&self, rows: Range<i64>, kind: Kind) -> Result<Tensor> {
        Ok(self.load(kind)?.f_narrow(0, rows.start, rows.end - rows.start)?.f_contiguous()?)
    }

    /// Rows `ids` (along the first dimension) in `kind`, in the order given. The caller has
    /// checked every id against the first dimension.
    ///
    /// # Errors
    /// As [`TensorSource::load`].
    fn gather(&self, ids: &[i64], kind: Kind) -> Result<Tensor> {
        Ok(self.load(kind)?.f_index_select(0, &Tensor::f_from_slice(ids)?)?)
    }
}

/// A closure as a [`TensorSource`].
struct FnSource<F>(F);

impl<F: Fn(Kind) -> Result<Tensor> + Send> TensorSource for FnSource<F> {
    fn load(&self, kind: Kind) -> Result<Tensor> {
        (self.0)(kind)
    }
}

/// A shape-preserving transform applied to another entry each time it is loaded.
struct Transformed<F> {
    inner: Entry,
    transform: F,
}

impl<F: Fn(Tensor) -> Result<Tensor> + Send> TensorSource for Transformed<F> {
    fn load(&self, kind: Kind) -> Result<Tensor> {
        (self.transform)(self.inner.load(kind)?)
    }
}

/// A tensor in memory, or the source to produce it.
enum Entry {
    Ready(Tensor),
    Lazy { shape: Vec<i64>, source: Box<dyn TensorSource> },
}

impl Entry {
    fn shape(&self) -> Vec<i64> {
        match self {
            Entry::Ready(t) => t.size(),
            Entry::Lazy { shape, .. } => shape.clone(),
        }
    }

    fn load(&self, kind: Kind) -> Result<Tensor> {
        match self {
            Entry::Ready(t) => Ok(t.f_to_kind(kind)?),
            Entry::Lazy { source, .. } => source.load(kind),
        }
    }
}

/// A weight as a model holds it: in memory, or kept at its source (quantised in a GGUF file's
/// memory map) and produced afresh, in the model's kind and on its device, each time it is
/// used.
pub(crate) enum Weight {
    /// In memory.
    Resident(Tensor),
    /// Produced on use.
    Streamed(StreamedWeight),
}

/// A weight produced on use; see [`Weight::Streamed`].
pub(crate) struct StreamedWeight {
    source: Box<dyn TensorSource>,
    shape: Vec<i64>,
    kind: Kind,
    device: Device,
}

impl std::fmt::Debug for Weight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Weight::Resident(t) => f.debug_tuple("Resident").field(&t.size()).finish(),
            Weight::Streamed(s) => f
                .debug_struct("Streamed")
                .field("shape", &s.shape)
                .field("kind", &s.kind)
                .field("device", &s.device)
                .finish(),
        }
    }
}

impl Weight {
    /// The tensor: the resident one (sharing storage), or a fresh one from the source. A
    /// fresh tensor lives as long as its last user: the caller's binding, or the autograd
    /// graph of a product that saved it for its backward pass.
    ///
    /// # Errors
    /// The source's errors.
    pub(crate) fn tensor(&self) -> Result<Tensor> {
        match self {
            Weight::Resident(t) => Ok(t.shallow_clone()),
            Weight::Streamed(s) => Ok(s.source.load(s.kind)?.f_to_device(s.device)?),
        }
    }

    /// Rows `rows` along the first dimension; a streamed weight reads only those.
    ///
    /// # Errors
    /// The source's errors.
    pub(crate) fn rows(&self, rows: Range<i64>) -> Result<Tensor> {
        match self {
            Weight::Resident(t) => Ok(t.f_narrow(0, rows.start, rows.end - rows.start)?),
            Weight::Streamed(s) => Ok(s.source.rows(rows, s.kind)?.f_to_device(s.device)?),
        }
    }

    /// Rows `ids` along the first dimension, in order, as a `[ids.len(), ...]` tensor; the
    /// caller has checked the ids. A streamed weight reads only those rows.
    ///
    /// # Errors
    /// The source's errors.
    pub(crate) fn gather(&self, ids: &[i64]) -> Result<Tensor> {
        match self {
            Weight::Resident(t) => {
                let index = Tensor::f_from_slice(ids)?.f_to_device(t.device())?;
                Ok(t.f_index_select(0, &index)?)
            }
            Weight::Streamed(s) => Ok(s.source.gather(ids, s.kind)?.f_to_device(s.device)?),
        }
    }

    /// The resident tensor, `None` for a streamed weight.
    pub(crate) fn resident(&self) -> Option<&Tensor> {
        match self {
            Weight::Resident(t) => Some(t),
            Weight::Streamed(_) => None,
        }
    }

    /// Whether the weight is produced on use.
    pub(crate) fn is_streamed(&self) -> bool {
        matches!(self, Weight::Streamed(_))
    }

    /// Moves a resident weight to `device`; a streamed one is produced there from now on.
    ///
    /// # Errors
    /// libtorch's copy errors.
    pub(crate) fn move_to(&mut self, device: Device) -> Result<()> {
        match self {
            Weight::Resident(t) => *t = t.f_to_device(device)?,
            Weight::Streamed(s) => s.device = device,
        }
        Ok(())
    }

    /// Bytes the weight takes when produced (its kind's width times its elements).
    pub(crate) fn bytes(&self) -> u64 {
        let (numel, kind) = match self {
            Weight::Resident(t) => (t.numel() as u64, t.kind()),
            Weight::Streamed(s) => (s.shape.iter().product::<i64>().max(0) as u64, s.kind),
        };
        numel * kind.elt_size_in_bytes() as u64
    }
}

/// Tensors of a checkpoint by key.
#[derive(Default)]
pub struct Checkpoint {
    tensors: BTreeMap<String, Entry>,
    /// Keys that may stay unused without an error (e.g. rotary caches some files carry).
    ignorable: Vec<String>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("keys", &self.tensors.keys().collect::<Vec<_>>())
            .field("ignorable", &self.ignorable)
            .finish()
    }
}

impl Checkpoint {
    /// An empty checkpoint.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tensor under `key`.
    pub fn insert(&mut self, key: impl Into<String>, tensor: Tensor) {
        self.tensors.insert(key.into(), Entry::Ready(tensor));
    }

    /// Adds a tensor of `shape` under `key` that `load` produces, in the kind it is given,
    /// only when a model takes it.
    pub fn insert_lazy(
        &mut self,
        key: impl Into<String>,
        shape: Vec<i64>,
        load: impl Fn(Kind) -> Result<Tensor> + Send + 'static,
    ) {
        self.insert_source(key, shape, Box::new(FnSource(load)));
    }

    /// Adds a tensor of `shape` under `key` that `source` produces when a model takes it (or,
    /// for streamed weights, each time the model uses it).
    pub(crate) fn insert_source(
        &mut self,
        key: impl Into<String>,
        shape: Vec<i64>,
        source: Box<dyn TensorSource>,
    ) {
        self.tensors.insert(key.into(), Entry::Lazy { shape, source });
    }

    /// Applies a shape-preserving `transform` to the tensor at `key` when it is loaded
    /// (e.g. undoing a row permutation); nothing happens when the key is absent.
    pub fn transform(
        &mut self,
        key: &str,
        transform: impl Fn(Tensor) -> Result<Tensor> + Send + 'static,
    ) {
        if let Some(entry) = self.tensors.remove(key) {
            let shape = entry.shape();
            let source = Box::new(Transformed { inner: entry, transform });
            self.tensors.insert(key.to_owned(), Entry::Lazy { shape, source });
        }
    }

    /// Whether `key` is present (and not yet taken).
    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    /// Shape of the tensor at `key`, if present.
    pub fn shape(&self, key: &str) -> Option<Vec<i64>> {
        self.tensors.get(key).map(Entry::shape)
    }

    /// Keys still present.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.tensors.keys()
    }

    /// Marks keys matching `suffix` as allowed to stay unused.
    pub fn ignore_suffix(&mut self, suffix: impl Into<String>) {
        self.ignorable.push(suffix.into());
    }

    /// Removes and returns the tensor at `key`, checking its shape, converted to `kind` on
    /// `device`.
    ///
    /// # Errors
    /// [`Error::MissingWeight`] and [`Error::WeightShape`] naming the key; the loader's
    /// errors for lazy tensors.
    pub fn take(
        &mut self,
        key: &str,
        expected: &[i64],
        kind: Kind,
        device: Device,
    ) -> Result<Tensor> {
        let entry =
            self.tensors.remove(key).ok_or_else(|| Error::MissingWeight { name: key.into() })?;
        let shape = entry.shape();
        if shape != expected {
            return Err(Error::WeightShape {
                name: key.into(),
                expected: expected.to_vec(),
                actual: shape,
            });
        }
        let tensor = entry.load(kind)?;
        if tensor.size() != expected {
            return Err(Error::WeightShape {
                name: key.into(),
                expected: expected.to_vec(),
                actual: tensor.size(),
            });
        }
        Ok(tensor.f_to_device(device)?)
    }

    /// Like [`Checkpoint::take`], but when `stream` is set and the tensor is produced by a
    /// source (a GGUF tensor, not one already in memory), the source itself is kept and the
    /// tensor is produced on each use ([`Weight::Streamed`]).
    ///
    /// # Errors
    /// As [`Checkpoint::take`].
    pub(crate) fn take_weight(
        &mut self,
        key: &str,
        expected: &[i64],
        kind: Kind,
        device: Device,
        stream: bool,
    ) -> Result<Weight> {
        if !(stream && matches!(self.tensors.get(key), Some(Entry::Lazy { .. }))) {
            return self.take(key, expected, kind, device).map(Weight::Resident);
        }
        match self.tensors.remove(key) {
            Some(Entry::Lazy { shape, source }) if shape == expected => {
                Ok(Weight::Streamed(StreamedWeight { source, shape, kind, device }))
            }
            Some(entry) => Err(Error::WeightShape {
                name: key.into(),
                expected: expected.to_vec(),
                actual: entry.shape(),
            }),
            None => Err(Error::MissingWeight { name: key.into() }),
        }
    }

    /// Removes and returns the tensor at `key` in `kind`, whatever its shape.
    ///
    /// # Errors
    /// [`Error::MissingWeight`]; the loader's errors.
    pub fn take_any(&mut self, key: &str, kind: Kind) -> Result<Tensor> {
        self.tensors
            .remove(key)
            .ok_or_else(|| Error::MissingWeight { name: key.into() })?
            .load(kind)
    }

    /// Like [`Checkpoint::take`], but `None` when the key is absent.
    ///
    /// # Errors
    /// [`Error::WeightShape`].
    pub fn take_optional(
        &mut self,
        key: &str,
        expected: &[i64],
        kind: Kind,
        device: Device,
    ) -> Result<Option<Tensor>> {
        if self.contains(key) { self.take(key, expected, kind, device).map(Some) } else { Ok(None) }
    }

    /// Removes the tensor at `key` without loading it (a tied head's copy, say); whether it
    /// was there.
    pub fn discard(&mut self, key: &str) -> bool {
        self.tensors.remove(key).is_some()
    }

    /// The remaining tensors by key, loaded in f32 (e.g. to write a checkpoint back out).
    ///
    /// # Errors
    /// The loaders' errors.
    pub fn into_tensors(self) -> Result<Vec<(String, Tensor)>> {
        self.tensors.into_iter().map(|(k, e)| Ok((k, e.load(Kind::Float)?))).collect()
    }

    /// Ends loading.
    ///
    /// # Errors
    /// [`Error::UnusedWeights`] naming every key the model did not take.
    pub fn finish(self) -> Result<()> {
        let names: Vec<String> = self
            .tensors
            .into_keys()
            .filter(|k| !self.ignorable.iter().any(|s| k.ends_with(s.as_str())))
            .collect();
        if names.is_empty() { Ok(()) } else { Err(Error::UnusedWeights { names }) }
    }
}

/// Gives the C heap's free pages back to the operating system. Building a large tokenizer
/// (Gemma 3: 262,144 tokens and 513,511 derived merges) allocates and frees ≈ 100 MiB of
/// temporary tables; glibc keeps freed memory resident inside its heap, where it would count
/// on top of the weights loaded next. Best effort and a no-op outside glibc.
pub(crate) fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `malloc_trim` only returns unused memory of the allocator's own arenas to
        // the kernel; it takes the allocator's locks and is safe to call at any time.
        #[allow(unsafe_code)]
        let _ = unsafe { libc::malloc_trim(0) };
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn take_checks_presence_shape_and_leftovers() {
        let mut ckpt = Checkpoint::new();
        ckpt.insert("a", Tensor::zeros([2, 3], (Kind::Float, Device::Cpu)));
        ckpt.insert("b", Tensor::zeros([4], (Kind::Float, Device::Cpu)));
        ckpt.insert("c", Tensor::zeros([1], (Kind::Float, Device::Cpu)));
        ckpt.insert("rotary.inv_freq", Tensor::zeros([4], (Kind::Float, Device::Cpu)));
        ckpt.ignore_suffix("inv_freq");
        assert!(matches!(
            ckpt.take("a", &[3, 2], Kind::Float, Device::Cpu),
            Err(Error::WeightShape { name, expected, actual })
                if name == "a" && expected == vec![3, 2] && actual == vec![2, 3]
        ));
        assert!(matches!(
            ckpt.take("zz", &[1], Kind::Float, Device::Cpu),
            Err(Error::MissingWeight { name }) if name == "zz"
        ));
        assert!(ckpt.take_optional("zz", &[1], Kind::Float, Device::Cpu).unwrap().is_none());
        let b = ckpt.take("b", &[4], Kind::BFloat16, Device::Cpu).unwrap();
        assert_eq!(b.kind(), Kind::BFloat16);
        // "a" was consumed by the failed take; "c" was never asked for; the rotary cache is
        // ignorable.
        assert!(matches!(ckpt.finish(), Err(Error::UnusedWeights { names }) if names == vec!["c"]));
    }

    #[test]
    fn lazy_entries_load_only_when_taken_in_the_kind_asked_for() {
        let mut ckpt = Checkpoint::new();
        let loaded = std::sync::Arc::new(AtomicUsize::new(0));
        let flag = loaded.clone();
        ckpt.insert_lazy("w", vec![2, 2], move |kind| {
            flag.fetch_add(1, Ordering::SeqCst);
            Ok(Tensor::f_from_slice(&[1f32, 2., 3., 4.])?.f_view([2, 2])?.f_to_kind(kind)?)
        });
        ckpt.transform("w", |t| Ok(t.f_mul_scalar(2.0)?));
        assert_eq!(ckpt.shape("w"), Some(vec![2, 2]));
        assert_eq!(loaded.load(Ordering::SeqCst), 0);
        let w = ckpt.take("w", &[2, 2], Kind::BFloat16, Device::Cpu).unwrap();
        assert_eq!(loaded.load(Ordering::SeqCst), 1);
        assert_eq!(w.kind(), Kind::BFloat16);
        assert_eq!(w.to_kind(Kind::Float).sum(Kind::Float).double_value(&[]), 20.0);
        ckpt.finish().unwrap();
    }

    #[test]
    fn streamed_weights_are_produced_on_every_use_and_resident_ones_once() {
        let mut ckpt = Checkpoint::new();
        let loads = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = loads.clone();
        ckpt.insert_lazy("w", vec![3, 2], move |kind| {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(Tensor::f_from_slice(&[1f32, 2., 3., 4., 5., 6.])?
                .f_view([3, 2])?
                .f_to_kind(kind)?)
        });
        ckpt.transform("w", |t| Ok(t.f_mul_scalar(2.0)?));
        ckpt.insert("r", Tensor::ones([2], (Kind::Float, Device::Cpu)));
        assert!(matches!(
            ckpt.take_weight("w", &[2, 3], Kind::Float, Device::Cpu, true),
            Err(Error::WeightShape { .. })
        ));
        let mut ckpt = Checkpoint::new();
        let counter = loads.clone();
        ckpt.insert_lazy("w", vec![3, 2], move |kind| {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(Tensor::f_from_slice(&[1f32, 2., 3., 4., 5., 6.])?
                .f_view([3, 2])?
                .f_to_kind(kind)?)
        });
        ckpt.transform("w", |t| Ok(t.f_mul_scalar(2.0)?));
        ckpt.insert("r", Tensor::ones([2], (Kind::Float, Device::Cpu)));
        let before = loads.load(Ordering::SeqCst);
        let w = ckpt.take_weight("w", &[3, 2], Kind::Float, Device::Cpu, true).unwrap();
        // An in-memory tensor stays resident even when streaming is asked for.
        let r = ckpt.take_weight("r", &[2], Kind::Float, Device::Cpu, true).unwrap();
        ckpt.finish().unwrap();
        assert!(w.is_streamed() && !r.is_streamed());
        assert_eq!(loads.load(Ordering::SeqCst), before);
        let sum = |t: Tensor| t.sum(Kind::Float).double_value(&[]);
        assert_eq!(sum(w.tensor().unwrap()), 42.0);
        assert_eq!(sum(w.tensor().unwrap()), 42.0);
        assert_eq!(loads.load(Ordering::SeqCst), before + 2);
        assert_eq!(sum(w.rows(1..3).unwrap()), 36.0);
        assert_eq!(w.gather(&[2, 0, 2]).unwrap().size(), vec![3, 2]);
        assert_eq!(sum(w.gather(&[2, 0, 2]).unwrap()), 50.0);
    }
}
