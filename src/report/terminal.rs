//! Showing what happens as it happens: the only code that prints.
//!
//! The runner sends events (`run::events`: a target starts, changes phase,
//! emits output, ends; a warning) and the [`Reporter`] shows them. The command's stdout
//! goes to stdout and its stderr to stderr, as they arrive. Around them:
//! - plain mode (no terminal, `NO_COLOR`, `VMTEST_NO_UI=1`, CI logs): a
//!   `=== NAME` header, the output, a verdict line; no escape codes. Under
//!   GitHub Actions the section is a collapsible `::group::`, with workflow
//!   commands stopped while the guest's output and the verdict's details
//!   (which may quote the guest's console) are shown.
//! - live mode (a terminal): one status line per running target (booting /
//!   setting up / running, with elapsed time), redrawn in place; it collapses
//!   into the coloured verdict when the target ends. A header is printed
//!   only once the target has output to attribute.
//!
//! The words themselves come from `render.rs`.

use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::config::Target;
use crate::ports::relay::Stream;
use crate::report::at_once::AtOnce;
use crate::report::render;
use crate::run::events::{Event, EventSink, Phase, TargetEvent};
use crate::run::outcome::TargetResult;

/// How the report is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Plain,
    /// Plain, with GitHub Actions groups around each target.
    GitHub,
    Live,
}

impl Mode {
    /// The mode for this process's stdout and environment.
    pub fn detect() -> Mode {
        let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
        if crate::report::github::enabled() {
            Mode::GitHub
        } else if io::stdout().is_terminal()
            && !set("NO_COLOR")
            && std::env::var_os("VMTEST_NO_UI").is_none_or(|v| v != "1")
        {
            Mode::Live
        } else {
            Mode::Plain
        }
    }
}

/// The target being shown.
pub(super) struct Current {
    /// Its place in config order.
    pub(super) index: usize,
    pub(super) name: String,
    pub(super) header: String,
    pub(super) started: Instant,
    pub(super) phase: Phase,
    pub(super) phase_started: Instant,
    /// Whether its header is on screen (live mode prints it lazily).
    pub(super) header_shown: bool,
    /// GitHub mode: the token that turns workflow commands back on.
    pub(super) stop_token: Option<String>,
}

/// Least time between two redraws of the live status line.
const REDRAW: Duration = Duration::from_millis(200);
pub(super) const CLEAR_LINE: &str = "\r\x1b[2K";
/// Moves the cursor up a line and clears it.
const UP_AND_CLEAR: &str = "\x1b[1A\x1b[2K";
const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";
pub(super) const DIM: &str = "\x1b[2m";
pub(super) const RESET: &str = "\x1b[0m";

impl<'t> EventSink<'t> for Reporter {
    fn event(&mut self, event: Event<'t>) {
        match event {
            Event::Warning(message) => self.warning(&message),
            Event::Note(message) => self.note(&message),
            Event::Tick => self.tick(),
            Event::Target { index, target, event } if self.at_once.is_some() => {
                self.at_once_event(index, target, event)
            }
            Event::Target { index, target, event } => match event {
                TargetEvent::Started => self.target_started(index, target),
                TargetEvent::Phase(phase) => self.phase(phase),
                TargetEvent::Output(stream, bytes) => {
                    // This reporter shows one target at a time.
                    debug_assert!(self.current.as_ref().is_none_or(|c| c.index == index));
                    self.output(stream, &bytes)
                }
                TargetEvent::HandOverTerminal => self.hand_over_terminal(),
                TargetEvent::Finished(result) => self.target_finished(&result),
            },
        }
    }
}

/// Writes the report to two sinks: normally the process's stdout and stderr.
pub struct Reporter {
    pub(super) out: Box<dyn Write>,
    pub(super) err: Box<dyn Write>,
    pub(super) mode: Mode,
    pub(super) current: Option<Current>,
    /// Set when several targets run at once (`-j`): see `at_once.rs`.
    pub(super) at_once: Option<AtOnce>,
    /// Whether the command's last stdout / stderr byte ended a line.
    pub(super) out_at_line_start: bool,
    pub(super) err_at_line_start: bool,
    /// Lines of live status on screen, below the report.
    pub(super) status_lines: usize,
    last_draw: Instant,
    /// An interactive shell owns the terminal, or a finished target's
    /// output is being replayed: draw no status.
    pub(super) interactive: bool,
}

