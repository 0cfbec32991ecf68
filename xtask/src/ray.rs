//! `cargo xtask ray`: the CI test of integrations/ray on a local Ray cluster
//! (`ray.init(num_cpus=2)`): a sharded `explain` job on two restartable actors, one killed in
//! the middle of a shard, merged byte-identical to a one-process run, and read with pandas.
//! It uses the `explain` binary that `cargo test` builds (cargo's `test` profile, so after the
//! CI test step this builds nothing).

use crate::ci::TEST_PROFILE;
use crate::project::{Project, Result, run};

/// Builds the binary (a no-op after `cargo test --workspace`) and runs the Python test.
///
/// # Errors
/// A failing build or test.
pub fn ray(project: &Project) -> Result<()> {
    let mut build = project.cargo();
    // The whole workspace, as the test step builds it: `-p explainability-cli` alone would
    // unify features differently and rebuild a third of the dependency tree.
    build.args(["test", "--workspace", "--no-run"]).args(TEST_PROFILE);
    run("build the explain binary", &mut build)?;
    let profile = if TEST_PROFILE.contains(&"--release") { "release" } else { "debug" };
    let explain = project.target_dir()?.join(profile).join("explain");
    let mut test = project.python();
    test.arg("integrations/ray/tests/test_ray.py").arg(&explain);
    test.env("OMP_NUM_THREADS", "1").env("MKL_NUM_THREADS", "1");
    run("the Ray integration test", &mut test)
}
