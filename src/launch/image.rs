//! Preparing an image target: everything before QEMU starts.
//!
//! Checks the disk image (it must exist and be qcow2, or raw with an MBR or
//! GPT partition table), finds the firmware (SeaBIOS, OVMF under `uefi =
//! true`, or `vm.bios`), copies OVMF's variable store into the VM's private
//! directory, and assembles QEMU's argv, the setup steps that mount the
//! shares (9p, or virtiofs falling back to 9p) inside the guest, and the way
//! the command is started there. The image's own bootloader, kernel and
//! guest agent do the rest. The user's image is never written to: QEMU runs
//! the disk in snapshot mode, or (warm start, `warm`) on a qcow2 overlay in
//! vmtest's cache; with a saved state for the target, QEMU restores it
//! instead of booting. A VM that is saved or restored gets its virtiofs
//! devices plugged in afterwards (they block migration): its argv holds the
//! shared RAM and empty ports for them. The result is a [`Launch`] for the
//! runner; this module neither starts nor waits for anything.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::config::{Mount, Target};
use crate::guest::GUEST_PATH;
use crate::guest::SHARE_TAG;
use crate::guest::{GUEST_SHARE, ninep_options, shell_quote};
use crate::launch::share::{self, Transport};
use crate::launch::warm::{self, Warm};
use crate::launch::{Boot, Helper, SetupStep};
use crate::vm::VmDir;
use crate::vm::qemu::{self, Accel, Disk, Firmware, Format, VmPaths};
use crate::vm::virtiofs;

/// OVMF as installed on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ovmf {
    /// Separate code and variable-store files: two pflash drives, the store
    /// copied for each run.
    Split { code: PathBuf, vars: PathBuf },
    /// One combined file, given to `-bios`.
    Combined(PathBuf),
}

/// An image target's inputs, checked on the host.
pub struct Inputs {
    image: PathBuf,
    format: Format,
    ovmf: Option<Ovmf>,
}

/// Checks an image target's disk image and firmware.
pub fn check(target: &Target, image: &Path, uefi: bool) -> Result<Inputs> {
    let format = detect_format(image)?;
    let ovmf = match (&target.vm.bios, uefi) {
        (None, true) => Some(find_ovmf(&target.arch, |p| p.is_file())?),
        (Some(bios), _) if !bios.is_file() => bail!("vm.bios {} not found", bios.display()),
        _ => None,
    };
    Ok(Inputs {
        image: image.to_path_buf(),
        format,
        ovmf,
    })
}

