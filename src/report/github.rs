//! GitHub Actions' side of a run: workflow commands and the job summary.
//!
//! When `GITHUB_ACTIONS=true`, vmtest speaks GitHub's workflow-command
//! language: a collapsible `::group::` around each target's output (drawn by
//! `report.rs`), inside which workflow commands are switched off
//! (`::stop-commands::TOKEN` … `::TOKEN::`, with a token the guest cannot
//! guess) so that the guest's `::error::`, `::add-mask::` or `::endgroup::`
//! lines are shown, not obeyed; an `::error` annotation per failed target, and a Markdown
//! table of all targets appended to the file named by `$GITHUB_STEP_SUMMARY`
//! (both written by `publish.rs`). This module only builds the strings, with
//! GitHub's escaping, so tests compare them whole; it reads nothing and
//! prints nothing.

use std::time::Duration;

use crate::run::outcome::{Outcome, TargetResult};

/// Whether this process runs as a GitHub Actions step.
pub fn enabled() -> bool {
    std::env::var_os("GITHUB_ACTIONS").is_some_and(|v| v == "true")
}

/// The line opening a collapsible group titled `name`.
pub fn group_start(name: &str) -> String {
    format!("::group::{}", escape_data(name))
}

/// The line closing the current group.
pub fn group_end() -> String {
    "::endgroup::".to_string()
}

/// The line after which the runner obeys no workflow command until
/// [`resume_commands`] with the same token.
pub fn stop_commands(token: &str) -> String {
    format!("::stop-commands::{token}")
}

/// The line that turns workflow commands back on.
pub fn resume_commands(token: &str) -> String {
    format!("::{token}::")
}

/// A fresh token for [`stop_commands`].
pub fn new_token() -> String {
    crate::ports::relay::random_hex()
}

/// An `::error` annotation for a target that did not pass, titled
/// `vmtest NAME`, with the reason (every line of it) and the console log.
pub fn error_annotation(result: &TargetResult) -> Option<String> {
    if result.outcome.passed() {
        return None;
    }
    let mut message = result.outcome.reason();
    if let Some(log) = &result.console_log {
        message.push_str(&format!("\nconsole log: {}", log.display()));
    }
    Some(format!(
        "::error title={}::{}",
        escape_property(&format!("vmtest {}", result.name)),
        escape_data(&message)
    ))
}

/// The Markdown appended to `$GITHUB_STEP_SUMMARY`: a heading with the
/// counts and one table row per target with its phase timings (a dash for
/// a phase the target never reached).
pub fn step_summary(results: &[TargetResult]) -> String {
    let passed = results.iter().filter(|r| r.outcome.passed()).count();
    let mut md = format!("### vmtest: {passed} passed, {} failed\n\n", results.len() - passed);
    if results.is_empty() {
        md.push_str("No targets ran.\n");
        return md;
    }
    md.push_str("| Target | Verdict | Exit code / error | Boot | Setup | Command | Total |\n");
    md.push_str("|---|---|---|--:|--:|--:|--:|\n");
    for r in results {
        let mark = if r.outcome.passed() { "✅" } else { "❌" };
        let detail = match &r.outcome {
            Outcome::Passed => "0".to_string(),
            Outcome::Failed { code } => code.to_string(),
            outcome => outcome.reason().lines().next().unwrap_or_default().to_string(),
        };
        md.push_str(&format!(
            "| {} | {mark} {} | {} | {} | {} | {} | {} |\n",
            cell(&r.name),
            r.outcome.verdict(),
            cell(&detail),
            phase(r.phases.boot),
            phase(r.phases.setup),
            phase(r.phases.command),
            seconds(r.total)
        ));
    }
    md
}

fn seconds(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn phase(d: Duration) -> String {
    if d.is_zero() { "–".to_string() } else { seconds(d) }
}

/// A Markdown table cell: no line breaks, no column separators, no HTML.
fn cell(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace(['\r', '\n'], " ")
}

/// A workflow command's message (after the final `::`).
fn escape_data(s: &str) -> String {
    s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

/// A workflow command's property value (`title=...`).
fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::sample_results;

    #[test]
    fn groups() {
        assert_eq!(group_start("=== a (kernel /k)"), "::group::=== a (kernel /k)");
        assert_eq!(group_start("two\nlines 100%"), "::group::two%0Alines 100%25");
        assert_eq!(group_end(), "::endgroup::");
        assert_eq!(stop_commands("abc"), "::stop-commands::abc");
        assert_eq!(resume_commands("abc"), "::abc::");
        assert_eq!(new_token().len(), 32);
        assert_ne!(new_token(), new_token());
    }

    #[test]
    fn annotations_for_a_pass_a_failure_and_an_error() {
        let results = sample_results();
        let annotations: Vec<Option<String>> = results.iter().map(error_annotation).collect();
        assert_eq!(
            annotations,
            [
                None,
                Some("::error title=vmtest fail::exit code 3%0Aconsole log: /p/.vmtest/fail/console.log".into()),
                Some("::error title=vmtest broken::kernel /x/bzImage not found%0A(resolved against /p)".into()),
            ]
        );
    }

    #[test]
    fn annotation_titles_escape_properties() {
        let mut result = sample_results().remove(1);
        result.name = "arm64: 50%, big".into();
        result.console_log = None;
        result.outcome = Outcome::Error {
            message: "a: b, c\r\nd".into(),
        };
        assert_eq!(
            error_annotation(&result).unwrap(),
            "::error title=vmtest arm64%3A 50%25%2C big::a: b, c%0D%0Ad"
        );
    }

    #[test]
    fn step_summary_for_a_pass_a_failure_and_an_error() {
        assert_eq!(
            step_summary(&sample_results()),
            "### vmtest: 1 passed, 2 failed\n\
             \n\
             | Target | Verdict | Exit code / error | Boot | Setup | Command | Total |\n\
             |---|---|---|--:|--:|--:|--:|\n\
             | pass | ✅ pass | 0 | 2.00 s | 0.13 s | 0.40 s | 2.60 s |\n\
             | fail | ❌ fail | 3 | 2.00 s | 0.13 s | 0.40 s | 2.60 s |\n\
             | broken | ❌ error | kernel /x/bzImage not found | – | – | – | 0.01 s |\n"
        );
    }

    #[test]
    fn step_summary_cells_and_empty_runs() {
        let mut results = sample_results();
        results.truncate(1);
        results[0].name = "a|b <c>".into();
        results[0].outcome = Outcome::Signaled { signal: 9 };
        assert!(
            step_summary(&results).contains("| a\\|b &lt;c&gt; | ❌ fail | killed by signal 9 |"),
            "{}",
            step_summary(&results)
        );
        assert_eq!(step_summary(&[]), "### vmtest: 0 passed, 0 failed\n\nNo targets ran.\n");
    }
}