impl Reporter {
    pub fn stdio() -> Self {
        Reporter::new(Box::new(io::stdout()), Box::new(io::stderr()), Mode::detect())
    }

    pub fn new(out: Box<dyn Write>, err: Box<dyn Write>, mode: Mode) -> Self {
        Reporter {
            out,
            err,
            mode,
            current: None,
            at_once: None,
            out_at_line_start: true,
            err_at_line_start: true,
            status_lines: 0,
            last_draw: Instant::now(),
            interactive: false,
        }
    }

    pub fn warning(&mut self, message: &str) {
        self.clear_status();
        let _ = writeln!(self.err, "vmtest: warning: {message}");
        let _ = self.err.flush();
        self.draw_status();
    }

    /// Something the user needs to act on that is not a problem (how to
    /// attach a debugger).
    pub fn note(&mut self, message: &str) {
        self.clear_status();
        let _ = writeln!(self.err, "vmtest: {message}");
        let _ = self.err.flush();
        self.draw_status();
    }

    pub fn target_started(&mut self, index: usize, target: &Target) {
        let now = Instant::now();
        self.current = Some(Current {
            index,
            name: target.name.clone(),
            header: render::header(target),
            started: now,
            phase: Phase::Booting,
            phase_started: now,
            header_shown: self.mode != Mode::Live,
            stop_token: None,
        });
        self.open_section();
    }

    /// Opens the current target's section: its header (plain), its group
    /// (GitHub) or its status line (live).
    pub(super) fn open_section(&mut self) {
        let header = self.current.as_ref().map(|c| c.header.clone()).unwrap_or_default();
        self.out_at_line_start = true;
        self.err_at_line_start = true;
        match self.mode {
            Mode::Plain => {
                let _ = writeln!(self.out, "{header}");
            }
            Mode::GitHub => {
                let token = crate::report::github::new_token();
                let _ = writeln!(
                    self.out,
                    "{}\n{}",
                    crate::report::github::group_start(&header),
                    crate::report::github::stop_commands(&token)
                );
                if let Some(current) = &mut self.current {
                    current.stop_token = Some(token);
                }
            }
            Mode::Live => self.draw_status(),
        }
        let _ = self.out.flush();
    }

    pub fn phase(&mut self, phase: Phase) {
        if let Some(current) = &mut self.current {
            current.phase = phase;
            current.phase_started = Instant::now();
        }
        self.draw_status();
    }

    /// Stops drawing until the current target ends: an interactive shell
    /// owns the terminal.
    pub fn hand_over_terminal(&mut self) {
        self.clear_status();
        self.interactive = true;
    }

    /// Called while waiting, so the live view's clocks move.
    pub fn tick(&mut self) {
        if self.mode == Mode::Live && self.last_draw.elapsed() >= REDRAW {
            self.draw_status();
        }
    }

    pub fn output(&mut self, stream: Stream, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.clear_status();
        if let Some(current) = &mut self.current
            && !current.header_shown
        {
            current.header_shown = true;
            let _ = writeln!(self.out, "{DIM}{}{RESET}", current.header);
            let _ = self.out.flush();
        }
        let ends_line = bytes.ends_with(b"\n");
        let sink = match stream {
            Stream::Stdout => {
                self.out_at_line_start = ends_line;
                &mut self.out
            }
            Stream::Stderr => {
                self.err_at_line_start = ends_line;
                &mut self.err
            }
        };
        let _ = sink.write_all(bytes);
        let _ = sink.flush();
        self.draw_status();
    }

