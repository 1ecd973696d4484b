//! The settings kernel developers ask for, as config and the command line
//! give them: QEMU's gdb stub ([`GdbStub`]) and what a kernel splat does to
//! its target ([`SplatPolicy`], with its allowlist's patterns checked here).
//! `vm::gdb` and `vm::splat` act on them.

use regex::Regex;
use serde::Deserialize;

/// The address the stub listens on unless told otherwise: never all
/// interfaces unless asked.
pub const DEFAULT_ADDR: &str = "127.0.0.1";

/// Where QEMU's gdb stub listens, and whether the guest waits for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GdbStub {
    pub addr: String,
    pub port: u16,
    /// Start the VM stopped (`-S`) until the debugger continues it.
    pub wait: bool,
}

impl GdbStub {
    /// Parses `[ADDR:]PORT` (`1234`, `127.0.0.1:1234`, `0.0.0.0:1234`,
    /// `[::1]:1234`).
    pub fn parse(text: &str, wait: bool) -> Result<GdbStub, String> {
        let (addr, port) = match text.rsplit_once(':') {
            Some((addr, port)) => (addr.trim_start_matches('[').trim_end_matches(']'), port),
            None => (DEFAULT_ADDR, text),
        };
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("'{text}' is not [ADDR:]PORT with a port from 1 to 65535"))?;
        if addr.is_empty() || addr.contains([',', ' ']) {
            return Err(format!("'{text}': '{addr}' is not an address"));
        }
        Ok(GdbStub {
            addr: addr.to_string(),
            port,
            wait,
        })
    }

    /// `ADDR:PORT`, as gdb's `target remote` takes it.
    pub fn endpoint(&self) -> String {
        match self.addr.contains(':') {
            true => format!("[{}]:{}", self.addr, self.port),
            false => format!("{}:{}", self.addr, self.port),
        }
    }
}

/// What a splat does to its target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SplatPolicy {
    /// The target fails even when its command passed.
    #[default]
    Fail,
    /// The target keeps its verdict; vmtest prints a warning.
    Warn,
    /// Splats are not looked for.
    Ignore,
}

/// Checks an allowlist pattern of `kernel_splat_allow`.
pub fn check_splat_pattern(pattern: &str) -> Result<(), String> {
    Regex::new(pattern).map(|_| ()).map_err(|e| e.to_string())
}
