//! Unit tests of image targets: format detection, firmware search, argv and
//! guest setup.

use std::collections::BTreeSet;

use super::*;
use crate::config::parse;

fn target(extra: &str) -> Target {
    let text =
        format!("[[target]]\nname = \"img\"\nimage = \"disk.qcow2\"\ncommand = \"true\"\narch = \"x86_64\"\n{extra}");
    parse(&text, Path::new("/proj/vmtest.toml"), Path::new("/proj"))
        .unwrap()
        .remove(0)
}

fn sector(offset: usize, bytes: &[u8]) -> Vec<u8> {
    let mut header = vec![0u8; 4608];
    header[offset..offset + bytes.len()].copy_from_slice(bytes);
    header
}

#[test]
fn formats_are_told_apart_by_their_first_bytes() {
    assert_eq!(format_of(&sector(0, b"QFI\xfb\0\0\0\x03")), Some(Format::Qcow2));
    assert_eq!(format_of(&sector(510, &[0x55, 0xaa])), Some(Format::Raw));
    assert_eq!(format_of(&sector(512, b"EFI PART")), Some(Format::Raw));
    assert_eq!(format_of(&sector(4096, b"EFI PART")), Some(Format::Raw));
    assert_eq!(format_of(&sector(0, b"#!/bin/sh\n")), None);
    assert_eq!(format_of(b"QFI"), None);
    assert_eq!(format_of(&[]), None);
}

#[test]
fn missing_and_foreign_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.qcow2");
    let err = format!("{:#}", detect_format(&missing).unwrap_err());
    assert_eq!(err, format!("image {} not found", missing.display()));
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "hello\n").unwrap();
    let err = format!("{:#}", detect_format(&text).unwrap_err());
    assert_eq!(
        err,
        format!(
            "{} is not a disk image: it is neither qcow2 nor a raw disk with an MBR or GPT partition table",
            text.display()
        )
    );
    let err = format!("{:#}", detect_format(dir.path()).unwrap_err());
    assert_eq!(err, format!("image {} is not a file", dir.path().display()));
    let disk = dir.path().join("disk.img");
    std::fs::write(&disk, sector(510, &[0x55, 0xaa])).unwrap();
    assert_eq!(detect_format(&disk).unwrap(), Format::Raw);
}

fn ovmf_with(files: &[&str]) -> Result<Ovmf> {
    let files: BTreeSet<PathBuf> = files.iter().map(PathBuf::from).collect();
    find_ovmf("x86_64", |p| files.contains(p))
}

#[test]
fn ovmf_is_found_where_distributions_install_it() {
    let split = |code: &str, vars: &str| Ovmf::Split {
        code: code.into(),
        vars: vars.into(),
    };
    // Debian 12: the 4M build wins over the 2M one and the combined file.
    let debian = ovmf_with(&[
        "/usr/share/OVMF/OVMF_CODE.fd",
        "/usr/share/OVMF/OVMF_VARS.fd",
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
        "/usr/share/ovmf/OVMF.fd",
    ]);
    assert_eq!(
        debian.unwrap(),
        split("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd")
    );
    let fedora = ovmf_with(&["/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd"]);
    assert_eq!(
        fedora.unwrap(),
        split("/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd")
    );
    let arch = ovmf_with(&[
        "/usr/share/edk2/x64/OVMF_CODE.4m.fd",
        "/usr/share/edk2/x64/OVMF_VARS.4m.fd",
    ]);
    assert_eq!(
        arch.unwrap(),
        split(
            "/usr/share/edk2/x64/OVMF_CODE.4m.fd",
            "/usr/share/edk2/x64/OVMF_VARS.4m.fd"
        )
    );
    // A code file without its variables is no use as a pair.
    let combined = ovmf_with(&["/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/ovmf/OVMF.fd"]);
    assert_eq!(combined.unwrap(), Ovmf::Combined("/usr/share/ovmf/OVMF.fd".into()));
}

#[test]
fn missing_ovmf_lists_every_path_and_the_packages() {
    let err = format!("{:#}", ovmf_with(&[]).unwrap_err());
    for (code, vars) in OVMF_SPLIT {
        assert!(err.contains(&format!("  {code} + {vars}\n")), "{err}");
    }
    for file in OVMF_COMBINED {
        assert!(err.contains(&format!("  {file}\n")), "{err}");
    }
    assert!(
        err.starts_with("uefi = true, but no OVMF firmware was found; tried:\n"),
        "{err}"
    );
    assert!(
        err.ends_with(
            "install it (Debian/Ubuntu: apt install ovmf; Fedora: dnf install edk2-ovmf; \
             Arch: pacman -S edk2-ovmf) or set vm.bios to an OVMF file"
        ),
        "{err}"
    );
    let err = format!("{:#}", find_ovmf("aarch64", |_| true).unwrap_err());
    assert!(err.starts_with("uefi = true needs vm.bios on aarch64"), "{err}");
}

