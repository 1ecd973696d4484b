//! Cleanup that survives vmtest being killed.
//!
//! Normally every private directory is removed by the `Drop` of its owner.
//! A SIGKILL skips all of that, so the first time vmtest creates a directory
//! it starts a janitor: a copy of itself (`--janitor`) in its own session,
//! reading directory paths from a pipe that only vmtest holds. When vmtest
//! exits, however it exits, the pipe closes and the janitor removes whatever
//! of those directories still exists. (QEMU itself dies with vmtest through
//! `PR_SET_PDEATHSIG`.)

use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

static PIPE: OnceLock<Mutex<Option<ChildStdin>>> = OnceLock::new();

/// Asks the janitor to remove `dir` if vmtest dies before removing it.
pub fn register(dir: &Path) {
    let pipe = PIPE.get_or_init(|| Mutex::new(start()));
    let mut guard = pipe.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(stdin) = guard.as_mut()
        && writeln!(stdin, "{}", dir.display())
            .and_then(|()| stdin.flush())
            .is_err()
    {
        log::debug!("the janitor is gone; {} may outlive a killed vmtest", dir.display());
        *guard = None;
    }
}

fn start() -> Option<ChildStdin> {
    let exe = std::env::current_exe().ok()?;
    let mut command = Command::new(exe);
    command
        .arg("--janitor")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe; a new session keeps the janitor
    // out of the terminal's Ctrl-C.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    match command.spawn() {
        Ok(mut child) => child.stdin.take(),
        Err(e) => {
            log::debug!("cannot start the janitor: {e}");
            None
        }
    }
}

/// The janitor's main: collect paths until vmtest's end, then remove them.
pub fn run() -> i32 {
    let dirs: Vec<PathBuf> = std::io::stdin()
        .lock()
        .lines()
        .map_while(Result::ok)
        .filter(|l| !l.is_empty())
        .map(PathBuf::from)
        .collect();
    for dir in dirs {
        if dir.exists() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    0
}
