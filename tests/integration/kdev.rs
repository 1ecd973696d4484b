//! Kernel developers' features on the test kernel, with real kernel events
//! provoked through LKDTM (`/sys/kernel/debug/provoke-crash/DIRECT`): a
//! splat fails a passing command unless allowlisted or only warned about, a
//! soft lockup is named, gdb attaches to QEMU's stub and stops on a kernel function, and a panic
//! leaves an ELF vmcore of the guest's memory.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{Project, kernel_target, test_kernel};

const PROVOKE: &str = "/sys/kernel/debug/provoke-crash/DIRECT";

#[test]
fn a_warning_fails_a_command_that_passed() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    let command = format!("echo WARNING > {PROVOKE} && echo provoked");
    let out = project.run(
        project
            .vmtest()
            .arg("-k")
            .arg(&kernel)
            .args(["--json", "r.json", &command]),
    );
    out.assert_code(70)
        .assert_stdout_contains("\nprovoked\n--- FAIL bzImage (")
        .assert_stdout_contains("): the kernel reported a splat:\n  WARNING: CPU: ")
        .assert_stdout_contains(" lkdtm_WARNING+")
        .assert_stdout_contains("console log: ");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(project.path().join("r.json")).unwrap()).unwrap();
    let target = &report["targets"][0];
    assert_eq!(target["verdict"], "fail");
    assert_eq!(target["exit_code"], 0);
    let error = target["error"].as_str().unwrap();
    assert!(
        error.starts_with("the kernel reported a splat:\n  WARNING: CPU: "),
        "{error}"
    );
    let log = target["console_log"].as_str().unwrap();
    let console = std::fs::read_to_string(log).unwrap();
    assert!(console.contains("---[ end trace "), "{console}");
}

#[test]
fn an_allowlisted_warning_passes() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    let command = format!("echo WARNING > {PROVOKE}");
    let extra = r#"kernel_splat_allow = ["at drivers/misc/lkdtm/bugs\\.c:\\d+ lkdtm_WARNING\\+"]"#;
    project.write("vmtest.toml", &kernel_target("known", &kernel, &command, extra));
    let out = project.run(&mut project.vmtest());
    out.assert_code(0).assert_stdout_contains("--- PASS known (");
    assert!(!out.stderr.contains("splat"), "{out}");
}

#[test]
fn a_warning_under_warn_passes_with_a_warning() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    let command = format!("echo WARNING > {PROVOKE}");
    let out = project.run(
        project
            .vmtest()
            .arg("-k")
            .arg(&kernel)
            .args(["--kernel-splats", "warn", &command]),
    );
    out.assert_code(0)
        .assert_stdout_contains("--- PASS bzImage (")
        .assert_stderr_contains("vmtest: warning: target 'bzImage': the kernel reported a splat:\n  WARNING: CPU: ")
        .assert_stderr_contains("(console log: ");
}

/// LKDTM's SOFTLOCKUP spins forever with preemption off in the task that
/// writes it, so the command never ends and the target times out; the
/// lockup, reported meanwhile, is named in a warning. Under emulation a
/// lockup is only a warning (an emulated CPU can stall on a busy host), so
/// the run is forced onto TCG, where the outcome is the same whatever the
/// host's KVM. (The command cannot go on beside the lockup: with a CPU that
/// never schedules, the guest agent and RCU soon wait for it too.)
#[test]
fn a_soft_lockup_is_named_when_the_target_times_out() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    let command = format!("echo SOFTLOCKUP > {PROVOKE}");
    let out = project.run(
        project
            .vmtest()
            .env("VMTEST_ACCEL", "tcg")
            .arg("-k")
            .arg(&kernel)
            // Reported after 2 s instead of 20.
            .args(["--kargs", "watchdog_thresh=1", "--timeout", "20", &command]),
    );
    out.assert_code(124)
        .assert_stderr_contains("watchdog: BUG: soft lockup - CPU#")
        .assert_stderr_contains("lkdtm_SOFTLOCKUP+")
        .assert_stderr_contains("(a stall or lockup under emulation: a warning, not a failure)");
}

