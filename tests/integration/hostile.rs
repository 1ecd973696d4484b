//! A guest that attacks the host, on real QEMU with the test kernel and a
//! Debian image: it plants symlinks and FIFOs where vmtest writes, prints
//! GitHub workflow commands, asks for mounts outside `/mnt` and remounts a
//! read-only root read-write. Each test does what an attacker would and
//! checks that no byte of a host file leaks, no host file outside the share
//! is written, and vmtest ends in bounded time (docs/security.md).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::util::{Outcome, Project, Running, image_target, kernel_target, test_images, test_kernel, toml_str};

/// Powers the guest off from inside: vmtest's init powers off once the
/// guest agent exits, so the command kills the agent.
const POWER_OFF: &str = "{ for p in /proc/[0-9]*; do \
                         [ \"$(cat $p/comm 2>/dev/null)\" = qemu-ga ] && kill -9 ${p#/proc/}; done; sleep 100; }";

/// A directory outside the share holding a file the guest wants.
struct Outside {
    dir: tempfile::TempDir,
}

impl Outside {
    fn new() -> Outside {
        let dir = tempfile::Builder::new().prefix("vmtest-outside.").tempdir().unwrap();
        Outside { dir }
    }

    /// Writes `name` with `text`; returns its path.
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The names of the files in it, sorted.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

/// Shell-quotes a path for the guest's command.
fn quoted(path: &Path) -> String {
    format!("'{}'", path.display())
}

fn assert_no_secret(out: &Outcome, secret: &str, reports: &[&Path]) {
    assert!(!out.stdout.contains(secret), "the secret reached stdout\n{out}");
    assert!(!out.stderr.contains(secret), "the secret reached stderr\n{out}");
    for report in reports {
        let text = std::fs::read_to_string(report).unwrap_or_default();
        assert!(
            !text.contains(secret),
            "the secret reached {}\n{text}",
            report.display()
        );
    }
}

#[test]
fn a_console_log_swapped_for_a_link_to_a_secret_leaks_nothing() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    let outside = Outside::new();
    let secret = "SECRET-a3f0c1d2-not-for-ci-logs";
    let key = outside.file(
        "id_ed25519",
        &format!("-----BEGIN KEY-----\n{secret}\n-----END KEY-----\n"),
    );
    let command = format!(
        "rm -f .vmtest/bzImage/console.log && ln -s {} .vmtest/bzImage/console.log && {POWER_OFF}",
        quoted(&key)
    );
    let out = project.run(
        project
            .vmtest()
            .args(["--junit", "junit.xml", "--json", "report.json", "-k"])
            .arg(&kernel)
            .arg(command),
    );
    // QEMU exited under vmtest: an error, with the console's real tail.
    out.assert_code(69).assert_stdout_contains("QEMU exited unexpectedly");
    assert_no_secret(
        &out,
        secret,
        &[&project.path().join("junit.xml"), &project.path().join("report.json")],
    );
    assert!(
        std::fs::read_to_string(&key).unwrap().contains(secret),
        "the key was changed"
    );
    // The link the guest left is not shown as the console log.
    assert!(!out.stdout.contains("console log: "), "{out}");
}

#[test]
fn a_console_log_swapped_for_a_link_to_a_fifo_blocks_nothing() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    // QEMU 7.2's 9p cannot make a FIFO for the guest (ENXIO), but the guest
    // can link to one that exists on the host, here one nobody writes to.
    let outside = Outside::new();
    let fifo = outside.path().join("fifo");
    let c_fifo = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) }, 0);
    let command = format!(
        "rm -f .vmtest/bzImage/console.log && ln -s {} .vmtest/bzImage/console.log && {POWER_OFF}",
        quoted(&fifo)
    );
    let mut cmd = project.vmtest();
    cmd.arg("-k").arg(&kernel).arg(command);
    let out = Running::start(&mut cmd).finish(Duration::from_secs(240));
    out.assert_code(69).assert_stdout_contains("QEMU exited unexpectedly");
    project.assert_nothing_left(&out);
}

#[test]
fn a_planted_log_directory_link_makes_vmtest_write_or_delete_nothing_elsewhere() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    let outside = Outside::new();
    outside.file("console.log", "precious");
    let plant = format!(
        "rm -rf .vmtest/bzImage && ln -s {} .vmtest/bzImage",
        quoted(outside.path())
    );
    let out = project.run(project.vmtest().arg("-k").arg(&kernel).arg(plant));
    out.assert_code(0);
    // The next run would remove its old log and write a new one there.
    let out = project.run(project.vmtest().arg("-k").arg(&kernel).arg("echo second run"));
    assert_eq!(outside.names(), ["console.log"], "{out}");
    assert_eq!(
        std::fs::read_to_string(outside.path().join("console.log")).unwrap(),
        "precious",
        "{out}"
    );
    out.assert_code(0)
        .assert_stdout_contains("second run")
        .assert_stderr_contains(".vmtest/bzImage: is a symbolic link");
}

