//! How the host's directories reach the guest: virtiofs or 9p.
//!
//! `vm.share` (`auto`, `virtiofs`, `9p`) and what the host and the guest
//! kernel offer decide, per target, whether the shared directories (a
//! kernel target's root, `/mnt/vmtest`, `vm.mounts`) go over virtiofs,
//! which caches metadata in the guest and is several times faster for
//! file-heavy work, or over 9p. `auto` takes virtiofs when `virtiofsd` is
//! found and the guest can mount it, else 9p with one info line saying why;
//! a forced `virtiofs` that cannot work is an error. This module decides
//! and rewrites the 9p parts of a launch (kernel command line, the init's
//! mounts, an image's mount steps); `virtiofs.rs` runs the daemons. A
//! kernel's modules directory outside its rootfs stays on 9p.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use serde::Deserialize;

use crate::config::{Mount, Target};
use crate::guest::{InitPlan, MountStep, ROOT_TAG, SHARE_TAG, mount_tag};
use crate::launch::SetupStep;
use crate::quote::shell_quote;
use crate::vm::qemu;
use crate::vm::virtiofs::{self, Daemons, Export};

/// The `vm.share` setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Mode {
    /// virtiofs where it works, else 9p.
    #[default]
    #[serde(rename = "auto")]
    Auto,
    #[serde(rename = "virtiofs")]
    Virtiofs,
    #[serde(rename = "9p")]
    NineP,
}

/// Whether a kernel can mount virtiofs without an initramfs's help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSupport {
    /// CONFIG_FUSE_FS and CONFIG_VIRTIO_FS built in.
    BuiltIn,
    /// Either is missing or a module (the file that says so).
    Lacking(PathBuf),
    /// Neither a config nor a modules list was found.
    Unknown,
}

/// What carries the shared directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    NineP,
    /// virtiofs through this daemon.
    Virtiofs(PathBuf),
}

/// Architectures whose virtio devices are PCI, where `vhost-user-fs-pci` is.
fn pci_arch(arch: &str) -> bool {
    matches!(arch, "x86_64" | "aarch64" | "riscv64")
}

/// The most `vm.mounts` an image can share over virtiofs. Its guest falls
/// back to 9p by itself, so each share has a 9p device beside its virtiofs
/// device (or the port one is plugged into), and with the disk and the
/// serial ports' controller they must fit the 30 slots of QEMU's PCI root
/// bus: 2 + 2 × (1 + mounts) ≤ 30.
pub const MAX_IMAGE_VIRTIOFS_MOUNTS: usize = 13;

/// Decides the transport of a target from its mode, the daemon found and,
/// for kernel targets, what the kernel has (`None` for images, whose guest
/// falls back to 9p by itself). Logs one info line when `auto` falls back.
pub fn choose(target: &Target, daemon: Option<PathBuf>, kernel: Option<&KernelSupport>) -> Result<Transport> {
    let mode = target.vm.share;
    if mode == Mode::NineP {
        return Ok(Transport::NineP);
    }
    let lacking = if !pci_arch(&target.arch) {
        Some(format!("vmtest has no virtiofs device for {}", target.arch))
    } else if kernel.is_none() && target.vm.mounts.len() > MAX_IMAGE_VIRTIOFS_MOUNTS {
        Some(format!(
            "an image with more than {MAX_IMAGE_VIRTIOFS_MOUNTS} vm.mounts ({}) has no room on QEMU's PCI root bus \
             for a virtiofs device beside the 9p device of each share",
            target.vm.mounts.len()
        ))
    } else if daemon.is_none() {
        Some(format!(
            "no virtiofsd found (on PATH, /usr/libexec, or ${})",
            virtiofs::DAEMON_ENV
        ))
    } else {
        match kernel {
            Some(KernelSupport::Lacking(file)) => Some(format!(
                "the kernel lacks CONFIG_FUSE_FS=y and CONFIG_VIRTIO_FS=y built in (says {})",
                file.display()
            )),
            Some(KernelSupport::Unknown) if mode == Mode::Auto => {
                Some("no config or modules list tells whether the kernel has virtiofs".into())
            }
            _ => None,
        }
    };
    match (lacking, daemon) {
        (None, Some(daemon)) => Ok(Transport::Virtiofs(daemon)),
        (Some(why), _) if mode == Mode::Auto => {
            log::info!("target '{}': sharing directories over 9p: {why}", target.name);
            Ok(Transport::NineP)
        }
        (Some(why), _) => bail!("vm.share = \"virtiofs\": {why}; set vm.share = \"auto\" or \"9p\""),
        (None, None) => unreachable!("a missing daemon is a reason"),
    }
}

