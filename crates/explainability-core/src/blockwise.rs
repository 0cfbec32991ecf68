//! Block-wise execution of a model and memory-bounded gradients.
//!
//! A model that can run its forward pass one stage at a time (the input stage, each block,
//! the output stage) offers a [`BlockwiseForward`] through [`LanguageModel::blockwise`].
//! [`gradients`] is the one place gradient methods differentiate a model: with
//! [`BackwardMemory::Stored`] it is plain autograd over the whole forward pass (every block's
//! activations held until the backward pass); with [`BackwardMemory::Recompute`] it keeps
//! only the residual stream at block boundaries from a forward pass without a graph, then
//! walks back one block at a time, recomputing that block's forward pass with gradients from
//! its saved input and feeding it the gradient from above (gradient checkpointing at block
//! granularity, Chen et al. 2016, arXiv:1604.06174, driven here rather than by autograd).
//! Peak memory is then the weights, `n_layers + 1` residual states and one block's
//! activations, instead of every block's.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::hooks::Hooks;
use crate::model::{ForwardOptions, LanguageModel, ModelOutput};

/// How gradients of a model are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub enum BackwardMemory {
    /// Plain autograd: every block's activations are held until the backward pass (fastest;
    /// memory grows with layers × tokens × the block's intermediate widths).
    #[default]
    Stored,
    /// Only the residual stream at block boundaries is held; each block's forward pass is
    /// recomputed with gradients during the backward pass (one extra forward pass; peak memory
    /// ≈ weights + (layers + 1) × tokens × d_model + one block's activations). Models without
    /// a [`BlockwiseForward`] fall back to [`BackwardMemory::Stored`].
    Recompute,
}

impl BackwardMemory {
    /// Stable name (`stored`, `recompute`).
    pub fn name(self) -> &'static str {
        match self {
            BackwardMemory::Stored => "stored",
            BackwardMemory::Recompute => "recompute",
        }
    }
}

/// One forward pass split into stages, built by [`LanguageModel::blockwise`] for a given
/// input shape and [`ForwardOptions`] (masks and rotary tables are prepared once).
///
/// Running `input`, every `block` in order and `output` equals
/// [`LanguageModel::forward_embeddings`] and fires the same hook points; each stage may be
/// run again (with gradients) from its saved input.
pub trait BlockwiseForward {
    /// Number of blocks.
    fn n_blocks(&self) -> usize;

