//! The validated configuration: the list of targets vmtest runs.
//!
//! This module owns the `vmtest.toml` format (the raw serde structs, which
//! reject unknown keys) and turns it into typed [`Target`]s with absolute
//! paths. Parsing is a pure function of the file's text and its directory, so
//! it never touches the disk; whether the kernel or image actually exists is
//! checked when the target runs, where a missing file is that target's
//! failure rather than a config error. The one-liner (`-k`) builds its target
//! here too, from [`OneLiner`].
//!
//! The folder holds the path from the command line to that list: the raw
//! flags (`cli`), `--partition` (`partition`) and `--list` (`listing`).

pub mod cli;
pub mod debug;
pub mod listing;
pub mod log_path;
pub mod partition;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::config::debug::GdbStub;
use crate::config::debug::{SplatPolicy, check_splat_pattern};
use crate::config::log_path::LogPath;

/// Default number of virtual CPUs.
pub const DEFAULT_NUM_CPUS: u32 = 2;
/// Default guest memory, in QEMU `-m` syntax.
pub const DEFAULT_MEMORY: &str = "4G";
/// Architectures vmtest knows how to boot.
pub const KNOWN_ARCHES: &[&str] = &["x86_64", "aarch64", "riscv64", "s390x"];

/// One thing to run: a command inside a VM.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub name: String,
    pub kind: Kind,
    /// Run by `bash -c` in the guest.
    pub command: String,
    pub arch: String,
    /// The QEMU binary: a path or a name looked up on PATH.
    pub qemu_command: String,
    /// The `-cpu` value used under KVM.
    pub kvm_cpu_args: String,
    pub vm: VmConfig,
    /// Host directory shared read-write at `/mnt/vmtest`.
    pub share_dir: PathBuf,
    /// Host directory the command starts in.
    pub workdir: PathBuf,
    /// Extra environment variables for the command.
    pub env: BTreeMap<String, String>,
    /// Seconds the command may run, if limited.
    pub timeout: Option<u64>,
    /// Seconds until the guest agent must answer; a default applies if unset.
    pub boot_timeout: Option<u64>,
    /// Where the guest's serial console is kept.
    pub console_log: LogPath,
    /// Kernel targets: the kernel's modules directory, if not in the rootfs.
    pub modules: Option<PathBuf>,
    /// What a kernel splat on the console does to the target.
    pub kernel_splats: SplatPolicy,
    /// Regular expressions for known splats, which are not held against it.
    pub kernel_splat_allow: Vec<String>,
    /// Keep the guest's memory as a vmcore when its kernel panics.
    pub dump_on_panic: bool,
    /// QEMU's gdb stub (`--gdb`); the timeouts are off while it is on.
    pub gdb: Option<GdbStub>,
}

/// What the VM boots.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A kernel booted on a 9p root shared from the host.
    Kernel {
        kernel: PathBuf,
        kernel_args: Option<String>,
        rootfs: PathBuf,
    },
    /// A disk image with its own bootloader, kernel and guest agent.
    Image {
        image: PathBuf,
        uefi: bool,
        /// Restore a saved state instead of booting, when there is one
        /// (`warm.rs`).
        warm_start: bool,
    },
}

impl Kind {
    pub fn label(&self) -> &'static str {
        match self {
            Kind::Kernel { .. } => "kernel",
            Kind::Image { .. } => "image",
        }
    }
}

/// The `[target.vm]` table, with defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct VmConfig {
    pub num_cpus: u32,
    pub memory: String,
    pub bios: Option<PathBuf>,
    pub extra_args: Vec<String>,
    pub mounts: Vec<Mount>,
    /// How the shared directories reach the guest (`vm.share`).
    pub share: crate::launch::share::Mode,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            num_cpus: DEFAULT_NUM_CPUS,
            memory: DEFAULT_MEMORY.to_string(),
            bios: None,
            extra_args: Vec::new(),
            mounts: Vec::new(),
            share: Default::default(),
        }
    }
}

