//! Turning a target into a [`Launch`]: everything before QEMU starts.
//!
//! The flow is the same for every kind of target: [`check`] the host-side
//! inputs (a missing kernel or image fails here, before anything is
//! probed); the runner then resolves the QEMU binary ([`find_qemu`]) and the
//! accelerator; [`prepare`] makes the VM's private directory and returns a
//! finished launch: QEMU's argv, the setup the guest needs once its agent
//! answers, and the [`GuestCommand`] the agent will start, built here and
//! nowhere else. The runner only executes a `Launch`.
//!
//! Kernel targets (`kernel`) write an init and, for modular kernels, read
//! the release (`kernel_release`), the modules to load (`modules`) and build
//! a cached initramfs (`initramfs`); image targets (`image`) find their
//! format and firmware, and restore a saved state instead of booting or save
//! one once booted (`warm`).

pub mod image;
pub mod initramfs;
pub mod kernel;
pub mod kernel_release;
pub mod modules;
pub mod share;
pub mod warm;

use std::path::PathBuf;

use anyhow::{Result, anyhow, bail};

use crate::config::{Kind, Target};
use crate::guest;
use crate::ports::shell;
use crate::vm::VmDir;
use crate::vm::qemu::{self, Accel};

/// A target's inputs, checked on the host.
pub enum Inputs {
    Kernel(kernel::Inputs),
    Image(image::Inputs),
}

/// How the guest agent starts the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Helper {
    /// `bash -c` with its output redirected to the FIFOs that vmtest's own
    /// init relays to the output ports.
    InitRelay,
    /// `bash -c` with the shell wrapper, which relays the output itself.
    Shell,
}

/// A program the guest agent runs before the command; it must exit 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupStep {
    /// What the step does, for error messages ("mounting /mnt/vmtest").
    pub what: String,
    pub path: String,
    pub args: Vec<String>,
}

/// What the guest agent starts: the program, its arguments and environment,
/// and the marker that ends each output stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestCommand {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub marker: String,
}

/// What a kind of target contributes to its launch.
pub struct Boot {
    pub args: Vec<String>,
    /// Directories removed with the VM (an init inside a foreign rootfs).
    pub extra_dirs: Vec<tempfile::TempDir>,
    pub helper: Helper,
    /// Run in order once the agent answers, before the command.
    pub setup: Vec<SetupStep>,
    /// The command's working directory in the guest.
    pub workdir: String,
    pub env: Vec<String>,
    /// An image target's warm start (`warm`).
    pub warm: Option<warm::Warm>,
    /// With virtiofs devices plugged in once the VM runs: the 9p mounts to
    /// run instead of `setup` if plugging them in fails.
    pub ninep_fallback: Option<Vec<SetupStep>>,
}

/// Everything needed to start a target's VM and run its command.
pub struct Launch {
    pub qemu: PathBuf,
    pub args: Vec<String>,
    pub dir: VmDir,
    pub extra_dirs: Vec<tempfile::TempDir>,
    /// The accelerator QEMU was told to use.
    pub accel: Accel,
    /// Run in order once the agent answers, before the command.
    pub setup: Vec<SetupStep>,
    pub command: GuestCommand,
    /// The command is an interactive shell on its own console.
    pub interactive: bool,
    /// How to attach a debugger, under `--gdb`.
    pub gdb_hint: Option<String>,
    /// An image target's warm start: save the state once the agent
    /// answers, or the state QEMU restores (`warm`).
    pub warm: Option<warm::Warm>,
    /// virtiofs devices to plug in before `setup` (a warm start's image,
    /// whose saved state cannot hold them).
    pub plug: Option<Plug>,
}

/// virtiofs devices plugged into a running VM through QMP.
pub struct Plug {
    /// QEMU's QMP socket.
    pub qmp: PathBuf,
    /// `chardev-add` and `device_add` of each device.
    pub commands: Vec<serde_json::Value>,
    /// The setup steps to run instead if they cannot be plugged in: the
    /// same mounts over 9p.
    pub fallback: Vec<SetupStep>,
}

/// Checks what a target needs on the host: its kernel or image, rootfs,
/// mounts, firmware.
pub fn check(target: &Target) -> Result<Inputs> {
    check_mounts(target)?;
    Ok(match &target.kind {
        Kind::Kernel { kernel, rootfs, .. } => Inputs::Kernel(kernel::check(target, kernel, rootfs)?),
        Kind::Image { image, uefi, .. } => Inputs::Image(image::check(target, image, *uefi)?),
    })
}

/// Each `vm.mounts` host path must be a directory; a kernel target's guest
/// path must also exist in its rootfs (`kernel::check`).
fn check_mounts(target: &Target) -> Result<()> {
    for mount in &target.vm.mounts {
        if !mount.host_path.is_dir() {
            bail!(
                "vm.mounts '{}': host_path {} is not a directory",
                mount.guest_path,
                mount.host_path.display()
            );
        }
    }
    Ok(())
}