    pub fn target_finished(&mut self, result: &TargetResult) {
        self.clear_status();
        if !self.out_at_line_start {
            let _ = writeln!(self.out);
            self.out_at_line_start = true;
        }
        if !self.err_at_line_start {
            let _ = writeln!(self.err);
            let _ = self.err.flush();
            self.err_at_line_start = true;
        }
        let verdict = render::verdict(result);
        match self.mode {
            Mode::Plain => {
                let _ = writeln!(self.out, "{verdict}");
            }
            Mode::GitHub => {
                let _ = self.err.flush();
                if let Some(token) = self.current.as_ref().and_then(|c| c.stop_token.as_deref()) {
                    let _ = writeln!(self.out, "{}", crate::report::github::resume_commands(token));
                }
                let _ = writeln!(self.out, "{}", crate::report::github::group_end());
                // The reason's further lines may quote the guest's console.
                match verdict.split_once('\n') {
                    Some((first, rest)) => {
                        let token = crate::report::github::new_token();
                        let _ = writeln!(
                            self.out,
                            "{first}\n{}\n{rest}\n{}",
                            crate::report::github::stop_commands(&token),
                            crate::report::github::resume_commands(&token)
                        );
                    }
                    None => {
                        let _ = writeln!(self.out, "{verdict}");
                    }
                }
            }
            Mode::Live => {
                let colour = if result.outcome.passed() { GREEN } else { RED };
                let (first, rest) = verdict.split_once('\n').unwrap_or((&verdict, ""));
                let _ = writeln!(self.out, "{colour}{first}{RESET}");
                if !rest.is_empty() {
                    let _ = writeln!(self.out, "{rest}");
                }
            }
        }
        let _ = self.out.flush();
        self.current = None;
        self.interactive = false;
    }

    pub fn summary(&mut self, results: &[TargetResult], planned: usize) {
        self.clear_status();
        let _ = write!(self.out, "{}", render::summary(results, planned));
        let _ = self.out.flush();
    }

    /// Draws the live status, one line per running target, unless output
    /// left a line unfinished.
    pub(super) fn draw_status(&mut self) {
        if self.mode != Mode::Live || self.interactive || !self.out_at_line_start || !self.err_at_line_start {
            return;
        }
        let lines = match &self.at_once {
            Some(at_once) => at_once.status_lines(),
            None => self.current.iter().map(status_line).collect(),
        };
        if lines.is_empty() {
            return;
        }
        // Back to the first line of the status on screen, clearing the rest
        // (each new line starts by clearing its own).
        let mut text = String::new();
        for _ in 1..self.status_lines {
            text.push_str(CLEAR_LINE);
            text.push_str("\x1b[1A");
        }
        let lines: Vec<String> = lines.iter().map(|l| format!("{CLEAR_LINE}{DIM}{l}{RESET}")).collect();
        text.push_str(&lines.join("\n"));
        let _ = self.out.write_all(text.as_bytes());
        let _ = self.out.flush();
        self.status_lines = lines.len();
        self.last_draw = Instant::now();
    }

    pub(super) fn clear_status(&mut self) {
        if self.status_lines > 0 {
            let mut text = CLEAR_LINE.to_string();
            for _ in 1..self.status_lines {
                text.push_str(UP_AND_CLEAR);
            }
            let _ = self.out.write_all(text.as_bytes());
            let _ = self.out.flush();
            self.status_lines = 0;
        }
    }
}

