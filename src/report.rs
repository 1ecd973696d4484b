//! Rendering what happens: the only code that prints.
//!
//! The runner sends events (a target starts, output arrives, a target ends,
//! a warning) and the [`Reporter`] turns them into text: per target a header,
//! the command's output as it arrives (stdout to stdout, stderr to stderr),
//! and a verdict line; at the end a summary. Rendering of verdicts and the
//! summary are pure functions so tests compare whole outputs.

use std::io::{self, Write};
use std::time::Duration;

use crate::config::{Kind, Target};
use crate::relay::Stream;
use crate::runner::{Outcome, TargetResult};

/// Writes the report to two sinks: normally the process's stdout and stderr.
pub struct Reporter {
    out: Box<dyn Write>,
    err: Box<dyn Write>,
    /// Whether the last byte of command output on stdout ended a line.
    at_line_start: bool,
}

impl Reporter {
    pub fn stdio() -> Self {
        Reporter::new(Box::new(io::stdout()), Box::new(io::stderr()))
    }

    pub fn new(out: Box<dyn Write>, err: Box<dyn Write>) -> Self {
        Reporter {
            out,
            err,
            at_line_start: true,
        }
    }

    pub fn warning(&mut self, message: &str) {
        let _ = writeln!(self.err, "vmtest: warning: {message}");
        let _ = self.err.flush();
    }

    pub fn target_started(&mut self, target: &Target) {
        let _ = writeln!(self.out, "{}", header(target));
        let _ = self.out.flush();
        self.at_line_start = true;
    }

    pub fn output(&mut self, stream: Stream, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let sink = match stream {
            Stream::Stdout => {
                self.at_line_start = bytes.ends_with(b"\n");
                &mut self.out
            }
            Stream::Stderr => &mut self.err,
        };
        let _ = sink.write_all(bytes);
        let _ = sink.flush();
    }

    pub fn target_finished(&mut self, result: &TargetResult) {
        if !self.at_line_start {
            let _ = writeln!(self.out);
            self.at_line_start = true;
        }
        let _ = writeln!(self.out, "{}", verdict(result));
        let _ = self.out.flush();
    }

    pub fn summary(&mut self, results: &[TargetResult], planned: usize) {
        let _ = write!(self.out, "{}", summary(results, planned));
        let _ = self.out.flush();
    }
}

/// The line that opens a target's section.
pub fn header(target: &Target) -> String {
    let what = match &target.kind {
        Kind::Kernel { kernel, .. } => format!("kernel {}", kernel.display()),
        Kind::Image { image, .. } => format!("image {}", image.display()),
    };
    format!("=== {} ({what})", target.name)
}

/// The line (or lines, for an error with details) closing a target.
pub fn verdict(result: &TargetResult) -> String {
    let time = seconds(result.total);
    match &result.outcome {
        Outcome::Passed => format!("--- PASS {} ({time})", result.name),
        outcome => {
            let mut text = format!("--- FAIL {} ({time}): {}", result.name, failure_reason(outcome));
            if let Some(log) = &result.console_log {
                text.push_str(&format!("\n    console log: {}", log.display()));
            }
            text
        }
    }
}

/// Why a target failed, in words.
pub fn failure_reason(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Passed => "passed".to_string(),
        Outcome::Failed { code } => format!("exit code {code}"),
        Outcome::Signaled { signal } => format!("killed by signal {signal}"),
        Outcome::TimedOut { secs } => format!("timed out after {secs} s"),
        Outcome::Error { message } => format!("error: {message}"),
        Outcome::Interrupted { signal } => crate::interrupt::Interrupted(*signal).to_string(),
    }
}

/// The closing summary: each failed target again, then the counts (with
/// the targets never run, if vmtest was interrupted).
pub fn summary(results: &[TargetResult], planned: usize) -> String {
    let passed = results.iter().filter(|r| r.outcome.passed()).count();
    let failed = results.len() - passed;
    let mut text = String::new();
    if failed > 0 && results.len() > 1 {
        text.push_str("Failed targets:\n");
        for r in results.iter().filter(|r| !r.outcome.passed()) {
            let reason = failure_reason(&r.outcome);
            let first_line = reason.lines().next().unwrap_or_default();
            text.push_str(&format!("  {}: {first_line}\n", r.name));
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

fn seconds(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::Phases;

    fn result(name: &str, outcome: Outcome) -> TargetResult {
        TargetResult {
            name: name.into(),
            kind: "kernel",
            outcome,
            phases: Phases::default(),
            total: Duration::from_millis(2500),
            console_log: None,
            stdout: Default::default(),
            stderr: Default::default(),
        }
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
    fn verdicts() {
        assert_eq!(verdict(&result("a", Outcome::Passed)), "--- PASS a (2.50s)");
        assert_eq!(
            verdict(&result("b", Outcome::Failed { code: 12 })),
            "--- FAIL b (2.50s): exit code 12"
        );
        assert_eq!(
            verdict(&result("c", Outcome::Signaled { signal: 9 })),
            "--- FAIL c (2.50s): killed by signal 9"
        );
        assert_eq!(
            verdict(&result("d", Outcome::TimedOut { secs: 5 })),
            "--- FAIL d (2.50s): timed out after 5 s"
        );
    }

    #[test]
    fn whole_report_is_rendered_in_order() {
        #[derive(Clone, Default)]
        struct Shared(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.borrow_mut().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (out, err) = (Shared::default(), Shared::default());
        let mut reporter = Reporter::new(Box::new(out.clone()), Box::new(err.clone()));
        let target = crate::config::one_liner(
            crate::config::OneLiner {
                kernel: "/k/bzImage".into(),
                command: "true".into(),
                ..Default::default()
            },
            std::path::Path::new("/w"),
        )
        .unwrap();
        reporter.target_started(&target);
        reporter.output(Stream::Stdout, b"hello");
        reporter.output(Stream::Stderr, b"oops\n");
        let results = vec![
            result("bzImage", Outcome::Failed { code: 3 }),
            result(
                "other",
                Outcome::Error {
                    message: "kernel /x not found\nmore".into(),
                },
            ),
        ];
        reporter.target_finished(&results[0]);
        reporter.summary(&results, 3);
        assert_eq!(
            String::from_utf8(out.0.borrow().clone()).unwrap(),
            "=== bzImage (kernel /k/bzImage)\n\
             hello\n\
             --- FAIL bzImage (2.50s): exit code 3\n\
             Failed targets:\n  bzImage: exit code 3\n  other: error: kernel /x not found\n\
             Summary: 0 passed, 2 failed, 1 not run\n"
        );
        assert_eq!(String::from_utf8(err.0.borrow().clone()).unwrap(), "oops\n");
    }
}
