//! virtiofs: the `virtiofsd` daemons of one VM, and QEMU's side of them.
//!
//! It finds `virtiofsd` (the Rust daemon; `VMTEST_VIRTIOFSD` names it or
//! turns it off), builds each daemon's command line and QEMU's
//! `vhost-user-fs` devices and shared guest RAM with pure functions, and
//! owns the running daemons ([`Daemons`]): one per shared directory, handed
//! a socket vmtest already listens on, told to die with vmtest, registered
//! with the janitor, and stopped and reaped on drop. The devices are either
//! in QEMU's argv or, for a VM whose state is saved or restored (vhost-user
//! devices block migration), plugged in through QMP afterwards into PCIe
//! root ports the argv holds ([`hotplug_ports`], [`Daemons::hotplug`]).
//! Which directories go over virtiofs, and whether at all, is `share.rs`'s
//! decision.

use std::ffi::OsString;
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{Value, json};

/// The environment variable that names the daemon, or (`none`) turns
/// virtiofs off.
pub const DAEMON_ENV: &str = "VMTEST_VIRTIOFSD";
/// Where distributions install the Rust daemon outside `PATH`.
const KNOWN_PATHS: &[&str] = &["/usr/libexec/virtiofsd", "/usr/lib/virtiofsd"];
/// QEMU's id of the shared guest RAM.
const MEMORY_ID: &str = "vmtest_mem";
/// The descriptor number the daemon finds its listening socket on.
const SOCKET_FD: i32 = 3;
/// How long a daemon gets to exit after SIGTERM before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(2);

/// The `virtiofsd` to use: `$VMTEST_VIRTIOFSD` if set (`none` or empty: no
/// daemon), else `virtiofsd` on `PATH`, else where distributions put it.
pub fn find_daemon() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    find_daemon_in(std::env::var_os(DAEMON_ENV), &path, is_executable)
}

