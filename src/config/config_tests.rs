//! Unit tests of config parsing and validation.

use super::*;

const FILE: &str = "/proj/vmtest.toml";

fn parse_ok(text: &str) -> Vec<Target> {
    parse(text, Path::new(FILE), Path::new("/proj")).unwrap()
}

fn parse_err(text: &str) -> String {
    format!("{:#}", parse(text, Path::new(FILE), Path::new("/proj")).unwrap_err())
}

#[test]
fn a_full_kernel_target() {
    let targets = parse_ok(
        r#"
[[target]]
name = "k"
kernel = "build/bzImage"
command = "make check"
kernel_args = "ro"
rootfs = "rootfs"
modules = "mods"
kvm_cpu_args = "host,-x2apic"
timeout = 60
boot_timeout = 30
env = { A = "1" }

[target.vm]
num_cpus = 1
memory = "256M"
bios = "fw/bios.bin"
extra_args = ["-s"]
mounts = { "/mnt/data" = { host_path = "data", writable = true }, "/opt/ro" = { host_path = "/abs" } }
"#,
    );
    let t = &targets[0];
    assert_eq!(t.name, "k");
    assert_eq!(
        t.kind,
        Kind::Kernel {
            kernel: "/proj/build/bzImage".into(),
            kernel_args: Some("ro".into()),
            rootfs: "/proj/rootfs".into(),
        }
    );
    assert_eq!(t.command, "make check");
    assert_eq!(t.arch, host_arch());
    assert_eq!(t.qemu_command, format!("qemu-system-{}", host_arch()));
    assert_eq!(t.kvm_cpu_args, "host,-x2apic");
    assert_eq!(t.timeout, Some(60));
    assert_eq!(t.boot_timeout, Some(30));
    assert_eq!(t.env.get("A").map(String::as_str), Some("1"));
    assert_eq!(t.vm.num_cpus, 1);
    assert_eq!(t.vm.memory, "256M");
    assert_eq!(t.vm.bios.as_deref(), Some(Path::new("/proj/fw/bios.bin")));
    assert_eq!(t.vm.extra_args, ["-s"]);
    assert_eq!(
        t.vm.mounts,
        [
            Mount {
                guest_path: "/mnt/data".into(),
                host_path: "/proj/data".into(),
                writable: true
            },
            Mount {
                guest_path: "/opt/ro".into(),
                host_path: "/abs".into(),
                writable: false
            },
        ]
    );
    assert_eq!(t.share_dir, Path::new("/proj"));
    assert_eq!(t.workdir, Path::new("/proj"));
    assert_eq!(t.console_log.path(), Path::new("/proj/.vmtest/k/console.log"));
    assert_eq!(t.modules.as_deref(), Some(Path::new("/proj/mods")));
}

#[test]
fn qemu_command_paths_are_relative_to_the_file() {
    let base = "[[target]]\nname = \"a\"\nkernel = \"/k\"\ncommand = \"x\"\n";
    let t = &parse_ok(&format!("{base}qemu_command = \"bin/qemu\"\n"))[0];
    assert_eq!(t.qemu_command, "/proj/bin/qemu");
    let t = &parse_ok(&format!("{base}qemu_command = \"qemu-system-x86_64\"\n"))[0];
    assert_eq!(t.qemu_command, "qemu-system-x86_64");
}

#[test]
fn defaults() {
    let t = &parse_ok("[[target]]\nname = \"a\"\nkernel = \"/k\"\ncommand = \"true\"\n")[0];
    assert_eq!(
        t.kind,
        Kind::Kernel {
            kernel: "/k".into(),
            kernel_args: None,
            rootfs: "/".into()
        }
    );
    assert_eq!(t.vm, VmConfig::default());
    assert_eq!(t.vm.num_cpus, 2);
    assert_eq!(t.vm.memory, "4G");
    assert_eq!(t.kvm_cpu_args, "host");
    assert_eq!(t.timeout, None);
    assert_eq!(t.modules, None);
}