/// A running target's live status: `… NAME PHASE 1.2s (total 3.4s)`.
pub(super) fn status_line(current: &Current) -> String {
    format!(
        "… {} {} {:.1}s (total {:.1}s)",
        current.name,
        current.phase.label(),
        current.phase_started.elapsed().as_secs_f64(),
        current.started.elapsed().as_secs_f64()
    )
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::fixtures::result;
    use crate::run::outcome::Outcome;

    #[derive(Clone, Default)]
    pub struct Shared(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.borrow_mut().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        pub fn text(&self) -> String {
            String::from_utf8(self.0.borrow().clone()).unwrap()
        }
    }

    pub fn target() -> Target {
        let args = crate::config::OneLiner {
            kernel: "/k/bzImage".into(),
            command: "true".into(),
            ..Default::default()
        };
        crate::config::one_liner(args, std::path::Path::new("/w")).unwrap()
    }

    /// Runs one target with some output through a reporter in `mode`.
    fn render(mode: Mode) -> (String, String) {
        let (out, err) = (Shared::default(), Shared::default());
        let mut reporter = Reporter::new(Box::new(out.clone()), Box::new(err.clone()), mode);
        reporter.target_started(0, &target());
        reporter.phase(Phase::Running);
        reporter.output(Stream::Stdout, b"hello");
        reporter.output(Stream::Stderr, b"oops\n");
        let results = vec![result("bzImage", Outcome::Failed { code: 3 })];
        reporter.target_finished(&results[0]);
        reporter.summary(&results, 2);
        (out.text(), err.text())
    }

    #[test]
    fn plain_report() {
        let (out, err) = render(Mode::Plain);
        assert_eq!(
            out,
            "=== bzImage (kernel /k/bzImage)\n\
             hello\n\
             --- FAIL bzImage (2.50s): exit code 3\n\
             Summary: 0 passed, 1 failed, 1 not run\n"
        );
        assert_eq!(err, "oops\n");
    }

    #[test]
    fn github_report_groups_each_target_and_stops_commands_in_it() {
        let (out, _) = render(Mode::GitHub);
        let token = out.lines().nth(1).unwrap().strip_prefix("::stop-commands::").unwrap();
        assert_eq!(token.len(), 32, "{out}");
        assert_eq!(
            out.replace(token, "TOKEN"),
            "::group::=== bzImage (kernel /k/bzImage)\n\
             ::stop-commands::TOKEN\n\
             hello\n\
             ::TOKEN::\n\
             ::endgroup::\n\
             --- FAIL bzImage (2.50s): exit code 3\n\
             Summary: 0 passed, 1 failed, 1 not run\n"
        );
    }

    #[test]
    fn github_verdict_details_are_not_obeyed_either() {
        let (out, err) = (Shared::default(), Shared::default());
        let mut reporter = Reporter::new(Box::new(out.clone()), Box::new(err.clone()), Mode::GitHub);
        reporter.target_started(0, &target());
        reporter.output(Stream::Stdout, b"::error::pwned\n");
        let mut failed = result(
            "bzImage",
            Outcome::Error {
                message: "QEMU exited unexpectedly\nlast lines of the guest console:\n::add-mask::x".into(),
            },
        );
        failed.total = Duration::from_secs(1);
        reporter.target_finished(&failed);
        let text = out.text();
        let tokens: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("::stop-commands::"))
            .collect();
        assert_eq!(tokens.len(), 2, "{text}");
        assert_ne!(tokens[0], tokens[1]);
        let text = text.replace(tokens[0], "T1").replace(tokens[1], "T2");
        assert_eq!(
            text,
            "::group::=== bzImage (kernel /k/bzImage)\n\
             ::stop-commands::T1\n\
             ::error::pwned\n\
             ::T1::\n\
             ::endgroup::\n\
             --- FAIL bzImage (1.00s): error: QEMU exited unexpectedly\n\
             ::stop-commands::T2\n\
             last lines of the guest console:\n\
             ::add-mask::x\n\
             ::T2::\n"
        );
    }

    #[test]
    fn live_report_redraws_a_status_line_and_collapses_it() {
        let (out, err) = render(Mode::Live);
        // Status line, cleared before the output; the header appears with
        // the first output; the verdict replaces the status at the end.
        assert!(
            out.starts_with("\r\x1b[2K\x1b[2m… bzImage booting 0.0s (total 0.0s)\x1b[0m"),
            "{out:?}"
        );
        assert!(out.contains("… bzImage running"), "{out:?}");
        assert!(
            out.contains("\x1b[2m=== bzImage (kernel /k/bzImage)\x1b[0m\nhello"),
            "{out:?}"
        );
        assert!(
            out.ends_with(
                "\n\x1b[31m--- FAIL bzImage (2.50s): exit code 3\x1b[0m\nSummary: 0 passed, 1 failed, 1 not run\n"
            ),
            "{out:?}"
        );
        assert_eq!(err, "oops\n");
    }
}