#[test]
fn report_links_planted_by_the_guest_are_replaced_or_refused_not_followed() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    let outside = Outside::new();
    let xml = outside.file("precious.xml", "precious xml");
    let json = outside.file("precious.json", "precious json");
    let md = outside.file("precious.md", "precious md");
    project.write("summary.md", "earlier\n");
    let command = format!(
        "rm -f junit.xml report.json summary.md && ln -s {} junit.xml && ln -s {} report.json && \
         ln -s {} summary.md",
        quoted(&xml),
        quoted(&json),
        quoted(&md)
    );
    let out = project.run(
        project
            .vmtest()
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_STEP_SUMMARY", project.path().join("summary.md"))
            .args(["--junit", "junit.xml", "--json", "report.json", "-k"])
            .arg(&kernel)
            .arg(command),
    );
    assert_eq!(std::fs::read_to_string(&xml).unwrap(), "precious xml", "{out}");
    assert_eq!(std::fs::read_to_string(&json).unwrap(), "precious json", "{out}");
    assert_eq!(std::fs::read_to_string(&md).unwrap(), "precious md", "{out}");
    // The JUnit and JSON reports replace the links; the step summary, which
    // vmtest appends to, is refused: a report not written.
    out.assert_code(74).assert_stderr_contains(&format!(
        "GitHub step summary ($GITHUB_STEP_SUMMARY) {}: cannot write: is a symbolic link",
        project.path().join("summary.md").display()
    ));
    for report in ["junit.xml", "report.json"] {
        let path = project.path().join(report);
        assert!(std::fs::symlink_metadata(&path).unwrap().is_file(), "{report}");
    }
    let junit = std::fs::read_to_string(project.path().join("junit.xml")).unwrap();
    assert!(junit.contains("<testsuite"), "{junit}");
}

#[test]
fn github_workflow_commands_from_the_guest_are_not_obeyed() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    let command = "echo '::error::pwned'; echo '::add-mask::secret'; echo '::endgroup::'; \
                   echo '::stop-commands::guess'; echo '::guess::'; echo '::error::pwned'";
    let out = project.run(
        project
            .vmtest()
            .env("GITHUB_ACTIONS", "true")
            .arg("-k")
            .arg(&kernel)
            .arg(command),
    );
    out.assert_code(0);
    // Every line the runner would obey comes from vmtest, in order: the
    // group, commands stopped, the guest's lines shown as text, commands
    // back on, the group's end.
    let mut token = None;
    let mut obeyed = Vec::new();
    for line in out.stdout.lines() {
        match &token {
            None => {
                if let Some(t) = line.strip_prefix("::stop-commands::") {
                    token = Some(format!("::{t}::"));
                } else if line.starts_with("::") {
                    obeyed.push(line);
                }
            }
            Some(resume) if line == resume => token = None,
            Some(_) => {}
        }
    }
    assert!(token.is_none(), "commands stay stopped at the end\n{out}");
    assert_eq!(obeyed.len(), 2, "{obeyed:?}\n{out}");
    assert!(obeyed[0].starts_with("::group::=== bzImage (kernel "), "{obeyed:?}");
    assert_eq!(obeyed[1], "::endgroup::", "{obeyed:?}");
    assert_eq!(out.stdout.matches("::error::pwned").count(), 2, "{out}");
}

