//! The JSON report (`--json PATH`, `--format json`): a stable schema for scripts.
//!
//! The schema is the serde structs below, documented field by field in
//! `docs/reports.md`; `schema_version` changes only when a field is removed
//! or changes meaning (new fields may appear without it). This module also
//! owns the one-word verdicts (`pass`, `fail`, ...) and the failure reasons
//! that the JUnit report and the GitHub annotations and summary reuse. Rendering is a pure function of the results; writing the
//! file is `publish.rs`'s job.

use std::time::Duration;

use serde::Serialize;

use crate::runner::{Outcome, TargetResult};

/// Bumped when a field is removed or changes meaning.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
struct Report<'a> {
    vmtest_version: &'static str,
    schema_version: u32,
    totals: Totals,
    targets: Vec<Entry<'a>>,
}

#[derive(Debug, Serialize)]
struct Totals {
    passed: usize,
    /// Every target that ran and did not pass, whatever the reason.
    failed: usize,
    /// Targets never started because vmtest was interrupted.
    not_run: usize,
}

#[derive(Debug, Serialize)]
struct Entry<'a> {
    name: &'a str,
    kind: &'a str,
    verdict: &'static str,
    exit_code: Option<i64>,
    signal: Option<i64>,
    error: Option<String>,
    durations: Durations,
    console_log: Option<String>,
    /// The crash dump, when the guest panicked with `dump_on_panic`.
    vmcore: Option<String>,
}

/// Seconds, as floats with millisecond precision; 0 for a phase not reached.
#[derive(Debug, Serialize)]
struct Durations {
    boot: f64,
    setup: f64,
    command: f64,
    total: f64,
}

/// The one-word verdict of an outcome: `pass`, `fail` (non-zero exit or a
/// signal, or a kernel splat: then `exit_code` is 0 and `error` has the
/// splat), `error` (vmtest could not boot or run it),
/// `timeout` or `interrupted`.
pub fn verdict(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Passed => "pass",
        Outcome::Failed { .. } | Outcome::Signaled { .. } | Outcome::KernelSplat { .. } => "fail",
        Outcome::Error { .. } => "error",
        Outcome::TimedOut { .. } => "timeout",
        Outcome::Interrupted { .. } => "interrupted",
    }
}

/// Why a target did not pass, in words: an infrastructure error's own
/// message, otherwise the terminal report's reason (`exit code 3`).
pub fn reason(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Error { message } => message.clone(),
        outcome => crate::render::failure_reason(outcome),
    }
}

/// The JSON document for a run of `planned` targets, pretty-printed, with a
/// final newline.
pub fn render(results: &[TargetResult], planned: usize) -> String {
    let passed = results.iter().filter(|r| r.outcome.passed()).count();
    let report = Report {
        vmtest_version: env!("CARGO_PKG_VERSION"),
        schema_version: SCHEMA_VERSION,
        totals: Totals {
            passed,
            failed: results.len() - passed,
            not_run: planned.saturating_sub(results.len()),
        },
        targets: results.iter().map(entry).collect(),
    };
    let mut text = serde_json::to_string_pretty(&report).expect("the report serialises");
    text.push('\n');
    text
}

fn entry(result: &TargetResult) -> Entry<'_> {
    let (exit_code, signal, error) = match &result.outcome {
        Outcome::Passed => (Some(0), None, None),
        Outcome::Failed { code } => (Some(*code), None, None),
        Outcome::Signaled { signal } => (None, Some(*signal), None),
        outcome @ Outcome::KernelSplat { .. } => (Some(0), None, Some(reason(outcome))),
        outcome @ (Outcome::TimedOut { .. } | Outcome::Error { .. } | Outcome::Interrupted { .. }) => {
            (None, None, Some(reason(outcome)))
        }
    };
    Entry {
        name: &result.name,
        kind: result.kind,
        verdict: verdict(&result.outcome),
        exit_code,
        signal,
        error,
        durations: Durations {
            boot: seconds(result.phases.boot),
            setup: seconds(result.phases.setup),
            command: seconds(result.phases.command),
            total: seconds(result.total),
        },
        console_log: result.console_log.as_ref().map(|p| p.display().to_string()),
        vmcore: result.vmcore.as_ref().map(|p| p.display().to_string()),
    }
}

