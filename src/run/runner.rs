//! Runs targets, one at a time or several at once (`-j`), and returns
//! their results as data.
//!
//! Each target goes through named phases: check its inputs and resolve QEMU
//! and the accelerator, prepare its launch (`launch::Launch`), boot (until the guest agent
//! answers), set up, start the command, pump its output until the end
//! markers, and finish (exit status, shutdown). Everything that goes wrong
//! becomes that target's [`Outcome`]; the next target still runs. Progress
//! goes out as [`Event`]s to a sink; this module prints nothing itself.

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::config::Target;
use crate::interrupt;
use crate::launch;
use crate::launch::warm::{self, Warm};
use crate::ports::agent::{Agent, ExitStatus, WaitError};
use crate::ports::relay::{self, RelayEvent, Stream};
use crate::ports::{shell, stdin};
use crate::run::capture::Captured;
use crate::run::events::{Event, EventSink, Phase, TargetEvent};
use crate::run::outcome::{Outcome, Phases, TargetResult};
use crate::run::splats;
use crate::vm::qemu::Accel;
use crate::vm::splat::Splat;
use crate::vm::{QemuCrashed, Vm, kvm};

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

/// Runs the targets, up to `jobs` at once, starting them in config order,
/// and returns their results in config order (only those started, if
/// vmtest was interrupted).
pub fn run_all<'t>(targets: &'t [Target], jobs: usize, events: &mut dyn EventSink<'t>) -> Vec<TargetResult> {
    let accels = Accels::default();
    let interactive = targets.iter().any(|t| shell::wants_shell(&t.command));
    let forward_stdin = stdin::should_forward(targets.len(), interactive);
    if let Some(warning) = stdin::unread_warning(targets.len()) {
        events.event(Event::Warning(warning));
    }
    if jobs <= 1 {
        let mut results = Vec::with_capacity(targets.len());
        for (index, target) in targets.iter().enumerate() {
            let run = TargetRun::new(index, target, events, forward_stdin);
            results.push(run.run(&accels));
            if interrupt::received().is_some() {
                break;
            }
        }
        return results;
    }
    run_parallel(targets, jobs, forward_stdin, &accels, events)
}

/// `jobs` worker threads take the next target in config order until none is
/// left (or vmtest is interrupted); their events reach `events` on this
/// thread, which also ticks the live view.
fn run_parallel<'t>(
    targets: &'t [Target],
    jobs: usize,
    forward_stdin: bool,
    accels: &Accels,
    events: &mut dyn EventSink<'t>,
) -> Vec<TargetResult> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<TargetResult>>> = Mutex::new(vec![None; targets.len()]);
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<Event<'t>>();
        for _ in 0..jobs.min(targets.len()) {
            let mut sink = ChannelSink(tx.clone());
            let (next, results) = (&next, &results);
            scope.spawn(move || {
                loop {
                    if interrupt::received().is_some() {
                        return;
                    }
                    let index = next.fetch_add(1, Ordering::SeqCst);
                    let Some(target) = targets.get(index) else { return };
                    let result = TargetRun::new(index, target, &mut sink, forward_stdin).run(accels);
                    results.lock().unwrap_or_else(|e| e.into_inner())[index] = Some(result);
                }
            });
        }
        drop(tx);
        loop {
            match rx.recv_timeout(WAKE_UP) {
                Ok(event) => events.event(event),
                Err(mpsc::RecvTimeoutError::Timeout) => events.event(Event::Tick),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.into_iter().flatten().collect()
}

/// Events of a worker thread, sent to the thread that reports them.
struct ChannelSink<'t>(mpsc::Sender<Event<'t>>);

impl<'t> EventSink<'t> for ChannelSink<'t> {
    fn event(&mut self, event: Event<'t>) {
        // Ticks are the reporting thread's own business.
        if !matches!(event, Event::Tick) {
            let _ = self.0.send(event);
        }
    }
}

/// Accelerator decisions already made in this run: one per QEMU binary,
/// architecture and KVM CPU model, so the KVM self-test runs once and a
/// fallback to TCG is reported once.
#[derive(Default)]
pub struct Accels(Mutex<HashMap<(PathBuf, String, String), Accel>>);

