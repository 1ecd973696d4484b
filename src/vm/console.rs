//! The guest's serial console: relayed, kept and watched by vmtest.
//!
//! QEMU sends the console to a FIFO in the VM's private directory (QEMU's
//! `pipe` chardev writes `console.out` and reads `console.in`), never to a
//! file the guest could reach. A pipe, unlike a Unix socket, packs the
//! UART's one-byte writes into its buffer (1 MiB here), so a console thread
//! that is scheduled late under load loses nothing. A [`Console`] thread
//! reads it and
//! appends it to the kept log file (opened by `log_path.rs`, up to
//! [`LOG_LIMIT`], then a note and nothing more), keeps its last
//! [`TAIL_BYTES`] in memory for error messages, and scans it for a kernel
//! panic, so that a panicking guest fails its target within moments even
//! when the kernel was told not to reboot on panic, and, line by line, for
//! kernel splats (`splat.rs`). vmtest never reads the
//! log back from disk: the log is in the share, where the guest may replace
//! it by a link to a host file or a FIFO.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::vm::splat::{Scanner, Splat};

/// The line the kernel prints when it panics.
const PANIC: &str = "Kernel panic - not syncing";
/// Lines shown before the panic line, which usually say why.
const PANIC_CONTEXT: usize = 6;
/// Most bytes of console written to the kept log.
pub const LOG_LIMIT: u64 = 64 << 20;
/// The end of the console kept in memory for error messages.
pub const TAIL_BYTES: usize = 256 << 10;
/// Longest console line the splat scanner sees; the rest is cut.
const LINE_BYTES: usize = 4096;

/// What the console thread has seen so far.
#[derive(Default)]
struct Seen {
    tail: VecDeque<u8>,
    /// The end of the stream so far, to find a panic line split across reads.
    carry: Vec<u8>,
    panic_seen: Option<Instant>,
    /// The console's current line, for the splat scanner.
    line: Vec<u8>,
    splats: Scanner,
    /// QEMU has exited: what is left in the pipe is all there is.
    qemu_gone: bool,
    /// The thread has read everything and stopped.
    ended: bool,
}

impl Seen {
    fn push(&mut self, bytes: &[u8]) {
        let mut window = std::mem::take(&mut self.carry);
        window.extend_from_slice(bytes);
        if self.panic_seen.is_none() && memchr::memmem::find(&window, PANIC.as_bytes()).is_some() {
            self.panic_seen = Some(Instant::now());
        }
        let keep = window.len().saturating_sub(PANIC.len());
        self.carry = window.split_off(keep);
        for piece in bytes.split_inclusive(|&b| b == b'\n') {
            let (text, ends) = match piece.strip_suffix(b"\n") {
                Some(text) => (text, true),
                None => (piece, false),
            };
            let room = LINE_BYTES.saturating_sub(self.line.len());
            self.line.extend_from_slice(&text[..text.len().min(room)]);
            if ends {
                let line = strip_escapes(&String::from_utf8_lossy(&self.line));
                self.splats.line(line.trim_end());
                self.line.clear();
            }
        }
        let bytes = &bytes[bytes.len().saturating_sub(TAIL_BYTES)..];
        let overflow = (self.tail.len() + bytes.len()).saturating_sub(TAIL_BYTES);
        self.tail.drain(..overflow);
        self.tail.extend(bytes);
    }

    fn lines(&self) -> Vec<String> {
        let (front, back) = self.tail.as_slices();
        lines_of(&[front, back].concat())
    }
}

/// The guest's console, as the console thread relays it.
pub struct Console {
    seen: Arc<Mutex<Seen>>,
    /// The kept log, until the thread takes it.
    log: Option<File>,
    thread: Option<JoinHandle<()>>,
}

impl Console {
    /// A console whose log, if any, goes to `log`; nothing is read until
    /// [`Console::attach`].
    pub fn new(log: Option<File>) -> Console {
        Console {
            seen: Arc::default(),
            log,
            thread: None,
        }
    }

    /// Starts relaying the console from `pipe`, the read end of QEMU's
    /// console FIFO (opened non-blocking).
    pub fn attach(&mut self, pipe: File) {
        let seen = Arc::clone(&self.seen);
        let log = self.log.take();
        self.thread = Some(std::thread::spawn(move || relay(pipe, log, &seen)));
    }

    fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a kernel panic has been seen, as a function other threads'
    /// waits can poll.
    pub fn panic_watch(&self) -> Box<dyn Fn() -> bool> {
        let seen = Arc::clone(&self.seen);
        Box::new(move || seen.lock().unwrap_or_else(|e| e.into_inner()).panic_seen.is_some())
    }