/// Copies OVMF's variables into `dir` (UEFI) and builds QEMU's argv and the
/// setup steps that mount the shares in the guest; with `warm_start`, from a
/// saved state if there is one, else with a cold boot that saves one.
pub fn prepare(
    target: &Target,
    inputs: Inputs,
    dir: &mut VmDir,
    accel: Accel,
    qemu: &Path,
    warm_start: bool,
    transport: &Transport,
) -> Result<Boot> {
    // Present in the saved state's argv as in every run restoring it.
    let plugged_args = match transport {
        Transport::Virtiofs(_) => plugged_args(target),
        Transport::NineP => Vec::new(),
    };
    let mut warm = match warm_start {
        true => plan_warm(target, &inputs, qemu, accel, &plugged_args),
        false => None,
    };
    let plugged = warm.is_some() && !plugged_args.is_empty();
    let private_vars = dir.path().join("OVMF_VARS.fd");
    let firmware = firmware(&target.vm.bios, inputs.ovmf.as_ref(), &private_vars);
    if let (None, Some(Ovmf::Split { vars, .. })) = (&target.vm.bios, &inputs.ovmf) {
        // OVMF writes its variables (boot entries) back: never to the host's
        // copy. A restored VM gets those it had when it was saved.
        let source = match &warm {
            Some(Warm::Restore(entry)) => entry.vars().unwrap_or_else(|| vars.clone()),
            _ => vars.clone(),
        };
        std::fs::copy(&source, &private_vars)
            .with_context(|| format!("copying the UEFI variable store {}", source.display()))?;
        if let Some(Warm::Save(staging)) = &mut warm {
            staging.keep_vars(&private_vars);
        }
    }
    let (saved, overlay);
    let disk = match &warm {
        None => Disk {
            image: &inputs.image,
            format: inputs.format,
            snapshot: true,
        },
        Some(Warm::Save(staging)) => {
            overlay = staging.disk();
            Disk {
                image: &overlay,
                format: Format::Qcow2,
                snapshot: false,
            }
        }
        Some(Warm::Restore(entry)) => {
            saved = entry.disk();
            Disk {
                image: &saved,
                format: Format::Qcow2,
                snapshot: true,
            }
        }
    };
    let mut args = qemu::image_argv(target, disk, &firmware, &dir.paths(), accel);
    let ninep = setup_steps(&target.vm.mounts);
    let (setup, ninep_fallback) = match (transport, plugged) {
        (Transport::NineP, _) => (ninep, None),
        (Transport::Virtiofs(_), false) => (share::virtiofs_setup(ninep, &target.vm.mounts, false), None),
        (Transport::Virtiofs(_), true) => {
            args.extend(plugged_args);
            (
                share::virtiofs_setup(ninep.clone(), &target.vm.mounts, true),
                Some(ninep),
            )
        }
    };
    match &mut warm {
        Some(Warm::Save(staging)) => args.extend(staging.save_args(&dir.qmp_socket(), &dir.path().join("run.qcow2"))),
        Some(Warm::Restore(entry)) => {
            if plugged {
                args.extend(qemu::qmp_args(&dir.qmp_socket()));
            }
            args.extend(entry.incoming_args());
            entry.touch();
            dir.note_console(&format!(
                "vmtest: warm start: the guest was restored from the state saved in {} \
                 (its boot's console was kept by the run that saved it; --cold boots it again)\n",
                entry.dir().display()
            ));
        }
        None => {}
    }
    Ok(Boot {
        args,
        extra_dirs: Vec::new(),
        helper: Helper::Shell,
        setup,
        workdir: crate::guest::workdir_in_share(target),
        env: target_env_only(target),
        warm,
        ninep_fallback,
    })
}

/// What a VM whose virtiofs devices are plugged in later needs from the
/// start: shared RAM, and an empty port for each shared directory.
fn plugged_args(target: &Target) -> Vec<String> {
    let mut args = virtiofs::memory_args(&target.vm.memory);
    args.extend(virtiofs::hotplug_ports(1 + target.vm.mounts.len()));
    args
}

/// The firmware of a run whose OVMF variables are copied to `private_vars`.
fn firmware(bios: &Option<PathBuf>, ovmf: Option<&Ovmf>, private_vars: &Path) -> Firmware {
    match (bios, ovmf) {
        (Some(bios), _) => Firmware::Bios(bios.clone()),
        (None, Some(Ovmf::Combined(file))) => Firmware::Bios(file.clone()),
        (None, Some(Ovmf::Split { code, .. })) => Firmware::Pflash {
            code: code.clone(),
            vars: private_vars.to_path_buf(),
        },
        (None, None) => Firmware::SeaBios,
    }
}

/// The saved state for this target, or a staging directory to save one
/// into (with the cold boot's overlay created); `None`, with a warning in
/// the log, when the cache cannot be used.
fn plan_warm(target: &Target, inputs: &Inputs, qemu: &Path, accel: Accel, extra: &[String]) -> Option<Warm> {
    let cache = warm::Cache::open()?;
    let result = warm_key(target, inputs, qemu, accel, extra).and_then(|key| cache.plan(&key));
    let result = result.and_then(|plan| {
        if let Warm::Save(staging) = &plan {
            staging.create_overlay(qemu, &inputs.image, inputs.format.name())?;
        }
        Ok(plan)
    });
    match result {
        Ok(plan) => Some(plan),
        Err(e) => {
            log::warn!("target '{}': no warm start: {e:#}", target.name);
            None
        }
    }
}

