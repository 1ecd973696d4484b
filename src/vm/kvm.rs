//! Deciding between KVM and TCG.
//!
//! `/dev/kvm` existing does not mean QEMU can use it: under nested
//! virtualisation QEMU may abort at start (`-cpu host`: "failed to set MSR")
//! or start and then never run a guest instruction. So before the first VM
//! that could use KVM, vmtest boots a 64 KiB firmware whose reset vector
//! writes to QEMU's `isa-debug-exit` port: QEMU exits with status 3 within
//! milliseconds if and only if KVM really runs guest code with that CPU model.
//! Anything else (an abort, a hang past the deadline) means TCG, with the
//! reason for the caller to print as a warning. Only a definite verdict is
//! remembered (KVM ran the probe, or QEMU exited or aborted on its own); a
//! probe that timed out (a loaded host), was interrupted or was killed by
//! some other signal is asked again next run.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::vm::qemu::Accel;

/// How long a working KVM may take to run the probe firmware.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// QEMU's exit status when the probe writes 1 to `isa-debug-exit`: (1 << 1) | 1.
const PROBE_EXIT_STATUS: i32 = 3;

/// The decision and, for a fallback to TCG, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub accel: Accel,
    pub warning: Option<String>,
}

/// The KVM self-test's verdict for `qemu` and `cpu`: remembered from an
/// earlier run when that verdict was definite, else probed now.
fn self_test(qemu: &Path, cpu: &str) -> Probe {
    let cache = cache_file(qemu, cpu);
    let cached = cache.as_deref().and_then(|path| std::fs::read_to_string(path).ok());
    match cached {
        Some(cached) => {
            log::debug!(
                "KVM probe result from {}: {cached}",
                cache.as_deref().unwrap_or(Path::new("")).display()
            );
            match cached.strip_prefix("fail: ") {
                Some(reason) => Probe::Broken(reason.trim().to_string()),
                None => Probe::Works,
            }
        }
        None => {
            let started = Instant::now();
            let verdict = probe(qemu, cpu).unwrap_or_else(|e| Probe::Unsure(format!("{e:#}")));
            log::debug!("KVM probe took {:?}: {verdict:?}", started.elapsed());
            if let Some(path) = &cache {
                remember(path, &verdict);
            }
            verdict
        }
    }
}

/// Picks the accelerator for a guest of `arch` run by `qemu` with `cpu` as
/// its KVM CPU model.
pub fn choose(qemu: &Path, arch: &str, cpu: &str) -> Choice {
    let tcg = |warning: Option<String>| Choice {
        accel: Accel::Tcg,
        warning,
    };
    if arch != crate::config::host_arch() {
        return tcg(None);
    }
    if let Ok(value) = std::env::var("VMTEST_ACCEL") {
        match value.as_str() {
            "tcg" => return tcg(None),
            "kvm" => {
                return Choice {
                    accel: Accel::Kvm,
                    warning: None,
                };
            }
            _ => log::warn!("ignoring VMTEST_ACCEL={value}: expected kvm or tcg"),
        }
    }
    if !Path::new("/dev/kvm").exists() {
        log::debug!("no /dev/kvm: using TCG");
        return tcg(None);
    }
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        return tcg(Some(format!(
            "cannot open /dev/kvm ({e}); using TCG, which is much slower"
        )));
    }
    if arch != "x86_64" {
        // The probe firmware is x86 code; trust KVM elsewhere.
        return Choice {
            accel: Accel::Kvm,
            warning: None,
        };
    }
    let verdict = self_test(qemu, cpu);
    match verdict {
        Probe::Works => Choice {
            accel: Accel::Kvm,
            warning: None,
        },
        Probe::Broken(reason) | Probe::Unsure(reason) => tcg(Some(format!(
            "KVM is present but does not work here ({reason}); using TCG, which is much slower"
        ))),
    }
}

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Probe {
    /// KVM ran the probe's code.
    Works,
    /// QEMU exited or aborted by itself: KVM does not work with this CPU
    /// model, and will not while the host runs.
    Broken(String),
    /// No verdict (timed out, interrupted, killed from outside): use TCG
    /// this time, ask again next run.
    Unsure(String),
}

/// Writes a definite verdict to the cache atomically (a temporary file
/// renamed over the name), so a reader never sees half of it.
fn remember(path: &Path, verdict: &Probe) {
    let text = match verdict {
        Probe::Works => "ok\n".to_string(),
        Probe::Broken(reason) => format!("fail: {reason}\n"),
        Probe::Unsure(_) => return,
    };
    let _ = path.parent().map(std::fs::create_dir_all);
    if let Err(e) = crate::safe_fs::replace(path, text.as_bytes()) {
        log::debug!("cannot remember the KVM verdict in {}: {e}", path.display());
    }
}