/// Whether `kernel` has virtiofs built in: its config (as `modules.rs`
/// looks for it: the build tree's `.config`, `config-RELEASE` or `config`
/// beside the image, the rootfs's `/boot/config-RELEASE`), else its
/// `modules.builtin`.
pub fn kernel_support(kernel: &Path, release: Option<&str>, rootfs: &Path, modules: Option<&Path>) -> KernelSupport {
    let mut configs: Vec<PathBuf> = kernel
        .ancestors()
        .skip(1)
        .take(4)
        .filter(|d| d.join("Makefile").is_file() && d.join("Kconfig").is_file())
        .map(|d| d.join(".config"))
        .collect();
    let beside = kernel.parent().unwrap_or(Path::new("/"));
    if let Some(release) = release {
        configs.push(beside.join(format!("config-{release}")));
        configs.push(rootfs.join("boot").join(format!("config-{release}")));
    }
    configs.push(beside.join("config"));
    for config in configs {
        let Ok(text) = std::fs::read_to_string(&config) else {
            continue;
        };
        if !text.contains("CONFIG_") {
            continue;
        }
        let built_in = |symbol: &str| text.lines().any(|l| l == format!("{symbol}=y"));
        return match built_in("CONFIG_FUSE_FS") && built_in("CONFIG_VIRTIO_FS") {
            true => KernelSupport::BuiltIn,
            false => KernelSupport::Lacking(config),
        };
    }
    if let Some(dir) = modules {
        let list = dir.join("modules.builtin");
        if let Ok(text) = std::fs::read_to_string(&list) {
            let has = |name: &str| text.lines().any(|l| l.ends_with(name));
            return match has("/fuse.ko") && has("/virtiofs.ko") {
                true => KernelSupport::BuiltIn,
                false => KernelSupport::Lacking(list),
            };
        }
    }
    KernelSupport::Unknown
}

/// The directories a target shares: a kernel target's root (`Some`, with
/// whether it is writable), `/mnt/vmtest`, and the `vm.mounts`. The root
/// keeps its cache for the whole run (programs and libraries are read once,
/// not at every exec) unless it is the project directory itself; the
/// project directory is then seen through `/mnt/vmtest`'s coherent export
/// (see [`project_mount`]), as are the `vm.mounts`.
pub fn exports(target: &Target, root: Option<(&Path, bool)>) -> Vec<Export> {
    let root = root.map(|(path, writable)| Export {
        tag: ROOT_TAG.into(),
        host_path: path.into(),
        writable,
        cached: path != target.share_dir,
    });
    let share = Export {
        tag: SHARE_TAG.into(),
        host_path: target.share_dir.clone(),
        writable: true,
        cached: false,
    };
    let mounts = target.vm.mounts.iter().enumerate().map(|(i, m)| Export {
        tag: mount_tag(i),
        host_path: m.host_path.clone(),
        writable: m.writable,
        cached: false,
    });
    root.into_iter().chain([share]).chain(mounts).collect()
}

/// Starts the daemons of `exports` (sockets in `dir`). An image keeps the
/// 9p devices in QEMU's argv beside theirs, for its guest to fall back to;
/// a kernel target leaves them out (`qemu::BootExtras::virtiofs`).
pub fn start(daemon: &Path, exports: &[Export], dir: &Path) -> Result<Daemons> {
    Daemons::start(daemon, exports, dir)
}

