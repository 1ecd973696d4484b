//! The interactive shell: `vmtest -k KERNEL -`, `--shell`, `command = "-"`.
//!
//! Instead of a command, the guest runs a login shell on a virtio console
//! (`/dev/hvc0`, a real tty in the guest, so job control works), started
//! through the agent like any command, with the same mounts, working
//! directory and environment. QEMU connects the console to a socket of ours;
//! this module puts the user's terminal in raw mode and copies bytes both
//! ways until the shell exits, then restores the terminal. Leaving the shell
//! ends the "command", so the VM is powered off as after any command.

use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use anyhow::{Result, bail};

/// The `command` value that asks for a shell.
pub const SHELL_COMMAND: &str = "-";

/// Whether a target's command asks for a shell.
pub fn wants_shell(command: &str) -> bool {
    command.trim() == SHELL_COMMAND
}

/// Fails unless vmtest's stdin and stdout are a terminal.
pub fn check_terminal() -> Result<()> {
    if !io::stdin().is_terminal() || !io::stdout().is_terminal() {
        bail!("an interactive shell needs a terminal: run vmtest from one (stdin and stdout are not a tty)");
    }
    Ok(())
}

/// The guest command that runs a login shell on /dev/hvc0 as its controlling
/// terminal, sized like the user's terminal. It starts where any command
/// would, so the shell's working directory is the command's.
pub fn guest_command(size: Option<(u16, u16)>) -> String {
    let stty = match size {
        Some((rows, cols)) => format!("stty rows {rows} cols {cols} 2>/dev/null; "),
        None => String::new(),
    };
    format!("exec 0<>/dev/hvc0 1>&0 2>&0; {stty}exec setsid --ctty --wait bash --login -i")
}

/// The user's terminal size (rows, columns), if known.
pub fn terminal_size() -> Option<(u16, u16)> {
    // SAFETY: TIOCGWINSZ fills a winsize we own.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::ioctl(io::stdout().as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_row > 0).then_some((size.ws_row, size.ws_col))
}

/// The user's terminal in raw mode; restored when dropped.
pub struct RawTerminal {
    saved: libc::termios,
}

impl RawTerminal {
    pub fn enter() -> Result<RawTerminal> {
        let fd = io::stdin().as_raw_fd();
        // SAFETY: tcgetattr/tcsetattr on our stdin with termios we own.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut saved) != 0 {
                bail!("cannot read the terminal's settings: {}", io::Error::last_os_error());
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            if libc::tcsetattr(fd, libc::TCSANOW, &raw) != 0 {
                bail!("cannot switch the terminal to raw mode: {}", io::Error::last_os_error());
            }
            Ok(RawTerminal { saved })
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `enter`.
        unsafe { libc::tcsetattr(io::stdin().as_raw_fd(), libc::TCSANOW, &self.saved) };
    }
}

/// Copies the user's keystrokes to the guest console and the console to the
/// user's terminal, until `stop` is set.
pub fn relay(socket: UnixStream, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut socket_in = match socket.try_clone() {
            Ok(s) => s,
            Err(_) => return,
        };
        let mut socket_out = socket;
        let stdin = io::stdin();
        let mut fds = [
            libc::pollfd {
                fd: stdin.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: socket_in.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let mut buf = [0u8; 4096];
        // Keys typed before the guest's shell holds its console open would
        // be dropped there: keep them in the terminal until the shell first
        // prints something (its prompt).
        let stdin_fd = fds[0].fd;
        let mut shell_ready = false;
        let mut stdin_open = true;
        while !stop.load(Ordering::Relaxed) {
            fds[0].fd = if shell_ready && stdin_open { stdin_fd } else { -1 };
            // SAFETY: poll on two valid descriptors we own or borrow (a
            // negative one is skipped).
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, 100) };
            if ready <= 0 {
                continue;
            }
            if fds[0].revents & libc::POLLIN != 0 {
                // SAFETY: read into our buffer from stdin.
                let n = unsafe { libc::read(fds[0].fd, buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 || socket_out.write_all(&buf[..n as usize]).is_err() {
                    stdin_open = false;
                }
            }
            if fds[1].revents & (libc::POLLIN | libc::POLLHUP) != 0 {
                match socket_in.read(&mut buf) {
                    Ok(n) if n > 0 => {
                        shell_ready = true;
                        let mut out = io::stdout().lock();
                        let _ = out.write_all(&buf[..n]);
                        let _ = out.flush();
                    }
                    _ => return,
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dash_asks_for_a_shell() {
        assert!(wants_shell("-"));
        assert!(wants_shell(" - "));
        assert!(!wants_shell("echo -"));
    }

    #[test]
    fn console_argv() {
        assert_eq!(
            crate::vm::qemu::shell_console_args(std::path::Path::new("/run/v/shell.sock")),
            [
                "-chardev",
                "socket,id=shell,path=/run/v/shell.sock,server=off",
                "-device",
                "virtconsole,bus=vser0.0,chardev=shell,name=org.vmtest.shell"
            ]
        );
    }

    #[test]
    fn the_guest_command_sizes_the_terminal() {
        assert_eq!(
            guest_command(Some((40, 120))),
            "exec 0<>/dev/hvc0 1>&0 2>&0; stty rows 40 cols 120 2>/dev/null; exec setsid --ctty --wait bash --login -i"
        );
    }
}
