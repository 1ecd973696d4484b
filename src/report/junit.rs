//! The JUnit XML report (`--junit PATH`), for CI systems' test views.
//!
//! One `<testsuite>` per run and one `<testcase>` per target that ran:
//! classname `vmtest.<kind>`, the time in seconds, a `<failure>` when the
//! command failed (exit code, signal, timeout) or an `<error>` when vmtest
//! could not boot or run it (or was interrupted), and the command's captured
//! output as `<system-out>` / `<system-err>`. The output is what
//! [`Captured`](crate::run::capture::Captured) kept (the last MiB of each stream,
//! with a note counting the bytes dropped before it), with the characters
//! XML 1.0 cannot carry (most control characters, e.g. the ESC of colour
//! codes) removed. Written by hand: the format is small and the escaping is
//! the only subtle part, tested below.

use std::fmt::Write as _;
use std::time::Duration;

use crate::run::outcome::{Outcome, TargetResult};

/// The JUnit document for `results`, as one suite named `suite`.
pub fn render(results: &[TargetResult], suite: &str) -> String {
    let failures = results.iter().filter(|r| is_failure(&r.outcome)).count();
    let errors = results.iter().filter(|r| is_error(&r.outcome)).count();
    let time = seconds(results.iter().map(|r| r.total).sum());
    let counts = format!(
        "tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{time}\"",
        results.len()
    );
    let suite = attribute(suite);
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(xml, "<testsuites name=\"vmtest\" {counts}>");
    let _ = writeln!(xml, "  <testsuite name=\"{suite}\" {counts} skipped=\"0\">");
    for result in results {
        testcase(&mut xml, result);
    }
    xml.push_str("  </testsuite>\n</testsuites>\n");
    xml
}

fn testcase(xml: &mut String, result: &TargetResult) {
    let _ = writeln!(
        xml,
        "    <testcase name=\"{}\" classname=\"vmtest.{}\" time=\"{}\">",
        attribute(&result.name),
        attribute(result.kind),
        seconds(result.total)
    );
    if let Some((element, kind, message)) = problem(&result.outcome) {
        let mut details = message.clone();
        if let Some(log) = &result.console_log {
            let _ = write!(details, "\nconsole log: {}", log.display());
        }
        let first_line = message.lines().next().unwrap_or_default();
        let _ = writeln!(
            xml,
            "      <{element} message=\"{}\" type=\"{kind}\">{}</{element}>",
            attribute(first_line),
            text(&details)
        );
    }
    for (element, captured) in [("system-out", &result.stdout), ("system-err", &result.stderr)] {
        if captured.total > 0 {
            let _ = writeln!(xml, "      <{element}>{}</{element}>", text(&captured.text()));
        }
    }
    xml.push_str("    </testcase>\n");
}

/// The element (`failure` or `error`), its `type` and its message, for an
/// outcome other than a pass.
fn problem(outcome: &Outcome) -> Option<(&'static str, &'static str, String)> {
    let (element, kind) = match outcome {
        Outcome::Passed => return None,
        Outcome::Failed { .. } => ("failure", "exit_code"),
        Outcome::Signaled { .. } => ("failure", "signal"),
        Outcome::TimedOut { .. } => ("failure", "timeout"),
        Outcome::Error { .. } => ("error", "infrastructure"),
        Outcome::Interrupted { .. } => ("error", "interrupted"),
        Outcome::KernelSplat { .. } => ("failure", "kernel_splat"),
    };
    Some((element, kind, outcome.reason()))
}

fn is_failure(outcome: &Outcome) -> bool {
    problem(outcome).is_some_and(|(element, ..)| element == "failure")
}

fn is_error(outcome: &Outcome) -> bool {
    problem(outcome).is_some_and(|(element, ..)| element == "error")
}

