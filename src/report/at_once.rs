//! Several targets at once (`-j`): output that stays readable.
//!
//! Events of running targets arrive interleaved. On a terminal each running
//! target has a live status line. Each target's output is either held until
//! the target ends and shown as one block with its header and verdict,
//! exactly as a sequential run shows it (`--parallel-output block`, the
//! default, and always under GitHub Actions, whose groups cannot
//! interleave), or shown line by line as it arrives, each line prefixed
//! with `[NAME] ` (`--parallel-output lines`); a line is never cut by
//! another target's. Held output goes to an unnamed temporary file, so
//! memory stays bounded whatever a guest writes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Instant;

use crate::config::Target;
use crate::config::cli::ParallelOutput;
use crate::ports::relay::Stream;
use crate::report::render;
use crate::report::terminal::{Current, Mode, Reporter, status_line};
use crate::run::events::{Phase, TargetEvent};
use crate::run::outcome::TargetResult;

/// A partial line longer than this is shown as it is.
const LONGEST_LINE: usize = 64 * 1024;

/// The targets running at once, and how their output is shown.
pub struct AtOnce {
    how: ParallelOutput,
    running: BTreeMap<usize, Running>,
}

struct Running {
    current: Current,
    /// Block mode: the output so far.
    held: Held,
    /// Lines mode: the unfinished last line of stdout and stderr.
    partial: [Vec<u8>; 2],
}

impl AtOnce {
    /// Status lines of the running targets, in config order.
    pub fn status_lines(&self) -> Vec<String> {
        self.running.values().map(|r| status_line(&r.current)).collect()
    }
}

impl Reporter {
    /// Shows the targets of this run as several running at once.
    pub fn run_at_once(&mut self, how: ParallelOutput) {
        let how = match self.mode {
            Mode::GitHub => ParallelOutput::Block,
            _ => how,
        };
        self.at_once = Some(AtOnce {
            how,
            running: BTreeMap::new(),
        });
    }

    pub(super) fn at_once_event(&mut self, index: usize, target: &Target, event: TargetEvent) {
        let Some(at_once) = &mut self.at_once else { return };
        let how = at_once.how;
        match event {
            TargetEvent::Started => self.started_at_once(index, target, how),
            TargetEvent::Phase(phase) => {
                if let Some(running) = at_once.running.get_mut(&index) {
                    running.current.phase = phase;
                    running.current.phase_started = Instant::now();
                }
                self.draw_status();
            }
            TargetEvent::Output(stream, bytes) => match how {
                ParallelOutput::Block => {
                    if let Some(running) = at_once.running.get_mut(&index) {
                        running.held.push(stream, &bytes);
                    }
                }
                ParallelOutput::Lines => self.prefixed(index, stream, &bytes, false),
            },
            // An interactive shell never runs beside another target.
            TargetEvent::HandOverTerminal => {}
            TargetEvent::Finished(result) => self.finished_at_once(index, &result, how),
        }
    }

    fn started_at_once(&mut self, index: usize, target: &Target, how: ParallelOutput) {
        let Some(at_once) = &mut self.at_once else { return };
        let now = Instant::now();
        let current = Current {
            index,
            name: target.name.clone(),
            header: render::header(target),
            started: now,
            phase: Phase::Booting,
            phase_started: now,
            header_shown: true,
            stop_token: None,
        };
        let header = current.header.clone();
        at_once.running.insert(
            index,
            Running {
                current,
                held: Held::new(),
                partial: Default::default(),
            },
        );
        if how == ParallelOutput::Lines && self.mode == Mode::Plain {
            self.clear_status();
            let _ = writeln!(self.out, "{header}");
            let _ = self.out.flush();
        }
        self.draw_status();
    }

    fn finished_at_once(&mut self, index: usize, result: &TargetResult, how: ParallelOutput) {
        if how == ParallelOutput::Lines {
            for stream in [Stream::Stdout, Stream::Stderr] {
                self.prefixed(index, stream, &[], true);
            }
        }
        let Some(running) = self.at_once.as_mut().and_then(|a| a.running.remove(&index)) else {
            return;
        };
        self.clear_status();
        // The finished target is shown as a sequential run shows it.
        self.current = Some(running.current);
        self.interactive = true;
        match how {
            ParallelOutput::Block => {
                if let Some(current) = &mut self.current {
                    current.header_shown = self.mode != Mode::Live;
                }
                self.open_section();
                running.held.replay(&mut |stream, bytes| self.output(stream, bytes));
            }
            ParallelOutput::Lines => {}
        }
        self.target_finished(result);
        self.interactive = false;
        self.draw_status();
    }

    /// Lines mode: shows the complete lines of `bytes` (all of them, with
    /// `flush`), each prefixed with the target's name.
    fn prefixed(&mut self, index: usize, stream: Stream, bytes: &[u8], flush: bool) {
        let Some(running) = self.at_once.as_mut().and_then(|a| a.running.get_mut(&index)) else {
            return;
        };
        let slot = match stream {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        };
        let partial = &mut running.partial[slot];
        partial.extend_from_slice(bytes);
        let cut = match partial.iter().rposition(|b| *b == b'\n') {
            Some(last) => last + 1,
            None if flush || partial.len() > LONGEST_LINE => partial.len(),
            None => 0,
        };
        let cut = if flush { partial.len() } else { cut };
        if cut == 0 {
            return;
        }
        let lines: Vec<u8> = partial.drain(..cut).collect();
        let prefix = format!("[{}] ", running.current.name);
        let mut text = Vec::with_capacity(lines.len() + prefix.len() * 4);
        for line in lines.split_inclusive(|b| *b == b'\n') {
            text.extend_from_slice(prefix.as_bytes());
            text.extend_from_slice(line);
            if !line.ends_with(b"\n") {
                text.push(b'\n');
            }
        }
        self.clear_status();
        let sink = match stream {
            Stream::Stdout => &mut self.out,
            Stream::Stderr => &mut self.err,
        };
        let _ = sink.write_all(&text);
        let _ = sink.flush();
        self.draw_status();
    }
}

