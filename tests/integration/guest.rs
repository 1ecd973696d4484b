//! What a kernel target's guest looks like to a test suite, on real QEMU
//! with the test kernel: loopback, hostname, kernel filesystems, stdin and
//! an exact argv (docs/guest.md).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{Project, test_kernel};

#[test]
fn the_guest_has_loopback_a_hostname_and_the_kernel_filesystems() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    // A server and a client on 127.0.0.1 and ::1, as networked test suites do.
    let script = r#"
import socket
for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    server = socket.socket(family)
    server.bind((host, 0))
    server.listen()
    client = socket.create_connection(server.getsockname()[:2])
    conn, _ = server.accept()
    client.sendall(b"ping")
    print(host, conn.recv(4).decode())
"#;
    let command = format!(
        "python3 -c '{script}' && hostname && \
         for m in /sys/kernel/debug /sys/kernel/tracing /sys/fs/cgroup /sys/fs/bpf /sys/kernel/security \
         /sys/kernel/config /dev/mqueue /dev/pts /dev/shm; do \
         awk -v m=$m '$2 == m {{ print $2, $3 }}' /proc/mounts; done"
    );
    let out = project.run(project.vmtest().arg("-k").arg(&kernel).arg(command));
    out.assert_code(0);
    assert_eq!(
        out.command_stdout(),
        "127.0.0.1 ping\n::1 ping\nvmtest\n/sys/kernel/debug debugfs\n/sys/kernel/tracing tracefs\n\
         /sys/fs/cgroup cgroup2\n/sys/fs/bpf bpf\n/sys/kernel/security securityfs\n\
         /sys/kernel/config configfs\n/dev/mqueue mqueue\n/dev/pts devpts\n/dev/shm tmpfs\n",
        "{out}"
    );
}

/// Runs `cmd` with `input` on its stdin.
fn run_with_stdin(project: &Project, cmd: &mut Command, input: Vec<u8>) -> crate::util::Outcome {
    project.run_feeding(cmd, move |mut stdin| {
        let _ = stdin.write_all(&input);
    })
}

#[test]
fn stdin_reaches_the_command_unchanged_then_end_of_file() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    // 8 MiB of every byte value, so nothing may be translated or dropped.
    let input: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let expected = {
        let mut child = Command::new("sha256sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&input).unwrap();
        String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
    };
    let out = run_with_stdin(
        &project,
        project.vmtest().arg("-k").arg(&kernel).arg("sha256sum"),
        input,
    );
    out.assert_code(0);
    assert_eq!(out.command_stdout(), expected, "{out}");

    let out = run_with_stdin(
        &project,
        project.vmtest().arg("-k").arg(&kernel).arg("tac"),
        b"a\nb\n".to_vec(),
    );
    out.assert_code(0);
    assert_eq!(out.command_stdout(), "b\na\n", "{out}");
}

#[test]
fn a_command_that_never_reads_stdin_still_ends() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    // An endless producer: vmtest must not wait for its end.
    let out = project.run_feeding(project.vmtest().arg("-k").arg(&kernel).arg("echo done"), |mut stdin| {
        let chunk = vec![b'y'; 64 * 1024];
        while stdin.write_all(&chunk).is_ok() {}
    });
    out.assert_code(0);
    assert_eq!(out.command_stdout(), "done\n", "{out}");
    assert!(out.elapsed < Duration::from_secs(300), "{out}");
}

#[test]
fn several_targets_read_end_of_file_and_vmtest_says_why() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    let config = [
        crate::util::kernel_target("one", &kernel, "wc -c", ""),
        crate::util::kernel_target("two", &kernel, "wc -c", ""),
    ]
    .concat();
    project.write("vmtest.toml", &config);
    let out = run_with_stdin(&project, &mut project.vmtest(), b"unread\n".to_vec());
    out.assert_code(0)
        .assert_stderr_contains("stdin is given to a command only when one target runs");
    assert_eq!(out.command_stdout(), "0\n0\n", "{out}");
}

#[test]
fn words_after_a_double_dash_are_the_exact_argv() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    let out = project.run(project.vmtest().arg("-k").arg(&kernel).args([
        "--",
        "printf",
        "[%s]\\n",
        "two words",
        "it's",
        "\"q\"",
        "$HOME",
        "*",
        "",
    ]));
    out.assert_code(0);
    assert_eq!(
        out.command_stdout(),
        "[two words]\n[it's]\n[\"q\"]\n[$HOME]\n[*]\n[]\n",
        "{out}"
    );
    // Without `--` the words still form a shell command.
    let out = project.run(
        project
            .vmtest()
            .arg("-k")
            .arg(&kernel)
            .args(["echo", "a", "|", "tr", "a", "b"]),
    );
    out.assert_code(0);
    assert_eq!(out.command_stdout(), "b\n", "{out}");
}

/// Runs `vmtest -k KERNEL ARGS...` once with vmtest's own init and once with
/// the shell init and wrapper (as on another rootfs); the outcomes with the
/// `VMTEST_SHELL_INIT` value each had.
fn with_both_inits(
    project: &Project,
    kernel: &std::path::Path,
    args: &[&str],
) -> Vec<(&'static str, crate::util::Outcome)> {
    ["0", "1"]
        .into_iter()
        .map(|shell_init| {
            let mut cmd = project.vmtest();
            cmd.env("VMTEST_SHELL_INIT", shell_init)
                .arg("-k")
                .arg(kernel)
                .args(args);
            (shell_init, project.run(&mut cmd))
        })
        .collect()
}

/// A command that leaves a background process holding its output ends like
/// any other, with the vmtest init's relays and with the shell wrapper.
#[test]
fn a_background_process_does_not_hold_the_command_open() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    for (shell_init, out) in with_both_inits(
        &project,
        &kernel,
        &["--timeout", "120", "sleep 600 & echo started; exit 3"],
    ) {
        out.assert_code(3);
        assert_eq!(
            out.command_stdout(),
            "started\n",
            "VMTEST_SHELL_INIT={shell_init}\n{out}"
        );
    }
}

/// The last bytes of a long output arrive before the verdict, however the
/// exit status and the end markers race.
#[test]
fn the_whole_output_arrives_before_the_verdict() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    for (shell_init, out) in with_both_inits(&project, &kernel, &["seq 1 200000; seq 1 50000 >&2"]) {
        out.assert_code(0);
        let stdout = out.command_stdout();
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 200_000, "VMTEST_SHELL_INIT={shell_init}");
        assert_eq!(lines.last(), Some(&"200000"));
        assert!(out.stderr.ends_with("49999\n50000\n"), "VMTEST_SHELL_INIT={shell_init}");
    }
}

/// vmtest's private directories below /dev (TMPDIR=/dev/shm, a tmpfs where
/// tests can make FIFOs and sockets) are hidden from the guest by its
/// devtmpfs: the init's files go elsewhere.
#[test]
fn a_tmpdir_below_dev_still_boots() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    let shm = tempfile::Builder::new()
        .prefix("vmtest-shm.")
        .tempdir_in("/dev/shm")
        .unwrap();
    let out = project.run(
        project
            .vmtest()
            .env("TMPDIR", shm.path())
            .arg("-k")
            .arg(&kernel)
            .arg("echo tmpdir=$TMPDIR"),
    );
    out.assert_code(0);
    assert_eq!(
        out.command_stdout(),
        format!("tmpdir={}\n", shm.path().display()),
        "{out}"
    );
    let left: Vec<_> = std::fs::read_dir(shm.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