fn seconds(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::runner::Phases;

    /// A pass, a failure and an infrastructure error, as the report tests
    /// of every format use them.
    pub fn sample_results() -> Vec<TargetResult> {
        let booted = Phases {
            boot: Duration::from_millis(2000),
            setup: Duration::from_millis(130),
            command: Duration::from_micros(400_400),
        };
        let mut pass = TargetResult {
            name: "pass".into(),
            kind: "kernel",
            outcome: Outcome::Passed,
            phases: booted,
            total: Duration::from_millis(2600),
            console_log: Some("/p/.vmtest/pass/console.log".into()),
            stdout: Default::default(),
            stderr: Default::default(),
            vmcore: None,
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
            name: "broken".into(),
            outcome: Outcome::Error {
                message: "kernel /x/bzImage not found\n(resolved against /p)".into(),
            },
            phases: Phases::default(),
            total: Duration::from_millis(12),
            console_log: None,
            stdout: Default::default(),
            stderr: Default::default(),
            ..pass.clone()
        };
        vec![pass, fail, broken]
    }

    #[test]
    fn whole_report_for_a_pass_a_failure_and_an_error() {
        let expected = r#"{
  "vmtest_version": "VERSION",
  "schema_version": 1,
  "totals": {
    "passed": 1,
    "failed": 2,
    "not_run": 1
  },
  "targets": [
    {
      "name": "pass",
      "kind": "kernel",
      "verdict": "pass",
      "exit_code": 0,
      "signal": null,
      "error": null,
      "durations": {
        "boot": 2.0,
        "setup": 0.13,
        "command": 0.4,
        "total": 2.6
      },
      "console_log": "/p/.vmtest/pass/console.log",
      "vmcore": null
    },
    {
      "name": "fail",
      "kind": "kernel",
      "verdict": "fail",
      "exit_code": 3,
      "signal": null,
      "error": null,
      "durations": {
        "boot": 2.0,
        "setup": 0.13,
        "command": 0.4,
        "total": 2.6
      },
      "console_log": "/p/.vmtest/fail/console.log",
      "vmcore": null
    },
    {
      "name": "broken",
      "kind": "kernel",
      "verdict": "error",
      "exit_code": null,
      "signal": null,
      "error": "kernel /x/bzImage not found\n(resolved against /p)",
      "durations": {
        "boot": 0.0,
        "setup": 0.0,
        "command": 0.0,
        "total": 0.012
      },
      "console_log": null,
      "vmcore": null
    }
  ]
}
"#
        .replace("VERSION", env!("CARGO_PKG_VERSION"));
        assert_eq!(render(&sample_results(), 4), expected);
    }

    #[test]
    fn signals_timeouts_and_interruptions() {
        let mut results = sample_results();
        results.truncate(1);
        results[0].outcome = Outcome::Signaled { signal: 9 };
        let value: serde_json::Value = serde_json::from_str(&render(&results, 1)).unwrap();
        let target = &value["targets"][0];
        assert_eq!(target["verdict"], "fail");
        assert_eq!(target["exit_code"], serde_json::Value::Null);
        assert_eq!(target["signal"], 9);

        results[0].outcome = Outcome::TimedOut { secs: 5 };
        let value: serde_json::Value = serde_json::from_str(&render(&results, 1)).unwrap();
        assert_eq!(value["targets"][0]["verdict"], "timeout");
        assert_eq!(value["targets"][0]["error"], "timed out after 5 s");

        results[0].outcome = Outcome::Interrupted { signal: libc::SIGINT };
        let value: serde_json::Value = serde_json::from_str(&render(&results, 3)).unwrap();
        assert_eq!(value["targets"][0]["verdict"], "interrupted");
        assert_eq!(value["targets"][0]["error"], "interrupted by SIGINT");
        assert_eq!(value["totals"]["not_run"], 2);
    }

    #[test]
    fn an_empty_run_is_a_valid_report() {
        let value: serde_json::Value = serde_json::from_str(&render(&[], 0)).unwrap();
        assert_eq!(value["targets"], serde_json::json!([]));
        assert_eq!(value["totals"]["passed"], 0);
    }
}
