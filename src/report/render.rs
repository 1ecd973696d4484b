//! The report's text, as pure functions of targets and results.
//!
//! Headers, verdict lines, failure reasons and the closing summary are
//! rendered here and nowhere else, so the plain and the live terminal views
//! (`report.rs`) and their tests agree on every word.

use std::time::Duration;

use crate::config::{Kind, Target};
use crate::run::outcome::{Outcome, Phases, TargetResult};

/// The line that opens a target's section.
pub fn header(target: &Target) -> String {
    format!("=== {} ({})", target.name, what(target))
}

/// What a target boots, e.g. `kernel /path/bzImage`.
pub fn what(target: &Target) -> String {
    match &target.kind {
        Kind::Kernel { kernel, .. } => format!("kernel {}", kernel.display()),
        Kind::Image { image, .. } => format!("image {}", image.display()),
    }
}

/// The line (or lines, for a failure with a console log) closing a target.
pub fn verdict(result: &TargetResult) -> String {
    let time = timing(result);
    match &result.outcome {
        Outcome::Passed => format!("--- PASS {} ({time})", result.name),
        outcome => {
            let mut text = format!("--- FAIL {} ({time}): {}", result.name, outcome.failure_reason());
            if let Some(log) = &result.console_log {
                text.push_str(&format!("\n    console log: {}", log.display()));
            }
            if let Some(vmcore) = &result.vmcore {
                text.push_str(&format!("\n    memory dump: {}", vmcore.display()));
            }
            text
        }
    }
}

/// Total time, and the phases when the guest got as far as booting.
pub fn timing(result: &TargetResult) -> String {
    let total = seconds(result.total);
    if result.phases == Phases::default() {
        return total;
    }
    let p = &result.phases;
    format!(
        "{total}: boot {}, setup {}, command {}",
        seconds(p.boot),
        seconds(p.setup),
        seconds(p.command)
    )
}

/// The closing summary: with several targets, one line per target with its
/// verdict and phase timings; then the counts (and the targets never run,
/// if vmtest was interrupted) on the last line.
pub fn summary(results: &[TargetResult], planned: usize) -> String {
    let passed = results.iter().filter(|r| r.outcome.passed()).count();
    let failed = results.len() - passed;
    let mut text = String::new();
    if results.len() > 1 {
        let width = results.iter().map(|r| r.name.len()).max().unwrap_or(0);
        for r in results {
            let (word, reason) = match &r.outcome {
                Outcome::Passed => ("PASS", String::new()),
                outcome => {
                    let reason = outcome.failure_reason();
                    let first_line = reason.lines().next().unwrap_or_default().to_string();
                    ("FAIL", format!(": {first_line}"))
                }
            };
            text.push_str(&format!("  {word} {:width$} ({}){reason}\n", r.name, timing(r)));
        }
    }
    let not_run = planned.saturating_sub(results.len());
    let not_run = if not_run > 0 {
        format!(", {not_run} not run")
    } else {
        String::new()
    };
    text.push_str(&format!("Summary: {passed} passed, {failed} failed{not_run}\n"));
    text
}

pub fn seconds(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{booted, result};

    #[test]
    fn verdicts() {
        assert_eq!(
            verdict(&booted("a", Outcome::Passed)),
            "--- PASS a (2.50s: boot 2.00s, setup 0.10s, command 0.40s)"
        );
        assert_eq!(
            verdict(&booted("b", Outcome::Failed { code: 12 })),
            "--- FAIL b (2.50s: boot 2.00s, setup 0.10s, command 0.40s): exit code 12"
        );
        assert_eq!(
            verdict(&booted("c", Outcome::Signaled { signal: 9 })),
            "--- FAIL c (2.50s: boot 2.00s, setup 0.10s, command 0.40s): killed by signal 9"
        );
        assert_eq!(
            verdict(&result("d", Outcome::TimedOut { secs: 5 })),
            "--- FAIL d (2.50s): timed out after 5 s"
        );
    }

    #[test]
    fn failures_point_at_the_console_log() {
        let mut r = result("b", Outcome::Failed { code: 1 });
        r.console_log = Some("/p/.vmtest/b/console.log".into());
        assert_eq!(
            verdict(&r),
            "--- FAIL b (2.50s): exit code 1\n    console log: /p/.vmtest/b/console.log"
        );
        r.outcome = Outcome::Passed;
        assert_eq!(verdict(&r), "--- PASS b (2.50s)");
    }

    #[test]
    fn summary_lists_every_target_with_its_phases() {
        let results = vec![
            booted("alpha", Outcome::Passed),
            booted("b", Outcome::Failed { code: 3 }),
            result(
                "gamma",
                Outcome::Error {
                    message: "kernel /x not found\nmore".into(),
                },
            ),
        ];
        assert_eq!(
            summary(&results, 4),
            "  PASS alpha (2.50s: boot 2.00s, setup 0.10s, command 0.40s)\n  \
             FAIL b     (2.50s: boot 2.00s, setup 0.10s, command 0.40s): exit code 3\n  \
             FAIL gamma (2.50s): error: kernel /x not found\n\
             Summary: 1 passed, 2 failed, 1 not run\n"
        );
        assert_eq!(summary(&results[..1], 1), "Summary: 1 passed, 0 failed\n");
    }
}
