//! What a target ended as, as data: its [`Outcome`], the time of each
//! phase, the command's bounded output, and where its logs are.
//!
//! The runner builds a [`TargetResult`] per target; every reporter reads it.
//! The outcome carries its own words (verdict and reason), so the terminal,
//! JUnit, JSON and GitHub reports say the same thing.

use std::path::PathBuf;
use std::time::Duration;

use crate::interrupt::Interrupted;
use crate::run::capture::Captured;

/// How a target ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// The command exited with a non-zero code.
    Failed {
        code: i64,
    },
    /// The command was killed by a signal.
    Signaled {
        signal: i64,
    },
    /// The command ran past its timeout.
    TimedOut {
        secs: u64,
    },
    /// vmtest could not boot the target or run the command.
    Error {
        message: String,
    },
    /// vmtest was interrupted (SIGINT, SIGTERM) while the target ran.
    Interrupted {
        signal: i32,
    },
    /// The command passed, but the guest kernel reported a splat (a
    /// warning, a bug, a lockup: `splat.rs`) and `kernel_splats` is `fail`.
    KernelSplat {
        /// How many, and the first one's first lines.
        description: String,
    },
}

impl Outcome {
    pub fn passed(&self) -> bool {
        *self == Outcome::Passed
    }

    /// The one-word verdict: `pass`, `fail` (non-zero exit or a signal, or a
    /// kernel splat), `error` (vmtest could not boot or run it), `timeout` or
    /// `interrupted`.
    pub fn verdict(&self) -> &'static str {
        match self {
            Outcome::Passed => "pass",
            Outcome::Failed { .. } | Outcome::Signaled { .. } | Outcome::KernelSplat { .. } => "fail",
            Outcome::Error { .. } => "error",
            Outcome::TimedOut { .. } => "timeout",
            Outcome::Interrupted { .. } => "interrupted",
        }
    }

    /// Why the target did not pass, as the terminal says it
    /// (`exit code 3`, `error: ...`).
    pub fn failure_reason(&self) -> String {
        match self {
            Outcome::Error { message } => format!("error: {message}"),
            outcome => outcome.reason(),
        }
    }

    /// The same without the `error:` label, where the report has a field of
    /// its own for errors (JSON, JUnit, GitHub annotations).
    pub fn reason(&self) -> String {
        match self {
            Outcome::Passed => "passed".to_string(),
            Outcome::Failed { code } => format!("exit code {code}"),
            Outcome::Signaled { signal } => format!("killed by signal {signal}"),
            Outcome::TimedOut { secs } => format!("timed out after {secs} s"),
            Outcome::Error { message } => message.clone(),
            Outcome::Interrupted { signal } => Interrupted(*signal).to_string(),
            Outcome::KernelSplat { description } => description.clone(),
        }
    }
}

/// Time spent in each phase of a target.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Phases {
    /// From starting QEMU until the guest agent answered.
    pub boot: Duration,
    /// From the agent's answer until the command started.
    pub setup: Duration,
    /// The command itself.
    pub command: Duration,
}

/// The result of one target.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetResult {
    pub name: String,
    pub kind: &'static str,
    pub outcome: Outcome,
    pub phases: Phases,
    pub total: Duration,
    /// The guest's console log, if this run wrote one that is kept.
    pub console_log: Option<PathBuf>,
    /// The command's output, bounded.
    pub stdout: Captured,
    pub stderr: Captured,
    /// The guest's memory, dumped when its kernel panicked (`dump_on_panic`).
    pub vmcore: Option<PathBuf>,
}