fn seconds(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

/// Whether XML 1.0 allows `c` at all (its `Char` production).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Escapes `s` for element content; characters XML cannot carry are dropped
/// and a carriage return is kept as a reference (parsers would otherwise
/// turn `\r\n` into `\n`).
fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().filter(|&c| is_xml_char(c)) {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes `s` for a double-quoted attribute value, keeping whitespace
/// characters that attribute normalisation would otherwise turn into spaces.
fn attribute(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in text(s).chars() {
        match c {
            '"' => out.push_str("&quot;"),
            '\n' => out.push_str("&#10;"),
            '\t' => out.push_str("&#9;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::sample_results;

    #[test]
    fn whole_report_for_a_pass_a_failure_and_an_error() {
        let expected = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="vmtest" tests="3" failures="1" errors="1" time="5.212">
  <testsuite name="vmtest" tests="3" failures="1" errors="1" time="5.212" skipped="0">
    <testcase name="pass" classname="vmtest.kernel" time="2.600">
      <system-out>ok
</system-out>
    </testcase>
    <testcase name="fail" classname="vmtest.kernel" time="2.600">
      <failure message="exit code 3" type="exit_code">exit code 3
console log: /p/.vmtest/fail/console.log</failure>
      <system-out>a &lt; b &amp; "c"[31m red
</system-out>
      <system-err>boom
</system-err>
    </testcase>
    <testcase name="broken" classname="vmtest.kernel" time="0.012">
      <error message="kernel /x/bzImage not found" type="infrastructure">kernel /x/bzImage not found
(resolved against /p)</error>
    </testcase>
  </testsuite>
</testsuites>
"#;
        assert_eq!(render(&sample_results(), "vmtest"), expected);
    }

    #[test]
    fn an_empty_run_is_a_valid_report() {
        assert_eq!(
            render(&[], "vmtest 3/3"),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <testsuites name=\"vmtest\" tests=\"0\" failures=\"0\" errors=\"0\" time=\"0.000\">\n  \
             <testsuite name=\"vmtest 3/3\" tests=\"0\" failures=\"0\" errors=\"0\" time=\"0.000\" skipped=\"0\">\n  \
             </testsuite>\n\
             </testsuites>\n"
        );
    }

    #[test]
    fn timeouts_and_signals_are_failures_interruptions_errors() {
        let mut results = sample_results();
        results[0].outcome = Outcome::TimedOut { secs: 5 };
        results[1].outcome = Outcome::Signaled { signal: 9 };
        results[2].outcome = Outcome::Interrupted { signal: libc::SIGTERM };
        let xml = render(&results, "s");
        assert!(xml.contains("tests=\"3\" failures=\"2\" errors=\"1\""), "{xml}");
        assert!(
            xml.contains("<failure message=\"timed out after 5 s\" type=\"timeout\">"),
            "{xml}"
        );
        assert!(
            xml.contains("<failure message=\"killed by signal 9\" type=\"signal\">"),
            "{xml}"
        );
        assert!(
            xml.contains("<error message=\"interrupted by SIGTERM\" type=\"interrupted\">"),
            "{xml}"
        );
    }

    #[test]
    fn escaping() {
        assert_eq!(
            text("a<b>&c\r\n\x00\x07\x1b[0m\u{FFFE}é\t"),
            "a&lt;b&gt;&amp;c&#13;\n[0mé\t"
        );
        assert_eq!(
            attribute("say \"hi\"\n\tto 'me' <&>"),
            "say &quot;hi&quot;&#10;&#9;to 'me' &lt;&amp;&gt;"
        );
    }

    #[test]
    fn dropped_output_is_noted() {
        let mut results = sample_results();
        results.truncate(1);
        results[0].stdout = Default::default();
        results[0]
            .stdout
            .push(&vec![b'x'; crate::run::capture::CAPTURE_LIMIT + 5]);
        let xml = render(&results, "s");
        assert!(
            xml.contains("<system-out>[vmtest: 5 earlier bytes not kept]\nxxx"),
            "{}",
            &xml[..400]
        );
    }
}