#[test]
fn an_image_target() {
    let t = &parse_ok("[[target]]\nname = \"img\"\nimage = \"disk.qcow2\"\ncommand = \"true\"\nuefi = true\n")[0];
    assert_eq!(
        t.kind,
        Kind::Image {
            image: "/proj/disk.qcow2".into(),
            uefi: true,
            warm_start: true,
        }
    );
    let t = &parse_ok("[[target]]\nname = \"img\"\nimage = \"d.raw\"\ncommand = \"true\"\nwarm_start = false\n")[0];
    assert!(matches!(t.kind, Kind::Image { warm_start: false, .. }));
    let err = parse_err("[[target]]\nname = \"k\"\nkernel = \"/k\"\ncommand = \"true\"\nwarm_start = false\n");
    assert!(
        err.contains("target 'k': field 'warm_start': only applies to image targets"),
        "{err}"
    );
}

#[test]
fn unknown_key_names_key_target_and_line() {
    let err = parse_err(
        "[[target]]\nname = \"first\"\nkernel = \"/k\"\ncommand = \"x\"\n\n[[target]]\nname = \"second\"\nkernel = \"/k\"\ncomand = \"x\"\n",
    );
    assert!(
        err.starts_with("/proj/vmtest.toml:9: target 'second': unknown field `comand`"),
        "{err}"
    );
}

#[test]
fn unknown_vm_key_is_an_error() {
    let err = parse_err("[[target]]\nname = \"a\"\nkernel = \"/k\"\ncommand = \"x\"\n[target.vm]\ncpus = 2\n");
    assert!(
        err.contains("/proj/vmtest.toml:6: target 'a': unknown field `cpus`"),
        "{err}"
    );
}

#[test]
fn wrong_type_names_the_target() {
    let err =
        parse_err("[[target]]\nname = \"a\"\nkernel = \"/k\"\ncommand = \"x\"\n[target.vm]\nnum_cpus = \"two\"\n");
    assert!(
        err.contains(":6: target 'a': invalid type: string \"two\", expected u32"),
        "{err}"
    );
}

#[test]
fn missing_fields() {
    let err = parse_err("[[target]]\nname = \"a\"\nkernel = \"/k\"\n");
    assert!(
        err.contains("target 'a'") && err.contains("missing field `command`"),
        "{err}"
    );
    let err = parse_err("[[target]]\nname = \"a\"\ncommand = \"x\"\n");
    assert!(err.contains("target 'a': set 'kernel'"), "{err}");
}

#[test]
fn semantic_errors_name_target_and_field() {
    let cases = [
        (
            "kernel = \"/k\"\nimage = \"/i\"\n",
            "target 'a': set either 'kernel' or 'image', not both",
        ),
        (
            "kernel = \"/k\"\nuefi = true\n",
            "target 'a': field 'uefi': only applies to image targets",
        ),
        (
            "image = \"/i\"\nkernel_args = \"ro\"\n",
            "target 'a': field 'kernel_args': only applies to kernel targets",
        ),
        (
            "image = \"/i\"\nrootfs = \"/r\"\n",
            "target 'a': field 'rootfs': only applies to kernel targets",
        ),
        (
            "image = \"/i\"\nmodules = \"/m\"\n",
            "target 'a': field 'modules': only applies to kernel targets",
        ),
        (
            "kernel = \"/k\"\narch = \"mips\"\n",
            "target 'a': field 'arch': unknown architecture 'mips'",
        ),
        (
            "kernel = \"/k\"\ntimeout = 0\n",
            "target 'a': field 'timeout': must be at least 1 second",
        ),
        (
            "kernel = \"/k\"\n[target.vm]\nmemory = \"lots\"\n",
            "target 'a': field 'vm.memory': 'lots' is not a size",
        ),
        (
            "kernel = \"/k\"\n[target.vm]\nnum_cpus = 0\n",
            "target 'a': field 'vm.num_cpus' must be at least 1",
        ),
        (
            "kernel = \"/k\"\n[target.vm.mounts]\n\"rel\" = { host_path = \"/x\" }\n",
            "target 'a': field 'vm.mounts': guest path 'rel' must be an absolute path",
        ),
    ];
    for (fields, expected) in cases {
        let err = parse_err(&format!("[[target]]\nname = \"a\"\ncommand = \"x\"\n{fields}"));
        assert!(err.contains(expected), "{fields}: {err}");
    }
}