/// The kernel command line with the root on virtiofs instead of 9p.
pub fn virtiofs_cmdline(cmdline: &str) -> String {
    cmdline.replacen(&qemu::ninep_root_args(), "rootfstype=virtiofs", 1)
}

/// Turns the init's 9p mounts of `/mnt/vmtest` and the `vm.mounts` into
/// virtiofs mounts of the same tags (the modules share stays 9p), and adds
/// `project`, if any, right after `/mnt/vmtest` (before the `vm.mounts`,
/// which may lie inside it).
pub fn virtiofs_plan(plan: &mut InitPlan, mounts: &[Mount], project: Option<MountStep>) {
    let tags: Vec<String> = std::iter::once(SHARE_TAG.to_string())
        .chain((0..mounts.len()).map(mount_tag))
        .collect();
    for step in plan
        .mounts
        .iter_mut()
        .filter(|s| s.fstype == "9p" && tags.contains(&s.source))
    {
        *step = MountStep {
            fstype: "virtiofs".into(),
            options: mode_word(&step.options).into(),
            ..step.clone()
        };
    }
    if let Some(project) = project {
        let after = plan
            .mounts
            .iter()
            .position(|s| s.source == SHARE_TAG)
            .map_or(0, |i| i + 1);
        plan.mounts.insert(after, project);
    }
}

/// Over virtiofs, the project directory at its own path in a kernel
/// target's guest when it lies inside the (cached) rootfs: the export of
/// `/mnt/vmtest` mounted there too, so the command's working directory
/// sees the host's changes within a second, like `/mnt/vmtest`. Read-only
/// when the root is. `None` when the project directory is the rootfs (the
/// root export is then the coherent one) or lies outside it.
pub fn project_mount(target: &Target, rootfs: &Path) -> Option<MountStep> {
    let guest = crate::guest::guest_path_in_rootfs(rootfs, &target.share_dir).filter(|p| p != "/")?;
    let mode = if qemu::root_read_only(target) { "ro" } else { "rw" };
    Some(MountStep {
        source: SHARE_TAG.into(),
        // Under the guest's own tmpfs mounts the host's directory is hidden;
        // a mount point made there touches nothing on the host.
        mkdir: ["/mnt/", "/run/"].iter().any(|t| guest.starts_with(t)),
        target: guest,
        fstype: "virtiofs".into(),
        options: mode.into(),
        when: crate::guest::When::Always,
        on_failure: crate::guest::OnFailure::Warn,
    })
}

/// `ro` or `rw`, from a mount's options.
fn mode_word(options: &str) -> &'static str {
    match options.split(',').any(|w| w == "ro") {
        true => "ro",
        false => "rw",
    }
}

/// What an image's mount step prints when its guest could not mount
/// virtiofs and used 9p instead.
pub const FALLBACK_WORD: &str = "vmtest-share-fell-back-to-9p";

/// How long an image's guest waits for a device plugged in after the boot
/// (see `image.rs`) to appear before it falls back to 9p. It takes well
/// under a second under TCG.
const PLUGGED_WAIT_SECS: u32 = 15;

