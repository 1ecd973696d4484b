//! A client for the QEMU guest agent (QGA) on a Unix socket.
//!
//! Commands and their replies are the `qapi` crate's types; this module owns
//! the byte stream around them: it resynchronises with `guest-sync-delimited`
//! (discarding stale bytes until its own id comes back, since replies carry no
//! request id), reads replies line by line under a deadline, and checks a
//! caller-supplied liveness probe while it waits so a dead QEMU fails fast
//! instead of running into the deadline. It does not know about QEMU itself.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use qapi::qga;
use serde_json::Value;

/// How long one blocking read may last before the liveness probe runs again.
const READ_SLICE: Duration = Duration::from_millis(100);

/// Why waiting for the agent stopped.
#[derive(Debug)]
pub enum WaitError {
    /// The deadline passed without an answer.
    TimedOut,
    /// The liveness probe reported a problem (QEMU exited, say).
    Dead(anyhow::Error),
    /// The connection failed or the agent sent garbage.
    Io(anyhow::Error),
}

impl std::fmt::Display for WaitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WaitError::TimedOut => write!(f, "the guest agent did not answer in time"),
            WaitError::Dead(e) | WaitError::Io(e) => write!(f, "{e:#}"),
        }
    }
}

/// A connected guest agent.
pub struct Agent {
    stream: UnixStream,
    /// Bytes received but not yet consumed as a reply line.
    pending: Vec<u8>,
    /// Says when no reply will come (the guest kernel panicked).
    hopeless: Option<Box<dyn Fn() -> bool>>,
}

/// The outcome of a finished guest process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i64),
    Signal(i64),
}

impl Agent {
    pub fn new(stream: UnixStream) -> Self {
        Agent {
            stream,
            pending: Vec::new(),
            hopeless: None,
        }
    }

    /// Makes requests give up, instead of running into their deadline, once
    /// `hopeless` says no reply will come.
    pub fn give_up_when(&mut self, hopeless: Box<dyn Fn() -> bool>) {
        self.hopeless = Some(hopeless);
    }

    /// Waits until the agent answers a `guest-sync-delimited` carrying a fresh
    /// id. Whatever arrives before that id (stale replies, a half-written
    /// line) is discarded. The request can be sent before the guest has even
    /// booted: QEMU holds it until the agent opens its port, so the reply
    /// comes the moment the agent is up.
    pub fn sync(&mut self, deadline: Instant, alive: &mut dyn FnMut() -> Result<()>) -> Result<(), WaitError> {
        let id = sync_id();
        // 0xFF makes the agent drop any partial command it was parsing.
        let mut request = vec![0xFFu8];
        request.extend(command_line(&qga::guest_sync_delimited { id }).map_err(WaitError::Io)?);
        self.stream
            .write_all(&request)
            .context("writing to the guest agent socket")
            .map_err(WaitError::Io)?;
        self.pending.clear();
        loop {
            // The agent prefixes its sync reply with 0xFF: skip to it.
            let line = self.read_line(deadline, alive)?;
            let line = match line.iter().rposition(|&b| b == 0xFF) {
                Some(pos) => &line[pos + 1..],
                None => &line[..],
            };
            let Ok(reply) = serde_json::from_slice::<Value>(line) else {
                continue;
            };
            if reply.get("return").and_then(Value::as_i64) == Some(id) {
                return Ok(());
            }
            log::debug!("agent: discarding stale line {}", String::from_utf8_lossy(line));
        }
    }

    /// Runs one command and returns its decoded reply.
    pub fn execute<C: qapi::Command>(&mut self, command: &C, deadline: Instant) -> Result<C::Ok> {
        let line = command_line(command)?;
        log::debug!("agent <- {}", String::from_utf8_lossy(&line).trim_end());
        self.stream
            .write_all(&line)
            .with_context(|| format!("sending {} to the guest agent", C::NAME))?;
        // Ctrl-C ends the wait within one read slice, as a panic does.
        let hopeless = self.hopeless.take();
        let reply = self.read_line(deadline, &mut || {
            crate::interrupt::check()?;
            match hopeless.as_ref().is_some_and(|h| h()) {
                true => bail!("the guest kernel panicked"),
                false => Ok(()),
            }
        });
        self.hopeless = hopeless;
        let reply = reply.map_err(|e| anyhow!("waiting for the reply to {}: {e}", C::NAME))?;
        log::debug!("agent -> {}", String::from_utf8_lossy(&reply).trim_end());
        let reply: Value = serde_json::from_slice(&reply)
            .with_context(|| format!("the guest agent's reply to {} is not JSON", C::NAME))?;
        if let Some(error) = reply.get("error") {
            let desc = error.get("desc").and_then(Value::as_str).unwrap_or("unknown error");
            bail!("the guest agent refused {}: {desc}", C::NAME);
        }
        let value = reply
            .get("return")
            .cloned()
            .ok_or_else(|| anyhow!("the guest agent's reply to {} has no result", C::NAME))?;
        serde_json::from_value(value).with_context(|| format!("decoding the reply to {}", C::NAME))
    }

