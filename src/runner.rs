//! Runs targets, one VM at a time, and returns their results as data.
//!
//! For each target the runner checks the host-side inputs (kernel, rootfs,
//! QEMU binary, mounts), picks the accelerator, starts a [`Vm`], waits for
//! the guest agent, runs the command under the guest wrapper and collects its
//! status. Everything that goes wrong becomes that target's [`Outcome`]; the
//! next target still runs. Progress goes to a [`Reporter`] as events; this
//! module prints nothing itself.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::agent::{Agent, ExitStatus, WaitError};
use crate::capture::Captured;
use crate::config::{Kind, Target};
use crate::gdb;
use crate::guest;
use crate::image;
use crate::interrupt;
use crate::kernel;
use crate::kvm;
use crate::launch::{Helper, Launch, SetupStep};
use crate::qemu::{self, Accel};
use crate::relay::{self, RelayEvent, Stream};
use crate::report::{Phase, Reporter};
use crate::shell;
use crate::splat::{self, Splat};
use crate::stdin;
use crate::vm::{QemuCrashed, Vm};
use crate::warm::{self, Warm};

/// Seconds to wait for the guest agent under KVM when `boot_timeout` is unset.
pub const DEFAULT_BOOT_TIMEOUT_KVM: u64 = 60;
/// Seconds to wait for the guest agent under TCG when `boot_timeout` is unset.
pub const DEFAULT_BOOT_TIMEOUT_TCG: u64 = 180;
/// Deadline for a single agent request once the guest is up.
const AGENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the command's status is checked when its output has not ended.
const STATUS_POLL: Duration = Duration::from_secs(1);
/// Longest a wait goes without checking QEMU and Ctrl-C.
const WAKE_UP: Duration = Duration::from_millis(100);
/// After the command has exited, how long its output may stay quiet before
/// vmtest stops waiting for the end markers: a background process the
/// command left running can hold the output open (it is stopped with the VM).
const EXIT_QUIET: Duration = Duration::from_secs(2);
/// And how long such output is read at most after the exit.
const EXIT_DRAIN: Duration = Duration::from_secs(10);
/// The boot timeout, and an agent request's, while a debugger may hold the
/// VM (`--gdb`): in effect none.
const UNDER_GDB: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// How a target ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// The command exited with a non-zero code.
    Failed {
        code: i64,
    },
    /// The command was killed by a signal.
    Signaled {
        signal: i64,
    },
    /// The command ran past its timeout.
    TimedOut {
        secs: u64,
    },
    /// vmtest could not boot the target or run the command.
    Error {
        message: String,
    },
    /// vmtest was interrupted (SIGINT, SIGTERM) while the target ran.
    Interrupted {
        signal: i32,
    },
    /// The command passed, but the guest kernel reported a splat (a
    /// warning, a bug, a lockup: `splat.rs`) and `kernel_splats` is `fail`.
    KernelSplat {
        /// How many, and the first one's first lines.
        description: String,
    },
}

impl Outcome {
    pub fn passed(&self) -> bool {
        *self == Outcome::Passed
    }
}

/// Time spent in each phase of a target.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Phases {
    /// From starting QEMU until the guest agent answered.
    pub boot: Duration,
    /// From the agent's answer until the command started.
    pub setup: Duration,
    /// The command itself.
    pub command: Duration,
}

/// The result of one target.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetResult {
    pub name: String,
    pub kind: &'static str,
    pub outcome: Outcome,
    pub phases: Phases,
    pub total: Duration,
    /// The guest's console log, if this run wrote one that is kept.
    pub console_log: Option<PathBuf>,
    /// The command's output, bounded.
    pub stdout: Captured,
    pub stderr: Captured,
    /// The guest's memory, dumped when its kernel panicked (`dump_on_panic`).
    pub vmcore: Option<PathBuf>,
}

/// Where the command's output goes: live to the reporter, and a bounded
/// copy into the result.
struct Sink<'a> {
    reporter: &'a mut Reporter,
    stdout: Captured,
    stderr: Captured,
    /// vmtest's stdin goes to the command (see `stdin.rs`).
    forward_stdin: bool,
    /// The kernel splats of the run, and how many more were only counted.
    splats: (Vec<Splat>, usize),
    /// The guest ran under TCG (stalls and lockups are then only warnings).
    emulated: bool,
    vmcore: Option<PathBuf>,
}