#[test]
fn names_are_required_and_unique() {
    let err = parse_err("[[target]]\nname = \" \"\nkernel = \"/k\"\ncommand = \"x\"\n");
    assert!(err.contains("field 'name' must not be empty"), "{err}");
    let one = "[[target]]\nname = \"a\"\nkernel = \"/k\"\ncommand = \"x\"\n";
    let err = parse_err(&format!("{one}{one}"));
    assert!(err.contains("target 'a': name used twice"), "{err}");
}

#[test]
fn empty_command_and_no_targets() {
    let err = parse_err("[[target]]\nname = \"a\"\nkernel = \"/k\"\ncommand = \"  \"\n");
    assert!(err.contains("target 'a': field 'command': must not be empty"), "{err}");
    assert!(parse_err("").contains("no targets"));
}

#[test]
fn syntax_errors_carry_the_line() {
    let err = parse_err("[[target]]\nname = \"a\"\ncommand = \"x\n");
    assert!(err.starts_with("/proj/vmtest.toml:3:"), "{err}");
}

#[test]
fn one_liner_target() {
    let args = OneLiner {
        kernel: "out/bzImage".into(),
        kernel_args: Some("ro".into()),
        command: "uname -r".into(),
        ..Default::default()
    };
    let t = one_liner(args, Path::new("/cwd")).unwrap();
    assert_eq!(t.name, "bzImage");
    assert_eq!(t.share_dir, Path::new("/cwd"));
    assert_eq!(t.workdir, Path::new("/cwd"));
    assert_eq!(
        t.kind,
        Kind::Kernel {
            kernel: "/cwd/out/bzImage".into(),
            kernel_args: Some("ro".into()),
            rootfs: "/".into()
        }
    );
    let empty = OneLiner {
        kernel: "k".into(),
        ..Default::default()
    };
    assert!(one_liner(empty, Path::new("/")).is_err());
}

#[test]
fn sizes() {
    for ok in ["256M", "4G", "1024", "2g", "1T"] {
        assert!(is_qemu_size(ok), "{ok}");
    }
    for bad in ["", "G", "4GB", "-1", "1.5G", "lots"] {
        assert!(!is_qemu_size(bad), "{bad}");
    }
}

#[test]
fn console_logs_are_one_per_target() {
    let targets = parse_ok(
        "[[target]]\nname = \"a/b\"\nkernel = \"/k\"\ncommand = \"x\"\n\
         [[target]]\nname = \"a b\"\nkernel = \"/k\"\ncommand = \"x\"\n\
         [[target]]\nname = \"a_b\"\nkernel = \"/k\"\ncommand = \"x\"\n",
    );
    let logs: Vec<PathBuf> = targets.iter().map(|t| t.console_log.path()).collect();
    assert_eq!(logs[2], Path::new("/proj/.vmtest/a_b/console.log"));
    assert_ne!(logs[0], logs[1]);
    assert_ne!(logs[0], logs[2]);
    assert_ne!(logs[1], logs[2]);
    assert!(
        logs[0].to_string_lossy().starts_with("/proj/.vmtest/a_b+"),
        "{}",
        logs[0].display()
    );
}

#[test]
fn mount_paths_are_normalised() {
    let mounts = |paths: &[&str]| {
        let table: String = paths
            .iter()
            .map(|p| format!("{} = {{ host_path = \"/h\" }}\n", toml_key(p)))
            .collect();
        parse(
            &format!("[[target]]\nname = \"a\"\nkernel = \"/k\"\ncommand = \"x\"\n[target.vm.mounts]\n{table}"),
            Path::new(FILE),
            Path::new("/proj"),
        )
        .map(|t| t[0].vm.mounts.iter().map(|m| m.guest_path.clone()).collect::<Vec<_>>())
        .map_err(|e| format!("{e:#}"))
    };
    assert_eq!(
        mounts(&["/mnt//data/./x/", "/opt/y"]).unwrap(),
        ["/mnt/data/x", "/opt/y"]
    );
    let refused = [
        (
            "/mnt/../opt/x",
            "target 'a': field 'vm.mounts': guest path '/mnt/../opt/x': '..' is not allowed",
        ),
        (
            "/mnt//vmtest",
            "target 'a': field 'vm.mounts': '/mnt//vmtest' is where vmtest shares",
        ),
        ("/mnt/vmtest/./sub/", "is where vmtest shares the config directory"),
        ("/mnt/", "'/mnt/' would hide /mnt/vmtest"),
        ("//", "guest path '//' must be an absolute path below /"),
        (
            "/mnt/it's",
            r#"guest path "/mnt/it's": '\'' is not allowed in a mount path"#,
        ),
        ("/mnt/a\tb", "is not allowed in a mount path"),
        ("/mnt/$(reboot)", "'$' is not allowed"),
    ];
    for (path, expected) in refused {
        let err = mounts(&[path]).unwrap_err();
        assert!(err.contains(expected), "{path}: {err}");
    }
    let err = mounts(&["/mnt/a", "/mnt//a/"]).unwrap_err();
    assert!(
        err.contains("'/mnt/a' is /mnt/a, which is mounted twice")
            || err.contains("'/mnt//a/' is /mnt/a, which is mounted twice"),
        "{err}"
    );
}