    /// The input stage: embeddings → residual stream entering block 0 (position embeddings,
    /// embedding norm, `hook_embed`).
    ///
    /// # Shapes
    /// `[batch, pos, d_model]` → `[batch, pos, d_model]`.
    ///
    /// # Errors
    /// Shape errors and whatever a hook returns.
    fn input(&self, embeddings: &Tensor, hooks: &mut Hooks<'_>) -> Result<Tensor>;

    /// Block `layer`: `resid_pre` → `resid_post`, firing that block's hook points.
    ///
    /// # Errors
    /// [`Error::LayerOutOfRange`], and whatever a hook returns.
    fn block(&self, layer: usize, residual: &Tensor, hooks: &mut Hooks<'_>) -> Result<Tensor>;

    /// The output stage: residual stream after the last block → final norm and head.
    ///
    /// # Errors
    /// Shape errors and whatever a hook returns.
    fn output(&self, residual: &Tensor, hooks: &mut Hooks<'_>) -> Result<ModelOutput>;
}

/// Gradients of a model's objective.
#[derive(Debug)]
pub struct Gradients {
    /// `gradients[t][i]`: gradient of `Σ_n objective[n, t]` (or `Σ_n objective[n]`) with
    /// respect to `leaves[i]`; zeros where a leaf does not influence the output.
    pub gradients: Vec<Vec<Tensor>>,
    /// The objective's value, detached (`[n]` or `[n, T]` as returned).
    pub value: Tensor,
    /// The way the gradients were taken (a model without [`BlockwiseForward`] reports
    /// [`BackwardMemory::Stored`] even when recomputation was asked for).
    pub memory: BackwardMemory,
}

/// The objective of [`gradients`]: model output → `[n]` (one scalar per batch row) or
/// `[n, T]` (T outputs, each differentiated separately).
pub type Objective<'a> = dyn FnMut(&ModelOutput) -> Result<Tensor> + 'a;

/// Gradients of `objective(model(embeddings))` with respect to `leaves`, taken the way
/// `model.backward_memory()` says.
///
/// `leaves` are tensors that require grad and that the forward pass reads: `embeddings`
/// itself, or a tensor a replacing hook in `hooks` substitutes for an activation (layer
/// attribution). Under [`BackwardMemory::Recompute`] the hooks fire twice for every block
/// (in the forward pass without a graph and in its recomputation), so they must be functions
/// of their input (caching and replacing hooks are); a caching hook ends up holding the
/// recomputed activation.
///
/// # Shapes
/// `embeddings`: `[batch, pos, d_model]`; the objective returns `[batch]` or `[batch, T]`.
///
/// # Errors
/// [`Error::InvalidArgument`] for a leaf that does not require grad or an objective of
/// another rank; model and autograd errors; whatever the objective returns.
pub fn gradients(
    model: &dyn LanguageModel,
    embeddings: &Tensor,
    leaves: &[&Tensor],
    options: &ForwardOptions,
    hooks: &mut Hooks<'_>,
    objective: &mut Objective<'_>,
) -> Result<Gradients> {
    if let Some(i) = leaves.iter().position(|l| !l.requires_grad()) {
        return Err(Error::invalid_argument(format!(
            "leaf {i} of the gradient does not require grad"
        )));
    }
    tch::with_grad(|| match model.backward_memory() {
        BackwardMemory::Recompute => match model.blockwise(embeddings, options)? {
            Some(stages) => recomputed(stages.as_ref(), embeddings, leaves, hooks, objective),
            None => stored(model, embeddings, leaves, options, hooks, objective),
        },
        BackwardMemory::Stored => stored(model, embeddings, leaves, options, hooks, objective),
    })
}

/// The outputs `y` (`[n]` or `[n, T]`) as one scalar per output: `Σ_n y[n, t]`.
fn output_sums(y: &Tensor) -> Result<Vec<Tensor>> {
    match y.dim() {
        1 => Ok(vec![y.f_sum(Kind::Float)?]),
        2 => (0..y.size()[1])
            .map(|t| Ok(y.f_select(1, t)?.f_sum(Kind::Float)?))
            .collect::<Result<Vec<_>>>(),
        _ => Err(Error::ShapeMismatch {
            what: "objective".into(),
            expected: "[batch] or [batch, outputs]".into(),
            actual: y.size(),
        }),
    }
}

/// `run_backward` of `root` with respect to `inputs`, keeping the graph when asked; an
/// undefined tensor where an input does not reach `root`, all undefined when `root` does not
/// require grad.
fn backward(root: &Tensor, inputs: &[&Tensor], keep: bool) -> Result<Vec<Tensor>> {
    if !root.requires_grad() {
        return Ok(inputs.iter().map(|_| Tensor::new()).collect());
    }
    Ok(Tensor::f_run_backward(&[root], inputs, keep, false)?)
}

/// Adds `g` to `acc` (either may be undefined).
fn accumulate(acc: &mut Tensor, g: Tensor) -> Result<()> {
    if !g.defined() {
        return Ok(());
    }
    *acc = if acc.defined() { acc.f_add(&g)? } else { g };
    Ok(())
}

fn finish(
    sums: Vec<Vec<Tensor>>,
    leaves: &[&Tensor],
    value: Tensor,
    memory: BackwardMemory,
) -> Result<Gradients> {
    let gradients = sums
        .into_iter()
        .map(|per_leaf| {
            per_leaf
                .into_iter()
                .zip(leaves)
                .map(|(g, leaf)| if g.defined() { Ok(g) } else { Ok(leaf.f_zeros_like()?) })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Gradients { gradients, value, memory })
}

fn stored(
    model: &dyn LanguageModel,
    embeddings: &Tensor,
    leaves: &[&Tensor],
    options: &ForwardOptions,
    hooks: &mut Hooks<'_>,
    objective: &mut Objective<'_>,
) -> Result<Gradients> {
    let output = model.forward_embeddings(embeddings, options, hooks)?;
    let y = objective(&output)?;
    let roots = output_sums(&y)?;
    let n = roots.len();
    let mut sums = Vec::with_capacity(n);
    for (t, root) in roots.iter().enumerate() {
        sums.push(backward(root, leaves, t + 1 < n)?);
    }
    finish(sums, leaves, y.f_detach()?, BackwardMemory::Stored)
}

fn recomputed(
    stages: &dyn BlockwiseForward,
    embeddings: &Tensor,
    leaves: &[&Tensor],
    hooks: &mut Hooks<'_>,
    objective: &mut Objective<'_>,
) -> Result<Gradients> {
    let n_blocks = stages.n_blocks();
    // Forward without a graph, keeping each block's input.
    let mut saved: Vec<Tensor> = Vec::with_capacity(n_blocks + 1);
    {
        let _guard = tch::no_grad_guard();
        let mut residual = stages.input(embeddings, hooks)?;
        for layer in 0..n_blocks {
            let next = stages.block(layer, &residual, hooks)?;
            saved.push(residual);
            residual = next;
        }
        saved.push(residual);
    }
    // Output stage with gradients: one upstream gradient per objective output.
    let top = saved
        .pop()
        .ok_or_else(|| Error::invalid_argument("no residual state"))?
        .f_detach()?
        .f_set_requires_grad(true)?;
    let output = stages.output(&top, hooks)?;
    let y = objective(&output)?;
    let value = y.f_detach()?;
    let roots = output_sums(&y)?;
    let n_out = roots.len();
    let mut inputs: Vec<&Tensor> = vec![&top];
    inputs.extend(leaves);
    let mut upstream: Vec<Tensor> = Vec::with_capacity(n_out);
    let mut sums: Vec<Vec<Tensor>> = Vec::with_capacity(n_out);
    for (t, root) in roots.iter().enumerate() {
        let mut g = backward(root, &inputs, t + 1 < n_out)?.into_iter();
        upstream.push(g.next().unwrap_or_else(Tensor::new));
        sums.push(g.collect());
    }
    drop((roots, y, output, inputs));
    // Blocks from the top, each recomputed from its saved input.
    for layer in (0..n_blocks).rev() {
        if upstream.iter().all(|g| !g.defined()) {
            break;
        }
        let x = saved
            .pop()
            .ok_or_else(|| Error::invalid_argument("no residual state"))?
            .f_detach()?
            .f_set_requires_grad(true)?;
        let out = stages.block(layer, &x, hooks)?;
        let mut inputs: Vec<&Tensor> = vec![&x];
        inputs.extend(leaves);
        for t in 0..n_out {
            let g_above = std::mem::replace(&mut upstream[t], Tensor::new());
            if !g_above.defined() {
                continue;
            }
            // Σ out ⊙ g has gradient Jᵀ g: the vector–Jacobian product with the gradient from
            // above (the product's own backward passes g through exactly).
            let root = out.f_mul(&g_above)?.f_sum(Kind::Float)?;
            let keep = (t + 1..n_out).any(|u| upstream[u].defined());
            let mut g = backward(&root, &inputs, keep)?.into_iter();
            upstream[t] = g.next().unwrap_or_else(Tensor::new);
            for (acc, gl) in sums[t].iter_mut().zip(g) {
                accumulate(acc, gl)?;
            }
        }
    }
    // Input stage (embeddings → residual), when something below it wants a gradient.
    if !leaves.is_empty() && upstream.iter().any(Tensor::defined) {
        let entry = stages.input(embeddings, hooks)?;
        for t in 0..n_out {
            let g_above = std::mem::replace(&mut upstream[t], Tensor::new());
            if !g_above.defined() {
                continue;
            }
            let root = entry.f_mul(&g_above)?.f_sum(Kind::Float)?;
            let keep = (t + 1..n_out).any(|u| upstream[u].defined());
            for (acc, gl) in sums[t].iter_mut().zip(backward(&root, leaves, keep)?) {
                accumulate(acc, gl)?;
            }
        }
    }
    finish(sums, leaves, value, BackwardMemory::Recompute)
}

/// A model whose gradients are taken with [`BackwardMemory::Recompute`]: wraps any
/// [`LanguageModel`] by reference and changes nothing else, so every gradient method run on
/// it (saliency, gradient × input, SmoothGrad, integrated gradients, layer IG, attribution of
/// generated text) holds only the residual stream at block boundaries.
///
/// # Examples
/// ```ignore
/// let bounded = RecomputedBackward::new(&model);
/// let e = Saliency::default().explain(&bounded, text, &Target::next_token())?;
/// ```
#[derive(Clone, Copy)]
pub struct RecomputedBackward<'m> {
    inner: &'m dyn LanguageModel,
}

impl std::fmt::Debug for RecomputedBackward<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecomputedBackward").field("model", &self.inner.info().name).finish()
    }
}

impl<'m> RecomputedBackward<'m> {
    /// Wraps `model`.
    pub fn new(model: &'m dyn LanguageModel) -> Self {
        Self { inner: model }
    }

