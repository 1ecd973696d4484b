//! The QEMU command line, built by pure functions.
//!
//! Each helper returns the arguments of one device or concern (the machine,
//! a 9p share, a virtio-serial port, the console), and [`kernel_argv`] puts
//! them together for a kernel target. Nothing here spawns or touches the disk:
//! `vm.rs` owns the process, and unit tests assert the argv exactly.

use std::path::{Path, PathBuf};

use crate::config::{Kind, Mount, Target};
use crate::guest::{
    AGENT_PORT, MODULES_TAG, MSIZE, ROOT_TAG, SHARE_TAG, SHELL_PORT, STDERR_PORT, STDIN_PORT, STDOUT_PORT, mount_tag,
};

/// On-disk format of an image, as QEMU's `format=` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Qcow2,
    Raw,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Qcow2 => "qcow2",
            Format::Raw => "raw",
        }
    }
}

/// How the VM's firmware is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Firmware {
    /// QEMU's SeaBIOS, which mirrors its screen on the serial console when
    /// the machine has no graphics.
    SeaBios,
    /// A single firmware file (`vm.bios`, or a combined OVMF).
    Bios(PathBuf),
    /// OVMF's read-only code and this run's private copy of its variables.
    Pflash { code: PathBuf, vars: PathBuf },
}

/// How the guest's CPUs are run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

/// Host-side files the VM is wired to, all inside the VM's private directory.
#[derive(Debug, Clone, PartialEq)]
pub struct VmPaths {
    pub agent_socket: PathBuf,
    pub stdin_socket: PathBuf,
    pub stdout_socket: PathBuf,
    pub stderr_socket: PathBuf,
    /// The serial console's FIFOs, without their `.in` / `.out` (vmtest
    /// reads `.out` and writes the log, not QEMU).
    pub console_pipe: PathBuf,
}

impl VmPaths {
    /// The files' places in the private directory `dir`.
    pub fn in_dir(dir: &Path) -> VmPaths {
        VmPaths {
            agent_socket: dir.join("agent.sock"),
            stdin_socket: dir.join("stdin.sock"),
            stdout_socket: dir.join("stdout.sock"),
            stderr_socket: dir.join("stderr.sock"),
            console_pipe: dir.join("console"),
        }
    }
}

/// The serial console device the guest kernel should write to.
pub fn console_device(arch: &str) -> &'static str {
    match arch {
        "aarch64" => "ttyAMA0",
        "s390x" => "ttysclp0",
        "riscv64" => "ttyS0",
        _ => "ttyS0",
    }
}

/// The kernel command line of a kernel target: a 9p root (cached: programs
/// load much faster, and writes still go straight through), vmtest's init,
/// the user's arguments after ours so they can override them (`ro` beats
/// `rw`), and last, after `--`, the init's own arguments.
pub fn kernel_cmdline(arch: &str, init: &str, user_args: Option<&str>, init_args: Option<&str>) -> String {
    let mut line = format!(
        "console={} root={ROOT_TAG} {} rw init={init} panic=-1",
        console_device(arch),
        ninep_root_args()
    );
    if let Some(args) = user_args.map(str::trim).filter(|a| !a.is_empty()) {
        line.push(' ');
        line.push_str(args);
    }
    if let Some(args) = init_args {
        line.push_str(" -- ");
        line.push_str(args);
    }
    line
}

/// The kernel arguments that make the root a 9p mount (`share.rs` swaps
/// them for virtiofs).
pub fn ninep_root_args() -> String {
    format!("rootfstype=9p rootflags=trans=virtio,version=9p2000.L,msize={MSIZE},access=any,cache=mmap")
}

/// The machine, accelerator, CPUs and memory, and QEMU's own quiet defaults.
/// Under TCG the CPU is the most capable model; QEMU 7.2 has no `max` for
/// RISC-V, whose generic `rv64` (RV64GC and more) runs Debian's riscv64.
/// RISC-V boots through QEMU's default OpenSBI firmware.
pub fn machine_args(target: &Target, accel: Accel) -> Vec<String> {
    let (machine, tcg_cpu) = match target.arch.as_str() {
        "aarch64" => ("virt,gic-version=3", "max"),
        "riscv64" => ("virt", "rv64"),
        "s390x" => ("s390-ccw-virtio", "max"),
        _ => ("q35", "max"),
    };
    let (accel, cpu) = match accel {
        Accel::Kvm => ("kvm", target.kvm_cpu_args.as_str()),
        Accel::Tcg => ("tcg", tcg_cpu),
    };
    strings(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-machine",
        machine,
        "-accel",
        accel,
        "-cpu",
        cpu,
        "-smp",
        &target.vm.num_cpus.to_string(),
        "-m",
        &target.vm.memory,
    ])
}