/// A host directory shared into the guest.
#[derive(Debug, Clone, PartialEq)]
pub struct Mount {
    pub guest_path: String,
    pub host_path: PathBuf,
    pub writable: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    /// Targets run at once, unless `-j` says otherwise.
    jobs: Option<usize>,
    #[serde(default)]
    target: Vec<RawTarget>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    name: String,
    kernel: Option<PathBuf>,
    image: Option<PathBuf>,
    command: String,
    kernel_args: Option<String>,
    rootfs: Option<PathBuf>,
    modules: Option<PathBuf>,
    arch: Option<String>,
    qemu_command: Option<String>,
    kvm_cpu_args: Option<String>,
    uefi: Option<bool>,
    warm_start: Option<bool>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    timeout: Option<u64>,
    boot_timeout: Option<u64>,
    kernel_splats: Option<SplatPolicy>,
    #[serde(default)]
    kernel_splat_allow: Vec<String>,
    #[serde(default)]
    dump_on_panic: bool,
    #[serde(default)]
    vm: RawVm,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawVm {
    num_cpus: Option<u32>,
    memory: Option<String>,
    bios: Option<PathBuf>,
    #[serde(default)]
    extra_args: Vec<String>,
    #[serde(default)]
    mounts: BTreeMap<String, RawMount>,
    #[serde(default)]
    share: crate::launch::share::Mode,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMount {
    host_path: PathBuf,
    #[serde(default)]
    writable: bool,
}

/// Parses a config file's text. `file` names it in errors; relative paths are
/// resolved against `base_dir`, which is also the shared directory and the
/// command's working directory.
#[cfg(test)]
pub fn parse(text: &str, file: &Path, base_dir: &Path) -> Result<Vec<Target>> {
    parse_file(text, file, base_dir).map(|(targets, _)| targets)
}

/// [`parse`], and the file's `jobs` setting (how many targets run at once).
pub fn parse_file(text: &str, file: &Path, base_dir: &Path) -> Result<(Vec<Target>, Option<usize>)> {
    let raw: RawFile = toml::from_str(text).map_err(|e| describe_toml_error(text, file, &e))?;
    if raw.jobs == Some(0) {
        bail!("{}: field 'jobs' must be at least 1", file.display());
    }
    if raw.target.is_empty() {
        bail!(
            "{}: no targets: add at least one [[target]] table (see vmtest.toml.example)",
            file.display()
        );
    }
    let mut targets: Vec<Target> = Vec::with_capacity(raw.target.len());
    for (index, raw_target) in raw.target.into_iter().enumerate() {
        let target =
            validate(raw_target, base_dir).with_context(|| format!("{}: target #{}", file.display(), index + 1))?;
        if targets.iter().any(|t| t.name == target.name) {
            bail!(
                "{}: target '{}': name used twice; names must be unique",
                file.display(),
                target.name
            );
        }
        if let Some(other) = targets.iter().find(|t| t.console_log == target.console_log) {
            bail!(
                "{}: targets '{}' and '{}' would share the console log {}; rename one",
                file.display(),
                other.name,
                target.name,
                target.console_log.path().display()
            );
        }
        targets.push(target);
    }
    Ok((targets, raw.jobs))
}

/// Turns a TOML or schema error into one line naming the file, the line, the
/// target (when the error sits inside one) and serde's description, which
/// names the key.
fn describe_toml_error(text: &str, file: &Path, err: &toml::de::Error) -> anyhow::Error {
    let message = err.message().trim_end();
    let Some(span) = err.span() else {
        return anyhow::anyhow!("{}: {message}", file.display());
    };
    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
    match target_name_at(text, span.start) {
        Some(name) => anyhow::anyhow!("{}:{line}: target '{name}': {message}", file.display()),
        None => anyhow::anyhow!("{}:{line}: {message}", file.display()),
    }
}

/// The name of the `[[target]]` whose table contains byte `offset`, found by
/// counting table headers before it and reading that target's `name` from a
/// schema-less parse.
fn target_name_at(text: &str, offset: usize) -> Option<String> {
    // Up to the end of the error's line: a missing field points at the header.
    let offset = offset.min(text.len());
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let before = &text[..line_end];
    let index = before
        .lines()
        .filter(|l| l.trim_start().starts_with("[[target]]"))
        .count()
        .checked_sub(1)?;
    let table: toml::Table = text.parse().ok()?;
    let target = table.get("target")?.as_array()?.get(index)?;
    Some(target.get("name")?.as_str()?.to_string())
}

fn validate(raw: RawTarget, base_dir: &Path) -> Result<Target> {
    let name = raw.name.trim().to_string();
    if name.is_empty() {
        bail!("field 'name' must not be empty");
    }
    let ctx = |field: &str, problem: String| anyhow::anyhow!("target '{name}': field '{field}': {problem}");
    if raw.command.trim().is_empty() {
        return Err(ctx("command", "must not be empty".into()));
    }
    let kind = match (raw.kernel, raw.image) {
        (Some(_), Some(_)) => {
            bail!("target '{name}': set either 'kernel' or 'image', not both")
        }
        (None, None) => bail!("target '{name}': set 'kernel' (a kernel to boot) or 'image' (a disk image)"),
        (Some(kernel), None) => {
            if raw.uefi.is_some() {
                return Err(ctx("uefi", "only applies to image targets".into()));
            }
            if raw.warm_start.is_some() {
                return Err(ctx("warm_start", "only applies to image targets".into()));
            }
            Kind::Kernel {
                kernel: resolve(base_dir, &kernel),
                kernel_args: raw.kernel_args,
                rootfs: raw.rootfs.map_or_else(|| PathBuf::from("/"), |r| resolve(base_dir, &r)),
            }
        }
        (None, Some(image)) => {
            if raw.kernel_args.is_some() {
                return Err(ctx("kernel_args", "only applies to kernel targets".into()));
            }
            if raw.rootfs.is_some() {
                return Err(ctx("rootfs", "only applies to kernel targets".into()));
            }
            if raw.modules.is_some() {
                return Err(ctx("modules", "only applies to kernel targets".into()));
            }
            Kind::Image {
                image: resolve(base_dir, &image),
                uefi: raw.uefi.unwrap_or(false),
                warm_start: raw.warm_start.unwrap_or(true),
            }
        }
    };
    let arch = match raw.arch {
        Some(arch) => {
            check_arch(&arch).map_err(|e| ctx("arch", e.to_string()))?;
            arch
        }
        None => host_arch().to_string(),
    };
    let vm = validate_vm(raw.vm, base_dir).map_err(|e| anyhow::anyhow!("target '{name}': {e}"))?;
    for key in raw.env.keys() {
        if key.is_empty() || key.contains('=') {
            return Err(ctx("env", format!("'{key}' is not a valid variable name")));
        }
    }
    if raw.timeout == Some(0) {
        return Err(ctx("timeout", "must be at least 1 second".into()));
    }
    if raw.boot_timeout == Some(0) {
        return Err(ctx("boot_timeout", "must be at least 1 second".into()));
    }
    for pattern in &raw.kernel_splat_allow {
        check_splat_pattern(pattern).map_err(|e| {
            ctx(
                "kernel_splat_allow",
                format!("'{pattern}' is not a regular expression: {e}"),
            )
        })?;
    }
    Ok(Target {
        console_log: LogPath::in_share(base_dir, &name),
        modules: raw.modules.map(|m| resolve(base_dir, &m)),
        qemu_command: match raw.qemu_command {
            // A path (not a bare name looked up on PATH) is relative to the file.
            Some(cmd) if cmd.contains('/') => resolve(base_dir, Path::new(&cmd)).to_string_lossy().into_owned(),
            Some(cmd) => cmd,
            None => format!("qemu-system-{arch}"),
        },
        kvm_cpu_args: raw.kvm_cpu_args.unwrap_or_else(|| "host".to_string()),
        name,
        kind,
        command: raw.command,
        arch,
        vm,
        share_dir: base_dir.to_path_buf(),
        workdir: base_dir.to_path_buf(),
        env: raw.env,
        timeout: raw.timeout,
        boot_timeout: raw.boot_timeout,
        kernel_splats: raw.kernel_splats.unwrap_or_default(),
        kernel_splat_allow: raw.kernel_splat_allow,
        dump_on_panic: raw.dump_on_panic,
        gdb: None,
    })
}

/// The most `vm.mounts` a target may have: with its other devices (the
/// serial ports' controller, the root, `/mnt/vmtest`, a modules share or a
/// disk) they fill 28 of the 30 slots of QEMU's PCI root bus, leaving two
/// for `extra_args`.
pub const MAX_MOUNTS: usize = 24;

fn validate_vm(raw: RawVm, base_dir: &Path) -> Result<VmConfig> {
    let num_cpus = raw.num_cpus.unwrap_or(DEFAULT_NUM_CPUS);
    if num_cpus == 0 {
        bail!("field 'vm.num_cpus' must be at least 1");
    }
    let memory = raw.memory.unwrap_or_else(|| DEFAULT_MEMORY.to_string());
    if !is_qemu_size(&memory) {
        bail!("field 'vm.memory': '{memory}' is not a size like 512M or 4G");
    }
    if raw.mounts.len() > MAX_MOUNTS {
        bail!(
            "field 'vm.mounts': {} entries, at most {MAX_MOUNTS}: each is a PCI device, and QEMU's PCI root bus \
             has 30 slots for all of a VM's devices; share a common parent directory instead",
            raw.mounts.len()
        );
    }
    let mut mounts: Vec<Mount> = Vec::with_capacity(raw.mounts.len());
    for (raw_path, mount) in raw.mounts {
        let guest_path = guest_mount_path(&raw_path).map_err(|e| anyhow::anyhow!("field 'vm.mounts': {e}"))?;
        if mounts.iter().any(|m| m.guest_path == guest_path) {
            bail!("field 'vm.mounts': '{raw_path}' is {guest_path}, which is mounted twice");
        }
        mounts.push(Mount {
            host_path: resolve(base_dir, &mount.host_path),
            guest_path,
            writable: mount.writable,
        });
    }
    Ok(VmConfig {
        num_cpus,
        memory,
        bios: raw.bios.map(|b| resolve(base_dir, &b)),
        extra_args: raw.extra_args,
        mounts,
        share: raw.share,
    })
}

/// A mount's guest path, checked and in canonical form: absolute, no `..`,
/// no empty or `.` components (`/mnt//a/./b/` is `/mnt/a/b`), not `/`, not
/// `/mnt` or `/mnt/vmtest` or below it (where vmtest mounts the share), and
/// without characters a shell gives meaning to even inside quotes or that
/// end a line: the path is passed to the guest's shell by the generated init
/// and an image's setup steps.
fn guest_mount_path(raw: &str) -> Result<String> {
    if !raw.starts_with('/') {
        bail!("guest path '{raw}' must be an absolute path below /");
    }
    if let Some(c) = raw.chars().find(|&c| c.is_control() || "'\"\\$`".contains(c)) {
        bail!("guest path {raw:?}: {c:?} is not allowed in a mount path (the guest's shell would see it)");
    }
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => bail!("guest path '{raw}': '..' is not allowed in a mount path"),
            part => parts.push(part),
        }
    }
    let path = format!("/{}", parts.join("/"));
    match path.as_str() {
        "/" => bail!("guest path '{raw}' must be an absolute path below /"),
        "/mnt" => bail!("'{raw}' would hide /mnt/vmtest, where vmtest shares the config directory; mount below /mnt"),
        p if p == "/mnt/vmtest" || p.starts_with("/mnt/vmtest/") => {
            bail!("'{raw}' is where vmtest shares the config directory")
        }
        _ => Ok(path),
    }
}