impl Sink<'_> {
    fn output(&mut self, stream: Stream, bytes: &[u8]) {
        match stream {
            Stream::Stdout => self.stdout.push(bytes),
            Stream::Stderr => self.stderr.push(bytes),
        }
        self.reporter.output(stream, bytes);
    }
}

/// Runs every target in order and returns their results.
pub fn run_all(targets: &[Target], reporter: &mut Reporter) -> Vec<TargetResult> {
    let mut accels = AccelCache::new();
    let mut results = Vec::with_capacity(targets.len());
    let interactive = targets.iter().any(|t| shell::wants_shell(&t.command));
    let forward_stdin = stdin::should_forward(targets.len(), interactive);
    if let Some(warning) = stdin::unread_warning(targets.len()) {
        reporter.warning(&warning);
    }
    for target in targets {
        reporter.target_started(target);
        let started = Instant::now();
        let mut phases = Phases::default();
        // A log from an earlier run would mislead if this one never boots.
        let _ = target.console_log.remove();
        let mut sink = Sink {
            reporter,
            stdout: Captured::default(),
            stderr: Captured::default(),
            forward_stdin,
            splats: Default::default(),
            vmcore: None,
            emulated: false,
        };
        let outcome = run_target(target, &mut sink, &mut accels, &mut phases);
        let outcome = outcome.unwrap_or_else(|e| match interrupt::received() {
            Some(signal) => Outcome::Interrupted { signal },
            None => Outcome::Error {
                message: format!("{e:#}"),
            },
        });
        let (splats, dropped) = std::mem::take(&mut sink.splats);
        let (outcome, warning) = splat::judge(outcome, splats, dropped, target, sink.emulated);
        if let Some(warning) = warning {
            sink.reporter.warning(&format!("target '{}': {warning}", target.name));
        }
        let result = TargetResult {
            name: target.name.clone(),
            kind: target.kind.label(),
            outcome,
            phases,
            total: started.elapsed(),
            console_log: target.console_log.kept(),
            stdout: sink.stdout,
            stderr: sink.stderr,
            vmcore: sink.vmcore,
        };
        reporter.target_finished(&result);
        results.push(result);
        if interrupt::received().is_some() {
            break;
        }
    }
    results
}

fn run_target(target: &Target, sink: &mut Sink, accels: &mut AccelCache, phases: &mut Phases) -> Result<Outcome> {
    let result = boot_and_run(target, sink, accels, phases);
    // QEMU crashing before the guest agent ever answered (seen with TCG
    // under load) says nothing about the target: boot it once more.
    let crashed = |e: &anyhow::Error| e.chain().any(|c| c.downcast_ref::<QemuCrashed>().is_some());
    match result {
        Err(e) if crashed(&e) && phases.boot.is_zero() && interrupt::received().is_none() => {
            let signal = e
                .chain()
                .find_map(|c| c.downcast_ref::<QemuCrashed>())
                .map_or(0, |c| c.signal);
            sink.reporter.warning(&format!(
                "target '{}': QEMU died of signal {signal} while booting; trying once more",
                target.name
            ));
            boot_and_run(target, sink, accels, phases)
        }
        other => other,
    }
}

fn boot_and_run(target: &Target, sink: &mut Sink, accels: &mut AccelCache, phases: &mut Phases) -> Result<Outcome> {
    let launch = prepare(target, sink, accels, true)?;
    let restored = match &launch.warm {
        Some(Warm::Restore(entry)) => Some(entry.dir().to_path_buf()),
        _ => None,
    };
    match (launch_target(launch, target, sink, phases), restored) {
        // A saved state that does not come up is deleted and the target
        // boots cold, once.
        (Err(e), Some(state)) if phases.boot.is_zero() && interrupt::received().is_none() => {
            warm::discard(&state);
            let why = format!("{e:#}");
            sink.reporter.warning(&format!(
                "target '{}': the saved state {} did not restore ({}); deleted it, booting cold",
                target.name,
                state.display(),
                why.lines().next().unwrap_or_default()
            ));
            let _ = target.console_log.remove();
            let launch = prepare(target, sink, accels, false)?;
            launch_target(launch, target, sink, phases)
        }
        (result, _) => result,
    }
}

