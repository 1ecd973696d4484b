//! vmtest as the `/init` of its own initramfs (the guest side of
//! `initramfs.rs`).
//!
//! The kernel runs `/init` with the arguments meant for the real init (those
//! after `--` on its command line). This stage loads the modules packed in
//! [`MODULES_DIR`] in name order, mounts the root the kernel would have
//! mounted itself (`root=`, `rootfstype=`, `rootflags=`, `ro`/`rw` from
//! `/proc/cmdline`) with a devtmpfs on its `/dev`, waits until the virtio
//! console has named vmtest's ports, moves the root over `/` and chroots
//! there as `switch_root` does, and execs `init=` with those same arguments
//! (the shell init of a foreign rootfs). vmtest's own `--guest-init` instead
//! carries on in this process, which spares loading the same binary again
//! over 9p (most of a second under TCG). The initramfs's files stay in
//! memory; they are a few megabytes.

use std::ffi::{CString, OsString};
use std::fs;
use std::io;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;

use crate::guest::sys::mount;
use crate::guest::{AGENT_PORT, STDERR_PORT, STDIN_PORT, STDOUT_PORT};
use crate::guest::{MODULES_DIR, NEW_ROOT};

/// Whether this process is the initramfs stage: PID 1 started as `/init`
/// in an archive that holds vmtest's modules directory.
pub fn is_stage(args: &[OsString]) -> bool {
    args.first().is_some_and(|a| a == "/init") && std::process::id() == 1 && Path::new(MODULES_DIR).is_dir()
}

/// The root the kernel command line asks for, and the init to run on it.
#[derive(Debug, PartialEq)]
pub struct RootSpec {
    pub source: String,
    pub fstype: String,
    /// `rootflags=` plus `ro` or `rw`.
    pub options: String,
    pub init: String,
    /// `init=` was given more than once: the user's `kernel_args` replaced
    /// vmtest's init.
    pub init_overridden: bool,
}

impl RootSpec {
    /// Reads the kernel's own parameters (up to `--`); the last `ro`/`rw` wins.
    pub fn parse(cmdline: &str) -> Option<RootSpec> {
        let (mut source, mut fstype, mut flags, mut init) = (None, None, String::new(), "/sbin/init".to_string());
        let mut mode = "rw";
        let mut inits = 0;
        for word in cmdline.split_whitespace().take_while(|w| *w != "--") {
            match word.split_once('=') {
                Some(("root", v)) => source = Some(v.to_string()),
                Some(("rootfstype", v)) => fstype = Some(v.to_string()),
                Some(("rootflags", v)) => flags = v.to_string(),
                Some(("init", v)) => {
                    init = v.to_string();
                    inits += 1;
                }
                None if word == "ro" || word == "rw" => mode = if word == "ro" { "ro" } else { "rw" },
                _ => {}
            }
        }
        let options = if flags.is_empty() {
            mode.to_string()
        } else {
            format!("{flags},{mode}")
        };
        Some(RootSpec {
            source: source?,
            fstype: fstype?,
            options,
            init,
            init_overridden: inits > 1,
        })
    }
}

/// Runs the stage; returns only on failure (the kernel then panics, and
/// vmtest shows the console with the message printed here).
pub fn run(args: &[OsString]) -> i32 {
    match switch(args) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("vmtest initramfs: {e}");
            1
        }
    }
}

fn switch(args: &[OsString]) -> io::Result<std::convert::Infallible> {
    let debug = std::env::var_os("vmtest_debug").is_some();
    let stamp = |what: &str| {
        if debug {
            let uptime = fs::read_to_string("/proc/uptime").unwrap_or_default();
            eprintln!("vmtest initramfs: {} {what}", uptime.split(' ').next().unwrap_or("?"));
        }
    };
    mount("proc", "/proc", "proc", "nosuid,nodev,noexec").map_err(|e| context(e, "mounting /proc"))?;
    let cmdline = fs::read_to_string("/proc/cmdline")?;
    let spec = RootSpec::parse(&cmdline).ok_or_else(|| {
        io::Error::other(format!(
            "no root= and rootfstype= in the kernel command line: {cmdline}"
        ))
    })?;
    stamp("loading modules");
    let mut modules: Vec<_> = fs::read_dir(MODULES_DIR)?.flatten().map(|e| e.path()).collect();
    modules.sort();
    for module in &modules {
        load_module(module).map_err(|e| context(e, &format!("loading {}", module.display())))?;
    }
    stamp("modules loaded");
    wait_for_ports();
    stamp("ports named");
    mount(&spec.source, NEW_ROOT, &spec.fstype, &spec.options)
        .map_err(|e| context(e, &format!("mounting the root {} ({})", spec.source, spec.fstype)))?;
    // What the kernel does after mounting a root itself (CONFIG_DEVTMPFS_MOUNT).
    if let Err(e) = mount("devtmpfs", &format!("{NEW_ROOT}/dev"), "devtmpfs", "") {
        eprintln!("vmtest initramfs: mounting /dev: {e}");
    }
    stamp("root mounted");
    if !debug {
        // SAFETY: a valid NUL-terminated path.
        unsafe { libc::umount2(c"/proc".as_ptr(), libc::MNT_DETACH) };
    }
    switch_root()?;
    // vmtest's own init is this very binary (the archive is keyed by it):
    // carry on in this process rather than load it again over 9p.
    if let [_, flag, plan] = args
        && flag == "--guest-init"
        && !spec.init_overridden
    {
        std::process::exit(crate::guest::init::init(plan.into()));
    }
    let error = std::process::Command::new(&spec.init).args(&args[1..]).exec();
    Err(context(error, &format!("starting {}", spec.init)))
}

