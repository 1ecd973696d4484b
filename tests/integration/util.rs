//! Shared helpers of the integration tests: finding the test assets, running
//! the built vmtest binary in a scratch project directory, and checking that
//! nothing (QEMU process, temp file) outlives a run.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// VM tests run one at a time: TCG on two cores is slow enough already.
/// Threads of this binary wait on the mutex; other processes (cargo-nextest
/// runs each test in its own) on an flock of a file in Cargo's target dir.
static VM_LOCK: Mutex<()> = Mutex::new(());

/// Held while a test boots VMs.
pub struct VmLock {
    _thread: MutexGuard<'static, ()>,
    /// Closing the file releases the flock.
    _process: std::fs::File,
}

fn lock_vms() -> VmLock {
    let thread = VM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vm-tests.lock");
    let file = std::fs::File::create(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    // SAFETY: flock on a descriptor this function owns.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "locking {}: {}", path.display(), std::io::Error::last_os_error());
    VmLock {
        _thread: thread,
        _process: file,
    }
}

/// The directory tests/assets/build.sh fills.
pub fn assets_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VMTEST_ASSETS") {
        return dir.into();
    }
    let home = std::env::var_os("HOME").expect("HOME is not set");
    Path::new(&home).join(".cache/vmtest-assets/current")
}

/// The built-in test kernel and its release, or `None` (outside CI) when the
/// assets are missing. In CI a missing asset fails the test.
pub fn test_kernel() -> Option<(PathBuf, String)> {
    let dir = assets_dir().join("kernel");
    let kernel = dir.join("bzImage");
    let release = std::fs::read_to_string(dir.join("release")).ok();
    match release {
        Some(release) if kernel.is_file() => Some((kernel, release.trim().to_string())),
        _ => {
            let message = format!(
                "test kernel not found at {}: build it with tests/assets/build.sh \
                 (or point VMTEST_ASSETS at a directory holding kernel/bzImage)",
                kernel.display()
            );
            if std::env::var_os("CI").is_some() {
                panic!("{message}");
            }
            eprintln!("SKIPPED (not in CI): {message}");
            None
        }
    }
}

/// What a vmtest run produced.
#[derive(Debug)]
pub struct Outcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Outcome {
    /// What a finished process produced, `started` when it was started.
    pub fn of(output: std::process::Output, started: Instant) -> Outcome {
        Outcome {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            elapsed: started.elapsed(),
        }
    }

