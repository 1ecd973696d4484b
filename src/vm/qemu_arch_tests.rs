//! Unit tests of the QEMU argv of foreign architectures (under TCG, the only
//! accelerator a foreign guest gets). Every option here was checked against
//! Debian 12's QEMU 7.2 (`qemu-system-<arch> ARGV -S`).

use std::path::Path;

use super::*;
use crate::config::{Kind, OneLiner, one_liner};

/// The argv of a one-liner for `arch` booting `kernel` on `/srv/rootfs-<arch>`.
fn foreign_argv(arch: &str, kernel: &str) -> Vec<String> {
    let args = OneLiner {
        kernel: kernel.into(),
        rootfs: Some(format!("/srv/rootfs-{arch}").into()),
        arch: Some(arch.into()),
        command: "uname -m".into(),
        ..Default::default()
    };
    let target = one_liner(args, Path::new("/work")).unwrap();
    let Kind::Kernel { kernel, rootfs, .. } = &target.kind else {
        unreachable!()
    };
    let paths = crate::fixtures::vm_paths();
    kernel_argv(
        &target,
        kernel,
        "CMDLINE",
        rootfs,
        &paths,
        Accel::Tcg,
        BootExtras::default(),
    )
}

#[test]
fn aarch64_argv_is_exact() {
    let argv = foreign_argv("aarch64", "Image");
    let expected = [
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-machine",
        "virt,gic-version=3",
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-smp",
        "2",
        "-m",
        "4G",
        "-kernel",
        "/work/Image",
        "-append",
        "CMDLINE",
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
        "local,id=root,path=/srv/rootfs-aarch64,security_model=none,multidevs=remap",
        "-device",
        "virtio-9p-pci,fsdev=root,mount_tag=vmtest_root",
        "-fsdev",
        "local,id=share,path=/work,security_model=none,multidevs=remap",
        "-device",
        "virtio-9p-pci,fsdev=share,mount_tag=vmtest_share",
    ];
    assert_eq!(argv, expected);
}

#[test]
fn riscv64_argv_is_exact() {
    let argv = foreign_argv("riscv64", "Image");
    let expected = [
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-machine",
        "virt",
        "-accel",
        "tcg",
        "-cpu",
        "rv64",
        "-smp",
        "2",
        "-m",
        "4G",
        "-kernel",
        "/work/Image",
        "-append",
        "CMDLINE",
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
        "local,id=root,path=/srv/rootfs-riscv64,security_model=none,multidevs=remap",
        "-device",
        "virtio-9p-pci,fsdev=root,mount_tag=vmtest_root",
        "-fsdev",
        "local,id=share,path=/work,security_model=none,multidevs=remap",
        "-device",
        "virtio-9p-pci,fsdev=share,mount_tag=vmtest_share",
    ];
    assert_eq!(argv, expected);
}

#[test]
fn s390x_argv_is_exact() {
    let argv = foreign_argv("s390x", "bzImage");
    let expected = [
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-machine",
        "s390-ccw-virtio",
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-smp",
        "2",
        "-m",
        "4G",
        "-kernel",
        "/work/bzImage",
        "-append",
        "CMDLINE",
        "-chardev",
        "pipe,id=console,path=/run/v/console",
        "-serial",
        "chardev:console",
        "-device",
        "virtio-serial-ccw,id=vser0",
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
        "local,id=root,path=/srv/rootfs-s390x,security_model=none,multidevs=remap",
        "-device",
        "virtio-9p-ccw,fsdev=root,mount_tag=vmtest_root",
        "-fsdev",
        "local,id=share,path=/work,security_model=none,multidevs=remap",
        "-device",
        "virtio-9p-ccw,fsdev=share,mount_tag=vmtest_share",
    ];
    assert_eq!(argv, expected);
}

#[test]
fn each_architecture_has_its_console() {
    let consoles: Vec<String> = ["x86_64", "aarch64", "riscv64", "s390x"]
        .iter()
        .map(|arch| kernel_cmdline(arch, "/init", None, None))
        .map(|line| line.split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(
        consoles,
        ["console=ttyS0", "console=ttyAMA0", "console=ttyS0", "console=ttysclp0"]
    );
}
