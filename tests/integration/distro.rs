//! Distribution kernels on real QEMU: Debian's linux-image-amd64, whose
//! virtio, 9p and console drivers are modules that vmtest loads from an
//! initramfs it builds (and caches); the cloud flavour without 9p; and the
//! test kernel with everything built in, which gets no initramfs at all.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use crate::util::{Project, debian_kernels, kernel_target, test_kernel, toml_str};

/// A vmtest command with debug logs (QEMU's argv, the initramfs cache) and
/// its own cache directory.
fn vmtest(project: &Project, cache: &Path) -> Command {
    let mut cmd = project.vmtest();
    cmd.env("XDG_CACHE_HOME", cache).env("RUST_LOG", "vmtest=debug");
    cmd
}

/// The QEMU command line vmtest logged.
fn qemu_argv(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.contains("spawning ") && l.contains("qemu-system"))
        .unwrap_or_else(|| panic!("no QEMU argv in the log:\n{stderr}"))
}

/// The initramfs archives in a cache directory, with their mtimes.
fn cached_archives(cache: &Path) -> Vec<(PathBuf, SystemTime)> {
    let dir = cache.join("vmtest/initramfs");
    let mut found: Vec<_> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| (e.path(), e.metadata().unwrap().modified().unwrap()))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

#[test]
fn uname_shows_the_debian_release_in_the_one_liner() {
    let Some(debian) = debian_kernels() else { return };
    let project = Project::for_vms();
    let cache = tempfile::tempdir().unwrap();
    let out = project.run(
        vmtest(&project, cache.path())
            .arg("-k")
            .arg(&debian.amd64)
            .args(["uname", "-r"]),
    );
    out.assert_code(0);
    assert_eq!(out.command_stdout(), format!("{}\n", debian.amd64_release), "{out}");
    assert!(qemu_argv(&out.stderr).contains(" -initrd "), "{out}");
}

#[test]
fn the_config_form_boots_and_shares_its_directory() {
    let Some(debian) = debian_kernels() else { return };
    let project = Project::for_vms();
    let cache = tempfile::tempdir().unwrap();
    let command = "uname -r; echo from-guest > /mnt/vmtest/written.txt";
    project.write("vmtest.toml", &kernel_target("debian", &debian.amd64, command, ""));
    let out = project.run(&mut vmtest(&project, cache.path()));
    out.assert_code(0).assert_stdout_contains("--- PASS debian");
    assert_eq!(out.command_stdout(), format!("{}\n", debian.amd64_release), "{out}");
    let written = std::fs::read_to_string(project.path().join("written.txt")).unwrap();
    assert_eq!(written, "from-guest\n");
}

#[test]
fn modprobe_works_and_a_second_run_reuses_the_initramfs() {
    let Some(debian) = debian_kernels() else { return };
    let project = Project::for_vms();
    let cache = tempfile::tempdir().unwrap();
    let command = "test -d /sys/module/dummy && echo already-loaded; \
                   modprobe dummy && test -d /sys/module/dummy && echo loaded";
    let first = project.run(vmtest(&project, cache.path()).arg("-k").arg(&debian.amd64).arg(command));
    first.assert_code(0).assert_stderr_contains("initramfs: built ");
    assert_eq!(first.command_stdout(), "loaded\n", "{first}");
    let archives = cached_archives(cache.path());
    assert_eq!(archives.len(), 1, "{archives:?}");

    let second = project.run(
        vmtest(&project, cache.path())
            .arg("-k")
            .arg(&debian.amd64)
            .arg("uname -r"),
    );
    second.assert_code(0).assert_stderr_contains("initramfs: reusing ");
    assert_eq!(
        second.command_stdout(),
        format!("{}\n", debian.amd64_release),
        "{second}"
    );
    assert_eq!(
        cached_archives(cache.path()),
        archives,
        "the cached initramfs was rewritten"
    );
}

#[test]
fn compressed_modules_from_a_modules_setting_boot_and_load() {
    let Some(debian) = debian_kernels() else { return };
    let project = Project::for_vms();
    let cache = tempfile::tempdir().unwrap();
    let command = "uname -r; ls /lib/modules; ls /lib/modules/$(uname -r)/kernel/drivers/net; \
                   modprobe dummy && test -d /sys/module/dummy && echo loaded";
    let extra = format!("modules = {}", toml_str(&debian.modules_xz.to_string_lossy()));
    project.write("vmtest.toml", &kernel_target("xz", &debian.amd64, command, &extra));
    let out = project.run(&mut vmtest(&project, cache.path()));
    out.assert_code(0);
    let release = &debian.amd64_release;
    assert_eq!(
        out.command_stdout(),
        format!("{release}\n{release}\ndummy.ko.xz\nloaded\n"),
        "{out}"
    );
    let argv = qemu_argv(&out.stderr);
    assert!(
        argv.contains(" -initrd ") && argv.contains("mount_tag=vmtest_modules"),
        "{out}"
    );
}

#[test]
fn the_initramfs_hands_over_to_the_shell_init_too() {
    let Some(debian) = debian_kernels() else { return };
    let project = Project::for_vms();
    let cache = tempfile::tempdir().unwrap();
    let mut cmd = vmtest(&project, cache.path());
    cmd.env("VMTEST_SHELL_INIT", "1")
        .arg("-k")
        .arg(&debian.amd64)
        .arg("uname -r; echo to-stderr >&2");
    let out = project.run(&mut cmd);
    out.assert_code(0).assert_stderr_contains("to-stderr\n");
    assert_eq!(out.command_stdout(), format!("{}\n", debian.amd64_release), "{out}");
}

#[test]
fn a_kernel_without_9p_fails_quickly_and_says_what_to_use() {
    let Some(debian) = debian_kernels() else { return };
    let project = Project::without_vms();
    let cache = tempfile::tempdir().unwrap();
    let out = project.run(vmtest(&project, cache.path()).arg("-k").arg(&debian.cloud).arg("true"));
    out.assert_code(69)
        .assert_stdout_contains("has no 9p support")
        .assert_stdout_contains("cannot share a root filesystem over 9p")
        .assert_stdout_contains("linux-image-amd64");
    assert!(out.elapsed < Duration::from_secs(10), "{out}");
    assert!(cached_archives(cache.path()).is_empty());
}

#[test]
fn a_wrong_modules_path_names_every_place_looked_at() {
    let Some(debian) = debian_kernels() else { return };
    let project = Project::without_vms();
    let cache = tempfile::tempdir().unwrap();
    let mut cmd = vmtest(&project, cache.path());
    cmd.arg("-k").arg(&debian.amd64).args(["--modules", "nowhere", "true"]);
    let out = project.run(&mut cmd);
    let base = project.path().join("nowhere");
    let release = &debian.amd64_release;
    out.assert_code(69)
        .assert_stdout_contains(&format!("no modules for kernel release {release}"))
        .assert_stdout_contains(&format!("{}/lib/modules/{release}", base.display()));
}

#[test]
fn the_built_in_test_kernel_gets_no_initramfs() {
    let Some((kernel, release)) = test_kernel() else { return };
    let project = Project::for_vms();
    let cache = tempfile::tempdir().unwrap();
    let out = project.run(
        vmtest(&project, cache.path())
            .arg("-k")
            .arg(&kernel)
            .args(["uname", "-r"]),
    );
    out.assert_code(0);
    assert_eq!(out.command_stdout(), format!("{release}\n"), "{out}");
    assert!(!qemu_argv(&out.stderr).contains("-initrd"), "{out}");
    assert!(!cache.path().join("vmtest/initramfs").exists(), "{out}");
}
