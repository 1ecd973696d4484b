//! What the runner tells the world while it runs: a stream of [`Event`]s.
//!
//! The runner sends events to an [`EventSink`]; `main` wires the sink to the
//! terminal reporter (`report::terminal`), as cargo-nextest's runner feeds
//! its reporter. Events own their data, so they can cross threads; they name
//! their target by its index in config order, which is also the order of
//! the results.

use crate::config::Target;
use crate::ports::relay::Stream;
use crate::run::outcome::TargetResult;

/// Where a running target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Booting,
    SettingUp,
    Running,
}

impl Phase {
    pub fn label(self) -> &'static str {
        match self {
            Phase::Booting => "booting",
            Phase::SettingUp => "setting up",
            Phase::Running => "running",
        }
    }
}

/// One thing that happened.
#[derive(Debug)]
pub enum Event<'t> {
    /// A problem the user should know of that does not fail a target by
    /// itself (a fallback to TCG, a retried boot).
    Warning(String),
    /// Something to act on that is not a problem (how to attach gdb).
    Note(String),
    /// Nothing happened; a live view may redraw its clock.
    Tick,
    /// Something happened to the target at `index`.
    Target {
        index: usize,
        target: &'t Target,
        event: TargetEvent,
    },
}

/// What happened to one target.
#[derive(Debug)]
pub enum TargetEvent {
    Started,
    Phase(Phase),
    /// Bytes of the command's output, as they arrived.
    Output(Stream, Vec<u8>),
    /// An interactive shell takes over the terminal until the target ends.
    HandOverTerminal,
    Finished(Box<TargetResult>),
}

/// Receives the runner's events.
pub trait EventSink<'t> {
    fn event(&mut self, event: Event<'t>);
}