/// The key of the target's saved state: its argv with every per-run path
/// (private directory, shares, image, OVMF variables) replaced by a
/// placeholder, `extra` arguments (without paths) that every run adds, and
/// the identity of QEMU, the image and the firmware.
fn warm_key(target: &Target, inputs: &Inputs, qemu: &Path, accel: Accel, extra: &[String]) -> Result<String> {
    let mut shape = target.clone();
    shape.share_dir = "/@share".into();
    for (index, mount) in shape.vm.mounts.iter_mut().enumerate() {
        mount.host_path = format!("/@mount{index}").into();
    }
    let dir = Path::new("/@dir");
    let paths = VmPaths::in_dir(dir);
    let firmware = firmware(&target.vm.bios, inputs.ovmf.as_ref(), &dir.join("OVMF_VARS.fd"));
    let disk = Disk {
        image: Path::new("/@image"),
        format: inputs.format,
        snapshot: true,
    };
    let mut argv = qemu::image_argv(&shape, disk, &firmware, &paths, accel);
    argv.extend_from_slice(extra);
    let mut files: Vec<&Path> = target.vm.bios.iter().map(PathBuf::as_path).collect();
    match &inputs.ovmf {
        Some(Ovmf::Split { code, vars }) => files.extend([code.as_path(), vars.as_path()]),
        Some(Ovmf::Combined(file)) => files.push(file),
        None => {}
    }
    warm::key(&warm::KeyInputs {
        shape: &argv,
        qemu,
        image: &inputs.image,
        firmware: files,
    })
}

/// The image's format, from its first bytes: qcow2's magic, else an MBR boot
/// signature or a GPT header (512- or 4096-byte sectors) for a raw disk.
pub fn detect_format(image: &Path) -> Result<Format> {
    use std::io::Read;
    if !image.exists() {
        bail!("image {} not found", image.display());
    }
    if !image.is_file() {
        bail!("image {} is not a file", image.display());
    }
    let mut header = Vec::with_capacity(4608);
    std::fs::File::open(image)
        .and_then(|f| f.take(4608).read_to_end(&mut header))
        .with_context(|| format!("reading image {}", image.display()))?;
    match format_of(&header) {
        Some(format) => Ok(format),
        None => bail!(
            "{} is not a disk image: it is neither qcow2 nor a raw disk with an MBR or GPT partition table",
            image.display()
        ),
    }
}

fn format_of(header: &[u8]) -> Option<Format> {
    let at = |offset: usize, bytes: &[u8]| header.get(offset..offset + bytes.len()) == Some(bytes);
    if at(0, b"QFI\xfb") {
        Some(Format::Qcow2)
    } else if at(510, &[0x55, 0xaa]) || at(512, b"EFI PART") || at(4096, b"EFI PART") {
        Some(Format::Raw)
    } else {
        None
    }
}

/// Split CODE/VARS pairs of OVMF, in the order they are looked for.
const OVMF_SPLIT: &[(&str, &str)] = &[
    // Debian 12+, Ubuntu 22.04+ (package ovmf)
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
    // Older Debian and Ubuntu; Fedora's compatibility links
    ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
    // Fedora (edk2-ovmf)
    ("/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd"),
    // Arch (edk2-ovmf)
    (
        "/usr/share/edk2/x64/OVMF_CODE.4m.fd",
        "/usr/share/edk2/x64/OVMF_VARS.4m.fd",
    ),
    ("/usr/share/edk2/x64/OVMF_CODE.fd", "/usr/share/edk2/x64/OVMF_VARS.fd"),
    // Older Arch
    (
        "/usr/share/edk2-ovmf/x64/OVMF_CODE.fd",
        "/usr/share/edk2-ovmf/x64/OVMF_VARS.fd",
    ),
    // QEMU's own build
    (
        "/usr/share/qemu/edk2-x86_64-code.fd",
        "/usr/share/qemu/edk2-i386-vars.fd",
    ),
];

