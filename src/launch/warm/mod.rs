//! Warm start of image targets: boot an image once, save the VM's state as
//! soon as its guest agent answers, and restore that state in later runs.
//!
//! This module owns the cache of saved states (`VMTEST_WARM_DIR`, else
//! `~/.cache/vmtest/warm/<key>/`): QEMU's migration stream (`state`), the
//! qcow2 overlay on top of the user's image that holds the boot's disk writes
//! (`disk.qcow2`) and, for OVMF, the variable store (`OVMF_VARS.fd`). It
//! computes the key (everything that shapes the saved state: `key`), saves a
//! running VM through QMP (stop, move its disk writes to a fresh overlay,
//! `migrate` to `exec:cat`, continue), moves a finished state into place by
//! renaming its directory, prunes old states (`prune`), and sets a restored
//! guest's clock. It does not build QEMU's argv (`image` does, with the disk and
//! arguments named here) and does not run VMs (`run::runner`, `vm`).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::launch::SetupStep;
use crate::vm::qmp::Qmp;

pub use key::{KeyInputs, key};
use prune::{max_size, prune};

mod key;
mod prune;

/// Environment variable naming the directory of saved states.
pub const DIR_ENV: &str = "VMTEST_WARM_DIR";
/// How long a restored guest's agent gets to answer before the state is
/// taken for broken (deleted, and the target booted cold).
pub const RESTORE_TIMEOUT: u64 = 60;
/// Longest a save may take (writing a few hundred MB under a busy TCG).
const SAVE_TIMEOUT: Duration = Duration::from_secs(300);

const STATE: &str = "state";
const DISK: &str = "disk.qcow2";
const VARS: &str = "OVMF_VARS.fd";
/// The id QEMU gives the first `-drive if=virtio` when it has none.
const DRIVE_ID: &str = "virtio0";

/// What an image target does with the cache of saved states.
pub enum Warm {
    /// Boot from the image (through a new overlay) and save the state once
    /// the agent answers.
    Save(Staging),
    /// Restore a saved state.
    Restore(Entry),
}

/// The directory of saved states.
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// The cache of this user, if there is a place for it.
    pub fn open() -> Option<Cache> {
        let root = match std::env::var_os(DIR_ENV) {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => crate::vm::cache::dir("warm")?,
        };
        Some(Cache { root })
    }

    /// The saved state for `key` if there is one, else a fresh staging
    /// directory to save one into.
    pub fn plan(&self, key: &str) -> Result<Warm> {
        let dir = self.root.join(key);
        if dir.join(STATE).is_file() && dir.join(DISK).is_file() {
            return Ok(Warm::Restore(Entry { dir }));
        }
        fs::create_dir_all(&self.root).with_context(|| format!("creating {}", self.root.display()))?;
        let temp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempdir_in(&self.root)
            .with_context(|| format!("creating a directory in {}", self.root.display()))?;
        crate::vm::janitor::register(temp.path());
        Ok(Warm::Save(Staging {
            temp,
            dir,
            root: self.root.clone(),
            vars: None,
            qmp: PathBuf::new(),
            run_disk: PathBuf::new(),
        }))
    }
}

/// A saved state in the cache.
pub struct Entry {
    dir: PathBuf,
}

impl Entry {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The overlay with the boot's disk writes, opened in snapshot mode so
    /// it is never written.
    pub fn disk(&self) -> PathBuf {
        self.dir.join(DISK)
    }

    /// OVMF's variable store as it was when the state was saved, if any.
    pub fn vars(&self) -> Option<PathBuf> {
        Some(self.dir.join(VARS)).filter(|p| p.is_file())
    }

    /// QEMU's arguments that load the state.
    pub fn incoming_args(&self) -> Vec<String> {
        let state = self.dir.join(STATE);
        vec![
            "-incoming".into(),
            format!("exec:cat {}", crate::quote::shell_quote(&state.to_string_lossy())),
        ]
    }

