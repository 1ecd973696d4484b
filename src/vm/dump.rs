//! `--dump-on-panic`: the guest's memory as an ELF vmcore, through QMP.
//!
//! When a target asks for a dump, its QEMU gets a QMP monitor on a socket in
//! the VM's private directory (`qemu::qmp_args`) and the kernel is told not
//! to reboot on panic. When the console shows a panic, `vm.rs` calls
//! [`write`] before it stops QEMU: vmtest creates the file beside the
//! console log itself (without following a link the guest may have planted
//! in the share) and QEMU writes into that very file, reopened through
//! `/proc/<vmtest>/fd/N`, with `dump-guest-memory` (no paging: the physical
//! memory as PT_LOAD segments, which `crash` and drgn read). The few QMP
//! messages needed go through `qmp`.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;

use crate::vm::qmp::Qmp;

/// The dump's file name, beside the console log.
pub const FILE_NAME: &str = "vmcore";
/// Longest a dump may take (the guest's whole memory, written by QEMU).
pub const TIMEOUT: Duration = Duration::from_secs(600);

/// Has QEMU write the guest's memory into `file` through the QMP monitor on
/// `socket`; returns once the dump is complete.
pub fn write(socket: &Path, file: &File, timeout: Duration) -> Result<()> {
    let mut qmp = Qmp::connect(socket, timeout)?;
    let target = format!("file:/proc/{}/fd/{}", std::process::id(), file.as_raw_fd());
    qmp.execute(json!({
        "execute": "dump-guest-memory",
        "arguments": { "paging": false, "protocol": target },
    }))
    .context("dump-guest-memory")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;

    /// A fake QEMU that greets, answers, and sends an event in between.
    #[test]
    fn asks_for_an_unpaged_dump_into_the_open_file() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let fake = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut out = stream;
            writeln!(out, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).unwrap();
            let mut commands = Vec::new();
            for answer in [r#"{"return": {}}"#, r#"{"event": "STOP"}"#] {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                commands.push(serde_json::from_str::<Value>(&line).unwrap());
                writeln!(out, "{answer}").unwrap();
            }
            writeln!(out, r#"{{"error": {{"class": "GenericError", "desc": "no room"}}}}"#).unwrap();
            commands
        });
        let file = tempfile::tempfile().unwrap();
        let error = write(&socket, &file, Duration::from_secs(10)).unwrap_err();
        assert_eq!(format!("{error:#}"), "dump-guest-memory: QMP error: no room");
        let commands = fake.join().unwrap();
        assert_eq!(commands[0], json!({ "execute": "qmp_capabilities" }));
        let protocol = format!("file:/proc/{}/fd/{}", std::process::id(), file.as_raw_fd());
        assert_eq!(
            commands[1],
            json!({ "execute": "dump-guest-memory", "arguments": { "paging": false, "protocol": protocol } })
        );
    }
}