    /// The wrapped model.
    pub fn inner(&self) -> &'m dyn LanguageModel {
        self.inner
    }
}

impl LanguageModel for RecomputedBackward<'_> {
    fn info(&self) -> &crate::ModelInfo {
        self.inner.info()
    }
    fn device(&self) -> tch::Device {
        self.inner.device()
    }
    fn kind(&self) -> Kind {
        self.inner.kind()
    }
    fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<i64>> {
        self.inner.encode(text, add_special_tokens)
    }
    fn decode(&self, ids: &[i64]) -> Result<String> {
        self.inner.decode(ids)
    }
    fn token_strings(&self, ids: &[i64]) -> Result<Vec<String>> {
        self.inner.token_strings(ids)
    }
    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.inner.embed(ids)
    }
    fn forward_embeddings(
        &self,
        embeddings: &Tensor,
        options: &ForwardOptions,
        hooks: &mut Hooks<'_>,
    ) -> Result<ModelOutput> {
        self.inner.forward_embeddings(embeddings, options, hooks)
    }
    fn unembed(&self, final_hidden: &Tensor) -> Result<Tensor> {
        self.inner.unembed(final_hidden)
    }
    fn final_norm(&self, residual: &Tensor, scale: crate::NormScale<'_>) -> Result<Tensor> {
        self.inner.final_norm(residual, scale)
    }
    fn norm_at(
        &self,
        point: crate::HookPoint,
        input: &Tensor,
        scale: crate::NormScale<'_>,
    ) -> Result<Tensor> {
        self.inner.norm_at(point, input, scale)
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.inner.named_parameters()
    }
    fn blockwise<'a>(
        &'a self,
        embeddings: &Tensor,
        options: &'a ForwardOptions,
    ) -> Result<Option<Box<dyn BlockwiseForward + 'a>>> {
        self.inner.blockwise(embeddings, options)
    }
    fn backward_memory(&self) -> BackwardMemory {
        BackwardMemory::Recompute
    }
}