/// Whether `s` is a size QEMU's `-m` accepts: digits with an optional unit.
fn is_qemu_size(s: &str) -> bool {
    let digits = s.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G', 't', 'T']);
    let unit_len = s.len() - digits.len();
    !digits.is_empty() && unit_len <= 1 && digits.bytes().all(|b| b.is_ascii_digit())
}

fn check_arch(arch: &str) -> Result<()> {
    if KNOWN_ARCHES.contains(&arch) {
        Ok(())
    } else {
        bail!(
            "unknown architecture '{arch}'; expected one of {}",
            KNOWN_ARCHES.join(", ")
        )
    }
}

/// The host's architecture, in QEMU's naming.
pub fn host_arch() -> &'static str {
    std::env::consts::ARCH
}

/// Joins a relative path onto `base`; absolute paths stay as they are.
pub fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// The one-liner: `vmtest -k KERNEL [options] COMMAND...`.
#[derive(Debug, Clone, Default)]
pub struct OneLiner {
    pub kernel: PathBuf,
    pub rootfs: Option<PathBuf>,
    /// The kernel's modules directory (`--modules`).
    pub modules: Option<PathBuf>,
    pub arch: Option<String>,
    pub kernel_args: Option<String>,
    pub qemu_command: Option<String>,
    pub command: String,
}