impl Accels {
    /// The accelerator for `target` on `qemu`, and the warning to show if
    /// this is the first time it was decided and KVM was not usable.
    pub fn choose(&self, qemu: &Path, target: &Target) -> (Accel, Option<String>) {
        let key = (qemu.to_path_buf(), target.arch.clone(), target.kvm_cpu_args.clone());
        let mut decided = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(accel) = decided.get(&key) {
            return (*accel, None);
        }
        let choice = kvm::choose(qemu, &target.arch, &target.kvm_cpu_args);
        decided.insert(key, choice.accel);
        (choice.accel, choice.warning)
    }
}

/// One target's run: where its events go and what it has gathered.
struct TargetRun<'t, 'e> {
    index: usize,
    target: &'t Target,
    events: &'e mut dyn EventSink<'t>,
    /// vmtest's stdin goes to the command (see `ports/stdin.rs`).
    forward_stdin: bool,
    phases: Phases,
    stdout: Captured,
    stderr: Captured,
    /// The kernel splats of the run, and how many more were only counted.
    splats: (Vec<Splat>, usize),
    /// The guest ran under TCG (stalls and lockups are then only warnings).
    emulated: bool,
    vmcore: Option<PathBuf>,
}

/// The command, started in the guest.
struct Started {
    pid: i64,
    output: mpsc::Receiver<RelayEvent>,
    relays: [JoinHandle<()>; 2],
    _stdin: Option<JoinHandle<()>>,
    _shell: Option<ShellSession>,
    /// When the command started, and when it must end.
    at: Instant,
    deadline: Option<Instant>,
}

/// How pumping the command's output ended.
enum Pumped {
    /// The output ended; the exit status, if already known.
    Ended(Option<ExitStatus>),
    TimedOut,
}

impl<'t, 'e> TargetRun<'t, 'e> {
    fn new(index: usize, target: &'t Target, events: &'e mut dyn EventSink<'t>, forward_stdin: bool) -> Self {
        TargetRun {
            index,
            target,
            events,
            forward_stdin,
            phases: Phases::default(),
            stdout: Captured::default(),
            stderr: Captured::default(),
            splats: Default::default(),
            emulated: false,
            vmcore: None,
        }
    }

    fn emit(&mut self, event: TargetEvent) {
        let (index, target) = (self.index, self.target);
        self.events.event(Event::Target { index, target, event });
    }

    fn warn(&mut self, message: String) {
        self.events.event(Event::Warning(message));
    }

    /// Waits are woken often to check QEMU and Ctrl-C; a live view redraws.
    fn tick(&mut self) {
        self.events.event(Event::Tick);
    }

    fn output(&mut self, stream: Stream, bytes: Vec<u8>) {
        match stream {
            Stream::Stdout => self.stdout.push(&bytes),
            Stream::Stderr => self.stderr.push(&bytes),
        }
        self.emit(TargetEvent::Output(stream, bytes));
    }

    fn run(mut self, accels: &Accels) -> TargetResult {
        self.emit(TargetEvent::Started);
        let started = Instant::now();
        // A log from an earlier run would mislead if this one never boots.
        let _ = self.target.console_log.remove();
        let outcome = self.run_once_more_after_a_crash(accels);
        let outcome = outcome.unwrap_or_else(|e| match interrupt::received() {
            Some(signal) => Outcome::Interrupted { signal },
            None => Outcome::Error {
                message: format!("{e:#}"),
            },
        });
        let (splats, dropped) = std::mem::take(&mut self.splats);
        let (outcome, warning) = splats::judge(outcome, splats, dropped, self.target, self.emulated);
        if let Some(warning) = warning {
            self.warn(format!("target '{}': {warning}", self.target.name));
        }
        let result = TargetResult {
            name: self.target.name.clone(),
            kind: self.target.kind.label(),
            outcome,
            phases: self.phases,
            total: started.elapsed(),
            console_log: self.target.console_log.kept(),
            stdout: std::mem::take(&mut self.stdout),
            stderr: std::mem::take(&mut self.stderr),
            vmcore: self.vmcore.take(),
        };
        self.emit(TargetEvent::Finished(Box::new(result.clone())));
        result
    }

