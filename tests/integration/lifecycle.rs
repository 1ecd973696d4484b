//! Live output, timeouts, failure detection and cleanup, on real QEMU.

use std::time::Duration;

use crate::util::{Project, Running, kernel_target, test_kernel};

#[test]
fn output_arrives_live_line_by_line() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    let mut cmd = project.vmtest();
    cmd.arg("-k").arg(&kernel).arg("echo first; sleep 6; echo second");
    let mut run = Running::start(&mut cmd);
    let first = run.wait_for_line("first", Duration::from_secs(180));
    let second = run.wait_for_line("second", Duration::from_secs(60));
    let out = run.finish(Duration::from_secs(60));
    out.assert_code(0);
    let gap = second - first;
    assert!(gap >= Duration::from_secs(5), "lines arrived {gap:?} apart\n{out}");
    project.assert_nothing_left(&out);
}

#[test]
fn stdout_and_stderr_stay_separate() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    let command = "echo out1; echo err1 >&2; echo out2; echo err2 > /dev/stderr; printf partial";
    let out = project.run(project.vmtest().arg("-k").arg(&kernel).arg(command));
    out.assert_code(0);
    assert_eq!(out.command_stdout(), "out1\nout2\npartial\n", "{out}");
    assert!(out.stderr.contains("err1\nerr2\n"), "{out}");
    assert!(!out.stdout.contains("err"), "{out}");
    assert!(!out.stderr.contains("out1"), "{out}");
}

#[test]
fn twenty_megabytes_arrive_byte_for_byte() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    // Random bytes plus a final newline; the guest reports their checksum
    // on stderr.
    let command = "head -c 20000000 /dev/urandom > /dev/shm/blob && echo >> /dev/shm/blob && \
                   sha256sum < /dev/shm/blob >&2 && cat /dev/shm/blob";
    let mut cmd = project.vmtest();
    cmd.arg("-k").arg(&kernel).arg(command);
    let output = cmd.output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = output.stdout;
    let header_end = stdout.iter().position(|&b| b == b'\n').unwrap() + 1;
    let verdict = memchr::memmem::rfind(&stdout, b"--- PASS ").unwrap();
    let blob = &stdout[header_end..verdict];
    assert_eq!(blob.len(), 20_000_001);
    let expected = String::from_utf8_lossy(&output.stderr)
        .lines()
        .find_map(|l| l.strip_suffix("  -").map(str::to_string))
        .expect("no checksum on stderr");
    let actual = sha256_hex(blob);
    assert_eq!(actual, expected);
    project.wait_until_nothing_left(Duration::from_secs(5));
}

fn sha256_hex(data: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn a_timeout_kills_the_vm_and_the_next_target_runs() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    let config = [
        kernel_target("hangs", &kernel, "echo started; sleep 1000", "timeout = 3"),
        kernel_target("next", &kernel, "echo next ran", ""),
    ]
    .concat();
    project.write("vmtest.toml", &config);
    let out = project.run(&mut project.vmtest());
    out.assert_code(1)
        .assert_stdout_contains("--- FAIL hangs")
        .assert_stdout_contains("timed out after 3 s")
        .assert_stdout_contains("next ran\n--- PASS next");
    assert!(out.elapsed < Duration::from_secs(120), "{out}");
}

#[test]
fn the_cli_timeout_overrides_and_exits_124() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    let out = project.run(
        project
            .vmtest()
            .args(["--timeout", "2", "-k"])
            .arg(&kernel)
            .arg("sleep 100"),
    );
    out.assert_code(124).assert_stdout_contains("timed out after 2 s");
}

#[test]
fn a_kernel_panic_is_reported_in_seconds() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    let out = project.run(
        project
            .vmtest()
            .args(["--kargs", "init=/nonexistent", "-k"])
            .arg(&kernel)
            .arg("true"),
    );
    out.assert_code(69)
        .assert_stdout_contains("the guest kernel panicked")
        .assert_stdout_contains("Kernel panic - not syncing")
        .assert_stdout_contains("/nonexistent")
        .assert_stdout_contains("console log: ");
    // Far below the boot timeout: the panic is seen, not waited out.
    assert!(out.elapsed < Duration::from_secs(45), "{out}");
}