/// Checks the target's inputs and prepares its launch; `warm` allows an
/// image target's warm start (`warm.rs`) where the target and the run allow
/// it (not with a shell, a debugger or a memory dump, whose QEMU differs).
fn prepare(target: &Target, sink: &mut Sink, accels: &mut AccelCache, warm: bool) -> Result<Launch> {
    let accel = |qemu: &Path| choose_accel(accels, qemu, target, sink.reporter);
    match &target.kind {
        Kind::Kernel {
            kernel,
            kernel_args,
            rootfs,
        } => kernel::prepare(target, kernel, kernel_args.as_deref(), rootfs, accel),
        Kind::Image {
            image: path,
            uefi,
            warm_start,
        } => {
            let warm = warm
                && *warm_start
                && !target.dump_on_panic
                && target.gdb.is_none()
                && !shell::wants_shell(&target.command);
            image::prepare(target, path, *uefi, warm, accel)
        }
    }
}

/// The accelerator for `target`, decided once per QEMU binary, architecture
/// and KVM CPU model; a fallback to TCG is reported once.
fn choose_accel(accels: &mut AccelCache, qemu: &Path, target: &Target, reporter: &mut Reporter) -> Accel {
    let key = (qemu.to_path_buf(), target.arch.clone(), target.kvm_cpu_args.clone());
    let choice = accels.entry(key).or_insert_with(|| {
        let choice = kvm::choose(qemu, &target.arch, &target.kvm_cpu_args);
        if let Some(warning) = &choice.warning {
            reporter.warning(warning);
        }
        choice
    });
    choice.accel
}

/// Accelerator decisions already made in this run.
type AccelCache = HashMap<(PathBuf, String, String), kvm::Choice>;

/// Starts a prepared target's VM and runs its command.
fn launch_target(launch: Launch, target: &Target, sink: &mut Sink, phases: &mut Phases) -> Result<Outcome> {
    sink.emulated = launch.accel == Accel::Tcg;
    let boot_timeout = target.boot_timeout.unwrap_or(match launch.accel {
        Accel::Kvm => DEFAULT_BOOT_TIMEOUT_KVM,
        Accel::Tcg => DEFAULT_BOOT_TIMEOUT_TCG,
    });
    let boot_timeout = match launch.warm {
        Some(Warm::Restore(_)) => boot_timeout.min(warm::RESTORE_TIMEOUT),
        _ => boot_timeout,
    };
    let interactive = shell::wants_shell(&target.command);
    let mut args = launch.args;
    let mut dir = launch.dir;
    if interactive {
        shell::check_terminal()?;
        args.extend(shell::console_args(&dir.shell_socket()));
    }
    if target.dump_on_panic {
        dir.dump_on_panic(&target.console_log);
        args.extend(qemu::dump_args(&target.arch, &dir.qmp_socket()));
    }
    let boot_timeout = match &target.gdb {
        Some(stub) => {
            args.extend(stub.qemu_args());
            let vmlinux = match &target.kind {
                Kind::Kernel { kernel, .. } => gdb::find_vmlinux(kernel),
                Kind::Image { .. } => None,
            };
            sink.reporter.note(&stub.attach_hint(vmlinux.as_deref()));
            UNDER_GDB.as_secs()
        }
        None => boot_timeout,
    };
    let vm = Vm::start(&launch.qemu, &args, dir, launch.extra_dirs, interactive)?;
    let mut command = GuestCommand {
        text: match interactive {
            true => shell::guest_command(shell::terminal_size()),
            false => target.command.clone(),
        },
        helper: launch.helper,
        setup: launch.setup,
        workdir: launch.workdir,
        env: launch.env,
        marker: launch.marker,
        warm: launch.warm,
    };
    run_in_vm(vm, &mut command, target, boot_timeout, sink, phases)
}

/// How to start the command once the guest is up.
struct GuestCommand {
    /// What `bash -c` runs: the target's command, or the shell's.
    text: String,
    helper: Helper,
    setup: Vec<SetupStep>,
    workdir: String,
    env: Vec<String>,
    marker: String,
    /// A warm start: the state to save once the agent answers, or the one
    /// QEMU restored.
    warm: Option<Warm>,
}

impl GuestCommand {
    /// The program and arguments the guest agent starts.
    fn argv(&self) -> (&'static str, Vec<String>) {
        let command = self.text.as_str();
        match self.helper {
            Helper::InitRelay => (
                "bash",
                vec!["-c".into(), guest::relayed_command(&self.workdir, command)],
            ),
            Helper::Shell => (
                "bash",
                vec![
                    "-c".into(),
                    guest::wrapper_script(),
                    "vmtest".into(),
                    self.workdir.clone(),
                    self.marker.clone(),
                    command.into(),
                ],
            ),
        }
    }
}