    /// QEMU crashing before the guest agent ever answered (seen with TCG
    /// under load) says nothing about the target: boot it once more.
    fn run_once_more_after_a_crash(&mut self, accels: &Accels) -> Result<Outcome> {
        let result = self.boot_and_run(accels);
        let crashed = |e: &anyhow::Error| {
            e.chain()
                .find_map(|c| c.downcast_ref::<QemuCrashed>())
                .map(|c| c.signal)
        };
        match result {
            Err(e) if self.phases.boot.is_zero() && interrupt::received().is_none() => match crashed(&e) {
                Some(signal) => {
                    self.warn(format!(
                        "target '{}': QEMU died of signal {signal} while booting; trying once more",
                        self.target.name
                    ));
                    self.boot_and_run(accels)
                }
                None => Err(e),
            },
            other => other,
        }
    }

    /// Boots and runs the target; a saved state (warm start) that does not
    /// come up is deleted and the target boots cold, once, with a warning.
    fn boot_and_run(&mut self, accels: &Accels) -> Result<Outcome> {
        let mut restored = None;
        match (self.boot_once(accels, true, &mut restored), restored) {
            (Err(e), Some(state)) if self.phases.boot.is_zero() && interrupt::received().is_none() => {
                warm::discard(&state);
                let why = format!("{e:#}");
                self.warn(format!(
                    "target '{}': the saved state {} did not restore ({}); deleted it, booting cold",
                    self.target.name,
                    state.display(),
                    why.lines().next().unwrap_or_default()
                ));
                let _ = self.target.console_log.remove();
                self.boot_once(accels, false, &mut None)
            }
            (result, _) => result,
        }
    }

    /// Checks the inputs, resolves QEMU and the accelerator, prepares the
    /// launch (`warm`: allowing a warm start; a state restored is named in
    /// `restored`), starts the VM and runs the command in it.
    fn boot_once(&mut self, accels: &Accels, warm: bool, restored: &mut Option<PathBuf>) -> Result<Outcome> {
        let target = self.target;
        let inputs = launch::check(target)?;
        let qemu = launch::find_qemu(&target.qemu_command, &target.arch)?;
        let (accel, warning) = accels.choose(&qemu, target);
        if let Some(warning) = warning {
            self.warn(warning);
        }
        let launch = launch::prepare(target, inputs, qemu, accel, warm)?;
        if let Some(Warm::Restore(entry)) = &launch.warm {
            *restored = Some(entry.dir().to_path_buf());
        }
        self.emulated = launch.accel == Accel::Tcg;
        if let Some(hint) = &launch.gdb_hint {
            self.events.event(Event::Note(hint.clone()));
        }
        let mut vm = Vm::start(
            &launch.qemu,
            &launch.args,
            launch.dir,
            launch.extra_dirs,
            launch.interactive,
        )?;
        let mut result = self.drive(
            &mut vm,
            &launch.setup,
            &launch.command,
            launch.accel,
            launch.warm,
            launch.plug,
        );
        if result.is_err() && interrupt::received().is_none() {
            // A broken socket usually means QEMU is exiting (a panic, a
            // crash): that is the error worth reporting.
            vm.wait_exit(Duration::from_secs(2));
            if let Err(e) = vm.check_alive() {
                result = Err(e);
            }
        }
        self.splats = vm.splats();
        self.vmcore = vm.vmcore();
        result
    }

    /// The phases inside the VM, in order.
    fn drive(
        &mut self,
        vm: &mut Vm,
        setup: &[launch::SetupStep],
        command: &launch::GuestCommand,
        accel: Accel,
        warm: Option<Warm>,
        plug: Option<launch::Plug>,
    ) -> Result<Outcome> {
        let channels = vm.take_channels().context("the VM's channels are gone")?;
        let restoring = matches!(warm, Some(Warm::Restore(_)));
        let mut agent = self.boot(vm, channels.agent, accel, restoring)?;
        let setup_started = Instant::now();
        self.emit(TargetEvent::Phase(Phase::SettingUp));
        match warm {
            Some(warm) => {
                if let Warm::Save(staging) = warm {
                    self.save(&mut agent, staging);
                }
                let setup = match &plug {
                    Some(plug) => self.plug(plug, setup),
                    None => setup,
                };
                // A restored or paused guest's clock is behind.
                self.set_up(&mut agent, &warm::with_clock(setup, std::time::SystemTime::now()))?;
            }
            None => self.set_up(&mut agent, setup)?,
        }
        let outputs = [channels.stdout, channels.stderr];
        let mut started = self.start(&mut agent, outputs, channels.stdin, channels.shell, command)?;
        self.phases.setup = setup_started.elapsed();
        let exited = match self.pump(vm, &mut agent, &mut started)? {
            Pumped::Ended(exited) => exited,
            Pumped::TimedOut => return Ok(self.timed_out(&started)),
        };
        let status = match exited {
            Some(status) => status,
            None => match wait_status(&mut agent, started.pid, vm, started.deadline, self.request_timeout())? {
                Some(status) => status,
                None => return Ok(self.timed_out(&started)),
            },
        };
        self.phases.command = started.at.elapsed();
        log::debug!("target '{}': phases {:?}", self.target.name, self.phases);
        vm.shutdown();
        // A relay waiting on the bounded queue gives up once nobody reads it.
        drop(started.output);
        for relay in started.relays {
            let _ = relay.join();
        }
        Ok(match status {
            ExitStatus::Code(0) => Outcome::Passed,
            ExitStatus::Code(code) => Outcome::Failed { code },
            ExitStatus::Signal(signal) => Outcome::Signaled { signal },
        })
    }