/// An image's mount steps over virtiofs: each tries virtiofs (loading the
/// module first; with `plugged` devices, until the device has appeared) and,
/// if the guest cannot, prints [`FALLBACK_WORD`] and runs the 9p step it
/// replaces.
pub fn virtiofs_setup(ninep: Vec<SetupStep>, mounts: &[Mount], plugged: bool) -> Vec<SetupStep> {
    let targets = std::iter::once((SHARE_TAG.to_string(), crate::guest::GUEST_SHARE.to_string(), true)).chain(
        mounts
            .iter()
            .enumerate()
            .map(|(i, m)| (mount_tag(i), m.guest_path.clone(), m.writable)),
    );
    ninep
        .into_iter()
        .zip(targets)
        .map(|(step, (tag, guest, writable))| {
            let ninep_script = step.args.last().cloned().unwrap_or_default();
            let mode = if writable { "rw" } else { "ro" };
            let guest = shell_quote(&guest);
            let mount = format!("mount -t virtiofs -o {mode} {tag} {guest}");
            let mount = match plugged {
                false => mount,
                true => format!(
                    "{{ ok=; t=$(($(date +%s) + {PLUGGED_WAIT_SECS})); while :; do \
                     if {mount} 2>/dev/null; then ok=1; break; fi; \
                     [ \"$(date +%s)\" -lt \"$t\" ] || break; sleep 0.05; done; [ -n \"$ok\" ]; }}"
                ),
            };
            let script = format!(
                "modprobe -q virtiofs 2>/dev/null; mkdir -p {guest} && \
                 if grep -qw virtiofs /proc/filesystems && {mount}; then :; \
                 else echo {FALLBACK_WORD}\n{ninep_script}\nfi"
            );
            SetupStep {
                args: vec!["-c".into(), script],
                ..step
            }
        })
        .collect()
}

