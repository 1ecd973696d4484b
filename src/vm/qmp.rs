//! The few QMP messages vmtest sends to a running QEMU: a crash dump
//! (`dump`), a warm start's save (`launch::warm`) and the virtiofs devices
//! plugged in after it (`virtiofs`), written by hand.
//!
//! [`Qmp`] connects to QEMU's monitor socket, checks the greeting, enters
//! command mode, and sends one command at a time, skipping events, under one
//! deadline for the whole conversation. It knows no command's meaning.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

/// A QMP conversation that must end by a deadline.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    deadline: Instant,
    /// How long it had, for the timeout's message.
    limit: Duration,
}

impl Qmp {
    /// Connects to the monitor on `socket` and enters command mode; every
    /// answer must come within `limit` from now.
    pub fn connect(socket: &Path, limit: Duration) -> Result<Qmp> {
        let stream =
            UnixStream::connect(socket).with_context(|| format!("connecting to QMP at {}", socket.display()))?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            deadline: Instant::now() + limit,
            limit,
        };
        let greeting = qmp.message()?;
        if greeting.get("QMP").is_none() {
            bail!("QMP greeted with {greeting}");
        }
        qmp.execute(json!({ "execute": "qmp_capabilities" }))?;
        Ok(qmp)
    }

    /// Sends a command and waits for its answer, skipping events.
    pub fn execute(&mut self, command: Value) -> Result<Value> {
        writeln!(self.writer, "{command}").context("writing to QMP")?;
        loop {
            let message = self.message()?;
            if let Some(value) = message.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = message.get("error") {
                let desc = error.get("desc").and_then(Value::as_str).unwrap_or("no description");
                bail!("QMP error: {desc}");
            }
        }
    }

    /// The next JSON message from QEMU.
    fn message(&mut self) -> Result<Value> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("QEMU did not answer within {}s", self.limit.as_secs());
        }
        self.reader.get_ref().set_read_timeout(Some(left))?;
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err(anyhow!("QEMU closed its QMP socket")),
            Ok(_) => serde_json::from_str(&line).with_context(|| format!("QMP sent {line:?}")),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                bail!("QEMU did not answer within {}s", self.limit.as_secs())
            }
            Err(e) => Err(e).context("reading from QMP"),
        }
    }
}
