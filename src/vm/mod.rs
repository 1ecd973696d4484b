//! One running QEMU and everything it owns.
//!
//! [`Vm`] creates the private (0700) directory that holds the sockets and
//! the generated init, listens on the sockets, spawns QEMU with an argv from
//! `qemu.rs`, and accepts QEMU's connections; the serial console's FIFO
//! goes to a [`Console`] thread, which writes the kept log. Its `Drop`
//! kills and reaps QEMU and removes the directory, so nothing outlives it
//! whatever path the run took; QEMU is also told to die with vmtest
//! (`PR_SET_PDEATHSIG`) in case vmtest itself is killed. It knows nothing of
//! what runs in the guest.
//!
//! Around it: QEMU's argv, built by pure functions (`qemu`); KVM or TCG
//! (`kvm`, verdicts kept in `cache`); the console stream (`console`), its
//! kept log (`log_path`) and the kernel splats in it (`splat`); the stub and
//! dump kernel developers ask for (`gdb`, `dump`); and the `janitor`, which
//! removes what a killed vmtest left behind.

pub mod cache;
pub mod console;
pub mod dump;
pub mod gdb;
pub mod janitor;
pub mod kvm;
pub mod qemu;
pub mod qmp;
pub mod splat;
pub mod virtiofs;

use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use tempfile::TempDir;

use crate::config::log_path::LogPath;
use crate::vm::console::Console;
use crate::vm::qemu::VmPaths;

/// How long QEMU gets to connect to vmtest's sockets after it starts.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long QEMU gets to exit after SIGTERM before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(3);
/// Console lines attached to boot failures.
const CONSOLE_TAIL_LINES: usize = 25;
/// How long a guest that panicked gets to reboot (and so end QEMU) by itself.
const PANIC_GRACE: Duration = Duration::from_secs(1);
/// How long the console's last bytes get to be read once QEMU has exited.
const CONSOLE_DRAIN: Duration = Duration::from_secs(1);

/// QEMU itself died of a signal (a crash, or killed from outside), as
/// opposed to exiting: the runner may retry a boot that ended so.
#[derive(Debug)]
pub struct QemuCrashed {
    pub signal: i32,
    description: String,
}

impl std::fmt::Display for QemuCrashed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

impl std::error::Error for QemuCrashed {}

/// The sockets of a running VM, one per virtio-serial port.
pub struct Channels {
    pub agent: UnixStream,
    pub stdin: UnixStream,
    pub stdout: UnixStream,
    pub stderr: UnixStream,
    /// The interactive shell's console, when one was asked for.
    pub shell: Option<UnixStream>,
}

/// A private directory for one VM, before QEMU starts.
pub struct VmDir {
    /// The virtiofs daemons serving this VM (first: stopped before the
    /// directory with their sockets goes).
    daemons: crate::vm::virtiofs::Daemons,
    dir: TempDir,
    /// The kept console log, created for this run.
    console_log: Option<fs::File>,
    /// Where a crash dump goes (beside this log), if one is wanted.
    dump_beside: Option<LogPath>,
}