/// Builds the one-liner's target. `cwd` is the shared directory, the working
/// directory and the base for relative paths.
pub fn one_liner(args: OneLiner, cwd: &Path) -> Result<Target> {
    if args.command.trim().is_empty() {
        bail!("no command given: put the command after the options, e.g. vmtest -k bzImage uname -r");
    }
    let arch = match args.arch {
        Some(arch) => {
            check_arch(&arch).context("--arch")?;
            arch
        }
        None => host_arch().to_string(),
    };
    let name = args.kernel.file_name().map_or_else(
        || args.kernel.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    Ok(Target {
        console_log: LogPath::in_share(cwd, &name),
        modules: args.modules.map(|m| resolve(cwd, &m)),
        name,
        kind: Kind::Kernel {
            kernel: resolve(cwd, &args.kernel),
            kernel_args: args.kernel_args,
            rootfs: args.rootfs.map_or_else(|| PathBuf::from("/"), |r| resolve(cwd, &r)),
        },
        command: args.command,
        qemu_command: args.qemu_command.unwrap_or_else(|| format!("qemu-system-{arch}")),
        arch,
        kvm_cpu_args: "host".to_string(),
        vm: VmConfig::default(),
        share_dir: cwd.to_path_buf(),
        workdir: cwd.to_path_buf(),
        env: BTreeMap::new(),
        timeout: None,
        boot_timeout: None,
        kernel_splats: SplatPolicy::default(),
        kernel_splat_allow: Vec::new(),
        dump_on_panic: false,
        gdb: None,
    })
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