/// A TOML key for `s`, quoted.
fn toml_key(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[test]
fn kernel_developer_fields() {
    let t = &parse_ok("[[target]]\nname = \"a\"\nkernel = \"/k\"\ncommand = \"true\"\n")[0];
    assert_eq!(t.kernel_splats, crate::config::debug::SplatPolicy::Fail);
    assert!(t.kernel_splat_allow.is_empty() && !t.dump_on_panic && t.gdb.is_none());
    let t = &parse_ok(
        "[[target]]\nname = \"a\"\nkernel = \"/k\"\ncommand = \"true\"\n\
         kernel_splats = \"warn\"\nkernel_splat_allow = ['lkdtm_\\w+']\ndump_on_panic = true\n",
    )[0];
    assert_eq!(t.kernel_splats, crate::config::debug::SplatPolicy::Warn);
    assert_eq!(t.kernel_splat_allow, [r"lkdtm_\w+"]);
    assert!(t.dump_on_panic);
    let base = "[[target]]\nname = \"a\"\nkernel = \"/k\"\ncommand = \"true\"\n";
    let error = parse_err(&format!("{base}kernel_splat_allow = ['(']\n"));
    assert!(
        error.contains("target 'a': field 'kernel_splat_allow': '(' is not a regular expression"),
        "{error}"
    );
    let error = parse_err(&format!("{base}kernel_splats = \"loud\"\n"));
    assert!(
        error.contains("unknown variant `loud`, expected one of `fail`, `warn`, `ignore`"),
        "{error}"
    );
}

#[test]
fn share_is_auto_unless_set() {
    use crate::launch::share::Mode;
    let target = |vm: &str| format!("[[target]]\nname = \"a\"\nkernel = \"/k\"\ncommand = \"x\"\n[target.vm]\n{vm}\n");
    assert_eq!(parse_ok(&target(""))[0].vm.share, Mode::Auto);
    assert_eq!(parse_ok(&target("share = \"9p\""))[0].vm.share, Mode::NineP);
    assert_eq!(parse_ok(&target("share = \"virtiofs\""))[0].vm.share, Mode::Virtiofs);
    let err = parse_err(&target("share = \"nfs\""));
    assert!(
        err.contains(
            "/proj/vmtest.toml:6: target 'a': unknown variant `nfs`, expected one of `auto`, `virtiofs`, `9p`"
        ),
        "{err}"
    );
}

#[test]
fn too_many_mounts_for_the_pci_root_bus_are_refused() {
    let text = |count: usize| {
        let table: String = (0..count)
            .map(|i| format!("\"/mnt/m{i}\" = {{ host_path = \"/h\" }}\n"))
            .collect();
        format!("[[target]]\nname = \"a\"\nkernel = \"/k\"\ncommand = \"x\"\n[target.vm.mounts]\n{table}")
    };
    let parsed = |count| parse(&text(count), Path::new(FILE), Path::new("/proj")).map_err(|e| format!("{e:#}"));
    assert_eq!(parsed(MAX_MOUNTS).unwrap()[0].vm.mounts.len(), MAX_MOUNTS);
    let err = parsed(MAX_MOUNTS + 1).unwrap_err();
    assert!(
        err.contains("field 'vm.mounts': 25 entries, at most 24: each is a PCI device"),
        "{err}"
    );
}