    /// When a kernel panic was first seen, if one was.
    pub fn panic_seen(&self) -> Option<Instant> {
        self.seen().panic_seen
    }

    /// Once QEMU has exited: waits up to `limit` for the thread to read
    /// what is left in the pipe, so the tail holds everything the guest
    /// printed.
    pub fn finish(&self, limit: Duration) {
        self.seen().qemu_gone = true;
        let deadline = Instant::now() + limit;
        while self.thread.is_some() && !self.seen().ended && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The last `lines` lines of the console.
    pub fn tail(&self, lines: usize) -> String {
        let all = self.seen().lines();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The kernel splats seen so far, and how many more were only counted.
    pub fn splats(&self) -> (Vec<Splat>, usize) {
        self.seen().splats.splats()
    }

    /// The kernel's last panic message with the lines leading up to it, if
    /// the guest panicked.
    pub fn panic_lines(&self) -> Option<String> {
        panic_in(&self.seen().lines())
    }
}

impl Drop for Console {
    /// Lets the thread finish the log (QEMU is gone when a VM drops this).
    fn drop(&mut self) {
        self.finish(Duration::from_secs(1));
        if self.seen().ended
            && let Some(thread) = self.thread.take()
        {
            let _ = thread.join();
        }
    }
}

/// Copies the console from `pipe` into `seen` and `log` until QEMU is gone
/// and the pipe is empty. A FIFO reads as end-of-file while it has no
/// writer, before QEMU opens it as well as after QEMU exits, so only
/// `qemu_gone` says the stream is over.
fn relay(mut pipe: impl Read + AsRawFd, mut log: Option<File>, seen: &Mutex<Seen>) {
    let lock = || seen.lock().unwrap_or_else(|e| e.into_inner());
    let mut written: u64 = 0;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match pipe.read(&mut chunk) {
            Ok(0) => 0,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(_) => break,
        };
        if n == 0 {
            if lock().qemu_gone {
                break;
            }
            wait_readable(&pipe, Duration::from_millis(20));
            continue;
        }
        let bytes = &chunk[..n];
        if let Some(file) = &mut log {
            let room = usize::try_from(LOG_LIMIT - written).unwrap_or(usize::MAX);
            let part = &bytes[..n.min(room)];
            let mut result = file.write_all(part);
            written += part.len() as u64;
            if result.is_ok() && written >= LOG_LIMIT {
                let note = format!(
                    "\n[vmtest: console log cut at {} MiB; the rest was dropped]\n",
                    LOG_LIMIT >> 20
                );
                result = file.write_all(note.as_bytes()).and(Err(io::Error::other("full")));
            }
            if result.is_err() {
                log = None;
            }
        }
        lock().push(bytes);
    }
    lock().ended = true;
}

/// Waits until `pipe` has data, at most `limit`. Without a writer a FIFO
/// polls as hung up at once, so that case sleeps the whole `limit`.
fn wait_readable(pipe: &impl AsRawFd, limit: Duration) {
    let mut fd = libc::pollfd {
        fd: pipe.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = limit.as_millis() as libc::c_int;
    // SAFETY: one valid pollfd.
    let ready = unsafe { libc::poll(&mut fd, 1, millis) };
    if ready > 0 && fd.revents & libc::POLLIN == 0 {
        std::thread::sleep(limit);
    }
}

/// Makes `fd` non-blocking and, where the system allows, gives the pipe a
/// 1 MiB buffer.
pub fn prepare_pipe(pipe: &impl AsRawFd) -> io::Result<()> {
    let fd = pipe.as_raw_fd();
    // SAFETY: fcntl on a valid fd, with integer arguments only.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
        libc::fcntl(fd, libc::F_SETPIPE_SZ, 1 << 20);
    }
    Ok(())
}

/// The console's text with carriage returns, terminal escape sequences
/// (firmware screens and systemd's colours) and blank lines removed, so it
/// can be shown in an error without steering the user's terminal.
fn lines_of(bytes: &[u8]) -> Vec<String> {
    strip_escapes(&String::from_utf8_lossy(bytes))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
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

    /// A console fed `pieces` through a pipe; returns it once QEMU is
    /// "gone" and the pipe read, with the log written to `log`.
    fn feed(pieces: &[&[u8]], log: Option<File>) -> Console {
        let (ours, mut qemu) = std::io::pipe().unwrap();
        prepare_pipe(&ours).unwrap();
        let mut console = Console::new(log);
        console.attach(File::from(std::os::fd::OwnedFd::from(ours)));
        for piece in pieces {
            qemu.write_all(piece).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(qemu);
        console.finish(Duration::from_secs(5));
        console
    }

    #[test]
    fn finds_a_panic_split_across_reads() {
        let console = feed(
            &[
                b"booting\r\nKernel pan",
                b"ic - not syncing: Attempted to kill init!\r\n",
            ],
            None,
        );
        assert!(console.panic_seen().is_some());
        assert_eq!(
            console.panic_lines().unwrap(),
            "booting\nKernel panic - not syncing: Attempted to kill init!"
        );
        assert_eq!(feed(&[b"fine\n"], None).panic_seen(), None);
    }

    #[test]
    fn finds_splats_split_across_reads() {
        let console = feed(
            &[
                b"boot\r\n\x1b[0mWARNING: CPU: 0 PID: 1 at a.c:1 f+0x1/0x2\r\nCall Tr",
                b"ace:\r\n---[ end trace 0 ]---\r\nfine\n",
            ],
            None,
        );
        let (splats, dropped) = console.splats();
        assert_eq!(dropped, 0);
        assert_eq!(
            splats[0].lines,
            [
                "WARNING: CPU: 0 PID: 1 at a.c:1 f+0x1/0x2",
                "Call Trace:",
                "---[ end trace 0 ]---"
            ]
        );
        assert_eq!(splats.len(), 1);
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
        let log = "\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16)\r\n\
                   [\x1b[0;32m  OK  \x1b[0m] Started \x1b[0;1;39mudev\x1b[0m.\r\n\
                   \x1b]0;title\x07\x1bM\x1b[Kdone\tok\x08\n";
        assert_eq!(
            feed(&[log.as_bytes()], None).tail(5),
            "SeaBIOS (version 1.16)\n[  OK  ] Started udev.\ndone\tok"
        );
    }

    #[test]
    fn tail_skips_blank_lines() {
        assert_eq!(feed(&[b"a\r\n\r\nb\nc\n"], None).tail(2), "b\nc");
        assert_eq!(Console::new(None).tail(2), "");
    }

    #[test]
    fn the_log_gets_everything_and_memory_only_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let big = vec![b'x'; TAIL_BYTES];
        let console = feed(&[b"first\n", &big, b"\nlast\n"], Some(File::create(&path).unwrap()));
        drop(console);
        let logged = std::fs::read(&path).unwrap();
        assert_eq!(logged.len(), 6 + TAIL_BYTES + 6);
        assert!(logged.starts_with(b"first\nxx") && logged.ends_with(b"x\nlast\n"));
        let console = feed(&[b"first\n", &big, b"\nlast\n"], None);
        assert_eq!(console.seen().tail.len(), TAIL_BYTES);
        assert!(!console.tail(1000).contains("first"));
        assert!(console.tail(1).contains("last"));
    }

    #[test]
    fn output_written_before_the_reader_starts_is_kept() {
        let (ours, mut qemu) = std::io::pipe().unwrap();
        prepare_pipe(&ours).unwrap();
        let early = vec![b'e'; 200 * 1024];
        for byte in &early {
            // One byte per write, like an emulated UART.
            qemu.write_all(std::slice::from_ref(byte)).unwrap();
        }
        let mut console = Console::new(None);
        console.attach(File::from(std::os::fd::OwnedFd::from(ours)));
        qemu.write_all(b"\nlate\n").unwrap();
        drop(qemu);
        console.finish(Duration::from_secs(5));
        assert_eq!(console.seen().tail.len(), early.len() + 6);
        assert_eq!(console.tail(1), "late");
    }

    #[test]
    fn the_log_stops_at_its_limit_with_a_note() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let seen = Mutex::new(Seen {
            qemu_gone: true,
            ..Seen::default()
        });
        /// Much output, then an empty non-blocking pipe.
        struct Endless(std::io::Take<std::io::Repeat>);
        impl Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.0.read(buf)
            }
        }
        impl AsRawFd for Endless {
            fn as_raw_fd(&self) -> std::os::fd::RawFd {
                0
            }
        }
        let endless = Endless(std::io::repeat(b'y').take(LOG_LIMIT + (1 << 20)));
        relay(endless, Some(File::create(&path).unwrap()), &seen);
        let logged = std::fs::metadata(&path).unwrap().len();
        let note = "\n[vmtest: console log cut at 64 MiB; the rest was dropped]\n";
        assert_eq!(logged, LOG_LIMIT + note.len() as u64);
        let mut file = File::open(&path).unwrap();
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(LOG_LIMIT)).unwrap();
        let mut end = String::new();
        file.read_to_string(&mut end).unwrap();
        assert_eq!(end, note);
        assert!(seen.lock().unwrap().ended);
    }
}
