//! The JSON report (`--json PATH`, `--format json`): a stable schema for scripts.
//!
//! The schema is the serde structs below, documented field by field in
//! `docs/reports.md`; `schema_version` changes only when a field is removed
//! or changes meaning (new fields may appear without it). The verdicts and
//! reasons are the outcome's own words (`run::outcome`). Rendering is a pure
//! function of the results; writing the file is `publish.rs`'s job.

use std::time::Duration;

use serde::Serialize;

use crate::run::outcome::{Outcome, TargetResult};

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
        outcome @ Outcome::KernelSplat { .. } => (Some(0), None, Some(outcome.reason())),
        outcome @ (Outcome::TimedOut { .. } | Outcome::Error { .. } | Outcome::Interrupted { .. }) => {
            (None, None, Some(outcome.reason()))
        }
    };
    Entry {
        name: &result.name,
        kind: result.kind,
        verdict: result.outcome.verdict(),
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
mod tests {
    use super::*;
    use crate::fixtures::sample_results;

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
