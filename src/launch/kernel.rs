//! Preparing a kernel target: everything before QEMU starts.
//!
//! Checks the host-side inputs (kernel, rootfs, qemu-ga and bash in the
//! rootfs, mounts, the QEMU binary), writes the guest's init into the VM's
//! private directory, adds an initramfs when the kernel's root drivers are
//! modules (`modules.rs`, `initramfs.rs`), and assembles QEMU's argv and the
//! way the command will be started in the guest. The result is a [`Launch`] for the runner; this
//! module neither starts nor waits for anything.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

use crate::config::{Kind, Target};
use crate::guest;
use crate::launch::initramfs::InitProgram;
use crate::launch::modules::{self, RootDrivers};
use crate::launch::share::{self, Transport};
use crate::launch::{Boot, Helper};
use crate::vm::VmDir;
use crate::vm::qemu::{self, Accel, BootExtras};

/// A kernel target's inputs, checked on the host.
pub struct Inputs {
    kernel: PathBuf,
    kernel_args: Option<String>,
    rootfs: PathBuf,
    /// Guest path of qemu-ga in the rootfs.
    agent: String,
    /// The kernel's release and what it must load to reach its root.
    drivers: Option<(String, RootDrivers)>,
    init_program: InitProgram,
}

/// Checks a kernel target's kernel, rootfs and mounts.
pub fn check(target: &Target, kernel: &Path, rootfs: &Path) -> Result<Inputs> {
    let agent = check_rootfs(target, kernel, rootfs)?;
    let drivers = root_drivers(target, kernel, rootfs)?;
    let init_program = match &drivers {
        Some((_, RootDrivers::Modules { .. })) if target.arch != crate::config::host_arch() => {
            InitProgram::Busybox(static_busybox(target, kernel, rootfs)?)
        }
        _ => InitProgram::Vmtest,
    };
    let Kind::Kernel { kernel_args, .. } = &target.kind else {
        unreachable!("a kernel target")
    };
    Ok(Inputs {
        kernel: kernel.to_path_buf(),
        kernel_args: kernel_args.clone(),
        rootfs: rootfs.to_path_buf(),
        agent,
        drivers,
        init_program,
    })
}

impl Inputs {
    /// Whether the kernel has virtiofs built in, from its config or
    /// modules list (`share.rs` decides with it).
    pub fn virtiofs_support(&self) -> share::KernelSupport {
        let (release, modules) = match &self.drivers {
            Some((release, RootDrivers::Modules { dir, .. })) => (Some(release.as_str()), Some(dir.path.as_path())),
            Some((release, RootDrivers::BuiltIn)) => (Some(release.as_str()), None),
            None => (None, None),
        };
        share::kernel_support(&self.kernel, release, &self.rootfs, modules)
    }
}

/// Writes the guest's init into `dir` (and the initramfs, if the kernel
/// needs one) and builds QEMU's argv.
pub fn prepare(
    target: &Target,
    inputs: Inputs,
    dir: &VmDir,
    marker: &str,
    accel: Accel,
    transport: &Transport,
) -> Result<Boot> {
    let Inputs {
        kernel,
        kernel_args,
        rootfs,
        agent,
        drivers,
        init_program,
    } = inputs;
    let (kernel, rootfs) = (kernel.as_path(), rootfs.as_path());
    let mut plan = guest::init_plan(&agent, &target.vm.mounts, marker);
    let (mut initrd, mut modules_share) = (None, None);
    if let Some((release, RootDrivers::Modules { dir: modules, load })) = &drivers {
        initrd = Some(crate::launch::initramfs::get(
            kernel,
            modules,
            load,
            &init_program,
            dir.path(),
        )?);
        if !modules.in_rootfs {
            if rootfs.join("lib/modules").is_dir() {
                plan.mounts.extend(guest::modules_mounts(release));
                modules_share = Some(modules.path.as_path());
            } else {
                log::warn!(
                    "the rootfs {} has no lib/modules to show {} on in the guest; modprobe will not work there",
                    rootfs.display(),
                    modules.path.display()
                );
            }
        }
    }
    let virtiofs = matches!(transport, Transport::Virtiofs(_));
    if virtiofs {
        share::virtiofs_plan(&mut plan, &target.vm.mounts, share::project_mount(target, rootfs));
    }
    let (init, extra_dirs) = write_init(dir, rootfs, &plan, &target.arch)?;
    let (kernel_args, init_args) = debugging_args(target, kernel_args.as_deref(), init.init_args.as_deref());
    let mut cmdline = qemu::kernel_cmdline(&target.arch, &init.init, kernel_args.as_deref(), init_args.as_deref());
    if virtiofs {
        cmdline = share::virtiofs_cmdline(&cmdline);
    }
    let extras = BootExtras {
        initrd: initrd.as_deref(),
        modules: modules_share,
        virtiofs,
    };
    let args = qemu::kernel_argv(target, kernel, &cmdline, rootfs, &dir.paths(), accel, extras);
    Ok(Boot {
        args,
        extra_dirs,
        helper: init.helper,
        setup: Vec::new(),
        workdir: guest_workdir(target, rootfs),
        env: host_env_and_target(target),
        warm: None,
        ninep_fallback: None,
    })
}