    fn request_timeout(&self) -> Duration {
        match self.target.gdb {
            Some(_) => UNDER_GDB,
            None => AGENT_REQUEST_TIMEOUT,
        }
    }

    fn timed_out(&mut self, started: &Started) -> Outcome {
        self.phases.command = started.at.elapsed();
        Outcome::TimedOut {
            secs: self.target.timeout.unwrap_or_default(),
        }
    }

    /// Warm start: has the guest load what every run needs, then saves the
    /// VM's state; a save that fails is a warning, the run goes on.
    fn save(&mut self, agent: &mut Agent, staging: warm::Staging) {
        let step = warm::warm_up();
        let deadline = Instant::now() + self.request_timeout();
        if let Err(e) = agent.run(&step.path, step.args, deadline) {
            log::debug!("target '{}': {}: {e:#}", self.target.name, step.what);
        }
        match staging.save() {
            Ok(dir) => log::debug!("target '{}': saved its state in {}", self.target.name, dir.display()),
            Err(e) => self.warn(format!(
                "target '{}': could not save the VM's state for a warm start: {e:#}",
                self.target.name
            )),
        }
    }

    /// Plugs the VM's virtiofs devices in and returns the setup steps that
    /// mount them, or if that fails (one info line says why), the 9p ones.
    fn plug<'a>(&self, plug: &'a launch::Plug, setup: &'a [launch::SetupStep]) -> &'a [launch::SetupStep] {
        match crate::vm::virtiofs::plug(&plug.qmp, &plug.commands) {
            Ok(()) => setup,
            Err(e) => {
                log::info!(
                    "target '{}': sharing directories over 9p: plugging in the virtiofs devices failed: {e:#}",
                    self.target.name
                );
                &plug.fallback
            }
        }
    }