/// Whether the architecture's virtio devices sit on PCI (else on CCW).
fn virtio_suffix(arch: &str) -> &'static str {
    if arch == "s390x" { "ccw" } else { "pci" }
}

/// A host directory exported over 9p with the given mount tag.
pub fn share_args(arch: &str, id: &str, tag: &str, host_path: &Path, writable: bool) -> Vec<String> {
    let mut fsdev = format!(
        "local,id={id},path={},security_model=none,multidevs=remap",
        escape_path(host_path)
    );
    if !writable {
        fsdev.push_str(",readonly=on");
    }
    vec![
        "-fsdev".into(),
        fsdev,
        "-device".into(),
        format!("virtio-9p-{},fsdev={id},mount_tag={tag}", virtio_suffix(arch)),
    ]
}

/// The virtio-serial controller and its four ports: the guest agent, and
/// the command's stdin, stdout and stderr. QEMU connects to sockets vmtest
/// listens on.
pub fn serial_ports_args(arch: &str, paths: &VmPaths) -> Vec<String> {
    let mut args = vec![
        "-device".into(),
        format!("virtio-serial-{},id=vser0", virtio_suffix(arch)),
    ];
    let ports = [
        ("agent", &paths.agent_socket, AGENT_PORT),
        ("stdin", &paths.stdin_socket, STDIN_PORT),
        ("stdout", &paths.stdout_socket, STDOUT_PORT),
        ("stderr", &paths.stderr_socket, STDERR_PORT),
    ];
    for (id, socket, name) in ports {
        args.push("-chardev".into());
        args.push(format!("socket,id={id},path={},server=off", escape_path(socket)));
        args.push("-device".into());
        args.push(format!("virtserialport,bus=vser0.0,chardev={id},name={name}"));
    }
    args
}

/// The guest's first serial port, on the FIFOs `pipe.in` and `pipe.out`
/// that vmtest made (QEMU writes `.out`; nothing is ever written to `.in`).
pub fn console_args(pipe: &Path) -> Vec<String> {
    vec![
        "-chardev".into(),
        format!("pipe,id=console,path={}", escape_path(pipe)),
        "-serial".into(),
        "chardev:console".into(),
    ]
}

/// QEMU's QMP monitor, listening on `socket` (vmtest connects when it
/// needs to: a crash dump, a warm start's save, devices plugged in).
pub fn qmp_args(socket: &Path) -> Vec<String> {
    vec![
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", escape_path(socket)),
    ]
}

/// What a crash dump needs: QEMU's QMP monitor, listening on `socket`, and
/// where the machine has fw_cfg (all but s390x), the `vmcoreinfo` device,
/// through which a kernel with CONFIG_FW_CFG_SYSFS and CONFIG_KEXEC (or
/// CRASH_CORE) tells the dump where its structures are (drgn and crash
/// need that note).
pub fn dump_args(arch: &str, socket: &Path) -> Vec<String> {
    let mut args = qmp_args(socket);
    if arch != "s390x" {
        args.extend(["-device".into(), "vmcoreinfo".into()]);
    }
    args
}

/// Optional parts of a kernel target's boot, for kernels whose drivers are
/// modules.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BootExtras<'a> {
    /// The initramfs that loads the modules.
    pub initrd: Option<&'a Path>,
    /// A modules directory outside the rootfs, shared read-only.
    pub modules: Option<&'a Path>,
    /// The root, `/mnt/vmtest` and the `vm.mounts` go over virtiofs: their
    /// 9p devices are left out. The guest has no use for them, and each
    /// device takes a slot of the PCI root bus, which has about 30.
    pub virtiofs: bool,
}