#[test]
fn mounts_outside_mnt_and_shell_injection_are_refused() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    let outside = Outside::new();
    std::fs::create_dir(project.path().join("data")).unwrap();
    // `/mnt/..` would be the host's root: the init would create the
    // directory there.
    let escape = outside.path().join("escaped");
    let config = kernel_target(
        "dotdot",
        &kernel,
        "true",
        &format!(
            "[target.vm.mounts]\n{} = {{ host_path = \"data\" }}\n",
            toml_str(&format!("/mnt/..{}", escape.display()))
        ),
    );
    project.write("vmtest.toml", &config);
    let out = project.run(&mut project.vmtest());
    assert!(!escape.exists(), "created {}\n{out}", escape.display());
    out.assert_code(2)
        .assert_stderr_contains("target 'dotdot': field 'vm.mounts': guest path '/mnt/..")
        .assert_stderr_contains("'..' is not allowed in a mount path");
    // A quote in a mount path would end the shell init's quoting.
    let injected = outside.path().join("injected");
    let config = kernel_target(
        "quote",
        &kernel,
        "true",
        &format!(
            "[target.vm.mounts]\n{} = {{ host_path = \"data\" }}\n",
            toml_str(&format!("/mnt/x' ; touch {} ; '", injected.display()))
        ),
    );
    project.write("vmtest.toml", &config);
    let out = project.run(project.vmtest().env("VMTEST_SHELL_INIT", "1"));
    assert!(!injected.exists(), "the guest ran an injected command\n{out}");
    out.assert_code(2)
        .assert_stderr_contains("target 'quote': field 'vm.mounts': guest path")
        .assert_stderr_contains("is not allowed in a mount path");
}

#[test]
fn a_read_only_root_stays_read_only_for_guest_root() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    let outside = Outside::new();
    let target = outside.path().join("written");
    let command = format!(
        "mount -o remount,rw /; echo pwned > {} && echo wrote; echo shared > /mnt/vmtest/ok",
        quoted(&target)
    );
    let out = project.run(project.vmtest().args(["--kargs", "ro", "-k"]).arg(&kernel).arg(command));
    assert!(!target.exists(), "guest root wrote {}\n{out}", target.display());
    assert!(!out.command_stdout().contains("wrote"), "{out}");
    // /mnt/vmtest stays writable.
    assert_eq!(
        std::fs::read_to_string(project.path().join("ok")).unwrap(),
        "shared\n",
        "{out}"
    );
}

#[test]
fn an_image_guest_links_its_log_and_a_report_to_host_files_in_vain() {
    let Some(images) = test_images() else { return };
    let project = Project::for_vms();
    let outside = Outside::new();
    let secret = "SECRET-5e1f-image-guest";
    let key = outside.file("id_ed25519", &format!("{secret}\n"));
    let xml = outside.file("precious.xml", "precious xml");
    // The image cannot see these host paths; a link to them in the share is
    // enough, should vmtest follow it. sysrq powers off at once.
    let command = format!(
        "rm -f .vmtest/hostile-image/console.log junit.xml && \
         ln -s {} .vmtest/hostile-image/console.log && ln -s {} junit.xml && \
         echo o > /proc/sysrq-trigger; sleep 100",
        quoted(&key),
        quoted(&xml)
    );
    project.write(
        "vmtest.toml",
        &image_target("hostile-image", &images.bios, &command, ""),
    );
    let out = project.run(project.vmtest().args(["--junit", "junit.xml", "--json", "report.json"]));
    assert_eq!(std::fs::read_to_string(&xml).unwrap(), "precious xml", "{out}");
    assert_no_secret(
        &out,
        secret,
        &[&project.path().join("junit.xml"), &project.path().join("report.json")],
    );
    out.assert_code(69).assert_stdout_contains("QEMU exited unexpectedly");
    assert!(
        std::fs::symlink_metadata(project.path().join("junit.xml"))
            .unwrap()
            .is_file()
    );
}

/// Stops the guest's qemu-ga (as a wedged guest would leave it), then waits.
const WEDGE_THE_AGENT: &str = "echo ready; for p in /proc/[0-9]*; do \
    [ \"$(cat $p/comm 2>/dev/null)\" = qemu-ga ] && kill -STOP ${p#/proc/}; done; sleep 1000";

/// A guest whose agent stops answering in the middle of a status request
/// still ends as a timeout (124, not an infrastructure error after the
/// agent's own 30 s), and Ctrl-C still stops it.
#[test]
fn a_wedged_guest_agent_neither_outlasts_the_timeout_nor_ignores_ctrl_c() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    let out = project.run(
        project
            .vmtest()
            .arg("-k")
            .arg(&kernel)
            .args(["--timeout", "20", WEDGE_THE_AGENT]),
    );
    out.assert_code(124).assert_stdout_contains("timed out after 20 s");

    let mut run = Running::start(project.vmtest().arg("-k").arg(&kernel).arg(WEDGE_THE_AGENT));
    run.wait_for_line("ready", Duration::from_secs(180));
    // Past the next status request, which the stopped agent never answers.
    std::thread::sleep(Duration::from_secs(3));
    run.signal(libc::SIGINT);
    let out = run.finish(Duration::from_secs(30));
    out.assert_code(130).assert_stdout_contains("interrupted by SIGINT");
    project.assert_nothing_left(&out);
}