const COMMON_TAIL: &[&str] = &[
    "-chardev",
    "pipe,id=console,path=/run/v/console",
    "-serial",
    "chardev:console",
    "-device",
    "virtio-serial-pci,id=vser0",
    "-chardev",
    "socket,id=agent,path=/run/v/agent.sock,server=off",
    "-device",
    "virtserialport,bus=vser0.0,chardev=agent,name=org.qemu.guest_agent.0",
    "-chardev",
    "socket,id=stdin,path=/run/v/stdin.sock,server=off",
    "-device",
    "virtserialport,bus=vser0.0,chardev=stdin,name=org.vmtest.stdin",
    "-chardev",
    "socket,id=stdout,path=/run/v/stdout.sock,server=off",
    "-device",
    "virtserialport,bus=vser0.0,chardev=stdout,name=org.vmtest.stdout",
    "-chardev",
    "socket,id=stderr,path=/run/v/stderr.sock,server=off",
    "-device",
    "virtserialport,bus=vser0.0,chardev=stderr,name=org.vmtest.stderr",
    "-fsdev",
    "local,id=share,path=/proj,security_model=none,multidevs=remap",
    "-device",
    "virtio-9p-pci,fsdev=share,mount_tag=vmtest_share",
];

const MACHINE: &[&str] = &[
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    "-no-reboot",
    "-machine",
    "q35",
    "-accel",
    "tcg",
    "-cpu",
    "max",
    "-smp",
    "2",
    "-m",
    "4G",
];

#[test]
fn bios_argv_is_exact() {
    let t = target("[target.vm]\nextra_args = [\"-s\"]\n[target.vm.mounts.\"/data\"]\nhost_path = \"/srv/a,b\"\n");
    let firmware = Firmware::SeaBios;
    let argv = qemu::image_argv(
        &t,
        Disk {
            image: Path::new("/img/disk.raw"),
            format: Format::Raw,
            snapshot: true,
        },
        &firmware,
        &crate::fixtures::vm_paths(),
        Accel::Tcg,
    );
    let mut expected: Vec<&str> = MACHINE.to_vec();
    expected.extend([
        "-machine",
        "graphics=off",
        "-drive",
        "file=/img/disk.raw,if=virtio,format=raw,snapshot=on",
    ]);
    expected.extend(COMMON_TAIL);
    expected.extend([
        "-fsdev",
        "local,id=m0,path=/srv/a,,b,security_model=none,multidevs=remap,readonly=on",
        "-device",
        "virtio-9p-pci,fsdev=m0,mount_tag=vmtest_m0",
        "-s",
    ]);
    assert_eq!(argv, expected);
}

#[test]
fn uefi_argv_is_exact() {
    let t = target("uefi = true\n");
    let firmware = Firmware::Pflash {
        code: "/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
        vars: "/run/v/OVMF_VARS.fd".into(),
    };
    let argv = qemu::image_argv(
        &t,
        Disk {
            image: Path::new("/img/a,b.qcow2"),
            format: Format::Qcow2,
            snapshot: true,
        },
        &firmware,
        &crate::fixtures::vm_paths(),
        Accel::Tcg,
    );
    let mut expected: Vec<&str> = MACHINE.to_vec();
    expected.extend([
        "-drive",
        "if=pflash,unit=0,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
        "-drive",
        "if=pflash,unit=1,format=raw,file=/run/v/OVMF_VARS.fd",
        "-drive",
        "file=/img/a,,b.qcow2,if=virtio,format=qcow2,snapshot=on",
    ]);
    expected.extend(COMMON_TAIL);
    assert_eq!(argv, expected);
    let bios = Firmware::Bios("/fw/OVMF.fd".into());
    let argv = qemu::image_argv(
        &t,
        Disk {
            image: Path::new("/d.img"),
            format: Format::Raw,
            snapshot: true,
        },
        &bios,
        &crate::fixtures::vm_paths(),
        Accel::Tcg,
    );
    assert_eq!(
        argv[MACHINE.len()..MACHINE.len() + 4],
        [
            "-bios",
            "/fw/OVMF.fd",
            "-drive",
            "file=/d.img,if=virtio,format=raw,snapshot=on"
        ]
    );
}