/// Resolves the QEMU binary: a path as given, or a name on PATH.
pub fn find_qemu(command: &str, arch: &str) -> Result<PathBuf> {
    let package = match arch {
        "aarch64" => "qemu-system-arm",
        "riscv64" => "qemu-system-misc",
        "s390x" => "qemu-system-s390x",
        _ => "qemu-system-x86",
    };
    if command.contains('/') {
        let path = PathBuf::from(command);
        if path.is_file() {
            return Ok(path);
        }
        bail!("qemu_command {command} not found");
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(command))
            .find(|candidate| candidate.is_file())
    });
    found.ok_or_else(|| {
        anyhow!("{command} not found on PATH: it runs {arch} guests; install it (Debian/Ubuntu: apt install {package})")
    })
}

/// Prepares a checked target to run on `qemu` with `accel`. `warm` allows
/// an image target's warm start where the target allows it (not with a
/// shell, a debugger or a memory dump, whose QEMU differs).
pub fn prepare(target: &Target, inputs: Inputs, qemu: PathBuf, accel: Accel, warm: bool) -> Result<Launch> {
    let interactive = shell::wants_shell(&target.command);
    let warm = warm
        && matches!(target.kind, Kind::Image { warm_start: true, .. })
        && !interactive
        && !target.dump_on_panic
        && target.gdb.is_none();
    if interactive {
        shell::check_terminal()?;
    }
    let mut dir = VmDir::new()?;
    dir.keep_console_log(&target.console_log);
    let marker = crate::ports::relay::new_marker();
    let support = match &inputs {
        Inputs::Kernel(inputs) => Some(inputs.virtiofs_support()),
        Inputs::Image(_) => None,
    };
    let transport = share::choose(target, crate::vm::virtiofs::find_daemon(), support.as_ref())?;
    let boot = match inputs {
        Inputs::Kernel(inputs) => kernel::prepare(target, inputs, &dir, &marker, accel, &transport)?,
        Inputs::Image(inputs) => image::prepare(target, inputs, &mut dir, accel, &qemu, warm, &transport)?,
    };
    let mut args = boot.args;
    let mut plug = None;
    if let share::Transport::Virtiofs(daemon) = &transport {
        let root = match &target.kind {
            Kind::Kernel { rootfs, .. } => Some((rootfs.as_path(), !qemu::root_read_only(target))),
            Kind::Image { .. } => None,
        };
        let exports = share::exports(target, root);
        let daemons = share::start(daemon, &exports, dir.path())?;
        match boot.ninep_fallback {
            // Plugged in once the VM runs (a warm start's image).
            Some(fallback) => {
                plug = Some(Plug {
                    qmp: dir.qmp_socket(),
                    commands: daemons.hotplug(),
                    fallback,
                })
            }
            None => {
                args.extend(crate::vm::virtiofs::memory_args(&target.vm.memory));
                args.extend(daemons.device_args());
            }
        }
        dir.adopt(daemons);
    }
    if interactive {
        args.extend(qemu::shell_console_args(&dir.shell_socket()));
    }
    if target.dump_on_panic {
        dir.dump_on_panic(&target.console_log);
        args.extend(qemu::dump_args(&target.arch, &dir.qmp_socket()));
    }
    let gdb_hint = target.gdb.as_ref().map(|stub| {
        args.extend(stub.qemu_args());
        let vmlinux = match &target.kind {
            Kind::Kernel { kernel, .. } => crate::vm::gdb::find_vmlinux(kernel),
            Kind::Image { .. } => None,
        };
        stub.attach_hint(vmlinux.as_deref())
    });
    let text = match interactive {
        true => shell::guest_command(shell::terminal_size()),
        false => target.command.clone(),
    };
    let command = guest_command(&boot.helper, &boot.workdir, &text, boot.env, marker);
    Ok(Launch {
        qemu,
        args,
        dir,
        extra_dirs: boot.extra_dirs,
        accel,
        setup: boot.setup,
        command,
        interactive,
        gdb_hint,
        warm: boot.warm,
        plug,
    })
}

/// The program and arguments the guest agent starts for `text`.
fn guest_command(helper: &Helper, workdir: &str, text: &str, env: Vec<String>, marker: String) -> GuestCommand {
    let args = match helper {
        Helper::InitRelay => vec!["-c".into(), guest::relayed_command(workdir, text)],
        Helper::Shell => guest::wrapper_args(workdir, &marker, text),
    };
    GuestCommand {
        program: "bash".into(),
        args,
        env,
        marker,
    }
}
