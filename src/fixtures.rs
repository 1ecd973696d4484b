//! Test fixtures shared by the unit tests of several modules: results as
//! the reporters see them, and a VM's socket paths as QEMU's argv names them.

use std::time::Duration;

use crate::run::outcome::{Outcome, Phases, TargetResult};
use crate::vm::qemu::VmPaths;

/// A target that ended as `outcome` after 2.5 s without reaching the guest.
pub fn result(name: &str, outcome: Outcome) -> TargetResult {
    TargetResult {
        name: name.into(),
        kind: "kernel",
        outcome,
        phases: Phases::default(),
        total: Duration::from_millis(2500),
        console_log: None,
        stdout: Default::default(),
        stderr: Default::default(),
        vmcore: None,
    }
}

/// The same, having booted in 2 s, set up in 0.1 s and run for 0.4 s.
pub fn booted(name: &str, outcome: Outcome) -> TargetResult {
    TargetResult {
        phases: Phases {
            boot: Duration::from_millis(2000),
            setup: Duration::from_millis(100),
            command: Duration::from_millis(400),
        },
        ..result(name, outcome)
    }
}

/// A pass, a failure and an infrastructure error, as the report tests of
/// every format use them.
pub fn sample_results() -> Vec<TargetResult> {
    let mut pass = TargetResult {
        phases: Phases {
            boot: Duration::from_millis(2000),
            setup: Duration::from_millis(130),
            command: Duration::from_micros(400_400),
        },
        total: Duration::from_millis(2600),
        console_log: Some("/p/.vmtest/pass/console.log".into()),
        ..result("pass", Outcome::Passed)
    };
    pass.stdout.push(b"ok\n");
    let mut fail = TargetResult {
        name: "fail".into(),
        outcome: Outcome::Failed { code: 3 },
        console_log: Some("/p/.vmtest/fail/console.log".into()),
        ..pass.clone()
    };
    fail.stdout = Default::default();
    fail.stdout.push(b"a < b & \"c\"\x1b[31m red\n");
    fail.stderr.push(b"boom\n");
    let broken = TargetResult {
        total: Duration::from_millis(12),
        ..result(
            "broken",
            Outcome::Error {
                message: "kernel /x/bzImage not found\n(resolved against /p)".into(),
            },
        )
    };
    vec![pass, fail, broken]
}

/// A VM's sockets and console pipe under `/run/v`.
pub fn vm_paths() -> VmPaths {
    VmPaths::in_dir(std::path::Path::new("/run/v"))
}
