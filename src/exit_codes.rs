//! vmtest's exit codes, in one place, and how target results fold into one.
//!
//! With one target vmtest exits with the command's own code, so it can stand
//! in for the command (`git bisect run`, `go test -exec`); with several it
//! exits with the number of failed targets. The README documents these.

use crate::run::outcome::{Outcome, TargetResult};

/// Every target passed.
pub const SUCCESS: i32 = 0;
/// A usage or config error: nothing was run.
pub const USAGE: i32 = 2;
/// A single target whose VM could not boot or whose command could not run
/// (BSD's `EX_UNAVAILABLE`).
pub const INFRASTRUCTURE: i32 = 69;
/// Every target passed but a report (`--junit`, `--json`, the GitHub step
/// summary) could not be written (BSD's `EX_IOERR`).
pub const REPORT_NOT_WRITTEN: i32 = 74;
/// A single target whose command passed while the guest kernel reported a
/// splat (`kernel_splats = "fail"`): below 125, so `git bisect run` takes
/// it for a bad commit (BSD's `EX_SOFTWARE`).
pub const KERNEL_SPLAT: i32 = 70;
/// A single target whose command ran past its timeout (as `timeout(1)`).
pub const TIMED_OUT: i32 = 124;
/// vmtest was interrupted by SIGINT (Ctrl-C).
pub const INTERRUPTED: i32 = 130;
/// vmtest was stopped by SIGTERM.
pub const TERMINATED: i32 = 143;

/// The exit code of a whole run.
pub fn fold(results: &[TargetResult]) -> i32 {
    match results {
        [] => SUCCESS,
        [only] => single(&only.outcome),
        many => {
            let failed = many.iter().filter(|r| !r.outcome.passed()).count();
            failed.min(255) as i32
        }
    }
}

/// The exit code of a run whose reports were (or were not) all written: a
/// failing run keeps its code (the error on stderr names the missing
/// report), a passing one becomes [`REPORT_NOT_WRITTEN`], so CI never
/// reads a green step with a report missing.
pub fn with_reports(code: i32, reports_written: bool) -> i32 {
    if code == SUCCESS && !reports_written {
        REPORT_NOT_WRITTEN
    } else {
        code
    }
}

/// The exit code after vmtest caught `signal`.
pub fn interrupted(signal: i32) -> i32 {
    if signal == libc::SIGTERM {
        TERMINATED
    } else {
        INTERRUPTED
    }
}

/// The exit code of a run with one target.
pub fn single(outcome: &Outcome) -> i32 {
    match outcome {
        Outcome::Passed => SUCCESS,
        // Codes outside 1..=255 cannot be exit codes; keep them failures.
        Outcome::Failed { code } => i32::try_from(*code).ok().filter(|c| (1..=255).contains(c)).unwrap_or(1),
        // The agent's number is the guest's word: saturate, never overflow.
        Outcome::Signaled { signal } => 128i64.saturating_add(*signal).clamp(129, 255) as i32,
        Outcome::TimedOut { .. } => TIMED_OUT,
        Outcome::Error { .. } => INFRASTRUCTURE,
        Outcome::Interrupted { signal } => interrupted(*signal),
        Outcome::KernelSplat { .. } => KERNEL_SPLAT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results(outcomes: Vec<Outcome>) -> Vec<TargetResult> {
        outcomes
            .into_iter()
            .enumerate()
            .map(|(i, outcome)| crate::fixtures::result(&format!("t{i}"), outcome))
            .collect()
    }

    #[test]
    fn one_target_passes_its_code_through() {
        assert_eq!(fold(&results(vec![Outcome::Passed])), 0);
        assert_eq!(fold(&results(vec![Outcome::Failed { code: 12 }])), 12);
        assert_eq!(fold(&results(vec![Outcome::Failed { code: 256 }])), 1);
        assert_eq!(fold(&results(vec![Outcome::Signaled { signal: 9 }])), 137);
        assert_eq!(fold(&results(vec![Outcome::Signaled { signal: i64::MAX }])), 255);
        assert_eq!(fold(&results(vec![Outcome::Signaled { signal: i64::MIN }])), 129);
        assert_eq!(fold(&results(vec![Outcome::TimedOut { secs: 1 }])), 124);
        let error = Outcome::Error {
            message: "no kernel".into(),
        };
        assert_eq!(fold(&results(vec![error])), 69);
        let splat = Outcome::KernelSplat {
            description: "the kernel reported a splat".into(),
        };
        assert_eq!(fold(&results(vec![splat.clone()])), 70);
        assert_eq!(fold(&results(vec![Outcome::Passed, splat])), 1);
    }

    #[test]
    fn a_missing_report_fails_only_a_passing_run() {
        assert_eq!(with_reports(SUCCESS, true), SUCCESS);
        assert_eq!(with_reports(SUCCESS, false), REPORT_NOT_WRITTEN);
        assert_eq!(with_reports(3, false), 3);
        assert_eq!(with_reports(INTERRUPTED, false), INTERRUPTED);
    }

    #[test]
    fn several_targets_count_failures() {
        let outcomes = vec![
            Outcome::Passed,
            Outcome::Failed { code: 1 },
            Outcome::Error { message: "x".into() },
        ];
        assert_eq!(fold(&results(outcomes)), 2);
        assert_eq!(fold(&results(vec![Outcome::Passed, Outcome::Passed])), 0);
        let many = vec![Outcome::Failed { code: 1 }; 300];
        assert_eq!(fold(&results(many)), 255);
    }
}