/// The kernel's and the init's arguments with those debugging needs:
/// `panic=0` for a crash dump (the kernel stays in its panic instead of
/// rebooting, which would end QEMU before the dump), before the user's so
/// theirs still win; and `nokaslr` under gdb (the symbols in vmlinux are
/// then where the kernel runs), last among the init's: a kernel without
/// KASLR does not know the word and would pass it to init in front of
/// init's own arguments, while x86's decompressor finds it anywhere.
fn debugging_args(target: &Target, user: Option<&str>, init: Option<&str>) -> (Option<String>, Option<String>) {
    let join = |words: Vec<&str>| (!words.is_empty()).then(|| words.join(" "));
    let kernel = target.dump_on_panic.then_some("panic=0").into_iter().chain(user);
    let init = init.into_iter().chain(target.gdb.is_some().then_some("nokaslr"));
    (join(kernel.collect()), join(init.collect()))
}

/// Checks the kernel, the rootfs (its architecture, qemu-ga and bash) and
/// the mount points in it; returns qemu-ga's path in the guest.
fn check_rootfs(target: &Target, kernel: &Path, rootfs: &Path) -> Result<String> {
    if !kernel.is_file() {
        bail!("kernel {} not found", kernel.display());
    }
    let host = crate::config::host_arch();
    if rootfs == Path::new("/") && target.arch != host {
        let debian_arch = if target.arch == "aarch64" {
            "arm64"
        } else {
            &target.arch
        };
        bail!(
            "arch {arch} needs a root filesystem of that architecture: the default rootfs is the host's / \
             ({host}), whose programs cannot run in the guest. Set rootfs (-r DIR) to a directory holding \
             an {arch} system with bash, qemu-ga and mount (util-linux), e.g. made with \
             `mmdebstrap --arch {debian_arch} --variant=extract \
             --include=bash,coreutils,util-linux,mount,qemu-guest-agent bookworm DIR && mkdir DIR/mnt` \
             (docs/architectures.md has the whole recipe)",
            arch = target.arch
        );
    }
    if !rootfs.is_dir() {
        bail!("rootfs {} is not a directory", rootfs.display());
    }
    let agent = [
        "usr/bin/qemu-ga",
        "usr/sbin/qemu-ga",
        "usr/local/bin/qemu-ga",
        "bin/qemu-ga",
        "sbin/qemu-ga",
    ]
    .iter()
    .find(|p| rootfs.join(p).is_file())
    .map(|p| format!("/{p}"))
    .ok_or_else(|| {
        anyhow!(
            "the rootfs {} has no qemu-ga (the QEMU guest agent): install it there \
                 (Debian/Ubuntu: apt install qemu-guest-agent; Fedora: dnf install qemu-guest-agent)",
            rootfs.display()
        )
    })?;
    if !["usr/bin/bash", "bin/bash"].iter().any(|p| rootfs.join(p).exists()) {
        bail!("the rootfs {} has no bash, which runs the command", rootfs.display());
    }
    for mount in &target.vm.mounts {
        let inside = rootfs.join(mount.guest_path.trim_start_matches('/'));
        if !mount.guest_path.starts_with("/mnt/") && !inside.is_dir() {
            bail!(
                "vm.mounts '{}': no such directory in the rootfs ({}); create it, \
                 or mount below /mnt, which vmtest provides in the guest",
                mount.guest_path,
                inside.display()
            );
        }
    }
    Ok(agent)
}

/// The kernel's release and what it must load to reach its root; `None`
/// when the image does not name its release (nothing is added then).
fn root_drivers(target: &Target, kernel: &Path, rootfs: &Path) -> Result<Option<(String, RootDrivers)>> {
    let Some(release) = crate::launch::kernel_release::read(kernel)? else {
        if target.modules.is_some() {
            bail!(
                "kernel {}: cannot read its release from the image, which finding its modules needs",
                kernel.display()
            );
        }
        log::debug!("kernel {}: no release found in the image", kernel.display());
        return Ok(None);
    };
    let inputs = modules::Inputs {
        kernel,
        release: &release,
        arch: &target.arch,
        rootfs,
        configured: target.modules.as_deref(),
    };
    let drivers = modules::plan(&inputs)?;
    if let RootDrivers::Modules { dir, load } = &drivers {
        log::debug!(
            "kernel {} ({release}): loading {} modules from {} in an initramfs",
            kernel.display(),
            load.len(),
            dir.path.display()
        );
    }
    Ok(Some((release, drivers)))
}

