//! Test suites written elsewhere, run in the guest on real QEMU, with the
//! same results as on the host:
//!
//! - CPython's own regression tests (Debian's libpython3.11-testsuite);
//! - a Go package's tests through `go test -exec "vmtest -k KERNEL --"`;
//! - this project's unit tests through cargo's target runner;
//! - Debian's bpftool on Debian's kernel: probe, load an XDP program built
//!   with clang, attach it to the loopback interface and see it count.
//!
//! docs/guest.md records the host-vs-guest comparison.

use std::path::Path;
use std::process::Command;

use crate::util::{Project, debian_kernels, test_kernel};

/// CPython test modules that exercise what a test machine must offer:
/// loopback sockets (test_epoll serves on 127.0.0.1), epoll/poll/select,
/// fcntl locks and dnotify, mmap with madvise, threads. (test_socketserver
/// arms a 60 s SIGALRM watchdog without a handler, which its forking
/// servers outlast under TCG on a busy machine: the process dies of it.)
const PYTHON_TESTS: &[&str] = &[
    "test.test_epoll",
    "test.test_selectors",
    "test.test_fcntl",
    "test.test_mmap",
    "test.test_select",
    "test.test_poll",
];

/// unittest's closing lines: "Ran N tests" and the verdict with its counts.
fn unittest_summary(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.starts_with("Ran ") || l.starts_with("OK") || l.starts_with("FAILED"))
        .map(|l| l.split(" in ").next().unwrap_or(l).to_string())
        .collect()
}

#[test]
fn cpython_regression_tests_pass_in_the_guest_as_on_the_host() {
    let Some((kernel, _)) = test_kernel() else { return };
    let python = Path::new("/usr/bin/python3.11");
    let suite = Path::new("/usr/lib/python3.11/test/test_epoll.py");
    if !python.is_file() || !suite.is_file() {
        let message = "CPython's test suite not found: tests/assets/build.sh installs libpython3.11-testsuite";
        assert!(std::env::var_os("CI").is_none(), "{message}");
        eprintln!("SKIPPED (not in CI): {message}");
        return;
    }
    let project = Project::for_vms();
    // Temporary files on a tmpfs, host and guest alike: the guest's /tmp is
    // the host's over 9p, where a Unix socket cannot be bound (ENXIO) and
    // test_socketserver's Unix-socket servers would fail (docs/guest.md).
    let host = Command::new(python)
        .args(["-m", "unittest"])
        .args(PYTHON_TESTS)
        .current_dir(project.path())
        .env("TMPDIR", "/dev/shm")
        .output()
        .unwrap();
    let host_summary = unittest_summary(&String::from_utf8_lossy(&host.stderr));
    assert!(host.status.success(), "the suite fails on the host: {host_summary:?}");
    let out = project.run(
        project
            .vmtest()
            .arg("-k")
            .arg(&kernel)
            .args(["--timeout", "900", "--", "env", "TMPDIR=/dev/shm"])
            .arg(python)
            .args(["-m", "unittest"])
            .args(PYTHON_TESTS),
    );
    let guest_summary = unittest_summary(&out.stderr);
    assert_eq!(guest_summary, host_summary, "{out}");
    out.assert_code(0);
}

#[test]
fn go_test_exec_runs_a_package_in_the_guest_with_exact_arguments() {
    let Some((kernel, release)) = test_kernel() else { return };
    let project = Project::for_vms();
    let package = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/goargv");
    let exec = format!("{} -k {} --", env!("CARGO_BIN_EXE_vmtest"), kernel.display());
    let output = Command::new("go")
        .args(["test", "-count=1", "-v", "-exec", &exec, ".", "-args"])
        .args(["two words", "it's \"quoted\"", "$HOME", "*", ""])
        .current_dir(&package)
        .env("VMTEST_EXPECT_RELEASE", &release)
        .env("GOFLAGS", "-mod=mod")
        .env("TMPDIR", project.tmp.path())
        .output()
        .expect("running go test (Debian: apt install golang-go)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("--- PASS: TestRunsInTheGuestWithExactArguments"),
        "go test failed\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
    );
}

#[test]
fn cargo_runs_this_projects_unit_tests_in_the_guest() {
    let Some((kernel, _)) = test_kernel() else { return };
    // Held for the VM lock: one VM at a time.
    let _project = Project::for_vms();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let runner = format!("{} -k {} --", env!("CARGO_BIN_EXE_vmtest"), kernel.display());
    // Its own target directory: the cargo running this test holds the lock
    // of the usual one.
    let output = Command::new(env!("CARGO"))
        .args(["test", "--offline", "--bins", "--target-dir"])
        .arg(root.join("target/in-guest"))
        .current_dir(root)
        .env("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER", &runner)
        // The tests make FIFOs and sockets in temporary directories: on a
        // tmpfs, which the guest's /dev/shm is too (its /tmp is the host's
        // over 9p, where QEMU refuses FIFOs; docs/guest.md).
        .env("TMPDIR", "/dev/shm")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report = format!("--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
    assert!(output.status.success(), "{report}");
    // vmtest's header and verdict around the test binary's own report show
    // that it ran in the guest.
    let header = format!("=== bzImage (kernel {})", kernel.display());
    let results = stdout.find("test result: ok.");
    assert!(stdout.find(&header) < results && results.is_some(), "{report}");
    assert!(stdout.contains("--- PASS bzImage ("), "{report}");
}

#[test]
fn bpftool_loads_and_attaches_a_program_on_debians_kernel() {
    let Some(debian) = debian_kernels() else { return };
    let project = Project::for_vms();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bpf/count_xdp.c");
    let object = project.path().join("count_xdp.o");
    let built = Command::new("clang")
        .args(["-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c"])
        .arg(&source)
        .arg("-o")
        .arg(&object)
        .status()
        .expect("running clang (Debian: apt install clang)");
    assert!(built.success());
    let script = r#"set -e
bpftool feature probe kernel > probe.txt
grep -q "eBPF program_type xdp is available" probe.txt && echo probe: xdp available
bpftool prog load count_xdp.o /sys/fs/bpf/count type xdp pinmaps /sys/fs/bpf/maps
bpftool net attach xdpgeneric pinned /sys/fs/bpf/count dev lo
bpftool net show dev lo | grep -q "lo(1) generic id" && echo attached to lo
python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(10):
    s.sendto(b"x", ("127.0.0.1", 9))
'
bpftool map dump pinned /sys/fs/bpf/maps/packets | awk '/value/ { print ($2 >= 10 ? "counted" : "missed " $2) }'
"#;
    let out = project.run(
        project
            .vmtest()
            .arg("-k")
            .arg(&debian.amd64)
            .args(["--timeout", "600", script]),
    );
    out.assert_code(0);
    assert_eq!(
        out.command_stdout(),
        "probe: xdp available\nattached to lo\ncounted\n",
        "{out}"
    );
}