    /// Fails with the whole output when the exit code differs.
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "unexpected exit code\n{self}");
        self
    }

    pub fn assert_stdout_contains(&self, text: &str) -> &Self {
        assert!(self.stdout.contains(text), "stdout lacks {text:?}\n{self}");
        self
    }

    pub fn assert_stderr_contains(&self, text: &str) -> &Self {
        assert!(self.stderr.contains(text), "stderr lacks {text:?}\n{self}");
        self
    }

    /// The command's output: stdout without vmtest's header, verdict and
    /// summary lines.
    pub fn command_stdout(&self) -> String {
        self.stdout
            .lines()
            .filter(|l| {
                !l.starts_with("=== ")
                    && !l.starts_with("--- ")
                    && !l.starts_with("    console log: ")
                    && !l.starts_with("  PASS ")
                    && !l.starts_with("  FAIL ")
                    && !l.starts_with("Summary: ")
            })
            .map(|l| format!("{l}\n"))
            .collect()
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code: {:?} after {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// A scratch project directory and a way to run vmtest in it.
pub struct Project {
    pub dir: tempfile::TempDir,
    /// TMPDIR of vmtest's runs: must be empty after each run.
    pub tmp: tempfile::TempDir,
    /// The image targets' saved states (VMTEST_WARM_DIR): the project's
    /// own, so tests neither share nor fight over them.
    pub warm: tempfile::TempDir,
    _lock: Option<VmLock>,
}

impl Project {
    /// A project for tests that boot VMs (serialised).
    pub fn for_vms() -> Project {
        Project::build(Some(lock_vms()))
    }

    /// A project for tests that never boot a VM.
    pub fn without_vms() -> Project {
        Project::build(None)
    }

    fn build(lock: Option<VmLock>) -> Project {
        let dir = tempfile::Builder::new().prefix("vmtest-test.").tempdir().unwrap();
        let tmp = tempfile::Builder::new().prefix("vmtest-tmp.").tempdir().unwrap();
        let warm = tempfile::Builder::new().prefix("vmtest-warm.").tempdir().unwrap();
        Project {
            dir,
            tmp,
            warm,
            _lock: lock,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `text` to `name` inside the project.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A vmtest command with the project as its working directory.
    pub fn vmtest(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmtest"));
        cmd.current_dir(self.path())
            .env("TMPDIR", self.tmp.path())
            .env("VMTEST_WARM_DIR", self.warm.path())
            .env_remove("VMTEST_WARM_MAX")
            .env_remove("RUST_LOG")
            // A CI run on GitHub must not switch the tested vmtest into its
            // GitHub mode or append to the job's real summary.
            .env_remove("GITHUB_ACTIONS")
            .env_remove("GITHUB_STEP_SUMMARY")
            .stdin(Stdio::null());
        // The fast path, virtiofs, wherever build.sh built its daemon
        // (tests/integration/share.rs covers the fallback to 9p).
        let virtiofsd = assets_dir().join("virtiofsd/virtiofsd");
        if virtiofsd.is_file() {
            cmd.env("VMTEST_VIRTIOFSD", virtiofsd);
        } else {
            cmd.env_remove("VMTEST_VIRTIOFSD");
        }
        cmd
    }

    /// Processes of vmtest's still running: any naming its TMPDIR (QEMU)
    /// or sharing the project (virtiofsd).
    fn processes_left(&self) -> Vec<String> {
        let mut left = processes_mentioning(&self.tmp.path().to_string_lossy());
        left.extend(processes_mentioning(&format!("--shared-dir={}", self.path().display())));
        left
    }

    /// Runs `cmd` to completion and checks that it left nothing behind.
    pub fn run(&self, cmd: &mut Command) -> Outcome {
        let started = Instant::now();
        let output = cmd.output().expect("running vmtest");
        let outcome = Outcome::of(output, started);
        self.assert_nothing_left(&outcome);
        outcome
    }

    /// Runs `cmd` with stdin written by `feed` from another thread (which
    /// may write forever: it ends when vmtest closes the pipe), then checks
    /// that nothing was left behind.
    pub fn run_feeding(
        &self,
        cmd: &mut Command,
        feed: impl FnOnce(std::process::ChildStdin) + Send + 'static,
    ) -> Outcome {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd.spawn().expect("starting vmtest");
        let stdin = child.stdin.take().expect("vmtest's stdin");
        let writer = std::thread::spawn(move || feed(stdin));
        let output = child.wait_with_output().expect("waiting for vmtest");
        let _ = writer.join();
        let outcome = Outcome::of(output, started);
        self.assert_nothing_left(&outcome);
        outcome
    }

    /// No QEMU whose argv mentions our TMPDIR is running, and TMPDIR is empty.
    pub fn assert_nothing_left(&self, outcome: &Outcome) {
        // QEMU was reaped before vmtest exited; give the kernel a moment to
        // drop an orphan's /proc entry in case it was not.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let left = self.processes_left();
            if left.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "processes left behind: {left:?}\n{outcome}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let entries: Vec<_> = std::fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(
            entries.is_empty(),
            "temporary files left behind: {entries:?}\n{outcome}"
        );
        // Only complete saved states: no staging or trash directories.
        let partial: Vec<_> = std::fs::read_dir(self.warm.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with('.'))
            .collect();
        assert!(
            partial.is_empty(),
            "partial saved states left behind: {partial:?}\n{outcome}"
        );
    }

    /// The saved states' directories (one per key).
    pub fn saved_states(&self) -> Vec<PathBuf> {
        let mut states: Vec<PathBuf> = std::fs::read_dir(self.warm.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        states.sort();
        states
    }
}

/// Command lines of running processes that contain `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!("{}: {cmdline}", name.to_string_lossy()));
        }
    }
    found
}

/// A `[[target]]` table for the test kernel.
pub fn kernel_target(name: &str, kernel: &Path, command: &str, extra: &str) -> String {
    format!(
        "[[target]]\nname = {}\nkernel = {}\ncommand = {}\n{extra}\n",
        toml_str(name),
        toml_str(&kernel.to_string_lossy()),
        toml_str(command)
    )
}

/// A TOML basic string.
pub fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A vmtest process whose stdout lines are timestamped as they arrive.
pub struct Running {
    pub child: std::process::Child,
    lines: std::sync::mpsc::Receiver<(Instant, String)>,
    pub seen: Vec<(Instant, String)>,
    stderr: std::thread::JoinHandle<String>,
}

impl Running {
    pub fn start(cmd: &mut Command) -> Running {
        use std::io::{BufRead, Read};
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting vmtest");
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send((Instant::now(), line));
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// Waits until a stdout line equal to `line` arrives; returns its time.
    pub fn wait_for_line(&mut self, line: &str, timeout: Duration) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, text)) => {
                    let found = text == line;
                    self.seen.push((at, text));
                    if found {
                        return at;
                    }
                }
                Err(_) => panic!("no line {line:?} within {timeout:?}; saw {:?}", self.seen),
            }
        }
    }

    /// Waits until every one of `lines` has arrived on stdout, in any order.
    pub fn wait_for_lines(&mut self, lines: &[&str], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !lines.iter().all(|l| self.seen.iter().any(|(_, seen)| seen == l)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("not all of {lines:?} within {timeout:?}; saw {:?}", self.seen),
            }
        }
    }

    /// Sends `signal` to vmtest.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill on our own unreaped child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
    }

    /// Waits for vmtest to exit, with a deadline; returns everything.
    pub fn finish(mut self, timeout: Duration) -> Outcome {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > timeout {
                let _ = self.child.kill();
                panic!("vmtest did not exit within {timeout:?}; saw {:?}", self.seen);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stderr = self.stderr.join().unwrap_or_default();
        let mut lines: Vec<String> = self.seen.into_iter().map(|(_, l)| l).collect();
        lines.extend(self.lines.iter().map(|(_, l)| l));
        Outcome {
            code: status.code(),
            stdout: lines.iter().map(|l| format!("{l}\n")).collect(),
            stderr,
            elapsed: started.elapsed(),
        }
    }
}