    /// Marks the state as just used, so pruning removes it last.
    pub fn touch(&self) {
        let _ = fs::File::options()
            .append(true)
            .open(self.dir.join(STATE))
            .and_then(|f| f.set_modified(SystemTime::now()));
    }

    /// Removes the state (it did not restore). Renamed away first, so no
    /// other vmtest finds it half removed; a QEMU that still reads it keeps
    /// its open files.
    pub fn discard(&self) {
        let Some(root) = self.dir.parent() else { return };
        let trash = root.join(format!(".trash-{}-{}", std::process::id(), unique()));
        if fs::rename(&self.dir, &trash).is_ok() {
            let _ = fs::remove_dir_all(&trash);
        }
    }
}

/// Removes the saved state in `dir` (see [`Entry::discard`]).
pub fn discard(dir: &Path) {
    Entry { dir: dir.to_path_buf() }.discard();
}

/// A state being made: a temporary directory in the cache, renamed to its
/// key once complete and removed if the run never gets there.
pub struct Staging {
    temp: tempfile::TempDir,
    /// Where it goes once complete.
    dir: PathBuf,
    root: PathBuf,
    /// The run's OVMF variable store, copied when the state is saved.
    vars: Option<PathBuf>,
    /// QEMU's QMP socket, and the overlay the run goes on with once saved.
    qmp: PathBuf,
    run_disk: PathBuf,
}

impl Staging {
    /// The overlay the cold boot writes to: it becomes the saved disk.
    pub fn disk(&self) -> PathBuf {
        self.temp.path().join(DISK)
    }

    /// Saves the run's OVMF variable store (at `vars`) with the state.
    pub fn keep_vars(&mut self, vars: &Path) {
        self.vars = Some(vars.to_path_buf());
    }