/// Where the probe's verdict is remembered: per host boot (KVM does not come
/// and go while the machine runs), QEMU binary (path, size, mtime) and CPU
/// model, in the `kvm` cache directory. `qemu` is the binary's path as
/// `kernel::find_qemu` resolved it. `None` when there is no cache directory
/// or boot id: then vmtest probes every run.
fn cache_file(qemu: &Path, cpu: &str) -> Option<std::path::PathBuf> {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::MetadataExt;
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let meta = std::fs::metadata(qemu).ok()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (boot_id.trim(), qemu, meta.len(), meta.mtime(), meta.mtime_nsec(), cpu).hash(&mut hasher);
    Some(crate::vm::cache::dir("kvm")?.join(format!("{:016x}", hasher.finish())))
}

/// The probe firmware: 64 KiB of zeros whose last 16 bytes, where an x86 CPU
/// starts, hold `mov al, 1; out 0xf4, al; hlt; jmp hlt`.
fn probe_firmware() -> Vec<u8> {
    let mut image = vec![0u8; 64 * 1024];
    let code = [0xB0, 0x01, 0xE6, 0xF4, 0xF4, 0xEB, 0xFD];
    let reset = image.len() - 16;
    image[reset..reset + code.len()].copy_from_slice(&code);
    image
}

fn probe(qemu: &Path, cpu: &str) -> Result<Probe> {
    let dir = tempfile::Builder::new()
        .prefix("vmtest-kvm.")
        .tempdir()
        .context("creating a temporary directory")?;
    crate::vm::janitor::register(dir.path());
    let firmware = dir.path().join("probe.bin");
    std::fs::write(&firmware, probe_firmware()).context("writing the probe firmware")?;
    let mut command = Command::new(qemu);
    command
        .args(["-nodefaults", "-no-user-config", "-display", "none", "-machine", "pc"])
        .args(["-accel", "kvm", "-cpu", cpu, "-m", "16", "-bios"])
        .arg(&firmware)
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    crate::vm::die_with_parent(&mut command);
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {}", qemu.display()))?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        let interrupted = crate::interrupt::received().is_some();
        if interrupted || Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(Probe::Unsure(match interrupted {
                true => "the self-test was interrupted".to_string(),
                false => format!("a test guest ran no code within {}s", PROBE_TIMEOUT.as_secs()),
            }));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    if crate::interrupt::received().is_some() {
        return Ok(Probe::Unsure("the self-test was interrupted".to_string()));
    }
    Ok(judge(status, &stderr, cpu))
}

/// The verdict of a probe QEMU that ended with `status`: status 3 means KVM
/// ran the firmware; another exit code or an abort (QEMU's assertion
/// failures) is QEMU's own verdict; any other signal came from outside.
fn judge(status: ExitStatus, stderr: &str, cpu: &str) -> Probe {
    if status.code() == Some(PROBE_EXIT_STATUS) {
        return Probe::Works;
    }
    let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("no message");
    let reason = format!("QEMU with -cpu {cpu} failed: {}", first.trim());
    match status.signal() {
        None | Some(libc::SIGABRT) => Probe::Broken(reason),
        Some(signal) => Probe::Unsure(format!("QEMU with -cpu {cpu} was killed by signal {signal}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firmware_starts_at_the_reset_vector() {
        let image = probe_firmware();
        assert_eq!(image.len(), 65536);
        assert_eq!(&image[0xFFF0..0xFFF7], &[0xB0, 0x01, 0xE6, 0xF4, 0xF4, 0xEB, 0xFD]);
    }

    #[test]
    fn only_definite_verdicts_are_judged_so() {
        let exited = |code: i32| ExitStatus::from_raw(code << 8);
        let killed = ExitStatus::from_raw;
        assert_eq!(judge(exited(3), "", "host"), Probe::Works);
        let msr = "qemu: error: failed to set MSR 0x10a\nmore";
        let broken = Probe::Broken("QEMU with -cpu host failed: qemu: error: failed to set MSR 0x10a".into());
        assert_eq!(judge(exited(1), msr, "host"), broken);
        assert_eq!(judge(killed(libc::SIGABRT), msr, "host"), broken);
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGKILL, libc::SIGSEGV] {
            assert!(
                matches!(judge(killed(signal), "", "host"), Probe::Unsure(_)),
                "{signal}"
            );
        }
    }

    #[test]
    fn only_definite_verdicts_are_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kvm/0123");
        remember(&path, &Probe::Unsure("a test guest ran no code within 5s".into()));
        assert!(!path.exists());
        remember(&path, &Probe::Broken("QEMU aborted".into()));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "fail: QEMU aborted\n");
        remember(&path, &Probe::Works);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "ok\n");
        assert_eq!(std::fs::read_dir(dir.path().join("kvm")).unwrap().count(), 1);
    }

    #[test]
    fn foreign_guests_use_tcg_silently() {
        let arch = if crate::config::host_arch() == "aarch64" {
            "x86_64"
        } else {
            "aarch64"
        };
        let choice = choose(Path::new("/nonexistent/qemu"), arch, "host");
        assert_eq!(
            choice,
            Choice {
                accel: Accel::Tcg,
                warning: None
            }
        );
    }
}