#[test]
fn a_panic_without_reboot_is_detected_too() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    let out = project.run(
        project
            .vmtest()
            .args(["--kargs", "init=/nonexistent panic=0", "-k"])
            .arg(&kernel)
            .arg("true"),
    );
    out.assert_code(69).assert_stdout_contains("the guest kernel panicked");
    assert!(out.elapsed < Duration::from_secs(45), "{out}");
}

#[test]
fn a_command_killed_by_a_signal_fails() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    let out = project.run(project.vmtest().arg("-k").arg(&kernel).arg("kill -9 $$"));
    out.assert_code(137).assert_stdout_contains("killed by signal 9");
}

#[test]
fn ctrl_c_stops_qemu_cleans_up_and_summarises() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    let config = [
        kernel_target("long", &kernel, "echo ready; sleep 1000", ""),
        kernel_target("never", &kernel, "true", ""),
    ]
    .concat();
    project.write("vmtest.toml", &config);
    let mut run = Running::start(&mut project.vmtest());
    run.wait_for_line("ready", Duration::from_secs(180));
    run.signal(libc::SIGINT);
    let out = run.finish(Duration::from_secs(30));
    out.assert_code(130)
        .assert_stdout_contains("interrupted by SIGINT")
        .assert_stdout_contains("Summary: 0 passed, 1 failed, 1 not run");
    project.assert_nothing_left(&out);
}

#[test]
fn sigterm_exits_143() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    let mut cmd = project.vmtest();
    cmd.arg("-k").arg(&kernel).arg("echo ready; sleep 1000");
    let mut run = Running::start(&mut cmd);
    run.wait_for_line("ready", Duration::from_secs(180));
    run.signal(libc::SIGTERM);
    let out = run.finish(Duration::from_secs(30));
    out.assert_code(143).assert_stdout_contains("interrupted by SIGTERM");
    project.assert_nothing_left(&out);
}

#[test]
fn sigkill_leaves_no_qemu_and_no_temp_files() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    let mut cmd = project.vmtest();
    cmd.arg("-k").arg(&kernel).arg("echo ready; sleep 1000");
    let mut run = Running::start(&mut cmd);
    run.wait_for_line("ready", Duration::from_secs(180));
    assert!(!crate::util::processes_mentioning(&project.tmp.path().to_string_lossy()).is_empty());
    run.signal(libc::SIGKILL);
    let _ = run.finish(Duration::from_secs(10));
    project.wait_until_nothing_left(Duration::from_secs(10));
}

#[test]
fn the_console_log_holds_the_boot_messages() {
    let Some((kernel, release)) = test_kernel() else { return };
    let project = Project::for_vms();
    let out = project.run(project.vmtest().arg("-k").arg(&kernel).arg("true"));
    out.assert_code(0);
    let log = project.path().join(".vmtest/bzImage/console.log");
    let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
    assert!(text.contains(&format!("Linux version {release}")), "{text}");
    assert!(!out.stdout.contains("Linux version"), "boot noise in the output\n{out}");
    let elsewhere = project.path().join("logs");
    let out = project.run(
        project
            .vmtest()
            .arg("--log-dir")
            .arg(&elsewhere)
            .arg("-k")
            .arg(&kernel)
            .arg("true"),
    );
    out.assert_code(0);
    assert!(elsewhere.join("bzImage/console.log").is_file());
}

#[test]
fn qemu_crashing_during_boot_is_retried_once() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    let mut cmd = project.vmtest();
    cmd.arg("-k").arg(&kernel).arg("echo survived");
    let run = Running::start(&mut cmd);
    // Crash the first VM's QEMU (not the KVM self-test's) as soon as it exists.
    let tmp = project.tmp.path().to_string_lossy().into_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let pid = loop {
        let found = crate::util::processes_mentioning(&tmp);
        if let Some(line) = found
            .iter()
            .find(|l| l.contains("qemu-system") && l.contains("root=vmtest_root"))
        {
            break line.split(':').next().unwrap().parse::<i32>().unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "QEMU never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    // SAFETY: signalling a process we found by its argv.
    unsafe { libc::kill(pid, libc::SIGSEGV) };
    let out = run.finish(Duration::from_secs(240));
    out.assert_code(0)
        .assert_stdout_contains("survived\n")
        .assert_stderr_contains("QEMU died of signal 11 while booting; trying once more");
    project.assert_nothing_left(&out);
}
