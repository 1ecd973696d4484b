//! vmtest's own binary as the guest's init (PID 1).
//!
//! When a kernel target shares the host's root and architecture, the guest
//! can run the very vmtest binary that started it. Under emulation that is
//! much faster than a shell init that forks `mount` and `cat`: each exec of a
//! dynamic binary over 9p costs tens of milliseconds under TCG. The hidden
//! entry point `--guest-init PLAN` carries out an [`InitPlan`] (mounts,
//! symlinks), creates two FIFOs whose contents it relays to the output ports
//! followed by the end marker, starts qemu-ga, and then reaps orphans until
//! the agent exits, when it powers the guest off. The command itself is then
//! a single `bash -c` that redirects into the FIFOs (`guest::relayed_command`).
//! Other guests use the shell versions in `guest.rs`.

use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::guest::sys::{find_port, mount, wait_for_ports};
use crate::guest::{AGENT_PORT, STDERR_PORT, STDIN_PORT, STDOUT_PORT};
use crate::guest::{InitPlan, NO_PORTS_NEEDS, OnFailure, STDERR_FIFO, STDIN_LINK, STDOUT_FIFO, When, fatal_message};

/// PID 1: carry out the plan, relay output, run the agent, reap, power off.
pub fn init(plan_path: PathBuf) -> i32 {
    let plan: InitPlan = match fs::read(&plan_path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
    {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("vmtest init: cannot read {}: {e}", plan_path.display());
            return 1;
        }
    };
    // `vmtest_debug=1` on the kernel command line reaches init's environment.
    let debug = std::env::var_os("vmtest_debug").is_some();
    let stamp = |what: &str| {
        if debug {
            let uptime = fs::read_to_string("/proc/uptime").unwrap_or_default();
            eprintln!("vmtest init: {} {what}", uptime.split(' ').next().unwrap_or("?"));
        }
    };
    let mut supported: Option<String> = None;
    for m in &plan.mounts {
        let wanted = match m.when {
            When::Always => true,
            When::Supported => {
                let list = supported.get_or_insert_with(|| fs::read_to_string("/proc/filesystems").unwrap_or_default());
                list.split_whitespace().any(|name| name == m.fstype)
            }
            When::Unmounted => !is_mount_point(&m.target),
        };
        if !wanted {
            stamp(&format!("{} skipped", m.target));
            continue;
        }
        if m.mkdir {
            let _ = fs::create_dir_all(&m.target);
        }
        if let Err(e) = mount(&m.source, &m.target, &m.fstype, &m.options) {
            match &m.on_failure {
                OnFailure::Quiet => stamp(&format!("{} failed: {e}", m.target)),
                OnFailure::Warn => eprintln!("vmtest init: mounting {} on {} failed: {e}", m.source, m.target),
                OnFailure::Fatal { needs } => {
                    let what = format!("mounting {} on {} failed ({e})", m.fstype, m.target);
                    return fatal(&what, needs);
                }
            }
        }
        stamp(&m.target);
    }
    for (link, target) in &plan.symlinks {
        let _ = std::os::unix::fs::symlink(target, link);
    }
    if let Err(e) = loopback_up() {
        stamp(&format!("loopback: {e}"));
    }
    // SAFETY: a valid buffer of the given length.
    unsafe { libc::sethostname(plan.hostname.as_ptr().cast(), plan.hostname.len()) };
    stamp("mounted");
    wait_for_ports(&[AGENT_PORT, STDIN_PORT, STDOUT_PORT, STDERR_PORT]);
    let Some(port) = find_port(AGENT_PORT) else {
        return fatal(&format!("no virtio console port named {AGENT_PORT}"), NO_PORTS_NEEDS);
    };
    if let Err(e) = start_relays(&plan.marker) {
        eprintln!("vmtest init: cannot relay the command's output: {e}");
    }
    // SAFETY: nothing else reads or writes the environment at this point; the
    // relay threads never touch it.
    unsafe {
        std::env::set_var("PATH", crate::guest::GUEST_PATH);
        std::env::set_var("HOME", "/root");
        std::env::set_var("TERM", "linux");
    }
    stamp("starting the agent");
    let agent = Command::new(&plan.agent)
        .args(["-m", "virtio-serial", "-p"])
        .arg(&port)
        .args(["-t", "/run"])
        .spawn();
    let agent = match agent {
        Ok(child) => child.id() as libc::pid_t,
        Err(e) => {
            eprintln!("vmtest init: starting {} failed: {e}", plan.agent);
            power_off();
        }
    };
    reap_until(agent);
    eprintln!("vmtest init: the guest agent exited; powering off");
    power_off();
}