/// The whole argv (without the binary) of a kernel target.
pub fn kernel_argv(
    target: &Target,
    kernel: &Path,
    cmdline: &str,
    rootfs: &Path,
    paths: &VmPaths,
    accel: Accel,
    extras: BootExtras,
) -> Vec<String> {
    let arch = target.arch.as_str();
    let mut args = machine_args(target, accel);
    if let Some(bios) = &target.vm.bios {
        args.extend(["-bios".into(), bios.to_string_lossy().into_owned()]);
    }
    args.extend(["-kernel".into(), kernel.to_string_lossy().into_owned()]);
    if let Some(initrd) = extras.initrd {
        args.extend(["-initrd".into(), initrd.to_string_lossy().into_owned()]);
    }
    args.extend(["-append".into(), cmdline.to_string()]);
    args.extend(console_args(&paths.console_pipe));
    args.extend(serial_ports_args(arch, paths));
    if !extras.virtiofs {
        let root_writable = !root_read_only(target);
        args.extend(share_args(arch, "root", ROOT_TAG, rootfs, root_writable));
        args.extend(share_args(arch, "share", SHARE_TAG, &target.share_dir, true));
    }
    if let Some(modules) = extras.modules {
        args.extend(share_args(arch, "modules", MODULES_TAG, modules, false));
    }
    if !extras.virtiofs {
        args.extend(mount_args(arch, &target.vm.mounts));
    }
    args.extend(target.vm.extra_args.iter().cloned());
    args
}

/// An image target's disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disk<'a> {
    pub image: &'a Path,
    pub format: Format,
    /// QEMU's snapshot mode: writes go to a temporary overlay. Off only for
    /// the overlay a warm start's cold boot writes (`launch::warm`).
    pub snapshot: bool,
}

/// The whole argv (without the binary) of an image target. The disk runs
/// in QEMU's snapshot mode (`snapshot=on`): QEMU opens the image read-only
/// and sends every write to a temporary qcow2 overlay that it deletes as soon
/// as it has opened it, so the image stays untouched and nothing is left even
/// if QEMU is killed. (A warm start's cold boot runs on an overlay made by
/// `qemu-img create -b` instead, which becomes part of the saved state.)
pub fn image_argv(target: &Target, disk: Disk, firmware: &Firmware, paths: &VmPaths, accel: Accel) -> Vec<String> {
    let arch = target.arch.as_str();
    let mut args = machine_args(target, accel);
    match firmware {
        // "Booting from Hard Disk..." in the console log says how far a boot got.
        Firmware::SeaBios => args.extend(["-machine".into(), "graphics=off".into()]),
        Firmware::Bios(file) => args.extend(["-bios".into(), file.to_string_lossy().into_owned()]),
        Firmware::Pflash { code, vars } => {
            args.push("-drive".into());
            args.push(format!(
                "if=pflash,unit=0,format=raw,readonly=on,file={}",
                escape_path(code)
            ));
            args.push("-drive".into());
            args.push(format!("if=pflash,unit=1,format=raw,file={}", escape_path(vars)));
        }
    }
    args.push("-drive".into());
    args.push(format!(
        "file={},if=virtio,format={}{}",
        escape_path(disk.image),
        disk.format.name(),
        if disk.snapshot { ",snapshot=on" } else { "" }
    ));
    args.extend(console_args(&paths.console_pipe));
    args.extend(serial_ports_args(arch, paths));
    args.extend(share_args(arch, "share", SHARE_TAG, &target.share_dir, true));
    args.extend(mount_args(arch, &target.vm.mounts));
    args.extend(target.vm.extra_args.iter().cloned());
    args
}

/// QEMU arguments of the shell's console: a virtconsole (the guest's
/// /dev/hvc0) on the existing virtio-serial bus, connected to `socket`.
pub fn shell_console_args(socket: &Path) -> Vec<String> {
    vec![
        "-chardev".into(),
        format!("socket,id=shell,path={},server=off", escape_path(socket)),
        "-device".into(),
        format!("virtconsole,bus=vser0.0,chardev=shell,name={SHELL_PORT}"),
    ]
}

/// Whether the target's kernel arguments mount the root read-only: the last
/// `ro` or `rw` among them is `ro` (the kernel lets the last one win, and
/// vmtest's own `rw` comes first). The root share is then exported
/// read-only too, so guest root cannot remount it read-write.
pub fn root_read_only(target: &Target) -> bool {
    let Kind::Kernel { kernel_args, .. } = &target.kind else {
        return false;
    };
    kernel_args
        .as_deref()
        .unwrap_or_default()
        .split_whitespace()
        .rev()
        .find(|word| *word == "ro" || *word == "rw")
        == Some("ro")
}

/// The 9p shares of the `vm.mounts` entries.
pub fn mount_args(arch: &str, mounts: &[Mount]) -> Vec<String> {
    mounts
        .iter()
        .enumerate()
        .flat_map(|(i, m)| share_args(arch, &format!("m{i}"), &mount_tag(i), &m.host_path, m.writable))
        .collect()
}