/// A target's output held until it ends: records of (stream, length,
/// bytes) in an unnamed temporary file, or in memory if none can be made.
struct Held {
    file: Option<File>,
    memory: Vec<(Stream, Vec<u8>)>,
}

impl Held {
    fn new() -> Self {
        Held {
            file: tempfile::tempfile().ok(),
            memory: Vec::new(),
        }
    }

    fn push(&mut self, stream: Stream, bytes: &[u8]) {
        let Some(file) = &mut self.file else {
            self.memory.push((stream, bytes.to_vec()));
            return;
        };
        let tag = match stream {
            Stream::Stdout => b'o',
            Stream::Stderr => b'e',
        };
        let mut record = Vec::with_capacity(bytes.len() + 9);
        record.push(tag);
        record.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        record.extend_from_slice(bytes);
        // Once the file fails, the rest stays in memory, after it.
        if !self.memory.is_empty() || file.write_all(&record).is_err() {
            self.memory.push((stream, bytes.to_vec()));
        }
    }

    /// Hands every record, in order, to `show`.
    fn replay(self, show: &mut dyn FnMut(Stream, &[u8])) {
        if let Some(mut file) = self.file
            && file.seek(SeekFrom::Start(0)).is_ok()
        {
            let mut head = [0u8; 9];
            let mut bytes = Vec::new();
            while file.read_exact(&mut head).is_ok() {
                let stream = if head[0] == b'o' {
                    Stream::Stdout
                } else {
                    Stream::Stderr
                };
                let len = u64::from_le_bytes(head[1..].try_into().expect("8 bytes"));
                bytes.clear();
                if (&mut file).take(len).read_to_end(&mut bytes).is_err() || bytes.len() as u64 != len {
                    break;
                }
                show(stream, &bytes);
            }
        }
        for (stream, bytes) in self.memory {
            show(stream, &bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::result;
    use crate::report::terminal::tests::{Shared, target};
    use crate::run::events::{Event, EventSink};
    use crate::run::outcome::Outcome;

    /// Two targets whose events interleave, through a reporter in `mode`.
    fn render(mode: Mode, how: ParallelOutput) -> (String, String) {
        let (out, err) = (Shared::default(), Shared::default());
        let mut reporter = Reporter::new(Box::new(out.clone()), Box::new(err.clone()), mode);
        reporter.run_at_once(how);
        let (mut a, mut b) = (target(), target());
        a.name = "a".into();
        b.name = "b".into();
        let mut send = |index: usize, event: TargetEvent| {
            let target = if index == 0 { &a } else { &b };
            reporter.event(Event::Target { index, target, event });
        };
        send(0, TargetEvent::Started);
        send(1, TargetEvent::Started);
        send(0, TargetEvent::Output(Stream::Stdout, b"a1\na".to_vec()));
        send(1, TargetEvent::Output(Stream::Stdout, b"b1\n".to_vec()));
        send(0, TargetEvent::Output(Stream::Stdout, b"2\n".to_vec()));
        send(1, TargetEvent::Output(Stream::Stderr, b"b-err".to_vec()));
        send(
            1,
            TargetEvent::Finished(Box::new(result("b", Outcome::Failed { code: 1 }))),
        );
        send(0, TargetEvent::Finished(Box::new(result("a", Outcome::Passed))));
        (out.text(), err.text())
    }

    #[test]
    fn blocks_show_each_target_whole_when_it_ends() {
        let (out, err) = render(Mode::Plain, ParallelOutput::Block);
        assert_eq!(
            out,
            "=== b (kernel /k/bzImage)\n\
             b1\n\
             --- FAIL b (2.50s): exit code 1\n\
             === a (kernel /k/bzImage)\n\
             a1\n\
             a2\n\
             --- PASS a (2.50s)\n"
        );
        assert_eq!(err, "b-err\n");
    }

    #[test]
    fn lines_are_whole_and_prefixed() {
        let (out, err) = render(Mode::Plain, ParallelOutput::Lines);
        assert_eq!(
            out,
            "=== a (kernel /k/bzImage)\n\
             === b (kernel /k/bzImage)\n\
             [a] a1\n\
             [b] b1\n\
             [a] a2\n\
             --- FAIL b (2.50s): exit code 1\n\
             --- PASS a (2.50s)\n"
        );
        assert_eq!(err, "[b] b-err\n");
    }

    #[test]
    fn github_mode_always_shows_blocks() {
        let (out, _) = render(Mode::GitHub, ParallelOutput::Lines);
        assert!(out.starts_with("::group::=== b (kernel /k/bzImage)\n"), "{out}");
        assert!(!out.contains("[a]"), "{out}");
    }

    #[test]
    fn held_output_replays_in_order() {
        let mut held = Held::new();
        held.push(Stream::Stdout, b"one");
        held.push(Stream::Stderr, b"two");
        held.push(Stream::Stdout, &vec![b'x'; 100_000]);
        let mut seen = Vec::new();
        held.replay(&mut |stream, bytes| seen.push((stream, bytes.len())));
        assert_eq!(
            seen,
            [(Stream::Stdout, 3), (Stream::Stderr, 3), (Stream::Stdout, 100_000)]
        );
    }
}