#[test]
fn gdb_stops_the_kernel_where_the_command_goes() {
    let Some((kernel, _)) = test_kernel() else { return };
    let vmlinux = kernel.with_file_name("vmlinux");
    if !vmlinux.is_file() || Command::new("gdb").arg("--version").output().is_err() {
        let message = "the test kernel's vmlinux or gdb is missing (tests/assets/build.sh installs both)";
        assert!(std::env::var_os("CI").is_none(), "{message}");
        eprintln!("SKIPPED (not in CI): {message}");
        return;
    }
    let project = Project::for_vms();
    let port = free_port();
    let endpoint = format!("127.0.0.1:{port}");
    let vmtest = project
        .vmtest()
        .arg("-k")
        .arg(&kernel)
        .args(["--gdb", &endpoint, "--gdb-wait", "cat /proc/version"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_listener(port, Duration::from_secs(120));
    // version_proc_show runs only when /proc/version is read: by the
    // command, not by the boot. Under TCG QEMU's breakpoints need no
    // writable kernel text, so one can be set before the kernel runs.
    let gdb = Command::new("gdb")
        .args(["-nx", "-batch", "-ex", "set pagination off"])
        .args(["-ex", &format!("target remote {endpoint}")])
        .args(["-ex", "break version_proc_show", "-ex", "continue"])
        .args(["-ex", "info registers rip", "-ex", "delete", "-ex", "detach"])
        .arg(&vmlinux)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let gdb = wait_with_deadline(gdb, Duration::from_secs(600));
    let gdb_out = String::from_utf8_lossy(&gdb.stdout);
    let vm = wait_with_deadline(vmtest, Duration::from_secs(300));
    let (stdout, stderr) = (String::from_utf8_lossy(&vm.stdout), String::from_utf8_lossy(&vm.stderr));
    let all = format!(
        "gdb:\n{gdb_out}\n{}\nvmtest:\n{stdout}\n{stderr}",
        String::from_utf8_lossy(&gdb.stderr)
    );
    assert!(
        gdb_out.contains("Breakpoint 1, ") && gdb_out.contains(" in version_proc_show"),
        "{all}"
    );
    assert!(gdb_out.contains("<version_proc_show>"), "{all}");
    assert_eq!(vm.status.code(), Some(0), "{all}");
    assert!(stdout.contains("Linux version "), "{all}");
    let hint = format!("gdb -ex 'target remote {endpoint}' '{}'", vmlinux.display());
    assert!(stderr.contains(&hint), "{all}");
}

#[test]
fn a_panic_leaves_an_elf_vmcore_of_the_guest_memory() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    let command = format!("echo PANIC > {PROVOKE}");
    let extra = "dump_on_panic = true\n[target.vm]\nmemory = \"256M\"";
    project.write("vmtest.toml", &kernel_target("panics", &kernel, &command, extra));
    let out = project.run(project.vmtest().args(["--json", "r.json"]));
    let vmcore = project.path().join(".vmtest/panics/vmcore");
    out.assert_code(69)
        .assert_stdout_contains("error: the guest kernel panicked:")
        .assert_stdout_contains("Kernel panic - not syncing")
        .assert_stdout_contains(&format!("memory dump: {}", vmcore.display()));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(project.path().join("r.json")).unwrap()).unwrap();
    assert_eq!(report["targets"][0]["vmcore"], vmcore.to_string_lossy().as_ref());
    let segments = elf_core_segments(&vmcore);
    // The guest's RAM, and the firmware's ROM just below 4 GiB.
    let ram: u64 = segments
        .iter()
        .filter(|(at, _)| *at < 0xff00_0000)
        .map(|(_, size)| size)
        .sum();
    assert_eq!(ram, 256 << 20, "PT_LOAD segments (address, size): {segments:x?}\n{out}");
}

/// The physical address and size of an ELF core's PT_LOAD segments; fails
/// unless the file is a 64-bit ELF core holding them all.
fn elf_core_segments(path: &Path) -> Vec<(u64, u64)> {
    let bytes = std::fs::read(path).unwrap();
    let u16_at = |at: usize| u16::from_le_bytes(bytes[at..at + 2].try_into().unwrap());
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    assert_eq!(&bytes[..5], b"\x7fELF\x02", "not a 64-bit ELF file");
    assert_eq!(u16_at(0x10), 4, "not ET_CORE");
    let (phoff, phentsize, phnum) = (u64_at(0x20) as usize, u16_at(0x36) as usize, u16_at(0x38) as usize);
    (0..phnum)
        .map(|i| phoff + i * phentsize)
        .filter(|&ph| u32_at(ph) == 1)
        .map(|ph| {
            let (offset, paddr, filesz) = (u64_at(ph + 8), u64_at(ph + 0x18), u64_at(ph + 0x20));
            assert!(offset + filesz <= bytes.len() as u64, "a segment beyond the file's end");
            (paddr, filesz)
        })
        .collect()
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Waits until something listens on 127.0.0.1:`port`, without connecting
/// (a connection would stop the VM).
fn wait_for_listener(port: u16, timeout: Duration) {
    let needle = format!("0100007F:{port:04X} 00000000:0000 0A");
    let deadline = Instant::now() + timeout;
    while !std::fs::read_to_string("/proc/net/tcp").unwrap().contains(&needle) {
        assert!(
            Instant::now() < deadline,
            "nothing listened on port {port} within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for `child` and collects its output; kills it after `timeout`.
fn wait_with_deadline(mut child: std::process::Child, timeout: Duration) -> std::process::Output {
    let deadline = Instant::now() + timeout;
    // Output is read by threads, so a full pipe never blocks the child.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut v).ok();
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut v).ok();
        v
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    std::process::Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}
