//! A checkpoint's tensors by key, with shape checks and accounting of unused weights.
//!
//! Loaders (GGUF, safetensors) fill a [`Checkpoint`] with f32 CPU tensors under the file's own
//! keys; a model takes each weight by key with the shape its config implies, and finally
//! asks [`Checkpoint::finish`] to name anything it did not use.

use std::collections::BTreeMap;

use explainability_core::{Error, Result};
use tch::{Device, Kind, Tensor};

/// Tensors of a checkpoint by key.
#[derive(Debug, Default)]
pub struct Checkpoint {
    tensors: BTreeMap<String, Tensor>,
    /// Keys that may stay unused without an error (e.g. rotary caches some files carry).
    ignorable: Vec<String>,
}

impl Checkpoint {
    /// An empty checkpoint.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tensor under `key`.
    pub fn insert(&mut self, key: impl Into<String>, tensor: Tensor) {
        self.tensors.insert(key.into(), tensor);
    }

    /// Whether `key` is present (and not yet taken).
    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
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
    /// [`Error::MissingWeight`] and [`Error::WeightShape`] naming the key.
    pub fn take(
        &mut self,
        key: &str,
        expected: &[i64],
        kind: Kind,
        device: Device,
    ) -> Result<Tensor> {
        let tensor =
            self.tensors.remove(key).ok_or_else(|| Error::MissingWeight { name: key.into() })?;
        if tensor.size() != expected {
            return Err(Error::WeightShape {
                name: key.into(),
                expected: expected.to_vec(),
                actual: tensor.size(),
            });
        }
        Ok(tensor.f_to_kind(kind)?.f_to_device(device)?)
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

    /// The remaining tensors by key (e.g. to write a checkpoint back out).
    pub fn into_tensors(self) -> Vec<(String, Tensor)> {
        self.tensors.into_iter().collect()
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
}