/// The rootfs's static busybox, which loads a foreign kernel's modules in the
/// initramfs (vmtest's own binary cannot run on that architecture).
fn static_busybox(target: &Target, kernel: &Path, rootfs: &Path) -> Result<PathBuf> {
    let candidates = ["usr/bin/busybox", "bin/busybox", "usr/sbin/busybox", "sbin/busybox"];
    let found = candidates.iter().map(|p| rootfs.join(p)).find(|p| p.is_file());
    let hint = "install a static busybox there (Debian: busybox-static), or use a kernel with \
                CONFIG_VIRTIO_PCI, CONFIG_VIRTIO_CONSOLE, CONFIG_NET_9P_VIRTIO and CONFIG_9P_FS built in";
    let Some(busybox) = found else {
        bail!(
            "kernel {} has its virtio and 9p drivers as modules; for an {} guest vmtest loads them with the \
             rootfs's own busybox, and {} has none: {hint}",
            kernel.display(),
            target.arch,
            rootfs.display()
        );
    };
    let bytes = std::fs::read(&busybox).with_context(|| format!("reading {}", busybox.display()))?;
    match elf_is_static(&bytes) {
        Some(true) => Ok(busybox),
        Some(false) => bail!(
            "{} is dynamically linked; loading the modules of kernel {} before the root is mounted needs a \
             static busybox: {hint}",
            busybox.display(),
            kernel.display()
        ),
        None => bail!("{} is not an ELF executable: {hint}", busybox.display()),
    }
}

/// Whether an ELF executable has no program interpreter (is statically
/// linked); `None` if the bytes are not ELF.
fn elf_is_static(bytes: &[u8]) -> Option<bool> {
    if bytes.get(..4)? != b"\x7fELF" {
        return None;
    }
    let wide = *bytes.get(4)? == 2;
    let big = *bytes.get(5)? == 2;
    let num = |at: usize, len: usize| -> Option<u64> {
        let raw = bytes.get(at..at + len)?;
        let mut v = 0u64;
        for i in 0..len {
            let byte = if big { raw[i] } else { raw[len - 1 - i] };
            v = (v << 8) | u64::from(byte);
        }
        Some(v)
    };
    let (phoff, phentsize, phnum) = if wide {
        (num(0x20, 8)?, num(0x36, 2)?, num(0x38, 2)?)
    } else {
        (num(0x1c, 4)?, num(0x2a, 2)?, num(0x2c, 2)?)
    };
    const PT_INTERP: u64 = 3;
    for index in 0..phnum {
        let at = usize::try_from(phoff + index * phentsize).ok()?;
        if num(at, 4)? == PT_INTERP {
            return Some(false);
        }
    }
    Some(true)
}

/// How the guest starts and how it runs the command.
struct Init {
    /// The guest path given to the kernel as `init=`.
    init: String,
    /// Arguments the kernel passes on to init.
    init_args: Option<String>,
    helper: Helper,
}