/// QEMU's option parser splits on commas; a literal comma is written twice.
pub fn escape_opt(value: &str) -> String {
    value.replace(',', ",,")
}

/// A path as a QEMU option value.
pub fn escape_path(path: &Path) -> String {
    escape_opt(&path.to_string_lossy())
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{OneLiner, one_liner};

    /// The argv of `t` with kernel `/k`, command line `C` and the host's
    /// root.
    fn kernel_argv_of(t: &Target, extras: BootExtras) -> Vec<String> {
        kernel_argv(
            t,
            Path::new("/k"),
            "C",
            Path::new("/"),
            &crate::fixtures::vm_paths(),
            Accel::Tcg,
            extras,
        )
    }

    fn target() -> Target {
        let args = OneLiner {
            kernel: "bzImage".into(),
            command: "true".into(),
            arch: Some("x86_64".into()),
            ..Default::default()
        };
        one_liner(args, Path::new("/work")).unwrap()
    }

    #[test]
    fn kernel_argv_is_exact() {
        let mut t = target();
        t.vm.mounts.push(Mount {
            guest_path: "/data".into(),
            host_path: "/srv/a,b".into(),
            writable: false,
        });
        t.vm.extra_args = vec!["-s".into()];
        t.vm.bios = Some("/fw/bios.bin".into());
        let Kind::Kernel { kernel, rootfs, .. } = t.kind.clone() else {
            unreachable!()
        };
        let argv = kernel_argv(
            &t,
            &kernel,
            "CMDLINE",
            &rootfs,
            &crate::fixtures::vm_paths(),
            Accel::Tcg,
            BootExtras::default(),
        );
        let expected = [
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-machine",
            "q35",
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-smp",
            "2",
            "-m",
            "4G",
            "-bios",
            "/fw/bios.bin",
            "-kernel",
            "/work/bzImage",
            "-append",
            "CMDLINE",
            "-chardev",
            "pipe,id=console,path=/run/v/console",
            "-serial",
            "chardev:console",
            "-device",
            "virtio-serial-pci,id=vser0",
            "-chardev",
            "socket,id=agent,path=/run/v/agent.sock,server=off",
            "-device",
            "virtserialport,bus=vser0.0,chardev=agent,name=org.qemu.guest_agent.0",
            "-chardev",
            "socket,id=stdin,path=/run/v/stdin.sock,server=off",
            "-device",
            "virtserialport,bus=vser0.0,chardev=stdin,name=org.vmtest.stdin",
            "-chardev",
            "socket,id=stdout,path=/run/v/stdout.sock,server=off",
            "-device",
            "virtserialport,bus=vser0.0,chardev=stdout,name=org.vmtest.stdout",
            "-chardev",
            "socket,id=stderr,path=/run/v/stderr.sock,server=off",
            "-device",
            "virtserialport,bus=vser0.0,chardev=stderr,name=org.vmtest.stderr",
            "-fsdev",
            "local,id=root,path=/,security_model=none,multidevs=remap",
            "-device",
            "virtio-9p-pci,fsdev=root,mount_tag=vmtest_root",
            "-fsdev",
            "local,id=share,path=/work,security_model=none,multidevs=remap",
            "-device",
            "virtio-9p-pci,fsdev=share,mount_tag=vmtest_share",
            "-fsdev",
            "local,id=m0,path=/srv/a,,b,security_model=none,multidevs=remap,readonly=on",
            "-device",
            "virtio-9p-pci,fsdev=m0,mount_tag=vmtest_m0",
            "-s",
        ];
        assert_eq!(argv, expected);
    }

    #[test]
    fn modular_kernels_get_an_initrd_and_their_modules() {
        let t = target();
        let extras = BootExtras {
            initrd: Some(Path::new("/c/vmtest/initramfs/k.cpio")),
            modules: Some(Path::new("/srv/mods/6.1.0-9-amd64")),
            virtiofs: false,
        };
        let argv = kernel_argv_of(&t, extras);
        let at = |flag: &str| argv.iter().position(|a| a == flag).unwrap();
        assert_eq!(
            argv[at("-kernel")..at("-kernel") + 6],
            ["-kernel", "/k", "-initrd", "/c/vmtest/initramfs/k.cpio", "-append", "C"]
        );
        let share = argv.iter().position(|a| a.starts_with("local,id=share,")).unwrap();
        assert_eq!(
            argv[share + 1..],
            [
                "-device",
                "virtio-9p-pci,fsdev=share,mount_tag=vmtest_share",
                "-fsdev",
                "local,id=modules,path=/srv/mods/6.1.0-9-amd64,security_model=none,multidevs=remap,readonly=on",
                "-device",
                "virtio-9p-pci,fsdev=modules,mount_tag=vmtest_modules",
            ]
        );
        let plain = kernel_argv_of(&t, BootExtras::default());
        assert!(!plain.iter().any(|a| a == "-initrd" || a.contains("vmtest_modules")));
        // Over virtiofs only the modules directory keeps a 9p device.
        let virtiofs = kernel_argv_of(
            &t,
            BootExtras {
                virtiofs: true,
                ..extras
            },
        );
        let ninep: Vec<&String> = virtiofs.iter().filter(|a| a.starts_with("virtio-9p-pci")).collect();
        assert_eq!(ninep, ["virtio-9p-pci,fsdev=modules,mount_tag=vmtest_modules"]);
    }

    #[test]
    fn ro_in_the_kernel_args_exports_the_root_read_only() {
        let root_share = |kernel_args: Option<&str>| {
            let mut t = target();
            if let Kind::Kernel { kernel_args: args, .. } = &mut t.kind {
                *args = kernel_args.map(str::to_string);
            }
            let argv = kernel_argv_of(&t, BootExtras::default());
            let root = argv.iter().position(|a| a.starts_with("local,id=root,")).unwrap();
            argv[root - 1..root + 4].to_vec()
        };
        assert_eq!(
            root_share(Some("quiet ro")),
            [
                "-fsdev",
                "local,id=root,path=/,security_model=none,multidevs=remap,readonly=on",
                "-device",
                "virtio-9p-pci,fsdev=root,mount_tag=vmtest_root",
                "-fsdev",
            ]
        );
        // The share stays writable: only the root follows `ro`.
        let share = "local,id=share,path=/work,security_model=none,multidevs=remap";
        assert_eq!(root_share(Some("ro"))[4..], ["-fsdev"]);
        let writable = "local,id=root,path=/,security_model=none,multidevs=remap";
        for args in [None, Some("ro rw"), Some("rootro=1 rw"), Some("")] {
            assert_eq!(root_share(args)[1], writable, "{args:?}");
        }
        let mut t = target();
        t.kind = Kind::Kernel {
            kernel: "/k".into(),
            kernel_args: Some("rw ro".into()),
            rootfs: "/".into(),
        };
        let argv = kernel_argv_of(&t, BootExtras::default());
        assert!(argv.iter().any(|a| a == share), "{argv:?}");
        assert!(
            argv.iter()
                .any(|a| a.ends_with("path=/,security_model=none,multidevs=remap,readonly=on"))
        );
    }

    #[test]
    fn a_dump_needs_a_qmp_monitor_and_vmcoreinfo() {
        assert_eq!(
            dump_args("x86_64", Path::new("/run/v,1/qmp.sock")),
            [
                "-qmp",
                "unix:/run/v,,1/qmp.sock,server=on,wait=off",
                "-device",
                "vmcoreinfo"
            ]
        );
        assert_eq!(
            dump_args("s390x", Path::new("/q")),
            ["-qmp", "unix:/q,server=on,wait=off"]
        );
    }

    #[test]
    fn kvm_uses_the_configured_cpu_and_resources() {
        let mut t = target();
        t.kvm_cpu_args = "host,-x2apic".into();
        t.vm.num_cpus = 1;
        t.vm.memory = "256M".into();
        let argv = machine_args(&t, Accel::Kvm);
        assert_eq!(
            argv[5..],
            [
                "-machine",
                "q35",
                "-accel",
                "kvm",
                "-cpu",
                "host,-x2apic",
                "-smp",
                "1",
                "-m",
                "256M"
            ]
        );
    }

    #[test]
    fn user_kernel_args_come_last() {
        assert_eq!(
            kernel_cmdline("x86_64", "/bin/vmtest", Some(" ro  "), Some("--guest-init /tmp/x/plan")),
            "console=ttyS0 root=vmtest_root rootfstype=9p \
             rootflags=trans=virtio,version=9p2000.L,msize=512000,access=any,cache=mmap rw \
             init=/bin/vmtest panic=-1 ro -- --guest-init /tmp/x/plan"
        );
        assert!(kernel_cmdline("aarch64", "/i", None, None).starts_with("console=ttyAMA0 "));
    }
}

#[cfg(test)]
#[path = "qemu_arch_tests.rs"]
mod arch_tests;
