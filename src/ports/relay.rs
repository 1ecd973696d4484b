//! Live relay of the command's stdout and stderr from the guest.
//!
//! Each stream arrives on its own virtio-serial port, which QEMU connects to
//! a socket of ours. A port never signals end-of-file, so the guest wrapper
//! writes a random end marker once the command's output is complete; a relay
//! thread forwards every byte before the marker, as soon as it arrives, and
//! then reports the stream's end. Bytes are forwarded untouched (binary-safe);
//! only a tail shorter than the marker is held back until it is known not to
//! start the marker. Rendering the bytes is the reporter's business. The
//! events go through a bounded queue ([`QUEUE`]): when the reader is slow,
//! the relay stops reading, the socket fills, and QEMU holds the guest's
//! writes, so a fast guest cannot grow vmtest's memory.

use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::SyncSender;
use std::thread::JoinHandle;

/// Events a relay may queue before it waits for the reader: with 64 KiB
/// reads, at most about 1 MiB per stream in flight.
pub const QUEUE: usize = 16;

/// Which of the command's streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// What a relay thread reports.
#[derive(Debug, PartialEq, Eq)]
pub enum RelayEvent {
    Data(Stream, Vec<u8>),
    /// The marker arrived: the stream is complete.
    End(Stream),
    /// The socket closed or failed before the marker (QEMU went away).
    Broken(Stream),
}

/// A fresh end marker: random enough never to appear in real output.
pub fn new_marker() -> String {
    format!("\u{1}vmtest-end-{}\u{1}", random_hex())
}

/// 32 random hex digits (from `/dev/urandom`; the clock and pid if that
/// fails), for markers and tokens the guest cannot guess.
pub fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if random.is_err() {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
            ^ u128::from(std::process::id()) << 64;
        bytes = seed.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Starts a thread relaying `socket` as `stream` until `marker`.
pub fn spawn(socket: UnixStream, stream: Stream, marker: String, events: SyncSender<RelayEvent>) -> JoinHandle<()> {
    std::thread::spawn(move || relay(socket, stream, marker.as_bytes(), &events))
}

fn relay(mut socket: impl Read, stream: Stream, marker: &[u8], events: &SyncSender<RelayEvent>) {
    let finder = memchr::memmem::Finder::new(marker);
    let mut held: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match socket.read(&mut chunk) {
            Ok(0) => 0,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => 0,
        };
        if n == 0 {
            if !held.is_empty() {
                let _ = events.send(RelayEvent::Data(stream, held));
            }
            let _ = events.send(RelayEvent::Broken(stream));
            return;
        }
        held.extend_from_slice(&chunk[..n]);
        if let Some(pos) = finder.find(&held) {
            held.truncate(pos);
            if !held.is_empty() {
                let _ = events.send(RelayEvent::Data(stream, held));
            }
            let _ = events.send(RelayEvent::End(stream));
            return;
        }
        let keep = partial_marker_len(&held, marker);
        let ready: Vec<u8> = held.drain(..held.len() - keep).collect();
        if !ready.is_empty() && events.send(RelayEvent::Data(stream, ready)).is_err() {
            return;
        }
    }
}

/// How many bytes at the end of `data` could be the start of `marker`: the
/// only bytes that must wait for the next read.
fn partial_marker_len(data: &[u8], marker: &[u8]) -> usize {
    (1..marker.len().min(data.len() + 1))
        .rev()
        .find(|&k| data.ends_with(&marker[..k]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A reader that hands out its data in fixed-size pieces.
    struct Pieces {
        data: Vec<u8>,
        size: usize,
    }

    impl Read for Pieces {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.size.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data.drain(..n);
            Ok(n)
        }
    }

    fn run(data: &[u8], size: usize, marker: &str) -> (Vec<u8>, RelayEvent) {
        let (tx, rx) = mpsc::sync_channel(data.len() + 2);
        let reader = Pieces {
            data: data.to_vec(),
            size,
        };
        relay(reader, Stream::Stdout, marker.as_bytes(), &tx);
        drop(tx);
        let mut out = Vec::new();
        let mut last = None;
        for event in rx {
            match event {
                RelayEvent::Data(_, bytes) => out.extend(bytes),
                other => last = Some(other),
            }
        }
        (out, last.unwrap())
    }

    #[test]
    fn stops_at_a_marker_split_across_reads() {
        let marker = new_marker();
        let mut data = b"line 1\n\x00\xffbinary".to_vec();
        data.extend(marker.as_bytes());
        data.extend(b"after");
        for size in [1, 3, 7, 4096] {
            let (out, end) = run(&data, size, &marker);
            assert_eq!(out, b"line 1\n\x00\xffbinary", "piece size {size}");
            assert_eq!(end, RelayEvent::End(Stream::Stdout));
        }
    }

    #[test]
    fn a_closed_socket_flushes_and_reports_broken() {
        let (out, end) = run(b"partial", 2, &new_marker());
        assert_eq!(out, b"partial");
        assert_eq!(end, RelayEvent::Broken(Stream::Stdout));
    }

    #[test]
    fn only_a_possible_marker_start_is_held_back() {
        assert_eq!(partial_marker_len(b"ready\n", b"\x01end\x01"), 0);
        assert_eq!(partial_marker_len(b"ready\x01e", b"\x01end\x01"), 2);
        assert_eq!(partial_marker_len(b"\x01en", b"\x01end\x01"), 3);
        assert_eq!(partial_marker_len(b"", b"\x01end\x01"), 0);
    }

    #[test]
    fn a_short_line_is_forwarded_at_once() {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let (mut writer, reader) = std::os::unix::net::UnixStream::pair().unwrap();
        let handle = spawn(reader, Stream::Stdout, new_marker(), tx);
        std::io::Write::write_all(&mut writer, b"ready\n").unwrap();
        let event = rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(event, RelayEvent::Data(Stream::Stdout, b"ready\n".to_vec()));
        drop(writer);
        handle.join().unwrap();
    }

    #[test]
    fn a_slow_reader_holds_the_relay_back() {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let (mut writer, reader) = std::os::unix::net::UnixStream::pair().unwrap();
        let handle = spawn(reader, Stream::Stdout, new_marker(), tx);
        writer.set_nonblocking(true).unwrap();
        // Nobody reads the events: the relay stops reading the socket, whose
        // buffer then fills, so the writer is held back.
        let mut sent = 0usize;
        let chunk = vec![b'x'; 64 * 1024];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match std::io::Write::write(&mut writer, &chunk) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    if std::io::Write::write(&mut writer, &chunk).is_err() {
                        break;
                    }
                }
                Err(e) => panic!("{e}"),
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{sent} bytes and still not held back"
            );
        }
        assert!(sent < 64 << 20, "{sent} bytes queued");
        drop(rx);
        drop(writer);
        handle.join().unwrap();
    }

    #[test]
    fn markers_differ() {
        assert_ne!(new_marker(), new_marker());
    }
}