/// Writes the init where the guest can read it. When the guest shares the
/// host's root and architecture, the host's own vmtest binary is the init
/// (reading a JSON plan from the VM's directory) and relays the command's
/// output itself. Otherwise a shell init goes into the VM's private directory
/// (when the rootfs is the host's root) or a private directory in the
/// rootfs's /tmp, removed with the VM; the latter also when the VM's
/// directory lies below /dev, which the kernel may cover with its devtmpfs.
fn write_init(
    dir: &VmDir,
    rootfs: &Path,
    plan: &guest::InitPlan,
    arch: &str,
) -> Result<(Init, Vec<tempfile::TempDir>)> {
    use std::os::unix::fs::PermissionsExt;
    let plain = |p: &Path| {
        p.to_str()
            .filter(|s| !s.contains(char::is_whitespace))
            .map(str::to_string)
    };
    let exe = std::env::current_exe().ok().as_deref().and_then(plain);
    // The init's files must be readable through the guest's root before
    // anything is mounted, except the devtmpfs a kernel may mount on /dev
    // itself: a VM directory below /dev (TMPDIR=/dev/shm) is hidden there.
    let mut extra = Vec::new();
    let init_dir = if rootfs == Path::new("/") && !dir.path().starts_with("/dev") {
        dir.path().to_path_buf()
    } else {
        let tmp = rootfs.join("tmp");
        let base = if tmp.is_dir() { tmp } else { rootfs.to_path_buf() };
        let private = tempfile::Builder::new()
            .prefix(".vmtest-init.")
            .tempdir_in(&base)
            .with_context(|| format!("creating the init's directory in {}", base.display()))?;
        let path = private.path().to_path_buf();
        crate::vm::janitor::register(&path);
        extra.push(private);
        path
    };
    let plan_path = plain(&init_dir.join("init.json"));
    let native = rootfs == Path::new("/") && arch == crate::config::host_arch() && !force_shell();
    if let (true, Some(exe), Some(plan_path)) = (native, exe, plan_path) {
        std::fs::write(&plan_path, serde_json::to_vec(plan)?).with_context(|| format!("writing {plan_path}"))?;
        let boot = Init {
            init: exe,
            init_args: Some(format!("--guest-init {plan_path}")),
            helper: Helper::InitRelay,
        };
        return Ok((boot, extra));
    }
    let init = init_dir.join("init");
    std::fs::write(&init, guest::init_script(plan)).with_context(|| format!("writing {}", init.display()))?;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))?;
    let guest_init = guest::guest_path_in_rootfs(rootfs, &init)
        .filter(|p| !p.contains(char::is_whitespace))
        .ok_or_else(|| anyhow!("the generated init {} has no usable path in the guest", init.display()))?;
    let boot = Init {
        init: guest_init,
        init_args: None,
        helper: Helper::Shell,
    };
    Ok((boot, extra))
}

/// `VMTEST_SHELL_INIT=1` makes every kernel target use the shell init and
/// wrapper, as a foreign rootfs would (for testing and troubleshooting).
fn force_shell() -> bool {
    std::env::var_os("VMTEST_SHELL_INIT").is_some_and(|v| v == "1")
}

/// The command's working directory inside the guest: the host path itself
/// when the guest sees the host's root, else its place under /mnt/vmtest.
fn guest_workdir(target: &Target, rootfs: &Path) -> String {
    if rootfs == Path::new("/") {
        return target.workdir.to_string_lossy().into_owned();
    }
    guest::workdir_in_share(target)
}

/// The host's environment plus the target's own variables (the guest
/// shares the host's root, so the host's variables fit it).
fn host_env_and_target(target: &Target) -> Vec<String> {
    let mut env: std::collections::BTreeMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    env.extend(target.env.clone());
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64-bit little-endian ELF header with one program header of `kind`.
    fn elf64(kind: u32) -> Vec<u8> {
        let mut bytes = vec![0u8; 0x40 + 0x38];
        bytes[..6].copy_from_slice(b"\x7fELF\x02\x01");
        bytes[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        bytes[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
        bytes[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        bytes[0x40..0x44].copy_from_slice(&kind.to_le_bytes());
        bytes
    }

    #[test]
    fn debugging_adds_its_kernel_args_before_the_users() {
        let args = crate::config::OneLiner {
            kernel: "bzImage".into(),
            command: "true".into(),
            ..Default::default()
        };
        let mut target = crate::config::one_liner(args, Path::new("/w")).unwrap();
        let owned = |(k, i): (Option<&str>, Option<&str>)| (k.map(String::from), i.map(String::from));
        assert_eq!(debugging_args(&target, None, None), (None, None));
        assert_eq!(
            debugging_args(&target, Some("quiet"), Some("--guest-init /p")),
            owned((Some("quiet"), Some("--guest-init /p")))
        );
        target.dump_on_panic = true;
        assert_eq!(
            debugging_args(&target, Some("panic=5"), None),
            owned((Some("panic=0 panic=5"), None))
        );
        target.gdb = Some(crate::config::debug::GdbStub::parse("1234", false).unwrap());
        assert_eq!(
            debugging_args(&target, None, Some("--guest-init /p")),
            owned((Some("panic=0"), Some("--guest-init /p nokaslr")))
        );
    }

    #[test]
    fn static_executables_have_no_interpreter() {
        assert_eq!(elf_is_static(&elf64(1)), Some(true));
        assert_eq!(elf_is_static(&elf64(3)), Some(false));
        assert_eq!(elf_is_static(b"#!/bin/sh\n"), None);
        assert_eq!(elf_is_static(&elf64(3)[..0x30]), None);
        let bash = std::fs::read("/bin/bash").unwrap();
        assert_eq!(elf_is_static(&bash), Some(false));
    }
}