    /// Starts `path args...` in the guest with the given environment, output
    /// not captured by the agent, and returns its pid.
    pub fn spawn(&mut self, path: &str, args: Vec<String>, env: Vec<String>, deadline: Instant) -> Result<i64> {
        let command = qga::guest_exec {
            path: path.to_string(),
            arg: Some(args),
            env: Some(env),
            input_data: None,
            // The bool form: agents before 8.0 reject the mode form.
            capture_output: Some(qga::GuestExecCaptureOutput::flag(false)),
        };
        Ok(self.execute(&command, deadline)?.pid)
    }

    /// Runs `path args...` in the guest to completion with its output
    /// captured by the agent (for short setup programs, not the command).
    pub fn run(&mut self, path: &str, args: Vec<String>, deadline: Instant) -> Result<(ExitStatus, Vec<u8>, Vec<u8>)> {
        let command = qga::guest_exec {
            path: path.to_string(),
            arg: Some(args),
            env: None,
            input_data: None,
            capture_output: Some(qga::GuestExecCaptureOutput::flag(true)),
        };
        let pid = self.execute(&command, deadline)?.pid;
        let mut pause = Duration::from_millis(1);
        loop {
            let status = self.execute(&qga::guest_exec_status { pid }, deadline)?;
            if status.exited {
                let code = match (status.signal, status.exitcode) {
                    (Some(signal), _) if signal > 0 => ExitStatus::Signal(signal),
                    (_, code) => ExitStatus::Code(code.unwrap_or(0)),
                };
                return Ok((
                    code,
                    status.out_data.unwrap_or_default(),
                    status.err_data.unwrap_or_default(),
                ));
            }
            if Instant::now() >= deadline {
                bail!("{path} did not finish in the guest in time");
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// The status of a guest process, if it has exited.
    pub fn status(&mut self, pid: i64, deadline: Instant) -> Result<Option<ExitStatus>> {
        let status = self.execute(&qga::guest_exec_status { pid }, deadline)?;
        if !status.exited {
            return Ok(None);
        }
        Ok(Some(match (status.signal, status.exitcode) {
            (Some(signal), _) if signal > 0 => ExitStatus::Signal(signal),
            (_, Some(code)) => ExitStatus::Code(code),
            _ => ExitStatus::Code(0),
        }))
    }

    /// Reads one `\n`-terminated line, giving up at `deadline` or when `alive`
    /// fails.
    fn read_line(&mut self, deadline: Instant, alive: &mut dyn FnMut() -> Result<()>) -> Result<Vec<u8>, WaitError> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return Ok(line);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(WaitError::TimedOut);
            }
            let slice = (deadline - now).min(READ_SLICE);
            self.stream
                .set_read_timeout(Some(slice))
                .context("setting the agent socket's timeout")
                .map_err(WaitError::Io)?;
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    alive().map_err(WaitError::Dead)?;
                    return Err(WaitError::Io(anyhow!("the guest agent's socket closed")));
                }
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    alive().map_err(WaitError::Dead)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(WaitError::Io(anyhow!(e).context("reading from the guest agent"))),
            }
        }
    }
}

/// One command, serialised as the agent expects it: a JSON object and `\n`.
fn command_line<C: qapi::Command>(command: &C) -> Result<Vec<u8>> {
    let mut line = serde_json::to_vec(&qapi::Execute::<&C, qapi::Never>::new(command, None))
        .with_context(|| format!("encoding {}", C::NAME))?;
    line.push(b'\n');
    Ok(line)
}

/// A sync id unlikely to match anything stale on the channel.
fn sync_id() -> i64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    i64::from(std::process::id()) << 20 ^ i64::from(nanos) & 0x7fff_ffff
}

#[cfg(test)]
#[path = "agent_tests.rs"]
mod tests;
