//! The guest's serial console log, read back by vmtest.
//!
//! QEMU writes the console to a file; this module reads it: the last lines
//! for error messages, and an incremental scan for a kernel panic, so that a
//! panicking guest fails its target within moments even when the kernel was
//! told not to reboot on panic. It never writes the log.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The line the kernel prints when it panics.
const PANIC: &str = "Kernel panic - not syncing";
/// Lines shown before the panic line, which usually say why.
const PANIC_CONTEXT: usize = 6;

/// Follows a console log as QEMU appends to it.
pub struct ConsoleWatch {
    path: PathBuf,
    pos: u64,
    /// The end of the last read, to find a panic line split across reads.
    carry: Vec<u8>,
    panic_seen: Option<Instant>,
}

impl ConsoleWatch {
    pub fn new(path: PathBuf) -> Self {
        ConsoleWatch {
            path,
            pos: 0,
            carry: Vec::new(),
            panic_seen: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads what was appended since the last call; returns when a kernel
    /// panic was first seen, if one was.
    pub fn poll(&mut self) -> Option<Instant> {
        if self.panic_seen.is_some() {
            return self.panic_seen;
        }
        let mut fresh = Vec::new();
        if let Ok(mut file) = fs::File::open(&self.path)
            && file.seek(SeekFrom::Start(self.pos)).is_ok()
        {
            let _ = file.read_to_end(&mut fresh);
        }
        if fresh.is_empty() {
            return None;
        }
        self.pos += fresh.len() as u64;
        let mut window = std::mem::take(&mut self.carry);
        window.extend_from_slice(&fresh);
        if memchr::memmem::find(&window, PANIC.as_bytes()).is_some() {
            self.panic_seen = Some(Instant::now());
        }
        let keep = window.len().saturating_sub(PANIC.len());
        self.carry = window.split_off(keep);
        self.panic_seen
    }
}

/// The console's text with carriage returns, terminal escape sequences
/// (firmware screens and systemd's colours) and blank lines removed, so it
/// can be shown in an error without steering the user's terminal.
fn read_lines(path: &Path) -> Vec<String> {
    let bytes = fs::read(path).unwrap_or_default();
    strip_escapes(&String::from_utf8_lossy(&bytes))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// The last `lines` lines of a console log.
pub fn tail(path: &Path, lines: usize) -> String {
    let all = read_lines(path);
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The kernel's last panic message with the lines leading up to it, if the
/// guest panicked.
pub fn panic_lines(path: &Path) -> Option<String> {
    panic_in(&read_lines(path))
}

/// `text` without ANSI escape sequences (CSI `ESC [ ... final`, OSC
/// `ESC ] ... BEL`, two-byte `ESC x`) and control characters other than
/// newlines and tabs.
fn strip_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                Some('[') => while chars.next().is_some_and(|c| !('@'..='~').contains(&c)) {},
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn panic_in(lines: &[String]) -> Option<String> {
    let at = lines.iter().rposition(|l| l.contains(PANIC))?;
    Some(lines[at.saturating_sub(PANIC_CONTEXT)..=at].join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_panic_split_across_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        fs::write(&path, "booting\r\nKernel pan").unwrap();
        let mut watch = ConsoleWatch::new(path.clone());
        assert_eq!(watch.poll(), None);
        let mut file = fs::OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut file, b"ic - not syncing: Attempted to kill init!\r\n").unwrap();
        assert!(watch.poll().is_some());
        assert_eq!(
            panic_lines(&path).unwrap(),
            "booting\nKernel panic - not syncing: Attempted to kill init!"
        );
    }

    #[test]
    fn panic_context_is_bounded() {
        let lines: Vec<String> = (0..20)
            .map(|i| format!("line {i}"))
            .chain(["Kernel panic - not syncing: x".into()])
            .collect();
        let text = panic_in(&lines).unwrap();
        assert_eq!(text.lines().count(), PANIC_CONTEXT + 1);
        assert!(text.starts_with("line 14\n"));
        assert_eq!(panic_in(&lines[..20]), None);
    }

    #[test]
    fn tail_drops_terminal_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        let log = "\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16)\r\n\
                   [\x1b[0;32m  OK  \x1b[0m] Started \x1b[0;1;39mudev\x1b[0m.\r\n\
                   \x1b]0;title\x07\x1bM\x1b[Kdone\tok\x08\n";
        fs::write(&path, log).unwrap();
        assert_eq!(
            tail(&path, 5),
            "SeaBIOS (version 1.16)\n[  OK  ] Started udev.\ndone\tok"
        );
    }

    #[test]
    fn tail_skips_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        fs::write(&path, "a\r\n\r\nb\nc\n").unwrap();
        assert_eq!(tail(&path, 2), "b\nc");
        assert_eq!(tail(&dir.path().join("missing"), 2), "");
    }
}
