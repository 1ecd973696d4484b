//! Foreign architectures: aarch64 and s390x guests under TCG on the assets
//! of tests/assets/build-arm64.sh and build-s390x.sh (a cross-built kernel
//! and a Debian rootfs of that architecture each), and the errors a foreign
//! target gets before any VM starts. A foreign boot takes seconds (aarch64)
//! to tens of seconds (s390x) under TCG, so the VM tests check several
//! things per boot.

use std::path::Path;

use crate::util::{Project, arm64_assets, s390x_assets, toml_str};

/// The shell init's private directory in the rootfs's /tmp is gone.
fn assert_no_init_left(rootfs: &Path) {
    let left: Vec<_> = std::fs::read_dir(rootfs.join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(".vmtest-init."))
        .collect();
    assert!(left.is_empty(), "init directories left in the rootfs: {left:?}");
}

#[test]
fn an_aarch64_target_runs_in_the_arm64_rootfs() {
    let Some(arm64) = arm64_assets() else { return };
    let project = Project::for_vms();
    let config = format!(
        "[[target]]\nname = \"arm64\"\narch = \"aarch64\"\nkernel = {}\nrootfs = {}\n\
         command = 'uname -m; uname -r; echo \"from $(uname -m)\" > from-guest.txt; pwd; exit 9'\n",
        toml_str(&arm64.kernel.to_string_lossy()),
        toml_str(&arm64.rootfs.to_string_lossy()),
    );
    project.write("vmtest.toml", &config);
    let out = project.run(&mut project.vmtest());
    assert_no_init_left(&arm64.rootfs);
    // The command's whole output sits between the header and the verdict.
    out.assert_code(9)
        .assert_stdout_contains(&format!(")\naarch64\n{}\n/mnt/vmtest\n--- FAIL arm64 (", arm64.release))
        .assert_stdout_contains("): exit code 9\n");
    let written = std::fs::read_to_string(project.path().join("from-guest.txt")).unwrap();
    assert_eq!(written, "from aarch64\n");
}

#[test]
fn the_one_liner_boots_aarch64() {
    let Some(arm64) = arm64_assets() else { return };
    let project = Project::for_vms();
    let mut cmd = project.vmtest();
    cmd.args(["-a", "aarch64", "-r"])
        .arg(&arm64.rootfs)
        .arg("-k")
        .arg(&arm64.kernel)
        .arg("uname -m; cat /mnt/vmtest/from-host.txt");
    project.write("from-host.txt", "shared\n");
    let out = project.run(&mut cmd);
    assert_no_init_left(&arm64.rootfs);
    out.assert_code(0).assert_stdout_contains("--- PASS Image (");
    assert_eq!(out.command_stdout(), "aarch64\nshared\n", "{out}");
}

#[test]
fn an_s390x_target_runs_in_the_s390x_rootfs() {
    let Some(s390x) = s390x_assets() else { return };
    let project = Project::for_vms();
    // One vCPU: an s390x guest under TCG reaches the agent several times
    // faster than with two.
    let config = format!(
        "[[target]]\nname = \"s390x\"\narch = \"s390x\"\nkernel = {}\nrootfs = {}\n\
         command = 'uname -m; uname -r; echo \"from $(uname -m)\" > from-guest.txt; exit 7'\n\
         [target.vm]\nnum_cpus = 1\n",
        toml_str(&s390x.kernel.to_string_lossy()),
        toml_str(&s390x.rootfs.to_string_lossy()),
    );
    project.write("vmtest.toml", &config);
    let out = project.run(&mut project.vmtest());
    assert_no_init_left(&s390x.rootfs);
    out.assert_code(7)
        .assert_stdout_contains(&format!(")\ns390x\n{}\n--- FAIL s390x (", s390x.release))
        .assert_stdout_contains("): exit code 7\n");
    let written = std::fs::read_to_string(project.path().join("from-guest.txt")).unwrap();
    assert_eq!(written, "from s390x\n");
}

#[test]
fn a_foreign_arch_on_the_hosts_root_explains_what_rootfs_it_needs() {
    let project = Project::without_vms();
    project.write("Image", "not a kernel");
    let out = project.run(project.vmtest().args(["-a", "aarch64", "-k", "Image", "true"]));
    out.assert_code(69)
        .assert_stdout_contains("error: arch aarch64 needs a root filesystem of that architecture")
        .assert_stdout_contains("whose programs cannot run in the guest")
        .assert_stdout_contains("mmdebstrap --arch arm64 --variant=extract");
}

#[test]
fn a_missing_qemu_names_the_debian_package() {
    let project = Project::without_vms();
    project.write("Image", "not a kernel");
    // Enough of a rootfs to pass the checks before QEMU is looked up.
    project.write("rootfs/usr/bin/bash", "");
    project.write("rootfs/usr/sbin/qemu-ga", "");
    let empty = project.path().join("empty-path");
    std::fs::create_dir(&empty).unwrap();
    for (arch, package) in [
        ("aarch64", "qemu-system-arm"),
        ("riscv64", "qemu-system-misc"),
        ("s390x", "qemu-system-s390x"),
    ] {
        let mut cmd = project.vmtest();
        cmd.env("PATH", &empty)
            .args(["-a", arch, "-r", "rootfs", "-k", "Image", "true"]);
        let out = project.run(&mut cmd);
        out.assert_code(69).assert_stdout_contains(&format!(
            "error: qemu-system-{arch} not found on PATH: it runs {arch} guests; \
             install it (Debian/Ubuntu: apt install {package})"
        ));
    }
}