/// Combined OVMF builds, looked for after the split ones.
const OVMF_COMBINED: &[&str] = &[
    "/usr/share/ovmf/OVMF.fd",
    "/usr/share/OVMF/OVMF.fd",
    "/usr/share/edk2/ovmf/OVMF.fd",
    "/usr/share/edk2-ovmf/x64/OVMF.fd",
    "/usr/share/qemu/OVMF.fd",
];

/// Finds OVMF in the usual places; `exists` says whether a file is there.
pub fn find_ovmf(arch: &str, exists: impl Fn(&Path) -> bool) -> Result<Ovmf> {
    if arch != "x86_64" {
        bail!("uefi = true needs vm.bios on {arch}: vmtest only knows where x86_64's OVMF is installed");
    }
    for (code, vars) in OVMF_SPLIT {
        let (code, vars) = (Path::new(code), Path::new(vars));
        if exists(code) && exists(vars) {
            return Ok(Ovmf::Split {
                code: code.into(),
                vars: vars.into(),
            });
        }
    }
    if let Some(file) = OVMF_COMBINED.iter().map(Path::new).find(|p| exists(p)) {
        return Ok(Ovmf::Combined(file.into()));
    }
    let tried: Vec<String> = OVMF_SPLIT
        .iter()
        .map(|(code, vars)| format!("  {code} + {vars}"))
        .chain(OVMF_COMBINED.iter().map(|f| format!("  {f}")))
        .collect();
    bail!(
        "uefi = true, but no OVMF firmware was found; tried:\n{}\n\
         install it (Debian/Ubuntu: apt install ovmf; Fedora: dnf install edk2-ovmf; \
         Arch: pacman -S edk2-ovmf) or set vm.bios to an OVMF file",
        tried.join("\n")
    )
}

/// Loads 9p in the guest and checks for it before the first mount, so that
/// a kernel without it fails with a message saying what the image lacks
/// instead of a bare "unknown filesystem type".
const CHECK_9P: &str = "modprobe -q 9p 2>/dev/null; modprobe -q 9pnet_virtio 2>/dev/null; \
grep -qw 9p /proc/filesystems || { echo 'the guest kernel has no 9p filesystem: the image needs \
the 9p modules (9p, 9pnet_virtio) for vmtest to share directories with it' >&2; exit 1; }";

/// The programs the guest agent runs before the command: check for 9p and
/// mount the config directory at /mnt/vmtest (read-write), then each
/// `vm.mounts` entry (read-only unless writable), creating the mount points.
/// (Each step is a process spawned through the agent: seconds under TCG.)
pub fn setup_steps(mounts: &[Mount]) -> Vec<SetupStep> {
    let sh = |what: String, script: String| SetupStep {
        what,
        path: "/bin/sh".into(),
        args: vec!["-c".into(), script],
    };
    let mount = |tag: &str, guest: &str, writable: bool| {
        let guest = shell_quote(guest);
        format!(
            "mkdir -p {guest} && mount -t 9p -o {} {tag} {guest}",
            ninep_options(writable, false)
        )
    };
    let share = format!("{CHECK_9P}\n{}", mount(SHARE_TAG, GUEST_SHARE, true));
    let mut steps = vec![sh(format!("mounting {GUEST_SHARE}"), share)];
    for (index, m) in mounts.iter().enumerate() {
        steps.push(sh(
            format!("mounting {}", m.guest_path),
            mount(&crate::guest::mount_tag(index), &m.guest_path, m.writable),
        ));
    }
    steps
}

/// The target's own variables and a PATH that fits a Linux guest; nothing
/// from the host.
pub fn target_env_only(target: &Target) -> Vec<String> {
    let mut env = target.env.clone();
    env.entry("PATH".into()).or_insert_with(|| GUEST_PATH.into());
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

#[cfg(test)]
#[path = "image_tests.rs"]
mod tests;
