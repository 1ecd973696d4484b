//! Ctrl-C and SIGTERM: noticed, not fatal.
//!
//! vmtest catches SIGINT and SIGTERM so that the runner can stop the current
//! VM through its normal cleanup (QEMU killed and reaped, private directory
//! removed), skip the targets not yet run, print the summary of what ran and
//! exit with 130 or 143. Waiting loops call [`check`] at least every 100 ms.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Result, bail};

struct Flags {
    int: Arc<AtomicBool>,
    term: Arc<AtomicBool>,
}

static FLAGS: OnceLock<Flags> = OnceLock::new();

/// Starts catching SIGINT and SIGTERM.
pub fn install() -> Result<()> {
    let flags = Flags {
        int: Arc::new(AtomicBool::new(false)),
        term: Arc::new(AtomicBool::new(false)),
    };
    signal_hook::flag::register(signal_hook::consts::SIGINT, flags.int.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, flags.term.clone())?;
    let _ = FLAGS.set(flags);
    Ok(())
}

/// The signal that interrupted vmtest, if any.
pub fn received() -> Option<i32> {
    let flags = FLAGS.get()?;
    if flags.term.load(Ordering::Relaxed) {
        Some(signal_hook::consts::SIGTERM)
    } else if flags.int.load(Ordering::Relaxed) {
        Some(signal_hook::consts::SIGINT)
    } else {
        None
    }
}

/// Fails once vmtest has been interrupted.
pub fn check() -> Result<()> {
    match received() {
        Some(signal) => bail!("{}", Interrupted(signal)),
        None => Ok(()),
    }
}

/// The error text of an interruption, recognisable by the runner.
pub struct Interrupted(pub i32);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = if self.0 == signal_hook::consts::SIGTERM {
            "SIGTERM"
        } else {
            "SIGINT"
        };
        write!(f, "interrupted by {name}")
    }
}