fn find_daemon_in(configured: Option<OsString>, path: &OsString, exists: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    if let Some(configured) = configured {
        if configured.is_empty() || configured == "none" {
            return None;
        }
        return Some(PathBuf::from(configured));
    }
    std::env::split_paths(path)
        .map(|dir| dir.join("virtiofsd"))
        .chain(KNOWN_PATHS.iter().map(PathBuf::from))
        .find(|p| exists(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// One directory exported over virtiofs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// The guest's mount tag (also names the socket and QEMU's chardev).
    pub tag: String,
    pub host_path: PathBuf,
    pub writable: bool,
    /// Keep metadata and file contents in the guest for the whole run
    /// (`cache=always`) instead of one second (`cache=auto`): for a kernel
    /// target's read-mostly root, whose programs and libraries are then
    /// read once, not at every exec.
    pub cached: bool,
}

/// The daemon's arguments for one export listening on descriptor 3.
/// `cache=auto`: the guest keeps metadata for one second and file contents
/// while the file's size and mtime are unchanged (reading them again at
/// each open otherwise). `cache=always` (a [`Export::cached`] export): both
/// are kept until the guest drops them, so the host's changes during the run
/// may stay unseen. Writes go straight to the host either way. As root the
/// daemon sandboxes itself in namespaces; otherwise it runs as the user, who
/// cannot chown.
pub fn daemon_args(export: &Export, as_root: bool) -> Vec<String> {
    let mut args = vec![
        format!("--fd={SOCKET_FD}"),
        format!("--shared-dir={}", export.host_path.display()),
        format!("--cache={}", if export.cached { "always" } else { "auto" }),
        format!("--sandbox={}", if as_root { "namespace" } else { "none" }),
        "--log-level=error".into(),
    ];
    if !export.writable {
        args.push("--readonly".into());
    }
    args
}

/// QEMU's guest RAM as a shared memfd, which vhost-user needs: the daemon
/// maps it to reach the guest's buffers. `memory` is `vm.memory` (QEMU size
/// syntax, the same as `-m`).
pub fn memory_args(memory: &str) -> Vec<String> {
    vec![
        "-object".into(),
        format!("memory-backend-memfd,id={MEMORY_ID},size={memory},share=on"),
        "-machine".into(),
        format!("memory-backend={MEMORY_ID}"),
    ]
}

/// QEMU's device for one export, connected to its daemon's socket.
pub fn device_args(export: &Export, socket: &Path) -> Vec<String> {
    let id = chardev_id(export);
    vec![
        "-chardev".into(),
        format!("socket,id={id},path={}", crate::vm::qemu::escape_path(socket)),
        "-device".into(),
        format!("vhost-user-fs-pci,queue-size=1024,chardev={id},tag={}", export.tag),
    ]
}

fn chardev_id(export: &Export) -> String {
    format!("fs_{}", export.tag)
}

/// The id of the `index`th root port [`hotplug_ports`] adds.
fn port_id(index: usize) -> String {
    format!("vmtest_hp{index}")
}

/// `count` empty PCIe root ports for devices plugged in later (a PCIe
/// machine plugs devices into ports, not into its root bus). Their chassis
/// numbers start high, away from ports the user's `extra_args` may add.
pub fn hotplug_ports(count: usize) -> Vec<String> {
    (0..count)
        .flat_map(|i| {
            [
                "-device".into(),
                format!("pcie-root-port,id={},chassis={}", port_id(i), 200 + i),
            ]
        })
        .collect()
}

/// How long QEMU gets to plug the devices in.
const PLUG_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends `commands` ([`Daemons::hotplug`]) to the QMP monitor on `socket`.
pub fn plug(socket: &Path, commands: &[Value]) -> Result<()> {
    let mut qmp = crate::vm::qmp::Qmp::connect(socket, PLUG_TIMEOUT)?;
    for command in commands {
        qmp.execute(command.clone())?;
    }
    Ok(())
}

/// `chardev-add` and `device_add` of one export's device into `port`.
fn hotplug_commands(export: &Export, socket: &Path, port: &str) -> [Value; 2] {
    let id = chardev_id(export);
    [
        json!({ "execute": "chardev-add", "arguments": {
            "id": id,
            "backend": { "type": "socket", "data": {
                "addr": { "type": "unix", "data": { "path": socket } },
                "server": false,
            } },
        } }),
        json!({ "execute": "device_add", "arguments": {
            "driver": "vhost-user-fs-pci",
            "id": format!("dev_{id}"),
            "bus": port,
            "chardev": id,
            "tag": export.tag,
            "queue-size": 1024,
        } }),
    ]
}

/// The socket of an export's daemon in the VM's private directory.
pub fn socket_path(dir: &Path, export: &Export) -> PathBuf {
    dir.join(format!("virtiofs-{}.sock", export.tag))
}

/// The running daemons of one VM. Dropping it stops and reaps them.
#[derive(Default)]
pub struct Daemons {
    /// Each daemon with its export's tag and its stderr log.
    children: Vec<(String, Child, PathBuf)>,
    /// Each export with the socket its daemon listens on.
    sockets: Vec<(Export, PathBuf)>,
}

impl std::fmt::Debug for Daemons {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pids: Vec<u32> = self.children.iter().map(|(_, c, _)| c.id()).collect();
        write!(f, "Daemons {pids:?}")
    }
}

impl Daemons {
    /// Starts `daemon` for each export, listening on a socket in `dir`.
    pub fn start(daemon: &Path, exports: &[Export], dir: &Path) -> Result<Daemons> {
        if daemon.components().count() > 1 && !is_executable(daemon) {
            anyhow::bail!(
                "virtiofsd {} is not an executable file: point {DAEMON_ENV} at the virtiofsd program, \
                 or set {DAEMON_ENV}=none or vm.share = \"9p\" to share over 9p",
                daemon.display()
            );
        }
        let mut daemons = Daemons::default();
        // SAFETY: geteuid has no preconditions.
        let as_root = unsafe { libc::geteuid() } == 0;
        for export in exports {
            let socket = socket_path(dir, export);
            let listener = UnixListener::bind(&socket).with_context(|| format!("listening on {}", socket.display()))?;
            let log_path = dir.join(format!("virtiofs-{}.log", export.tag));
            let log = fs::File::create(&log_path).context("creating virtiofsd's log")?;
            let mut command = Command::new(daemon);
            command
                .args(daemon_args(export, as_root))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log);
            pass_listener(&mut command, &listener);
            crate::vm::die_with_parent(&mut command);
            let child = command.spawn().with_context(|| {
                format!(
                    "starting virtiofsd {} for {} (set {DAEMON_ENV}=none or vm.share = \"9p\" to share over 9p)",
                    daemon.display(),
                    export.host_path.display()
                )
            })?;
            crate::vm::janitor::register_process(child.id());
            log::debug!(
                "virtiofsd {} for {} (tag {})",
                child.id(),
                export.host_path.display(),
                export.tag
            );
            daemons.children.push((export.tag.clone(), child, log_path));
            // Our copy of the listener closes here: if the daemon dies,
            // QEMU's connection is refused instead of waiting for it.
            daemons.sockets.push((export.clone(), socket));
        }
        Ok(daemons)
    }

    /// QEMU's arguments for the devices, in the order of the exports.
    pub fn device_args(&self) -> Vec<String> {
        self.sockets
            .iter()
            .flat_map(|(export, socket)| device_args(export, socket))
            .collect()
    }

    /// The QMP commands that plug the devices into the ports of
    /// [`hotplug_ports`] (one each, in the order of the exports).
    pub fn hotplug(&self) -> Vec<Value> {
        self.sockets
            .iter()
            .enumerate()
            .flat_map(|(i, (export, socket))| hotplug_commands(export, socket, &port_id(i)))
            .collect()
    }

    /// Whether any daemon has exited, and if so a line saying so with the
    /// end of what it wrote.
    pub fn check(&mut self) -> Option<String> {
        self.children
            .iter_mut()
            .find_map(|(tag, child, log)| match child.try_wait() {
                Ok(Some(status)) => {
                    let text = fs::read_to_string(log).unwrap_or_default();
                    let mut last: Vec<&str> = text.lines().rev().take(5).collect();
                    last.reverse();
                    Some(format!("virtiofsd for {tag} exited ({status}): {}", last.join("\n")))
                }
                _ => None,
            })
    }
}