impl VmDir {
    pub fn new() -> Result<Self> {
        // tempfile creates the directory with mode 0700.
        let dir = tempfile::Builder::new()
            .prefix("vmtest.")
            .tempdir()
            .context("creating a private temporary directory")?;
        crate::vm::janitor::register(dir.path());
        let console = dir.path().join("console");
        for end in ["in", "out"] {
            let fifo = console.with_extension(end);
            let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes())?;
            // SAFETY: a NUL-terminated path.
            if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } != 0 {
                return Err(io::Error::last_os_error()).with_context(|| format!("creating {}", fifo.display()));
            }
        }
        Ok(VmDir {
            daemons: Default::default(),
            dir,
            console_log: None,
            dump_beside: None,
        })
    }

    /// Keeps the guest console in `log` after the run, if it can be created
    /// there; otherwise warns, naming the path and why (a symlink the guest
    /// planted among them), and keeps no log.
    pub fn keep_console_log(&mut self, log: &LogPath) {
        match log.create() {
            Ok(file) => self.console_log = Some(file),
            Err(e) => log::warn!(
                "cannot write {} ({e}); the console log will not be kept",
                log.path().display()
            ),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Keeps the VM's virtiofs daemons until QEMU is gone.
    pub fn adopt(&mut self, daemons: crate::vm::virtiofs::Daemons) {
        self.daemons = daemons;
    }

    /// Writes `text` at the start of the kept console log (a warm start
    /// says where the guest came from).
    pub fn note_console(&mut self, text: &str) {
        use std::io::Write;
        if let Some(log) = &mut self.console_log
            && let Err(e) = log.write_all(text.as_bytes())
        {
            log::debug!("cannot write to the console log: {e}");
        }
    }

    /// Dumps the guest's memory beside `log` if its kernel panics; QEMU
    /// must have a QMP monitor on [`VmDir::qmp_socket`].
    pub fn dump_on_panic(&mut self, log: &LogPath) {
        self.dump_beside = Some(log.clone());
    }

    /// The socket of QEMU's QMP monitor, when a dump is wanted.
    pub fn qmp_socket(&self) -> PathBuf {
        self.dir.path().join("qmp.sock")
    }

    /// The socket of the interactive shell's console.
    pub fn shell_socket(&self) -> PathBuf {
        self.dir.path().join("shell.sock")
    }

    pub fn paths(&self) -> VmPaths {
        VmPaths::in_dir(self.dir.path())
    }
}

/// A running QEMU. Dropping it kills QEMU and deletes its files.
pub struct Vm {
    child: Child,
    started: Instant,
    console: Console,
    channels: Option<Channels>,
    stderr_log: PathBuf,
    exit: Option<ExitStatus>,
    /// Where a crash dump goes, if one is wanted, and where it went.
    dump_beside: Option<LogPath>,
    vmcore: Option<PathBuf>,
    /// Extra directories removed with the VM (the init inside a rootfs).
    _extra_dirs: Vec<TempDir>,
    // Declared last so it is removed after QEMU is gone.
    _dir: VmDir,
}

/// The error for a guest kernel panic, with what the panic says about a
/// missing kernel option when it is the usual one.
fn panic_message(lines: &str) -> String {
    // vmtest's init exits (so the kernel panics) when the guest lacks
    // something it needs, saying what first.
    if let Some(fatal) = lines.lines().find_map(|l| l.split_once("vmtest init: fatal: ")) {
        return format!("the guest's init stopped: {}\n{}", fatal.1.trim(), indent(lines));
    }
    let mut message = format!("the guest kernel panicked:\n{}", indent(lines));
    if lines.contains("Unable to mount root fs") {
        message.push_str(
            "\nthe kernel could not mount vmtest's root: over 9p it needs CONFIG_VIRTIO_PCI, \
             CONFIG_NET_9P, CONFIG_NET_9P_VIRTIO and CONFIG_9P_FS, built in or as modules vmtest can \
             find (tests/assets/minimal.config lists all it needs); over virtiofs (vm.share) \
             CONFIG_FUSE_FS and CONFIG_VIRTIO_FS built in (vm.share = \"9p\" keeps the root on 9p)",
        );
    }
    message
}

impl Vm {
    /// Starts `qemu args...` wired to the sockets of `dir` (and the shell's,
    /// if `shell`), and waits until QEMU has connected to all of them.
    pub fn start(qemu: &Path, args: &[String], mut dir: VmDir, extra_dirs: Vec<TempDir>, shell: bool) -> Result<Vm> {
        let paths = dir.paths();
        let shell_listener = match shell {
            true => Some(UnixListener::bind(dir.shell_socket()).context("listening on the shell's socket")?),
            false => None,
        };
        let listeners = [
            &paths.agent_socket,
            &paths.stdin_socket,
            &paths.stdout_socket,
            &paths.stderr_socket,
        ]
        .map(|p| UnixListener::bind(p).with_context(|| format!("listening on {}", p.display())));
        let [agent, stdin, stdout, stderr] = listeners;
        let (agent, stdin, stdout, stderr) = (agent?, stdin?, stdout?, stderr?);
        let console_out = paths.console_pipe.with_extension("out");
        // Non-blocking: there is no writer until QEMU opens the FIFO.
        let console_pipe = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&console_out)
            .with_context(|| format!("opening {}", console_out.display()))?;
        crate::vm::console::prepare_pipe(&console_pipe).context("setting up the console's pipe")?;
        let stderr_log = dir.path().join("qemu.stderr");
        let stderr_file = fs::File::create(&stderr_log).context("creating QEMU's stderr log")?;
        log::debug!("spawning {} {}", qemu.display(), shell_words(args));
        let mut command = Command::new(qemu);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr_file);
        die_with_parent(&mut command);
        let started = Instant::now();
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", qemu.display()))?;
        let mut vm = Vm {
            child,
            started,
            console: Console::new(dir.console_log.take()),
            channels: None,
            stderr_log,
            exit: None,
            dump_beside: dir.dump_beside.take(),
            vmcore: None,
            _extra_dirs: extra_dirs,
            _dir: dir,
        };
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        vm.console.attach(console_pipe);
        let shell = match &shell_listener {
            Some(listener) => Some(vm.accept(listener, deadline)?),
            None => None,
        };
        vm.channels = Some(Channels {
            agent: vm.accept(&agent, deadline)?,
            stdin: vm.accept(&stdin, deadline)?,
            stdout: vm.accept(&stdout, deadline)?,
            stderr: vm.accept(&stderr, deadline)?,
            shell,
        });
        Ok(vm)
    }

    /// When QEMU was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The connected sockets; `None` once taken.
    pub fn take_channels(&mut self) -> Option<Channels> {
        self.channels.take()
    }

    /// Accepts QEMU's connection on `listener`, failing fast if QEMU exits.
    fn accept(&mut self, listener: &UnixListener, deadline: Instant) -> Result<UnixStream> {
        listener.set_nonblocking(true)?;
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false)?;
                    return Ok(stream);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.check_alive()?;
                    if Instant::now() >= deadline {
                        bail!(
                            "QEMU did not connect to its sockets within {}s",
                            CONNECT_TIMEOUT.as_secs()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(e).context("accepting QEMU's connection"),
            }
        }
    }

    /// Fails if QEMU is no longer running (with its exit status, stderr and
    /// the console's last lines) or the guest kernel panicked (with the
    /// panic message; QEMU is stopped if the kernel does not reboot itself).
    pub fn check_alive(&mut self) -> Result<()> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().context("checking on QEMU")?;
        }
        if let Some(status) = self.exit {
            let description = self.describe_exit(status);
            return Err(match status.signal() {
                Some(signal) => anyhow::Error::new(QemuCrashed { signal, description }),
                None => anyhow!("{description}"),
            });
        }
        if let Some(exited) = self._dir.daemons.check() {
            bail!(
                "{exited}, so the guest lost its shared files\nlast lines of the guest console:\n{}",
                self.console_tail()
            );
        }
        if self
            .console
            .panic_seen()
            .is_some_and(|seen| seen.elapsed() >= PANIC_GRACE)
        {
            let dumped = self.dump_beside.take().map(|log| self.dump_memory(&log));
            self.shutdown();
            self.console.finish(CONSOLE_DRAIN);
            let lines = self.console.panic_lines().unwrap_or_default();
            bail!("{}{}", panic_message(&lines), dumped.unwrap_or_default());
        }
        Ok(())
    }

    /// Writes the guest's memory beside `log` (QEMU still runs, the kernel
    /// spins in its panic); returns a line for the error saying why there is
    /// none, if there is none (the verdict names the dump).
    fn dump_memory(&mut self, log: &LogPath) -> String {
        let started = Instant::now();
        let result = log
            .create_beside(crate::vm::dump::FILE_NAME)
            .context("creating the dump file")
            .and_then(|(file, path)| {
                crate::vm::dump::write(&self._dir.qmp_socket(), &file, crate::vm::dump::TIMEOUT)?;
                Ok(path)
            });
        match result {
            Ok(path) => {
                log::debug!("wrote {} in {:?}", path.display(), started.elapsed());
                self.vmcore = Some(path);
                String::new()
            }
            Err(e) => format!("\n  (no memory dump: {e:#})"),
        }
    }

    /// Whether the guest kernel has panicked, for waits elsewhere.
    pub fn panic_watch(&self) -> Box<dyn Fn() -> bool> {
        self.console.panic_watch()
    }

    /// The crash dump this VM wrote, if it wrote one.
    pub fn vmcore(&self) -> Option<PathBuf> {
        self.vmcore.clone()
    }

    /// The kernel splats on the console so far, and how many more were
    /// only counted; once QEMU has exited, all of them.
    pub fn splats(&mut self) -> (Vec<crate::vm::splat::Splat>, usize) {
        if self.exit.is_some() {
            self.console.finish(CONSOLE_DRAIN);
        }
        self.console.splats()
    }

    fn describe_exit(&self, status: ExitStatus) -> String {
        // QEMU is gone: what it last printed is in the pipe.
        self.console.finish(CONSOLE_DRAIN);
        if let Some(lines) = self.console.panic_lines() {
            return panic_message(&lines);
        }
        let stderr = fs::read_to_string(&self.stderr_log).unwrap_or_default();
        let stderr = stderr.trim();
        let mut text = format!("QEMU exited unexpectedly ({status})");
        if !stderr.is_empty() {
            text.push_str(":\n");
            text.push_str(&indent(stderr));
        }
        let console = self.console_tail();
        if !console.is_empty() {
            text.push_str("\nlast lines of the guest console:\n");
            text.push_str(&console);
        }
        text
    }

    /// The last [`CONSOLE_TAIL_LINES`] lines of the guest's serial console,
    /// indented for an error message.
    pub fn console_tail(&self) -> String {
        indent(&self.console.tail(CONSOLE_TAIL_LINES))
    }

    /// Waits up to `limit` for QEMU to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.exit.is_none() && Instant::now() < deadline {
            self.exit = self.child.try_wait().ok().flatten();
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops QEMU (SIGTERM, then SIGKILL after a grace period) and reaps it.
    pub fn shutdown(&mut self) {
        if self.exit.is_some() {
            return;
        }
        if let Ok(Some(status)) = self.child.try_wait() {
            self.exit = Some(status);
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: the pid is our unreaped child, so it cannot have been reused.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + TERM_GRACE;
        let mut pause = Duration::from_millis(1);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some(status);
                return;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
        log::warn!("QEMU ignored SIGTERM for {}s; killing it", TERM_GRACE.as_secs());
        let _ = self.child.kill();
        self.exit = self.child.wait().ok();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Makes the child started by `command` die (SIGKILL) when vmtest does,
/// however vmtest ends.
pub fn die_with_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
}

/// The argv as a shell would need it, for debug logs.
fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if a.chars().all(|c| c.is_ascii_alphanumeric() || "-_=,./:".contains(c)) {
                a.clone()
            } else {
                crate::quote::shell_quote(a)
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
