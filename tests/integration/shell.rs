//! The interactive shell, driven through a pseudo-terminal.

use std::time::Duration;

use crate::util::{Project, test_kernel};

/// A prompt-independent marker: the shell echoes the arithmetic's result.
fn expect_output(session: &mut rexpect::session::PtySession, text: &str) {
    if let Err(e) = session.exp_string(text) {
        panic!("no {text:?} from the shell: {e}");
    }
}

#[test]
fn a_shell_runs_commands_and_exit_powers_off() {
    let Some((kernel, release)) = test_kernel() else { return };
    let project = Project::for_vms();
    // Not project.vmtest(): its stdin is /dev/null, and the shell needs the pty.
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_vmtest"));
    cmd.current_dir(project.path())
        .env("TMPDIR", project.tmp.path())
        .env("VMTEST_NO_UI", "1")
        .env("TERM", "dumb")
        .arg("-k")
        .arg(&kernel)
        .arg("-");
    // Generous: a TCG boot on a busy machine, then a login shell reading
    // its profile over 9p (over 30 s here on a loaded machine).
    let mut session = rexpect::session::spawn_command(cmd, Some(600_000)).expect("starting vmtest in a pty");
    // Typed at once, while the VM still boots, on purpose: typeahead must
    // wait for the guest's shell, not vanish.
    session.send_line("echo sum=$((6*7)) release=$(uname -r)").unwrap();
    expect_output(&mut session, &format!("sum=42 release={release}"));
    session
        .send_line("echo from-shell > /mnt/vmtest/shell.txt; echo written=$?")
        .unwrap();
    expect_output(&mut session, "written=0");
    // Job control: a background job and `jobs` need a controlling terminal.
    session.send_line("sleep 30 & jobs; kill %1").unwrap();
    expect_output(&mut session, "Running");
    session.send_line("exit").unwrap();
    expect_output(&mut session, "--- PASS bzImage");
    session.exp_eof().expect("vmtest did not exit after the shell");
    let process = session.process();
    let status = process.wait().unwrap();
    assert!(
        matches!(status, rexpect::process::WaitStatus::Exited(_, 0)),
        "vmtest exited with {status:?}"
    );
    assert_eq!(
        std::fs::read_to_string(project.path().join("shell.txt")).unwrap(),
        "from-shell\n"
    );
    project.wait_until_nothing_left(Duration::from_secs(10));
}

#[test]
fn a_shell_without_a_terminal_says_it_needs_one() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::without_vms();
    let out = project.run(project.vmtest().arg("-k").arg(&kernel).arg("-"));
    out.assert_code(69)
        .assert_stdout_contains("an interactive shell needs a terminal");
    assert!(out.elapsed < Duration::from_secs(10), "{out}");
}

#[test]
fn shell_needs_exactly_one_target() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::without_vms();
    let config = [
        crate::util::kernel_target("a", &kernel, "true", ""),
        crate::util::kernel_target("b", &kernel, "true", ""),
    ]
    .concat();
    project.write("vmtest.toml", &config);
    let out = project.run(project.vmtest().arg("--shell"));
    out.assert_code(2)
        .assert_stderr_contains("--shell needs exactly one target; 2 selected (a, b)");
}