/// Logs (once per target) that an image's guest fell back to 9p, when a
/// mount step's output says so.
pub fn note_setup_output(target: &str, stdout: &[u8], noted: &mut bool) {
    if !*noted && memchr::memmem::find(stdout, FALLBACK_WORD.as_bytes()).is_some() {
        *noted = true;
        log::info!("target '{target}': sharing directories over 9p: the guest cannot mount virtiofs");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{OneLiner, one_liner};

    fn target(share: Mode, arch: &str) -> Target {
        let args = OneLiner {
            kernel: "bzImage".into(),
            command: "true".into(),
            arch: Some(arch.into()),
            ..Default::default()
        };
        let mut t = one_liner(args, Path::new("/work")).unwrap();
        t.vm.share = share;
        t
    }

    #[test]
    fn auto_takes_virtiofs_only_when_everything_is_there() {
        let d = || Some(PathBuf::from("/usr/bin/virtiofsd"));
        let t = target(Mode::Auto, "x86_64");
        let virtiofs = Transport::Virtiofs("/usr/bin/virtiofsd".into());
        assert_eq!(choose(&t, d(), Some(&KernelSupport::BuiltIn)).unwrap(), virtiofs);
        assert_eq!(choose(&t, d(), None).unwrap(), virtiofs);
        assert_eq!(
            choose(&t, None, Some(&KernelSupport::BuiltIn)).unwrap(),
            Transport::NineP
        );
        assert_eq!(
            choose(&t, d(), Some(&KernelSupport::Unknown)).unwrap(),
            Transport::NineP
        );
        let lacking = KernelSupport::Lacking("/boot/config-6.1".into());
        assert_eq!(choose(&t, d(), Some(&lacking)).unwrap(), Transport::NineP);
        assert_eq!(
            choose(&target(Mode::Auto, "s390x"), d(), None).unwrap(),
            Transport::NineP
        );
        let ninep = target(Mode::NineP, "x86_64");
        assert_eq!(
            choose(&ninep, d(), Some(&KernelSupport::BuiltIn)).unwrap(),
            Transport::NineP
        );
    }

    #[test]
    fn an_image_with_too_many_mounts_for_the_root_bus_takes_9p() {
        let d = || Some(PathBuf::from("/usr/bin/virtiofsd"));
        let mut t = target(Mode::Auto, "x86_64");
        let mount = |i: usize| Mount {
            guest_path: format!("/mnt/m{i}"),
            host_path: "/srv".into(),
            writable: false,
        };
        t.vm.mounts = (0..MAX_IMAGE_VIRTIOFS_MOUNTS).map(mount).collect();
        assert!(matches!(choose(&t, d(), None).unwrap(), Transport::Virtiofs(_)));
        t.vm.mounts.push(mount(99));
        assert_eq!(choose(&t, d(), None).unwrap(), Transport::NineP);
        // A kernel target has no 9p devices beside its virtiofs ones.
        assert!(matches!(
            choose(&t, d(), Some(&KernelSupport::BuiltIn)).unwrap(),
            Transport::Virtiofs(_)
        ));
        t.vm.share = Mode::Virtiofs;
        let err = choose(&t, d(), None).unwrap_err().to_string();
        assert!(
            err.contains("an image with more than 13 vm.mounts (14) has no room on QEMU's PCI root bus"),
            "{err}"
        );
    }

    #[test]
    fn forced_virtiofs_fails_saying_why_or_trusts_an_unknown_kernel() {
        let d = || Some(PathBuf::from("/usr/bin/virtiofsd"));
        let t = target(Mode::Virtiofs, "x86_64");
        let err = choose(&t, None, Some(&KernelSupport::BuiltIn)).unwrap_err().to_string();
        assert!(err.starts_with("vm.share = \"virtiofs\": no virtiofsd found"), "{err}");
        let lacking = KernelSupport::Lacking("/boot/config-6.1".into());
        let err = choose(&t, d(), Some(&lacking)).unwrap_err().to_string();
        assert!(err.contains("(says /boot/config-6.1)"), "{err}");
        assert!(matches!(
            choose(&t, d(), Some(&KernelSupport::Unknown)).unwrap(),
            Transport::Virtiofs(_)
        ));
    }

    #[test]
    fn kernel_support_reads_the_config_beside_the_kernel_or_modules_builtin() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("bzImage");
        let config = dir.path().join("config");
        assert_eq!(kernel_support(&kernel, None, dir.path(), None), KernelSupport::Unknown);
        std::fs::write(&config, "CONFIG_FUSE_FS=y\nCONFIG_VIRTIO_FS=y\n").unwrap();
        assert_eq!(kernel_support(&kernel, None, dir.path(), None), KernelSupport::BuiltIn);
        std::fs::write(&config, "CONFIG_FUSE_FS=m\nCONFIG_VIRTIO_FS=m\n").unwrap();
        assert_eq!(
            kernel_support(&kernel, None, dir.path(), None),
            KernelSupport::Lacking(config.clone())
        );
        std::fs::remove_file(&config).unwrap();
        let modules = dir.path().join("modules");
        std::fs::create_dir(&modules).unwrap();
        std::fs::write(
            modules.join("modules.builtin"),
            "kernel/fs/fuse/fuse.ko\nkernel/fs/fuse/virtiofs.ko\n",
        )
        .unwrap();
        assert_eq!(
            kernel_support(&kernel, Some("6.1"), dir.path(), Some(&modules)),
            KernelSupport::BuiltIn
        );
    }

    #[test]
    fn the_cmdline_and_the_plan_move_to_virtiofs() {
        let line = qemu::kernel_cmdline("x86_64", "/init", Some("ro"), None);
        assert_eq!(
            virtiofs_cmdline(&line),
            "console=ttyS0 root=vmtest_root rootfstype=virtiofs rw init=/init panic=-1 ro"
        );
        let mounts = vec![Mount {
            guest_path: "/data".into(),
            host_path: "/srv/data".into(),
            writable: false,
        }];
        let mut plan = crate::guest::init_plan("/usr/bin/qemu-ga", &mounts, "m");
        plan.mounts.extend(crate::guest::modules_mounts("6.1"));
        let project = project_mount(&target(Mode::Auto, "x86_64"), Path::new("/"));
        virtiofs_plan(&mut plan, &mounts, project);
        let shares: Vec<(&str, &str, &str, &str)> = plan
            .mounts
            .iter()
            .filter(|s| s.source.starts_with("vmtest_"))
            .map(|s| {
                (
                    s.source.as_str(),
                    s.target.as_str(),
                    s.fstype.as_str(),
                    s.options.as_str(),
                )
            })
            .collect();
        assert_eq!(
            shares,
            [
                ("vmtest_share", "/mnt/vmtest", "virtiofs", "rw"),
                ("vmtest_share", "/work", "virtiofs", "rw"),
                ("vmtest_m0", "/data", "virtiofs", "ro"),
                (
                    "vmtest_modules",
                    "/lib/modules/6.1",
                    "9p",
                    &*crate::guest::ninep_options(false, true)
                ),
            ]
        );
    }

    /// The root keeps its cache unless it is the project directory, which
    /// is then mounted at its own path from its coherent export, read-only
    /// with a read-only root.
    #[test]
    fn the_project_stays_coherent_inside_a_cached_root() {
        let t = target(Mode::Auto, "x86_64");
        let cached = |rootfs: &str| -> Vec<bool> {
            exports(&t, Some((Path::new(rootfs), true)))
                .iter()
                .map(|e| e.cached)
                .collect()
        };
        assert_eq!(cached("/"), [true, false]);
        assert_eq!(cached("/work"), [false, false]);
        let at = |t: &Target, rootfs: &str| project_mount(t, Path::new(rootfs)).map(|m| (m.target, m.options, m.mkdir));
        assert_eq!(at(&t, "/"), Some(("/work".into(), "rw".into(), false)));
        assert_eq!(at(&t, "/work"), None);
        assert_eq!(at(&t, "/srv/rootfs"), None);
        let mut ro = t.clone();
        if let crate::config::Kind::Kernel { kernel_args, .. } = &mut ro.kind {
            *kernel_args = Some("quiet ro".into());
        }
        assert_eq!(at(&ro, "/"), Some(("/work".into(), "ro".into(), false)));
        let mut under_mnt = t.clone();
        under_mnt.share_dir = "/mnt/work".into();
        assert_eq!(at(&under_mnt, "/"), Some(("/mnt/work".into(), "rw".into(), true)));
        let mut nested = t;
        nested.share_dir = "/srv/rootfs/home/me".into();
        assert_eq!(
            at(&nested, "/srv/rootfs"),
            Some(("/home/me".into(), "rw".into(), false))
        );
    }

    #[test]
    fn image_steps_try_virtiofs_then_run_the_9p_step() {
        let mounts = vec![Mount {
            guest_path: "/data".into(),
            host_path: "/srv/data".into(),
            writable: false,
        }];
        let steps = virtiofs_setup(crate::launch::image::setup_steps(&mounts), &mounts, false);
        assert_eq!(steps.len(), 2);
        let script = &steps[1].args[1];
        assert!(
            script.starts_with(
                "modprobe -q virtiofs 2>/dev/null; mkdir -p '/data' && if grep -qw virtiofs /proc/filesystems \
                 && mount -t virtiofs -o ro vmtest_m0 '/data'; then :; else echo vmtest-share-fell-back-to-9p\n\
                 mkdir -p '/data' && mount -t 9p"
            ),
            "{script}"
        );
        let mut noted = false;
        note_setup_output("t", b"vmtest-share-fell-back-to-9p\n", &mut noted);
        assert!(noted);
    }

    /// The plugged-in device's mount is retried until it works, run by the
    /// host's `sh` with stand-ins for the guest's commands (`mount` works on
    /// its third call).
    #[test]
    fn a_plugged_device_is_waited_for_then_mounted() {
        let steps = virtiofs_setup(crate::launch::image::setup_steps(&[]), &[], true);
        let dir = tempfile::tempdir().unwrap();
        let calls = dir.path().join("calls");
        let prelude = format!(
            "modprobe() {{ :; }}; mkdir() {{ :; }}; grep() {{ :; }}; \
             mount() {{ echo \"$*\" >> '{0}'; [ $(wc -l < '{0}') -ge 3 ]; }}\n",
            calls.display()
        );
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("{prelude}{}", steps[0].args[1])])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "", "it fell back");
        let calls = std::fs::read_to_string(&calls).unwrap();
        assert_eq!(
            calls.lines().collect::<Vec<_>>(),
            ["-t virtiofs -o rw vmtest_share /mnt/vmtest"; 3]
        );
    }
}