impl Project {
    /// Waits (up to `timeout`) until nothing of vmtest's is left: for runs
    /// that vmtest could not clean up itself.
    pub fn wait_until_nothing_left(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let procs = self.processes_left();
            let files: Vec<_> = std::fs::read_dir(self.tmp.path())
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .collect();
            if procs.is_empty() && files.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "left behind after {timeout:?}: processes {procs:?}, files {files:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Debian's distribution kernels from tests/assets/build-debian-kernels.sh.
pub struct DebianKernels {
    /// linux-image-amd64's kernel, whose root drivers are modules.
    pub amd64: PathBuf,
    pub amd64_release: String,
    /// linux-image-cloud-amd64's kernel, which has no 9p.
    pub cloud: PathBuf,
    /// A copy of the amd64 kernel's root drivers (and `dummy`) as `.ko.xz`,
    /// laid out as `lib/modules/<release>/`.
    pub modules_xz: PathBuf,
}

/// The Debian kernels, or `None` (outside CI) when the assets are missing.
/// In CI a missing asset fails the test.
pub fn debian_kernels() -> Option<DebianKernels> {
    let dir = assets_dir().join("debian-kernels");
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .ok()
            .map(|s| s.trim().to_string())
    };
    let found = (|| {
        let kernels = DebianKernels {
            amd64: read("amd64.vmlinuz")?.into(),
            amd64_release: read("amd64.release")?,
            cloud: read("cloud.vmlinuz")?.into(),
            modules_xz: dir.join("modules-xz"),
        };
        (kernels.amd64.is_file() && kernels.cloud.is_file() && kernels.modules_xz.is_dir()).then_some(kernels)
    })();
    if found.is_none() {
        let message = format!(
            "Debian kernels not found at {}: install them with tests/assets/build.sh \
             (it runs tests/assets/build-debian-kernels.sh)",
            dir.display()
        );
        if std::env::var_os("CI").is_some() {
            panic!("{message}");
        }
        eprintln!("SKIPPED (not in CI): {message}");
    }
    found
}

/// A foreign architecture's assets from tests/assets/build-<name>.sh.
pub struct ForeignAssets {
    /// The cross-built kernel, with virtio and 9p built in.
    pub kernel: PathBuf,
    pub release: String,
    /// A Debian root filesystem of that architecture with bash, util-linux
    /// and qemu-ga.
    pub rootfs: PathBuf,
}

/// The arm64 assets, or `None` (outside CI) when they are missing. In CI a
/// missing asset fails the test.
pub fn arm64_assets() -> Option<ForeignAssets> {
    foreign_assets("arm64", "Image")
}

/// The s390x assets, like [`arm64_assets`].
pub fn s390x_assets() -> Option<ForeignAssets> {
    foreign_assets("s390x", "bzImage")
}

fn foreign_assets(name: &str, image: &str) -> Option<ForeignAssets> {
    let dir = assets_dir().join(name);
    let assets = ForeignAssets {
        kernel: dir.join("kernel").join(image),
        release: std::fs::read_to_string(dir.join("kernel/release"))
            .unwrap_or_default()
            .trim()
            .to_string(),
        rootfs: dir.join("rootfs"),
    };
    if assets.kernel.is_file() && !assets.release.is_empty() && assets.rootfs.join("usr/sbin/qemu-ga").is_file() {
        return Some(assets);
    }
    let message = format!(
        "{name} assets not found at {}: build them with tests/assets/build.sh \
         (it runs tests/assets/build-{name}.sh; about 6 minutes)",
        dir.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{message}");
    }
    eprintln!("SKIPPED (not in CI): {message}");
    None
}

/// The Debian disk images built by tests/assets/build-images.sh.
pub struct TestImages {
    /// Raw, MBR, syslinux: boots under SeaBIOS.
    pub bios: PathBuf,
    /// qcow2, GPT, systemd-boot: boots under OVMF.
    pub uefi: PathBuf,
}

/// The test images, or `None` (outside CI) when they are missing. In CI a
/// missing image fails the test.
pub fn test_images() -> Option<TestImages> {
    let dir = assets_dir().join("images");
    let images = TestImages {
        bios: dir.join("debian-bios.raw"),
        uefi: dir.join("debian-uefi.qcow2"),
    };
    if images.bios.is_file() && images.uefi.is_file() {
        return Some(images);
    }
    let message = format!(
        "test images not found in {}: build them with tests/assets/build.sh \
         (it runs tests/assets/build-images.sh; about 2 minutes)",
        dir.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{message}");
    }
    eprintln!("SKIPPED (not in CI): {message}");
    None
}

/// A `[[target]]` table for a disk image, with one vCPU: Debian's generic
/// kernel with two vCPUs under TCG once hung here in its crypto self-tests
/// (a soft lockup on CPU 1) while the 2-core host was loaded, and these tests
/// are about images, not SMP.
pub fn image_target(name: &str, image: &Path, command: &str, extra: &str) -> String {
    format!(
        "[[target]]\nname = {}\nimage = {}\ncommand = {}\n{extra}\n[target.vm]\nnum_cpus = 1\n",
        toml_str(name),
        toml_str(&image.to_string_lossy()),
        toml_str(command)
    )
}

/// `text` with every `::stop-commands::` token replaced by `TOKEN`, so
/// GitHub-mode output can be compared whole.
pub fn without_stop_tokens(text: &str) -> String {
    let tokens: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("::stop-commands::"))
        .collect();
    tokens
        .iter()
        .fold(text.to_string(), |text, token| text.replace(token, "TOKEN"))
}

/// The SHA-256 of a file, as hex (sha256sum's first column).
pub fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("running sha256sum");
    assert!(out.status.success(), "sha256sum {} failed", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// `path` when it exists; otherwise `None` outside CI (with a message) and a
/// failed test in CI. `what` names the asset and the script that builds it.
pub fn require_asset(path: PathBuf, what: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    let message = format!(
        "{what} not found at {}: build it with tests/assets/build.sh",
        path.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{message}");
    }
    eprintln!("SKIPPED (not in CI): {message}");
    None
}

/// The first line of a file in the asset directory, trimmed.
pub fn asset_text(relative: &str) -> Option<String> {
    let path = require_asset(assets_dir().join(relative), relative)?;
    Some(std::fs::read_to_string(path).ok()?.trim().to_string())
}
