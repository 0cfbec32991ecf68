//! Build script shared by every crate that links libtorch: each crate's `build.rs` is a link to
//! this file (`cargo package` accepts only a build script inside the crate, and copies the
//! link's content into the package). The README's "Using it from your own crate" gives a
//! dependent crate the same lines.
//!
//! torch-sys exports the libtorch library folder it linked against as
//! `DEP_TCH_LIBTORCH_LIB`; embedding it as an rpath lets this package's tests,
//! examples and benches find `libtorch*.so` at run time without `LD_LIBRARY_PATH`.
//! Nothing refers to a symbol of `libtorch_cuda.so` directly (CUDA kernels register
//! themselves when it loads), so with the linker's default `--as-needed` it is dropped and
//! `tch::Cuda::is_available()` is always false; it is linked explicitly where it exists.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
}