fn run_in_vm(
    mut vm: Vm,
    command: &mut GuestCommand,
    target: &Target,
    boot_timeout: u64,
    sink: &mut Sink,
    phases: &mut Phases,
) -> Result<Outcome> {
    let mut result = drive_vm(&mut vm, command, target, boot_timeout, sink, phases);
    if result.is_err() && interrupt::received().is_none() {
        // A broken socket usually means QEMU is exiting (a panic, a crash):
        // that is the error worth reporting.
        vm.wait_exit(Duration::from_secs(2));
        if let Err(e) = vm.check_alive() {
            result = Err(e);
        }
    }
    sink.splats = vm.splats();
    sink.vmcore = vm.vmcore();
    result
}

fn drive_vm(
    vm: &mut Vm,
    command: &mut GuestCommand,
    target: &Target,
    boot_timeout: u64,
    sink: &mut Sink,
    phases: &mut Phases,
) -> Result<Outcome> {
    let boot_started = vm.started();
    let request_timeout = match target.gdb {
        Some(_) => UNDER_GDB,
        None => AGENT_REQUEST_TIMEOUT,
    };
    let channels = vm.take_channels().context("the VM's channels are gone")?;
    let mut agent = Agent::new(channels.agent);
    agent.give_up_when(vm.panic_watch());
    let boot_deadline = boot_started + Duration::from_secs(boot_timeout);
    match agent.sync(boot_deadline, &mut || {
        interrupt::check()?;
        sink.reporter.tick();
        vm.check_alive()
    }) {
        Ok(()) => {}
        Err(WaitError::TimedOut) => bail!(
            "the guest agent never answered within the boot timeout ({boot_timeout}s)\n\
             last lines of the guest console:\n{}",
            vm.console_tail()
        ),
        Err(e) => return Err(anyhow!("{e}")).context("waiting for the guest to boot"),
    }
    phases.boot = boot_started.elapsed();
    log::debug!("target '{}': agent answered after {:?}", target.name, phases.boot);

    let setup_started = Instant::now();
    sink.reporter.phase(Phase::SettingUp);
    let setup = match command.warm.take() {
        Some(warm) => {
            if let Warm::Save(staging) = warm {
                let step = warm::warm_up();
                let deadline = Instant::now() + request_timeout;
                if let Err(e) = agent.run(&step.path, step.args, deadline) {
                    log::debug!("target '{}': {}: {e:#}", target.name, step.what);
                }
                match staging.save() {
                    Ok(dir) => log::debug!("target '{}': saved its state in {}", target.name, dir.display()),
                    Err(e) => sink.reporter.warning(&format!(
                        "target '{}': could not save the VM's state for a warm start: {e:#}",
                        target.name
                    )),
                }
            }
            // A restored or paused guest's clock is behind.
            warm::with_clock(&command.setup, std::time::SystemTime::now())
        }
        None => command.setup.clone(),
    };
    for step in &setup {
        interrupt::check()?;
        let deadline = Instant::now() + request_timeout;
        let (status, _, stderr) = agent
            .run(&step.path, step.args.clone(), deadline)
            .with_context(|| step.what.clone())?;
        if status != ExitStatus::Code(0) {
            let stderr = String::from_utf8_lossy(&stderr);
            bail!("{} failed in the guest ({status:?}): {}", step.what, stderr.trim());
        }
    }
    let (tx, rx) = mpsc::sync_channel(relay::QUEUE);
    let relays = [
        relay::spawn(channels.stdout, Stream::Stdout, command.marker.clone(), tx.clone()),
        relay::spawn(channels.stderr, Stream::Stderr, command.marker.clone(), tx),
    ];
    let (program, args) = command.argv();
    let request_deadline = Instant::now() + request_timeout;
    let pid = agent
        .spawn(program, args, command.env.clone(), request_deadline)
        .context("starting the command in the guest")?;
    phases.setup = setup_started.elapsed();
    sink.reporter.phase(Phase::Running);
    let _stdin = stdin::feed(channels.stdin, sink.forward_stdin);

    let command_started = Instant::now();
    // An interactive shell takes over the terminal until the command ends.
    let _shell = match channels.shell {
        Some(console) => {
            sink.reporter.hand_over_terminal();
            let stop = Arc::new(AtomicBool::new(false));
            let raw = shell::RawTerminal::enter()?;
            Some(ShellSession {
                relay: Some(shell::relay(console, stop.clone())),
                stop,
                _raw: raw,
            })
        }
        None => None,
    };
    let command_deadline = target.timeout.map(|t| command_started + Duration::from_secs(t));
    let timed_out = |phases: &mut Phases| {
        phases.command = command_started.elapsed();
        Ok(Outcome::TimedOut {
            secs: target.timeout.unwrap_or_default(),
        })
    };
    let past_deadline = || command_deadline.is_some_and(|d| Instant::now() >= d);
    // Output ends at both end markers (or when the ports close). The exit
    // status, polled once a second, only bounds the wait for them.
    let mut open = 2;
    let mut next_poll = Instant::now() + STATUS_POLL;
    let mut exited: Option<(ExitStatus, Instant)> = None;
    let mut last_output = Instant::now();
    while open > 0 {
        interrupt::check()?;
        sink.reporter.tick();
        let now = Instant::now();
        if past_deadline() {
            return timed_out(phases);
        }
        if let Some((_, at)) = exited
            && (now - last_output.max(at) >= EXIT_QUIET || now - at >= EXIT_DRAIN)
        {
            log::debug!("target '{}': output still open after the command exited", target.name);
            break;
        }
        let mut wait = next_poll.saturating_duration_since(now).min(WAKE_UP);
        if let Some(deadline) = command_deadline {
            wait = wait.min(deadline.saturating_duration_since(now));
        }
        match rx.recv_timeout(wait) {
            Ok(RelayEvent::Data(stream, bytes)) => {
                last_output = Instant::now();
                sink.output(stream, &bytes);
            }
            Ok(RelayEvent::End(_)) => open -= 1,
            Ok(RelayEvent::Broken(_)) => {
                vm.check_alive()?;
                open -= 1;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                vm.check_alive()?;
                if exited.is_none() && Instant::now() >= next_poll {
                    next_poll = Instant::now() + STATUS_POLL;
                    match ask_status(&mut agent, pid, command_deadline, request_timeout)? {
                        Asked::Exited(status) => exited = Some((status, Instant::now())),
                        Asked::Running => {}
                        Asked::PastDeadline => return timed_out(phases),
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = match exited {
        Some((status, _)) => status,
        None => match wait_status(&mut agent, pid, vm, command_deadline, request_timeout)? {
            Some(status) => status,
            None => return timed_out(phases),
        },
    };
    phases.command = command_started.elapsed();
    log::debug!("target '{}': phases {phases:?}", target.name);
    vm.shutdown();
    // A relay waiting on the bounded queue gives up once nobody reads it.
    drop(rx);
    for relay in relays {
        let _ = relay.join();
    }
    Ok(match status {
        ExitStatus::Code(0) => Outcome::Passed,
        ExitStatus::Code(code) => Outcome::Failed { code },
        ExitStatus::Signal(signal) => Outcome::Signaled { signal },
    })
}

/// A running interactive shell: stops the relay, then restores the
/// terminal, when dropped.
struct ShellSession {
    relay: Option<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    _raw: shell::RawTerminal,
}

impl Drop for ShellSession {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(relay) = self.relay.take() {
            let _ = relay.join();
        }
    }
}

/// What one status request learnt.
enum Asked {
    Running,
    Exited(ExitStatus),
    /// The command's deadline passed while the agent did not answer.
    PastDeadline,
}

/// One `guest-exec-status` request, which never outlasts the command's
/// `deadline`: a guest that wedges during it times out as the command does.
fn ask_status(agent: &mut Agent, pid: i64, deadline: Option<Instant>, request_timeout: Duration) -> Result<Asked> {
    let limit = Instant::now() + request_timeout;
    match agent.status(pid, deadline.map_or(limit, |d| d.min(limit))) {
        Ok(Some(status)) => Ok(Asked::Exited(status)),
        Ok(None) => Ok(Asked::Running),
        Err(_) if deadline.is_some_and(|d| Instant::now() >= d) => Ok(Asked::PastDeadline),
        Err(e) => Err(e),
    }
}

/// The command's status, asked for once its output ended: normally the
/// command exits moments later, but it may have closed its output early and
/// run on. `None` if the command deadline passes first.
fn wait_status(
    agent: &mut Agent,
    pid: i64,
    vm: &mut Vm,
    deadline: Option<Instant>,
    request_timeout: Duration,
) -> Result<Option<ExitStatus>> {
    let mut pause = Duration::from_millis(1);
    loop {
        match ask_status(agent, pid, deadline, request_timeout)? {
            Asked::Exited(status) => return Ok(Some(status)),
            Asked::Running => {}
            Asked::PastDeadline => return Ok(None),
        }
        vm.check_alive()?;
        interrupt::check()?;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}
