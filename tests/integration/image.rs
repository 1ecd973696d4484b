//! Image targets on real QEMU with the Debian disk images from
//! tests/assets/build-images.sh: booting under SeaBIOS and OVMF, the shares
//! and mounts inside the image, the command's environment and exit code, and
//! the image left untouched. Each boot takes tens of seconds without KVM, so
//! each test checks many things in one boot.

use std::time::Duration;

use crate::util::{Project, image_target, kernel_target, sha256, test_images, test_kernel, toml_str};

#[test]
fn a_bios_image_runs_the_command_with_shares_mounts_and_only_its_env() {
    let Some(images) = test_images() else { return };
    let project = Project::for_vms();
    let host = tempfile::tempdir().unwrap();
    let (ro, rw) = (host.path().join("ro"), host.path().join("rw"));
    std::fs::create_dir(&ro).unwrap();
    std::fs::create_dir(&rw).unwrap();
    std::fs::write(ro.join("host.txt"), "from the host\n").unwrap();
    let script = "grep ^ID=debian /etc/os-release\n\
                  ls /mnt/vmtest\n\
                  echo \"cwd=$PWD var=$VMTEST_VAR host=${VMTEST_HOST_ONLY-unset} path=$PATH\"\n\
                  echo 'from the guest' > /mnt/vmtest/guest.txt\n\
                  cat /data/host.txt\n\
                  touch /data/new 2>/dev/null && echo 'ro: writable' || echo 'ro: read-only'\n\
                  echo written > /rw/guest.txt\n\
                  head -c 4M /dev/urandom > /root/disk-write && sync && echo 'disk: written'\n\
                  exit 7";
    let extra = format!(
        "env = {{ VMTEST_VAR = \"it's set\" }}\n\
         [target.vm.mounts.\"/data\"]\nhost_path = {}\n\
         [target.vm.mounts.\"/rw\"]\nhost_path = {}\nwritable = true\n",
        toml_str(&ro.to_string_lossy()),
        toml_str(&rw.to_string_lossy())
    );
    project.write(
        "vmtest.toml",
        &image_target("debian-bios", &images.bios, script, &extra),
    );
    let before = sha256(&images.bios);
    let out = project.run(project.vmtest().env("VMTEST_HOST_ONLY", "leaked"));
    out.assert_code(7)
        .assert_stdout_contains("=== debian-bios (image ")
        .assert_stdout_contains("--- FAIL debian-bios (")
        .assert_stdout_contains("): exit code 7");
    let expected = "ID=debian\n\
                    vmtest.toml\n\
                    cwd=/mnt/vmtest var=it's set host=unset path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
                    from the host\n\
                    ro: read-only\n\
                    disk: written\n";
    // A failed target's verdict is followed by where its console log is.
    assert!(out.command_stdout().starts_with(expected), "{out}");
    let written = std::fs::read_to_string(project.path().join("guest.txt")).unwrap();
    assert_eq!(written, "from the guest\n");
    assert_eq!(std::fs::read_to_string(rw.join("guest.txt")).unwrap(), "written\n");
    assert!(!ro.join("new").exists());
    assert_eq!(sha256(&images.bios), before, "the image changed");
    // The serial console reached the log: the bootloader, then systemd.
    let console = std::fs::read_to_string(project.path().join(".vmtest/debian-bios/console.log")).unwrap();
    assert!(console.contains("SYSLINUX"), "{console}");
    assert!(console.contains("Debian GNU/Linux 12"), "{console}");
}

#[test]
fn uefi_and_kernel_targets_run_together_and_uefi_without_ovmf_times_out() {
    let Some(images) = test_images() else { return };
    let Some((kernel, release)) = test_kernel() else { return };
    let project = Project::for_vms();
    let config = [
        kernel_target("kernel", &kernel, "uname -r", ""),
        image_target(
            "uefi",
            &images.uefi,
            "grep ^ID=debian /etc/os-release && test -d /sys/firmware/efi && echo efi && \
             head -c 4M /dev/urandom > /root/disk-write && sync",
            "uefi = true",
        ),
        // GPT with systemd-boot has nothing SeaBIOS can boot.
        image_target("uefi-as-bios", &images.uefi, "true", "boot_timeout = 10"),
    ]
    .concat();
    project.write("vmtest.toml", &config);
    let before = sha256(&images.uefi);
    let out = project.run(&mut project.vmtest());
    out.assert_code(1)
        .assert_stdout_contains("--- PASS kernel (")
        .assert_stdout_contains("--- PASS uefi (")
        .assert_stdout_contains(
            "): error: the guest agent never answered within the boot timeout (10s)\n\
             last lines of the guest console:\n",
        )
        .assert_stdout_contains("  Booting from Hard Disk...\n")
        .assert_stdout_contains("Summary: 2 passed, 1 failed");
    let expected = format!("{release}\nID=debian\nefi\n");
    assert!(out.command_stdout().starts_with(&expected), "{out}");
    assert!(!out.stdout.contains('\x1b'), "escape sequences in the report\n{out}");
    let verdict = out
        .stdout
        .lines()
        .find(|l| l.starts_with("--- FAIL uefi-as-bios ("))
        .unwrap_or_else(|| panic!("no verdict for uefi-as-bios\n{out}"));
    let secs: f64 = verdict["--- FAIL uefi-as-bios (".len()..]
        .split('s')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no time in {verdict:?}"));
    assert!(secs < 20.0, "the boot timeout took {secs}s\n{out}");
    assert_eq!(sha256(&images.uefi), before, "the image changed");
}

#[test]
fn a_missing_image_and_a_file_that_is_no_image_fail_fast() {
    let project = Project::without_vms();
    let notes = project.write("notes.txt", "not a disk\n");
    let missing = project.path().join("nope/disk.qcow2");
    let config = [
        image_target("missing", &missing, "true", ""),
        image_target("notes", &notes, "true", ""),
    ]
    .concat();
    project.write("vmtest.toml", &config);
    let out = project.run(&mut project.vmtest());
    out.assert_code(2)
        .assert_stdout_contains(&format!("): error: image {} not found\n", missing.display()))
        .assert_stdout_contains(&format!(
            "): error: {} is not a disk image: it is neither qcow2 nor a raw disk with an MBR or GPT partition table\n",
            notes.display()
        ));
    assert!(out.elapsed < Duration::from_secs(5), "{out}");
}