/// Moves the new root over `/` and enters it, as switch_root(8) does.
fn switch_root() -> io::Result<()> {
    let new_root = CString::new(NEW_ROOT).map_err(io::Error::other)?;
    let check = |rc: libc::c_int, what: &str| match rc {
        0 => Ok(()),
        _ => Err(context(io::Error::last_os_error(), what)),
    };
    // SAFETY: valid NUL-terminated strings; a null fstype and data are
    // allowed with MS_MOVE.
    unsafe {
        check(libc::chdir(new_root.as_ptr()), "entering the new root")?;
        check(
            libc::mount(
                c".".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_MOVE,
                std::ptr::null(),
            ),
            "moving the new root over /",
        )?;
        check(libc::chroot(c".".as_ptr()), "entering the new root")?;
        check(libc::chdir(c"/".as_ptr()), "entering the new root")
    }
}

/// Waits (briefly) until the virtio console has named vmtest's ports, with
/// sysfs mounted for the look.
fn wait_for_ports() {
    let wanted = [AGENT_PORT, STDIN_PORT, STDOUT_PORT, STDERR_PORT];
    if mount("sysfs", "/sys", "sysfs", "nosuid,nodev,noexec").is_err() {
        return;
    }
    crate::guest::sys::wait_for_ports(&wanted);
    // SAFETY: a valid NUL-terminated path.
    unsafe { libc::umount2(c"/sys".as_ptr(), libc::MNT_DETACH) };
}

/// Loads one module file; one that is already loaded is fine.
fn load_module(path: &Path) -> io::Result<()> {
    let file = fs::File::open(path)?;
    let params = CString::new("").map_err(io::Error::other)?;
    // SAFETY: a valid open fd and NUL-terminated parameter string.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EEXIST) {
        return Ok(());
    }
    // Kernels without finit_module, or a file it rejects: try init_module.
    let bytes = fs::read(path)?;
    // SAFETY: a valid buffer of the given length and a NUL-terminated string.
    let rc = unsafe { libc::syscall(libc::SYS_init_module, bytes.as_ptr(), bytes.len(), params.as_ptr()) };
    let retry = io::Error::last_os_error();
    match rc {
        0 => Ok(()),
        _ if retry.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        _ => Err(err),
    }
}

fn context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_spec_comes_from_the_kernel_arguments_only() {
        let line = "console=ttyS0 root=vmtest_root rootfstype=9p \
                    rootflags=trans=virtio,version=9p2000.L,msize=512000,access=any,cache=mmap rw \
                    init=/usr/bin/vmtest panic=-1 ro -- --guest-init /tmp/v/init.json init=/nope";
        assert_eq!(
            RootSpec::parse(line),
            Some(RootSpec {
                source: "vmtest_root".into(),
                fstype: "9p".into(),
                options: "trans=virtio,version=9p2000.L,msize=512000,access=any,cache=mmap,ro".into(),
                init: "/usr/bin/vmtest".into(),
                init_overridden: false,
            })
        );
        let user = RootSpec::parse("root=r rootfstype=9p init=/usr/bin/vmtest init=/bin/sh -- --guest-init p").unwrap();
        assert_eq!((user.init.as_str(), user.init_overridden), ("/bin/sh", true));
        assert_eq!(RootSpec::parse("console=ttyS0 rootfstype=9p"), None);
    }

    #[test]
    fn not_the_stage_outside_pid_1() {
        assert!(!is_stage(&["/init".into()]));
    }
}
