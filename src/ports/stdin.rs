//! The host end of the command's stdin port.
//!
//! Every VM has a virtio-serial port for the command's stdin. When vmtest
//! forwards its own stdin (one target runs, and stdin is not a terminal), a
//! thread copies it into the port's socket and then shuts the socket down
//! for writing: QEMU reads to the end, disconnects, and the guest reads
//! end-of-file after the last byte. Otherwise the socket is closed at once
//! and the guest reads end-of-file straight away, as from `/dev/null`.
//! QEMU passes bytes on only while the guest holds the port open, so a
//! command that never reads stdin leaves the thread blocked until QEMU ends,
//! which ends it too.

use std::io::{self, IsTerminal, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;

/// Whether vmtest's stdin goes to the command when `targets` targets run
/// (and none of them is an interactive shell, which reads the terminal).
pub fn should_forward(targets: usize, interactive: bool) -> bool {
    targets == 1 && !interactive && !io::stdin().is_terminal()
}

/// The warning when several targets run and stdin holds input (a pipe or a
/// file) that no command will read.
pub fn unread_warning(targets: usize) -> Option<String> {
    use std::os::unix::fs::FileTypeExt;
    let kind = std::fs::metadata("/dev/stdin").ok()?.file_type();
    (targets > 1 && (kind.is_fifo() || kind.is_file())).then(|| {
        format!(
            "stdin is given to a command only when one target runs; the commands of these {targets} \
             targets read end-of-file"
        )
    })
}

/// Starts feeding the port: vmtest's stdin when `forward`, else nothing.
pub fn feed(port: UnixStream, forward: bool) -> Option<JoinHandle<()>> {
    if !forward {
        let _ = port.shutdown(Shutdown::Both);
        return None;
    }
    Some(std::thread::spawn(move || {
        if let Err(e) = copy_then_close(&mut io::stdin().lock(), port) {
            log::debug!("stdin: {e}");
        }
    }))
}

/// Copies `input` into the port, shuts it down for writing, and waits until
/// QEMU has read everything and closed its end. Closing the socket outright
/// would make QEMU drop what it has not read yet.
fn copy_then_close(input: &mut impl Read, mut port: UnixStream) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        port.write_all(&buf[..n])?;
    }
    port.shutdown(Shutdown::Write)?;
    // QEMU never writes to this port: the read ends when it disconnects.
    let mut sink = [0u8; 64];
    while port.read(&mut sink)? > 0 {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_input_arrives_whole_then_end_of_file() {
        let (host, mut qemu) = UnixStream::pair().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let input = data.clone();
        let feeder = std::thread::spawn(move || copy_then_close(&mut &input[..], host));
        let mut received = Vec::new();
        qemu.read_to_end(&mut received).unwrap();
        assert_eq!(received, data);
        drop(qemu);
        feeder.join().unwrap().unwrap();
    }

    #[test]
    fn not_forwarding_closes_the_port_at_once() {
        let (host, mut qemu) = UnixStream::pair().unwrap();
        assert!(feed(host, false).is_none());
        let mut received = Vec::new();
        qemu.read_to_end(&mut received).unwrap();
        assert!(received.is_empty());
    }
}
