//! Warm start of image targets on real QEMU with the Debian test images: the
//! first run boots and saves the VM's state, later runs restore it. Each
//! project has its own cache of states (VMTEST_WARM_DIR, set by util), so
//! every test starts cold. A cold boot takes tens of seconds without KVM.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::util::{Outcome, Project, image_target, sha256, test_images, toml_str};

/// What a warm run writes first in its console log.
const WARM_NOTE: &str = "vmtest: warm start: the guest was restored from the state saved in ";

fn console(project: &Project, name: &str) -> String {
    std::fs::read_to_string(project.path().join(format!(".vmtest/{name}/console.log"))).unwrap()
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The number after `key=` in the command's output.
fn value(out: &Outcome, key: &str) -> i64 {
    out.command_stdout()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in the output\n{out}"))
}

fn assert_cold(project: &Project, name: &str, out: &Outcome) {
    let log = console(project, name);
    assert!(!log.starts_with(WARM_NOTE), "restored, not booted\n{out}");
    assert!(log.contains("Debian GNU/Linux 12"), "{log}\n{out}");
}

fn assert_warm(project: &Project, name: &str, out: &Outcome) {
    let log = console(project, name);
    assert!(log.starts_with(WARM_NOTE), "booted, not restored: {log}\n{out}");
}

/// The state's files, which warm runs must leave as they are.
fn fingerprint(state: &Path) -> Vec<(String, u64, SystemTime)> {
    let mut files: Vec<_> = std::fs::read_dir(state)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            // The stream is touched on use, for pruning.
            let modified = if name == "state" {
                UNIX_EPOCH
            } else {
                m.modified().unwrap()
            };
            (name, m.len(), modified)
        })
        .collect();
    files.sort();
    files
}

const SCRIPT: &str = "echo guest_time=$(date +%s)\n\
                      test -e /root/previous && echo previous=1 || echo previous=0\n\
                      echo w > /root/previous && sync\n\
                      cat /mnt/vmtest/host.txt 2>/dev/null || echo 'no host file'";

fn a_warm_start(image: &Path, name: &str, extra: &str) {
    let project = Project::for_vms();
    project.write("vmtest.toml", &image_target(name, image, SCRIPT, extra));
    let before = sha256(image);

    let out = project.run(&mut project.vmtest());
    out.assert_code(0);
    assert_cold(&project, name, &out);
    assert_eq!(value(&out, "previous"), 0, "{out}");
    let states = project.saved_states();
    assert_eq!(states.len(), 1, "{states:?}\n{out}");
    let state = &states[0];
    assert!(state.join("state").is_file() && state.join("disk.qcow2").is_file());
    let saved = fingerprint(state);

    // Created after the save: the share is mounted fresh in the warm run.
    project.write("host.txt", "written after the save\n");
    let before_run = now();
    let out = project.run(&mut project.vmtest());
    let after_run = now();
    out.assert_code(0).assert_stdout_contains("written after the save\n");
    assert_warm(&project, name, &out);
    // A fresh overlay: the file the first run wrote is not there.
    assert_eq!(value(&out, "previous"), 0, "{out}");
    // Unset, the clock would show the time of the save, seconds before
    // this run started (the first run's setup and command came after it).
    let guest_time = value(&out, "guest_time");
    assert!(
        (before_run - 1..=after_run + 1).contains(&guest_time),
        "the guest's clock says {guest_time}, the run was from {before_run} to {after_run}\n{out}"
    );
    assert_eq!(project.saved_states(), states);
    assert_eq!(fingerprint(state), saved, "a warm run changed the saved state");

    // --cold boots, and neither uses nor replaces the saved state.
    let out = project.run(project.vmtest().arg("--cold"));
    out.assert_code(0);
    assert_cold(&project, name, &out);
    assert_eq!(project.saved_states(), states);
    assert_eq!(fingerprint(state), saved);
    assert_eq!(sha256(image), before, "the image changed");
}

#[test]
fn a_bios_image_starts_warm_with_a_fresh_share_disk_and_clock() {
    let Some(images) = test_images() else { return };
    a_warm_start(&images.bios, "bios", "");
}

#[test]
fn a_uefi_image_starts_warm_with_a_fresh_share_disk_and_clock() {
    let Some(images) = test_images() else { return };
    a_warm_start(&images.uefi, "uefi", "uefi = true");
}

/// A sparse copy of the test image, to change.
fn copy_image(image: &Path, dir: &Path) -> PathBuf {
    let copy = dir.join(image.file_name().unwrap());
    let status = std::process::Command::new("cp")
        .arg("--sparse=always")
        .arg(image)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    copy
}

#[test]
fn a_changed_image_memory_or_mount_boots_cold_and_a_broken_state_falls_back() {
    let Some(images) = test_images() else { return };
    let project = Project::for_vms();
    let images_dir = tempfile::tempdir().unwrap();
    let image = copy_image(&images.bios, images_dir.path());
    let mounted = tempfile::tempdir().unwrap();
    // Lines for the [target.vm] table, which image_target ends with.
    let config = |vm: &str| image_target("bios", &image, "echo ok", "") + vm;
    project.write("vmtest.toml", &config(""));
    let out = project.run(&mut project.vmtest());
    out.assert_code(0);
    assert_cold(&project, "bios", &out);
    let states = project.saved_states();
    assert_eq!(states.len(), 1, "{out}");

    // A state QEMU cannot load (cut short) is deleted, and the run boots.
    let state = states[0].join("state");
    let len = std::fs::metadata(&state).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&state)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let out = project.run(&mut project.vmtest());
    out.assert_code(0)
        .assert_stderr_contains("target 'bios': the saved state ")
        .assert_stderr_contains("did not restore (");
    assert_eq!(out.stderr.matches("did not restore").count(), 1, "{out}");
    assert_cold(&project, "bios", &out);
    assert!(project.saved_states().is_empty(), "{out}");

    // Saved again, then: the image touched and one byte longer.
    let out = project.run(&mut project.vmtest());
    out.assert_code(0);
    assert_cold(&project, "bios", &out);
    assert_eq!(project.saved_states().len(), 1, "{out}");
    let out = project.run(&mut project.vmtest());
    assert_warm(&project, "bios", &out);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&image)
        .unwrap()
        .set_len(std::fs::metadata(&image).unwrap().len() + 1)
        .unwrap();
    let out = project.run(&mut project.vmtest());
    out.assert_code(0);
    assert_cold(&project, "bios", &out);
    assert_eq!(project.saved_states().len(), 2, "{out}");

    // Other memory, then another mount: each a state of its own.
    project.write("vmtest.toml", &config("memory = \"2G\"\n"));
    let out = project.run(&mut project.vmtest());
    out.assert_code(0);
    assert_cold(&project, "bios", &out);
    assert_eq!(project.saved_states().len(), 3, "{out}");
    let mount = format!(
        "memory = \"2G\"\n[target.vm.mounts.\"/data\"]\nhost_path = {}\n",
        toml_str(&mounted.path().to_string_lossy())
    );
    project.write("vmtest.toml", &config(&mount));
    let out = project.run(&mut project.vmtest());
    out.assert_code(0);
    assert_cold(&project, "bios", &out);
    assert_eq!(project.saved_states().len(), 4, "{out}");
}
