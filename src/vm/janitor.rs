//! Cleanup that survives vmtest being killed.
//!
//! Normally every private directory is removed by the `Drop` of its owner.
//! A SIGKILL skips all of that, so the first time vmtest creates a directory
//! it starts a janitor: a copy of itself (`--janitor`) in its own session,
//! reading directory paths from a pipe that only vmtest holds. When vmtest
//! exits, however it exits, the pipe closes and the janitor removes whatever
//! of those directories still exists, and kills the helper processes
//! registered with it (virtiofsd) that are still running. (QEMU and those
//! helpers also die with vmtest through `PR_SET_PDEATHSIG`.)

use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

static PIPE: OnceLock<Mutex<Option<ChildStdin>>> = OnceLock::new();

/// Asks the janitor to remove `dir` if vmtest dies before removing it.
pub fn register(dir: &Path) {
    send(&dir.display().to_string());
}

/// Asks the janitor to kill process `pid` (vmtest's child) if it still runs
/// when vmtest dies. The line names the process's start time too, so a
/// recycled pid is left alone.
pub fn register_process(pid: u32) {
    match start_time(pid) {
        Some(time) => send(&format!("pid {pid} {time}")),
        None => log::debug!("process {pid} is already gone"),
    }
}

fn send(line: &str) {
    let pipe = PIPE.get_or_init(|| Mutex::new(start()));
    let mut guard = pipe.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(stdin) = guard.as_mut()
        && writeln!(stdin, "{line}").and_then(|()| stdin.flush()).is_err()
    {
        log::debug!("the janitor is gone; {line} may outlive a killed vmtest");
        *guard = None;
    }
}

/// A process's start time (field 22 of `/proc/PID/stat`, after the command
/// name, which may hold spaces and parentheses).
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19).map(str::to_string)
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

/// The janitor's main: collect paths and processes until vmtest's end, then
/// kill the processes that still run and remove the paths.
pub fn run() -> i32 {
    let lines: Vec<String> = std::io::stdin()
        .lock()
        .lines()
        .map_while(Result::ok)
        .filter(|l| !l.is_empty())
        .collect();
    for line in &lines {
        let mut words = line.split(' ');
        if let (Some("pid"), Some(pid), Some(time)) = (words.next(), words.next(), words.next())
            && let Ok(pid) = pid.parse::<u32>()
            && start_time(pid).as_deref() == Some(time)
        {
            // SAFETY: kill takes no pointers; the start time says the pid
            // is still the process vmtest registered.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
    let dirs = lines.iter().filter(|l| l.starts_with('/')).map(PathBuf::from);
    for dir in dirs {
        if dir.exists() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_known_by_its_start_time() {
        let own = start_time(std::process::id()).unwrap();
        assert!(own.bytes().all(|b| b.is_ascii_digit()), "{own}");
        assert_eq!(start_time(std::process::id()), Some(own));
        assert_eq!(start_time(u32::MAX), None);
    }
}