/// Links [`STDIN_LINK`] to the stdin port, or to `/dev/null` when the
/// guest has none.
/// Says why init stops and returns its exit status. The kernel panics the
/// moment init exits, and a panic does not wait for the serial line to send
/// what is queued for it, so wait until the message is out first.
fn fatal(what: &str, needs: &str) -> i32 {
    eprintln!("{}", fatal_message(what, needs));
    // SAFETY: tcdrain only waits on the descriptor (and fails harmlessly if
    // stderr is not a terminal).
    if unsafe { libc::tcdrain(2) } != 0 {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    1
}

fn link_stdin() -> io::Result<()> {
    let port = find_port(STDIN_PORT).unwrap_or_else(|| PathBuf::from("/dev/null"));
    std::os::unix::fs::symlink(port, STDIN_LINK)
}

/// Creates the output FIFOs and a thread per FIFO that copies everything
/// written to it into its port, then writes the marker.
fn start_relays(marker: &str) -> io::Result<()> {
    fs::create_dir_all(Path::new(STDOUT_FIFO).parent().unwrap_or(Path::new("/run")))?;
    link_stdin()?;
    for (fifo, port_name) in [(STDOUT_FIFO, STDOUT_PORT), (STDERR_FIFO, STDERR_PORT)] {
        let path = CString::new(fifo).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a valid NUL-terminated path.
        if unsafe { libc::mkfifo(path.as_ptr(), 0o622) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let port = find_port(port_name)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no port named {port_name}")))?;
        let marker = marker.as_bytes().to_vec();
        std::thread::spawn(move || {
            let relay = || -> io::Result<()> {
                let mut port = fs::OpenOptions::new().write(true).open(&port)?;
                // Blocks until the command opens the FIFO; ends when every
                // writer has closed it.
                let mut fifo = fs::File::open(fifo)?;
                pump(&mut fifo, &mut port)?;
                port.write_all(&marker)
            };
            if let Err(e) = relay() {
                eprintln!("vmtest init: relaying {fifo}: {e}");
            }
        });
    }
    Ok(())
}

/// Reaps every child (orphans are re-parented to PID 1) until `agent` exits.
fn reap_until(agent: libc::pid_t) {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid == agent {
            return;
        }
        if pid < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}

fn power_off() -> ! {
    // SAFETY: sync and reboot take no pointers; as PID 1 we may power off.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    std::process::exit(1)
}

/// Whether something is mounted on `target` (it is a line of /proc/mounts).
fn is_mount_point(target: &str) -> bool {
    fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|line| line.split(' ').nth(1) == Some(target))
}

/// Brings the loopback interface up; the kernel gives it 127.0.0.1 (and ::1
/// with IPv6) by itself.
fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket and ioctl calls on a zeroed ifreq we own.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        let mut rc = libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req);
        if rc == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            rc = libc::ioctl(sock, libc::SIOCSIFFLAGS, &req);
        }
        let err = io::Error::last_os_error();
        libc::close(sock);
        if rc == 0 { Ok(()) } else { Err(err) }
    }
}

/// Copies until end of input with plain reads and writes. (`io::copy` would
/// splice from the pipe into the port, and the data never reaches the host.)
fn pump(from: &mut impl Read, to: &mut impl Write) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => to.write_all(&buf[..n])?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pump_copies_everything() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut out = Vec::new();
        pump(&mut &data[..], &mut out).unwrap();
        assert_eq!(out, data);
    }
}
