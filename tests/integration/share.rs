//! The shared directories over virtiofs (`vm.share`, issue 13) on real QEMU
//! with the test kernel, an image and the virtiofsd from
//! tests/assets/build-virtiofsd.sh: local-filesystem semantics, coherence
//! with the host between and during runs, read-only stays read-only, an
//! image's devices plugged in after its state is saved or restored, the
//! fallback to 9p, and no daemon left behind, even after SIGKILL.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::util::{
    Project, Running, assets_dir, image_target, kernel_target, processes_mentioning, require_asset, sha256,
    test_images, test_kernel, toml_str,
};

/// The virtiofsd the tests use, or `None` (outside CI) when it is missing.
fn virtiofsd() -> Option<PathBuf> {
    require_asset(assets_dir().join("virtiofsd/virtiofsd"), "virtiofsd")
}

/// The filesystem type mounted at `path` in the guest, as a shell command.
fn fstype(path: &str) -> String {
    format!("awk '$2 == \"{path}\" {{print \"{path}\", $3}}' /proc/mounts")
}

#[test]
fn a_kernel_target_on_virtiofs_behaves_like_a_local_filesystem() {
    let Some((kernel, _)) = test_kernel() else { return };
    let Some(daemon) = virtiofsd() else { return };
    let project = Project::for_vms();
    let dir = project.path();
    std::fs::write(dir.join("share_check.py"), include_str!("share_check.py")).unwrap();
    // What the host made before the run.
    std::fs::write(dir.join("host-file"), "host\n").unwrap();
    std::fs::set_permissions(dir.join("host-file"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("host-file", dir.join("host-link")).unwrap();
    std::fs::hard_link(dir.join("host-file"), dir.join("host-hard")).unwrap();
    let stamp = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    std::fs::File::options()
        .write(true)
        .open(dir.join("host-file"))
        .unwrap()
        .set_modified(stamp)
        .unwrap();
    std::fs::write(dir.join("changing"), "before\n").unwrap();
    let ro = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let via_root = outside.path().join("via-root");
    // The change is watched for in the working directory, the project at
    // its own path inside the root, which the guest caches for the whole
    // run: the project must be mounted there from its coherent export.
    let script = format!(
        "{}; {}; {}; {}\n\
         /usr/bin/python3 /mnt/vmtest/share_check.py /mnt/vmtest\n\
         touch /etc/vmtest-probe 2>/dev/null && echo 'root: writable' || echo 'root: read-only'\n\
         mount -o remount,rw / 2>/dev/null; touch {via_root} 2>/dev/null && echo 'remounted root: writable' \
           || echo 'remounted root: read-only'\n\
         touch /mnt/ro/new 2>/dev/null && echo 'ro mount: writable' || echo 'ro mount: read-only'\n\
         touch probe 2>/dev/null && echo 'project: writable' || echo 'project: read-only'\n\
         (cd /mnt/vmtest && head -c 8M /dev/urandom > written && sha256sum written | cut -d' ' -f1 > written.sum)\n\
         cat changing\n\
         echo ready\n\
         for i in $(seq 200); do [ \"$(cat changing)\" = after ] && break; sleep 0.05; done\n\
         echo \"seen: $(cat changing)\"",
        fstype("/"),
        fstype("/mnt/vmtest"),
        fstype("/mnt/ro"),
        fstype(&dir.to_string_lossy()),
        via_root = via_root.display(),
    );
    let extra = format!(
        "kernel_args = \"ro\"\n[target.vm]\nshare = \"virtiofs\"\n\
         [target.vm.mounts.\"/mnt/ro\"]\nhost_path = {}\n",
        toml_str(&ro.path().to_string_lossy())
    );
    project.write("vmtest.toml", &kernel_target("vfs", &kernel, &script, &extra));
    let mut cmd = project.vmtest();
    cmd.env("VMTEST_VIRTIOFSD", &daemon);
    let mut run = Running::start(&mut cmd);
    run.wait_for_line("ready", Duration::from_secs(600));
    let changed = Instant::now();
    std::fs::write(dir.join("changing"), "after\n").unwrap();
    run.wait_for_line("seen: after", Duration::from_secs(60));
    // virtiofsd's cache=auto: metadata is kept for one second (docs/config.md).
    let delay = changed.elapsed();
    assert!(
        delay < Duration::from_secs(10),
        "the guest saw the change after {delay:?}"
    );
    let out = run.finish(Duration::from_secs(120));
    project.assert_nothing_left(&out);
    out.assert_code(0);
    let expected = format!(
        "/ virtiofs\n\
         /mnt/vmtest virtiofs\n\
         /mnt/ro virtiofs\n\
         {} virtiofs\n\
         unlinked: b'0123' 4 0o640 False\n\
         posix lock held against another process: True\n\
         ofd lock held against another open: True\n\
         guest sees its link: moded 2\n\
         host's symlink: host-file mode 0o640\n\
         host's hard link count: 2 mtime 1000000000\n\
         sparse: 5368709120 b'x'\n\
         root: read-only\n\
         remounted root: read-only\n\
         ro mount: read-only\n\
         project: read-only\n\
         before\n\
         ready\n\
         seen: after\n",
        dir.display()
    );
    assert!(out.command_stdout().starts_with(&expected), "{out}");
    // What the guest left on the host, complete although QEMU was stopped
    // right after the command.
    let written = std::fs::read_to_string(dir.join("written.sum")).unwrap();
    assert_eq!(written.trim(), sha256(&dir.join("written")), "{out}");
    let moded = std::fs::metadata(dir.join("moded")).unwrap();
    assert_eq!(moded.mode() & 0o777, 0o754);
    assert_eq!(moded.mtime(), 1_234_567_890);
    assert_eq!(moded.nlink(), 2);
    assert_eq!(std::fs::metadata(dir.join("hard")).unwrap().ino(), moded.ino());
    assert_eq!(std::fs::read_link(dir.join("link")).unwrap(), Path::new("moded"));
    let sparse = std::fs::metadata(dir.join("sparse")).unwrap();
    assert_eq!(sparse.len(), 5 << 30);
    assert!(
        sparse.blocks() * 512 < 1 << 20,
        "sparse file allocated {} blocks",
        sparse.blocks()
    );
    assert!(!dir.join("unlinked").exists());
    assert!(!via_root.exists(), "the read-only root was written through");
    assert!(!ro.path().join("new").exists());
    assert!(
        !dir.join("probe").exists(),
        "the project was written under a read-only root"
    );
}

#[test]
fn a_host_change_between_runs_is_seen_and_auto_falls_back_to_9p_without_virtiofsd() {
    let Some((kernel, _)) = test_kernel() else { return };
    let Some(daemon) = virtiofsd() else { return };
    let project = Project::for_vms();
    project.write("data", "first\n");
    let command = format!("{}; cat data", fstype("/"));
    project.write("vmtest.toml", &kernel_target("auto", &kernel, &command, ""));
    let run = |daemon: &Path| {
        let mut cmd = project.vmtest();
        cmd.env("VMTEST_VIRTIOFSD", daemon).env("RUST_LOG", "info");
        project.run(&mut cmd)
    };
    let out = run(&daemon);
    out.assert_code(0);
    assert_eq!(out.command_stdout(), "/ virtiofs\nfirst\n", "{out}");
    assert!(!out.stderr.contains("over 9p"), "{out}");

    project.write("data", "second\n");
    let out = run(Path::new("none"));
    out.assert_code(0);
    assert_eq!(out.command_stdout(), "/ 9p\nsecond\n", "{out}");
    let notes: Vec<&str> = out.stderr.lines().filter(|l| l.contains("over 9p")).collect();
    assert_eq!(notes.len(), 1, "{out}");
    assert!(
        notes[0].contains("target 'auto': sharing directories over 9p: no virtiofsd found"),
        "{out}"
    );

    // Forced, virtiofs without a daemon is the target's error (exit code 69,
    // like any target that cannot start), not a fallback.
    project.write(
        "vmtest.toml",
        &kernel_target("forced", &kernel, "true", "[target.vm]\nshare = \"virtiofs\""),
    );
    let out = run(Path::new("none"));
    out.assert_code(69)
        .assert_stdout_contains("vm.share = \"virtiofs\": no virtiofsd found");
}

/// More `vm.mounts` than the PCI root bus would hold with a 9p device
/// beside each virtiofs one: a kernel target over virtiofs has only the
/// latter, so all of them are there.
#[test]
fn a_kernel_target_with_many_mounts_fits_on_the_pci_root_bus() {
    let Some((kernel, _)) = test_kernel() else { return };
    let Some(daemon) = virtiofsd() else { return };
    let project = Project::for_vms();
    let sources = tempfile::tempdir().unwrap();
    let mut tables = String::new();
    for i in 0..16 {
        let dir = sources.path().join(format!("s{i}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("f"), format!("{i}\n")).unwrap();
        tables.push_str(&format!(
            "[target.vm.mounts.\"/mnt/m{i}\"]\nhost_path = {}\n",
            toml_str(&dir.to_string_lossy())
        ));
    }
    let command = "cat /mnt/m*/f | sort -n | tr '\\n' ' '; awk '$3 == \"virtiofs\"' /proc/mounts | grep -c /mnt/m";
    let extra = format!("[target.vm]\nshare = \"virtiofs\"\n{tables}");
    project.write("vmtest.toml", &kernel_target("many", &kernel, command, &extra));
    let mut cmd = project.vmtest();
    cmd.env("VMTEST_VIRTIOFSD", &daemon);
    let out = project.run(&mut cmd);
    out.assert_code(0);
    assert_eq!(
        out.command_stdout(),
        "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n",
        "{out}"
    );
}

#[test]
fn sigkill_of_vmtest_leaves_no_virtiofsd() {
    let Some((kernel, _)) = test_kernel() else { return };
    let Some(daemon) = virtiofsd() else { return };
    let project = Project::for_vms();
    let mut cmd = project.vmtest();
    cmd.env("VMTEST_VIRTIOFSD", &daemon)
        .arg("-k")
        .arg(&kernel)
        .arg("echo ready; sleep 1000");
    let mut run = Running::start(&mut cmd);
    run.wait_for_line("ready", Duration::from_secs(600));
    let shared = format!("--shared-dir={}", project.path().display());
    // The daemon, and its sandboxed child when it runs as root.
    assert!(
        !processes_mentioning(&shared).is_empty(),
        "no virtiofsd for the project"
    );
    run.signal(libc::SIGKILL);
    let _ = run.finish(Duration::from_secs(10));
    project.wait_until_nothing_left(Duration::from_secs(10));
}

#[test]
fn an_image_mounts_the_project_over_virtiofs_cold_and_warm() {
    let Some(images) = test_images() else { return };
    let Some(daemon) = virtiofsd() else { return };
    let project = Project::for_vms();
    project.write("host.txt", "from the host\n");
    let command = format!(
        "{}; cat /mnt/vmtest/host.txt; head -c 4M /dev/urandom > /mnt/vmtest/guest.bin; \
         sha256sum /mnt/vmtest/guest.bin | cut -d' ' -f1",
        fstype("/mnt/vmtest")
    );
    let config = image_target("image", &images.bios, &command, "")
        .replace("[target.vm]\n", "[target.vm]\nshare = \"virtiofs\"\n");
    project.write("vmtest.toml", &config);
    let mut cmd = project.vmtest();
    cmd.env("VMTEST_VIRTIOFSD", &daemon).env("RUST_LOG", "info");
    let out = project.run(&mut cmd);
    out.assert_code(0);
    let sum = sha256(&project.path().join("guest.bin"));
    assert_eq!(
        out.command_stdout(),
        format!("/mnt/vmtest virtiofs\nfrom the host\n{sum}\n"),
        "{out}"
    );
    assert!(!out.stderr.contains("over 9p"), "{out}");

    // The first run saved the VM's state before plugging the device in
    // (QEMU cannot save a VM with one); this one restores it, then plugs.
    project.write("host.txt", "changed on the host\n");
    let out = project.run(&mut cmd);
    out.assert_code(0);
    let log = std::fs::read_to_string(project.path().join(".vmtest/image/console.log")).unwrap();
    assert!(
        log.starts_with("vmtest: warm start:"),
        "booted, not restored: {log}\n{out}"
    );
    assert!(
        out.command_stdout()
            .starts_with("/mnt/vmtest virtiofs\nchanged on the host\n"),
        "{out}"
    );
    assert!(!out.stderr.contains("over 9p"), "{out}");
}