    /// Creates the overlay on top of `image` (of QEMU format `format`) with
    /// `qemu-img`, found beside `qemu` or on PATH.
    pub fn create_overlay(&self, qemu: &Path, image: &Path, format: &str) -> Result<()> {
        let beside = qemu.parent().map(|d| d.join("qemu-img")).filter(|p| p.is_file());
        let qemu_img = beside.unwrap_or_else(|| "qemu-img".into());
        let output = std::process::Command::new(&qemu_img)
            .args(["create", "-q", "-f", "qcow2", "-F", format, "-b"])
            .arg(image)
            .arg(self.disk())
            .stdin(std::process::Stdio::null())
            .output()
            .with_context(|| format!("running {}", qemu_img.display()))?;
        if !output.status.success() {
            bail!(
                "qemu-img create failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// QEMU's extra arguments for the cold boot: a QMP monitor on
    /// `qmp_socket` to save through, and no run state in the stream, so that
    /// a restored VM starts running at once although it was saved stopped.
    /// Once saved, the run's disk writes go to `run_disk`.
    pub fn save_args(&mut self, qmp_socket: &Path, run_disk: &Path) -> Vec<String> {
        self.qmp = qmp_socket.to_path_buf();
        self.run_disk = run_disk.to_path_buf();
        let mut args = crate::vm::qemu::qmp_args(qmp_socket);
        args.extend(["-global".into(), "migration.store-global-state=off".into()]);
        args
    }

    /// Saves the running VM: stops it, sends its further disk writes to a
    /// new overlay (so the saved overlay stays as it was), writes the
    /// migration stream, lets the VM go on and moves the state into place.
    /// Returns where it went.
    pub fn save(self) -> Result<PathBuf> {
        let mut qmp = Qmp::connect(&self.qmp, SAVE_TIMEOUT)?;
        execute(&mut qmp, "stop", json!({}))?;
        let saved = self.write_state(&mut qmp, &self.run_disk);
        // The run goes on whatever happened.
        let resumed = execute(&mut qmp, "cont", json!({})).context("continuing the VM after saving it");
        saved?;
        resumed?;
        self.commit()
    }

    fn write_state(&self, qmp: &mut Qmp, run_disk: &Path) -> Result<()> {
        if let Some(vars) = &self.vars {
            fs::copy(vars, self.temp.path().join(VARS)).context("copying OVMF's variable store")?;
        }
        execute(
            qmp,
            "blockdev-snapshot-sync",
            json!({ "device": DRIVE_ID, "snapshot-file": run_disk, "format": "qcow2" }),
        )?;
        execute(qmp, "migrate-set-parameters", json!({ "max-bandwidth": 1u64 << 40 }))?;
        let state = self.temp.path().join(STATE);
        let uri = format!("exec:cat > {}", crate::quote::shell_quote(&state.to_string_lossy()));
        execute(qmp, "migrate", json!({ "uri": uri }))?;
        loop {
            let info = execute(qmp, "query-migrate", json!({}))?;
            match info.get("status").and_then(Value::as_str) {
                Some("completed") => return Ok(()),
                Some("failed" | "cancelled") => {
                    let why = info
                        .get("error-desc")
                        .and_then(Value::as_str)
                        .unwrap_or("no reason given");
                    bail!("QEMU could not save the VM: {why}");
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Syncs the files and renames the directory to its key. Another vmtest
    /// that saved the same key first wins; this copy is dropped.
    fn commit(self) -> Result<PathBuf> {
        for name in [STATE, DISK, VARS] {
            if let Ok(file) = fs::File::open(self.temp.path().join(name)) {
                file.sync_all().with_context(|| format!("syncing the saved {name}"))?;
            }
        }
        let temp = self.temp.keep();
        if let Err(e) = fs::rename(&temp, &self.dir) {
            let _ = fs::remove_dir_all(&temp);
            if !self.dir.join(STATE).is_file() {
                return Err(e).with_context(|| format!("moving the saved state to {}", self.dir.display()));
            }
        }
        if let Ok(dir) = fs::File::open(&self.root) {
            let _ = dir.sync_all();
        }
        prune(&self.root, max_size(), &self.dir);
        Ok(self.dir)
    }
}

/// Run in the guest just before its state is saved, so that every warm run
/// starts with it done: load the 9p and virtiofs modules (loading mounts
/// nothing, so migration is not blocked) and read bash into the page cache.
/// Under TCG each costs seconds of the setup otherwise.
pub fn warm_up() -> SetupStep {
    SetupStep {
        what: "preparing the guest for saving".into(),
        path: "/bin/sh".into(),
        args: vec![
            "-c".into(),
            "modprobe -q 9p; modprobe -q 9pnet_virtio; modprobe -q virtiofs; bash -c true; true".into(),
        ],
    }
}

/// The setup steps with the guest's clock set from the host's first: a
/// restored (or paused) guest's clock is behind by the time since the save.
/// It is prepended to the first step's script rather than run through the
/// agent's `guest-set-time`, which also runs `hwclock -w` in the guest
/// (seconds under TCG), or a step of its own (a process spawn).
pub fn with_clock(steps: &[SetupStep], now: SystemTime) -> Vec<SetupStep> {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let set = format!(
        "date -u -s @{}.{:09} >/dev/null 2>&1 || true",
        since.as_secs(),
        since.subsec_nanos()
    );
    let mut steps = steps.to_vec();
    match steps.first_mut() {
        Some(step) if step.path == "/bin/sh" && step.args.len() == 2 && step.args[0] == "-c" => {
            step.args[1] = format!("{set}\n{}", step.args[1]);
        }
        _ => steps.insert(
            0,
            SetupStep {
                what: "setting the guest's clock".into(),
                path: "/bin/sh".into(),
                args: vec!["-c".into(), set],
            },
        ),
    }
    steps
}

/// One QMP command, named in its error.
fn execute(qmp: &mut Qmp, command: &str, arguments: Value) -> Result<Value> {
    qmp.execute(json!({ "execute": command, "arguments": arguments }))
        .with_context(|| format!("QMP {command}"))
}

/// A number that differs between calls in one process.
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests;