/// Puts `listener` on descriptor [`SOCKET_FD`] of the child, inheritable.
fn pass_listener(command: &mut Command, listener: &UnixListener) {
    let fd = listener.as_raw_fd();
    // SAFETY: dup2 and fcntl are async-signal-safe; `fd` stays open in the
    // parent until spawn returns.
    unsafe {
        command.pre_exec(move || {
            if fd == SOCKET_FD {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, SOCKET_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        // The daemons exit by themselves once QEMU, their one client, is
        // gone; SIGTERM covers a daemon QEMU never connected to.
        for (_, child, _) in &mut self.children {
            if let Ok(None) = child.try_wait() {
                // SAFETY: signalling our own unreaped child.
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            }
        }
        let deadline = Instant::now() + TERM_GRACE;
        for (tag, child, _) in &mut self.children {
            while let Ok(None) = child.try_wait() {
                if Instant::now() >= deadline {
                    log::debug!("virtiofsd for {tag} ignored SIGTERM; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export(writable: bool) -> Export {
        Export {
            tag: "vmtest_root".into(),
            host_path: "/".into(),
            writable,
            cached: false,
        }
    }

    /// A daemon path that is a directory or not executable (a wrong
    /// `VMTEST_VIRTIOFSD`) is named before anything starts.
    #[test]
    fn a_daemon_that_is_no_program_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("virtiofsd");
        fs::write(&plain, "").unwrap();
        for daemon in [dir.path(), plain.as_path()] {
            let err = Daemons::start(daemon, &[export(true)], dir.path())
                .unwrap_err()
                .to_string();
            assert_eq!(
                err,
                format!(
                    "virtiofsd {} is not an executable file: point VMTEST_VIRTIOFSD at the virtiofsd program, \
                     or set VMTEST_VIRTIOFSD=none or vm.share = \"9p\" to share over 9p",
                    daemon.display()
                )
            );
        }
        assert!(
            fs::read_dir(dir.path()).unwrap().count() == 1,
            "a socket or log was left"
        );
    }

    #[test]
    fn daemon_args_are_exact() {
        assert_eq!(
            daemon_args(&export(true), true),
            [
                "--fd=3",
                "--shared-dir=/",
                "--cache=auto",
                "--sandbox=namespace",
                "--log-level=error"
            ]
        );
        let cached = Export {
            cached: true,
            ..export(false)
        };
        assert_eq!(
            daemon_args(&cached, false),
            [
                "--fd=3",
                "--shared-dir=/",
                "--cache=always",
                "--sandbox=none",
                "--log-level=error",
                "--readonly"
            ]
        );
    }

    #[test]
    fn qemu_args_are_exact() {
        assert_eq!(
            memory_args("4G"),
            [
                "-object",
                "memory-backend-memfd,id=vmtest_mem,size=4G,share=on",
                "-machine",
                "memory-backend=vmtest_mem"
            ]
        );
        assert_eq!(
            device_args(&export(true), Path::new("/t/a,b.sock")),
            [
                "-chardev",
                "socket,id=fs_vmtest_root,path=/t/a,,b.sock",
                "-device",
                "vhost-user-fs-pci,queue-size=1024,chardev=fs_vmtest_root,tag=vmtest_root"
            ]
        );
    }

    #[test]
    fn hotplug_plugs_each_export_into_its_own_port() {
        assert_eq!(
            hotplug_ports(2),
            [
                "-device",
                "pcie-root-port,id=vmtest_hp0,chassis=200",
                "-device",
                "pcie-root-port,id=vmtest_hp1,chassis=201"
            ]
        );
        let [chardev, device] = hotplug_commands(&export(true), Path::new("/t/a,b.sock"), "vmtest_hp1");
        assert_eq!(
            chardev,
            json!({ "execute": "chardev-add", "arguments": { "id": "fs_vmtest_root", "backend": {
                "type": "socket",
                "data": { "addr": { "type": "unix", "data": { "path": "/t/a,b.sock" } }, "server": false },
            } } })
        );
        assert_eq!(
            device,
            json!({ "execute": "device_add", "arguments": {
                "driver": "vhost-user-fs-pci", "id": "dev_fs_vmtest_root", "bus": "vmtest_hp1",
                "chardev": "fs_vmtest_root", "tag": "vmtest_root", "queue-size": 1024,
            } })
        );
    }

    /// A stand-in daemon: a shell script.
    fn fake_daemon(dir: &Path, script: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("fake-virtiofsd");
        fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn a_daemon_that_exits_is_reported_with_what_it_said_and_one_that_runs_is_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let exports = [export(true)];
        let dying = fake_daemon(dir.path(), "echo \"error: bad option $1\" >&2; exit 3");
        let mut daemons = Daemons::start(&dying, &exports, dir.path()).unwrap();
        assert_eq!(
            daemons.device_args(),
            device_args(&exports[0], &socket_path(dir.path(), &exports[0]))
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let said = loop {
            if let Some(said) = daemons.check() {
                break said;
            }
            assert!(Instant::now() < deadline, "the daemon did not exit");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(
            said,
            "virtiofsd for vmtest_root exited (exit status: 3): error: bad option --fd=3"
        );
        drop(daemons);

        let dir = tempfile::tempdir().unwrap();
        let running = fake_daemon(dir.path(), "exec sleep 100");
        let mut daemons = Daemons::start(&running, &exports, dir.path()).unwrap();
        let pid = daemons.children[0].1.id();
        assert_eq!(daemons.check(), None);
        let started = Instant::now();
        drop(daemons);
        assert!(started.elapsed() < TERM_GRACE, "SIGTERM did not stop it");
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "not reaped");
    }

    #[test]
    fn the_daemon_is_the_configured_one_or_the_first_found() {
        let path = OsString::from("/a:/b");
        let found = |p: &Path| p == Path::new("/b/virtiofsd") || p == Path::new("/usr/libexec/virtiofsd");
        assert_eq!(find_daemon_in(None, &path, found), Some("/b/virtiofsd".into()));
        assert_eq!(
            find_daemon_in(None, &OsString::new(), found),
            Some("/usr/libexec/virtiofsd".into())
        );
        assert_eq!(find_daemon_in(Some("none".into()), &path, found), None);
        assert_eq!(find_daemon_in(Some("".into()), &path, found), None);
        assert_eq!(
            find_daemon_in(Some("/opt/vfsd".into()), &path, |_| false),
            Some("/opt/vfsd".into())
        );
        assert_eq!(find_daemon_in(None, &path, |_| false), None);
    }
}
