//! A checkpoint's tensors by key, with shape checks and accounting of unused weights.
//!
//! Loaders fill a [`Checkpoint`] under the file's own keys: safetensors tensors as they are
//! stored (their own dtype, no f32 detour), GGUF tensors lazily (each is dequantised only
//! when the model takes it, straight into the precision asked for, so a bf16 load never
//! holds an f32 copy of the model). A model takes each weight by key with the shape its
//! config implies, and finally asks [`Checkpoint::finish`] to name anything it did not use.

use std::collections::BTreeMap;

use explainability_core::{Error, Result};
use tch::{Device, Kind, Tensor};

/// Produces a tensor in the requested kind.
type Loader = Box<dyn FnOnce(Kind) -> Result<Tensor>>;

/// A tensor in memory, or the recipe to produce it.
enum Entry {
    Ready(Tensor),
    Lazy { shape: Vec<i64>, load: Loader },
}

impl Entry {
    fn shape(&self) -> Vec<i64> {
        match self {
            Entry::Ready(t) => t.size(),
            Entry::Lazy { shape, .. } => shape.clone(),
        }
    }

    fn load(self, kind: Kind) -> Result<Tensor> {
        match self {
            Entry::Ready(t) => Ok(t.f_to_kind(kind)?),
            Entry::Lazy { load, .. } => load(kind),
        }
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
        load: impl FnOnce(Kind) -> Result<Tensor> + 'static,
    ) {
        self.tensors.insert(key.into(), Entry::Lazy { shape, load: Box::new(load) });
    }

    /// Applies a shape-preserving `transform` to the tensor at `key` when it is loaded
    /// (e.g. undoing a row permutation); nothing happens when the key is absent.
    pub fn transform(
        &mut self,
        key: &str,
        transform: impl FnOnce(Tensor) -> Result<Tensor> + 'static,
    ) {
        if let Some(entry) = self.tensors.remove(key) {
            let shape = entry.shape();
            let load = move |kind| transform(entry.load(kind)?);
            self.tensors.insert(key.to_owned(), Entry::Lazy { shape, load: Box::new(load) });
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
        let loaded = std::rc::Rc::new(std::cell::Cell::new(false));
        let flag = loaded.clone();
        ckpt.insert_lazy("w", vec![2, 2], move |kind| {
            flag.set(true);
            Ok(Tensor::f_from_slice(&[1f32, 2., 3., 4.])?.f_view([2, 2])?.f_to_kind(kind)?)
        });
        ckpt.transform("w", |t| Ok(t.f_mul_scalar(2.0)?));
        assert_eq!(ckpt.shape("w"), Some(vec![2, 2]));
        assert!(!loaded.get());
        let w = ckpt.take("w", &[2, 2], Kind::BFloat16, Device::Cpu).unwrap();
        assert!(loaded.get());
        assert_eq!(w.kind(), Kind::BFloat16);
        assert_eq!(w.to_kind(Kind::Float).sum(Kind::Float).double_value(&[]), 20.0);
        ckpt.finish().unwrap();
    }
}