    /// Boot: waits until the guest agent answers (the end of the boot, or of
    /// `restoring` a saved state), the boot timeout passes, QEMU dies or the
    /// console shows a panic.
    fn boot(&mut self, vm: &mut Vm, socket: UnixStream, accel: Accel, restoring: bool) -> Result<Agent> {
        let boot_timeout = match (&self.target.gdb, self.target.boot_timeout, accel) {
            (Some(_), _, _) => UNDER_GDB.as_secs(),
            (None, Some(secs), _) => secs,
            (None, None, Accel::Kvm) => DEFAULT_BOOT_TIMEOUT_KVM,
            (None, None, Accel::Tcg) => DEFAULT_BOOT_TIMEOUT_TCG,
        };
        let boot_timeout = match restoring {
            true => boot_timeout.min(warm::RESTORE_TIMEOUT),
            false => boot_timeout,
        };
        let mut agent = Agent::new(socket);
        agent.give_up_when(vm.panic_watch());
        let deadline = vm.started() + Duration::from_secs(boot_timeout);
        let events = &mut *self.events;
        match agent.sync(deadline, &mut || {
            interrupt::check()?;
            events.event(Event::Tick);
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
        self.phases.boot = vm.started().elapsed();
        log::debug!(
            "target '{}': agent answered after {:?}",
            self.target.name,
            self.phases.boot
        );
        Ok(agent)
    }

    /// Setup: the launch's steps (mounting shares in an image), each of
    /// which must exit 0.
    fn set_up(&mut self, agent: &mut Agent, setup: &[launch::SetupStep]) -> Result<()> {
        let mut fell_back = false;
        for step in setup {
            interrupt::check()?;
            let deadline = Instant::now() + self.request_timeout();
            let (status, stdout, stderr) = agent
                .run(&step.path, step.args.clone(), deadline)
                .with_context(|| step.what.clone())?;
            launch::share::note_setup_output(&self.target.name, &stdout, &mut fell_back);
            if status != ExitStatus::Code(0) {
                let stderr = String::from_utf8_lossy(&stderr);
                bail!("{} failed in the guest ({status:?}): {}", step.what, stderr.trim());
            }
        }
        Ok(())
    }

    /// Start: relays for the output ports, the command through the agent,
    /// then stdin and (for `--shell`) the terminal.
    fn start(
        &mut self,
        agent: &mut Agent,
        [stdout, stderr]: [UnixStream; 2],
        stdin_port: UnixStream,
        shell_console: Option<UnixStream>,
        command: &launch::GuestCommand,
    ) -> Result<Started> {
        let (tx, output) = mpsc::sync_channel(relay::QUEUE);
        let relays = [
            relay::spawn(stdout, Stream::Stdout, command.marker.clone(), tx.clone()),
            relay::spawn(stderr, Stream::Stderr, command.marker.clone(), tx),
        ];
        let deadline = Instant::now() + self.request_timeout();
        let pid = agent
            .spawn(&command.program, command.args.clone(), command.env.clone(), deadline)
            .context("starting the command in the guest")?;
        self.emit(TargetEvent::Phase(Phase::Running));
        let stdin = stdin::feed(stdin_port, self.forward_stdin);
        let at = Instant::now();
        // An interactive shell takes over the terminal until the command ends.
        let shell = match shell_console {
            Some(console) => {
                self.emit(TargetEvent::HandOverTerminal);
                Some(ShellSession::start(console)?)
            }
            None => None,
        };
        Ok(Started {
            pid,
            output,
            relays,
            _stdin: stdin,
            _shell: shell,
            at,
            deadline: self.target.timeout.map(|t| at + Duration::from_secs(t)),
        })
    }

    /// Output: forwards the command's output until both end markers arrive
    /// (or the ports close). The exit status, polled once a second, only
    /// bounds the wait for them.
    fn pump(&mut self, vm: &mut Vm, agent: &mut Agent, started: &mut Started) -> Result<Pumped> {
        let past_deadline = |now: Instant| started.deadline.is_some_and(|d| now >= d);
        let mut open = 2;
        let mut next_poll = Instant::now() + STATUS_POLL;
        let mut exited: Option<(ExitStatus, Instant)> = None;
        let mut last_output = Instant::now();
        while open > 0 {
            interrupt::check()?;
            self.tick();
            let now = Instant::now();
            if past_deadline(now) {
                return Ok(Pumped::TimedOut);
            }
            if let Some((_, at)) = exited
                && (now - last_output.max(at) >= EXIT_QUIET || now - at >= EXIT_DRAIN)
            {
                log::debug!(
                    "target '{}': output still open after the command exited",
                    self.target.name
                );
                break;
            }
            let mut wait = next_poll.saturating_duration_since(now).min(WAKE_UP);
            if let Some(deadline) = started.deadline {
                wait = wait.min(deadline.saturating_duration_since(now));
            }
            match started.output.recv_timeout(wait) {
                Ok(RelayEvent::Data(stream, bytes)) => {
                    last_output = Instant::now();
                    self.output(stream, bytes);
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
                        match ask_status(agent, started.pid, started.deadline, self.request_timeout())? {
                            Asked::Exited(status) => exited = Some((status, Instant::now())),
                            Asked::Running => {}
                            Asked::PastDeadline => return Ok(Pumped::TimedOut),
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        Ok(Pumped::Ended(exited.map(|(status, _)| status)))
    }
}

/// A running interactive shell: stops the relay, then restores the
/// terminal, when dropped.
struct ShellSession {
    relay: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    _raw: shell::RawTerminal,
}

impl ShellSession {
    fn start(console: UnixStream) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let raw = shell::RawTerminal::enter()?;
        Ok(ShellSession {
            relay: Some(shell::relay(console, stop.clone())),
            stop,
            _raw: raw,
        })
    }
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
