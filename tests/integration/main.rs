//! vmtest's integration tests: the built binary against real QEMU, with
//! real kernels and images (tests/assets/build.sh builds them; with `CI`
//! set, a test whose assets are missing fails instead of returning early).
//!
//! One test binary, a module per area, shared fixtures in `util`. Tests
//! that boot VMs take a lock (`util::Project::for_vms`) held across
//! processes too, so VMs boot one at a time under `cargo test` and under
//! cargo-nextest alike.

mod distro;
mod foreign;
mod guest;
mod hostile;
mod image;
mod kdev;
mod kernel;
mod lifecycle;
mod matrix;
mod parallel;
mod reports;
mod share;
mod shell;
mod suites;
mod util;
mod warm;