#[test]
fn setup_checks_9p_then_mounts_the_share_and_each_mount() {
    let t = target(
        "[target.vm.mounts.\"/data\"]\nhost_path = \"/srv/ro\"\n\
         [target.vm.mounts.\"/opt/it is\"]\nhost_path = \"/srv/rw\"\nwritable = true\n",
    );
    let steps = setup_steps(&t.vm.mounts);
    let what: Vec<&str> = steps.iter().map(|s| s.what.as_str()).collect();
    assert_eq!(what, ["mounting /mnt/vmtest", "mounting /data", "mounting /opt/it is"]);
    assert!(steps.iter().all(|s| s.path == "/bin/sh" && s.args[0] == "-c"));
    assert!(steps[0].args[1].starts_with(CHECK_9P));
    assert!(CHECK_9P.contains("the image needs the 9p modules (9p, 9pnet_virtio)"));
    let opts = "trans=virtio,version=9p2000.L,msize=512000,access=any";
    assert_eq!(
        steps[0].args[1],
        format!("{CHECK_9P}\nmkdir -p '/mnt/vmtest' && mount -t 9p -o {opts},rw vmtest_share '/mnt/vmtest'")
    );
    assert_eq!(
        steps[1].args[1],
        format!("mkdir -p '/data' && mount -t 9p -o {opts},ro vmtest_m0 '/data'")
    );
    assert_eq!(
        steps[2].args[1],
        format!("mkdir -p '/opt/it is' && mount -t 9p -o {opts},rw vmtest_m1 '/opt/it is'")
    );
}

#[test]
fn the_command_gets_only_the_targets_env_and_a_guest_path() {
    let t = target("env = { A = \"1\" }\n");
    assert_eq!(target_env_only(&t), ["A=1".to_string(), format!("PATH={GUEST_PATH}")]);
    let t = target("env = { PATH = \"/opt/bin\" }\n");
    assert_eq!(target_env_only(&t), ["PATH=/opt/bin"]);
}

#[test]
fn the_workdir_is_under_the_share() {
    let mut t = target("");
    assert_eq!(crate::guest::workdir_in_share(&t), "/mnt/vmtest");
    t.workdir = "/proj/sub/dir".into();
    assert_eq!(crate::guest::workdir_in_share(&t), "/mnt/vmtest/sub/dir");
}

#[test]
fn a_warm_disk_is_an_overlay_with_or_without_snapshot_mode() {
    let t = target("");
    let overlay = Disk {
        image: Path::new("/c/warm/.tmp-x/disk.qcow2"),
        format: Format::Qcow2,
        snapshot: false,
    };
    let argv = qemu::image_argv(
        &t,
        overlay,
        &Firmware::SeaBios,
        &crate::fixtures::vm_paths(),
        Accel::Tcg,
    );
    assert!(argv.contains(&"file=/c/warm/.tmp-x/disk.qcow2,if=virtio,format=qcow2".to_string()));
    let saved = Disk {
        snapshot: true,
        ..overlay
    };
    let argv = qemu::image_argv(&t, saved, &Firmware::SeaBios, &crate::fixtures::vm_paths(), Accel::Tcg);
    assert!(argv.contains(&"file=/c/warm/.tmp-x/disk.qcow2,if=virtio,format=qcow2,snapshot=on".to_string()));
}

#[test]
fn the_warm_key_ignores_host_paths_but_not_the_machine() {
    let dir = tempfile::tempdir().unwrap();
    let (qemu, image) = (dir.path().join("qemu-system-x86_64"), dir.path().join("disk.raw"));
    std::fs::write(&qemu, "qemu").unwrap();
    std::fs::write(&image, "disk").unwrap();
    let inputs = |ovmf: Option<Ovmf>| Inputs {
        image: image.clone(),
        format: Format::Raw,
        ovmf,
    };
    let key = |extra: &str, share: &str| {
        let mut t = target(extra);
        t.share_dir = share.into();
        warm_key(&t, &inputs(None), &qemu, Accel::Tcg, &[]).unwrap()
    };
    let mount = |host: &str| format!("[target.vm.mounts.\"/data\"]\nhost_path = \"{host}\"\n");
    let base = key("", "/proj");
    assert_eq!(key("", "/elsewhere"), base);
    assert_ne!(key("[target.vm]\nmemory = \"2G\"\n", "/proj"), base);
    assert_ne!(key("[target.vm]\nnum_cpus = 1\n", "/proj"), base);
    assert_ne!(key("[target.vm]\nextra_args = [\"-s\"]\n", "/proj"), base);
    let with_mount = key(&mount("/srv/a"), "/proj");
    assert_ne!(with_mount, base);
    assert_eq!(key(&mount("/srv/b"), "/proj"), with_mount);
    let mut t = target("");
    t.share_dir = "/proj".into();
    assert_ne!(warm_key(&t, &inputs(None), &qemu, Accel::Kvm, &[]).unwrap(), base);
    let ovmf = Ovmf::Combined(qemu.clone());
    assert_ne!(warm_key(&t, &inputs(Some(ovmf)), &qemu, Accel::Tcg, &[]).unwrap(), base);
    // A state saved without the ports for virtiofs is not restored with them.
    let plugged = plugged_args(&t);
    assert_ne!(warm_key(&t, &inputs(None), &qemu, Accel::Tcg, &plugged).unwrap(), base);
}
