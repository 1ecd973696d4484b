//! The kernel matrix: vmtest's core scenarios on kernels it did not build
//! for itself. Each kernel boots once and its command checks, in one go, the
//! exit code, the host's environment, the working directory, `/mnt/vmtest`
//! read-write, stdout and stderr apart, and an extra mount:
//!
//! - the test kernel (tests/assets/minimal.config + kernel.config, 6.1);
//! - tinyconfig plus exactly minimal.config (the README's list, without
//!   DEVTMPFS_MOUNT), from linux-source-6.1 and linux-source-6.12;
//! - Debian 12's own 6.12 kernel, modules `.ko.xz`, through the initramfs;
//! - Debian's arm64 kernel on the arm64 rootfs, whose modules (no
//!   modules.dep there) an initramfs loads with the rootfs's busybox.
//!
//! And a kernel lacking a listed option fails at once, naming the option.

use std::path::PathBuf;
use std::time::Duration;

use crate::util::{Project, arm64_assets, asset_text, assets_dir, require_asset, test_kernel, toml_str};

/// One kernel of the matrix and how to boot it.
struct Kernel {
    name: &'static str,
    kernel: PathBuf,
    release: String,
    /// Extra target fields (rootfs, modules, arch).
    fields: String,
    /// The guest's view of the project directory (the share).
    guest_dir: Option<String>,
}

/// The scenario script: every check prints one line; the command ends with
/// exit code 7 so the verdict proves the code came through.
const SCENARIO: &str = r#"echo "release=$(uname -r)"
echo "env=$VMTEST_MATRIX_VAR"
echo "cwd=$PWD"
echo to-stderr >&2
echo written-in-guest > /mnt/vmtest/guest.txt && echo share-writable
cat /mnt/data/input.txt
exit 7"#;

fn run_scenario(kernel: &Kernel) {
    let project = Project::for_vms();
    project.write("data/input.txt", "mounted-data\n");
    let config = format!(
        "[[target]]\nname = {}\nkernel = {}\ncommand = {}\n{}\n[target.vm]\nmemory = \"512M\"\n\
         mounts = {{ \"/mnt/data\" = {{ host_path = \"data\", writable = false }} }}\n",
        toml_str(kernel.name),
        toml_str(&kernel.kernel.to_string_lossy()),
        toml_str(SCENARIO),
        kernel.fields
    );
    project.write("vmtest.toml", &config);
    let out = project.run(
        project
            .vmtest()
            .env("VMTEST_MATRIX_VAR", "it's set")
            .args(["--timeout", "600"]),
    );
    out.assert_code(7)
        .assert_stdout_contains(&format!("--- FAIL {} (", kernel.name))
        .assert_stdout_contains("): exit code 7");
    let cwd = kernel
        .guest_dir
        .clone()
        .unwrap_or_else(|| project.path().display().to_string());
    let expected = format!(
        "release={}\nenv=it's set\ncwd={cwd}\nshare-writable\nmounted-data\n",
        kernel.release
    );
    assert_eq!(out.command_stdout(), expected, "{out}");
    assert!(out.stderr.contains("to-stderr\n"), "{out}");
    assert!(!out.stdout.contains("to-stderr"), "{out}");
    assert_eq!(
        std::fs::read_to_string(project.path().join("guest.txt")).unwrap(),
        "written-in-guest\n"
    );
}

/// A kernel built by build-minimal-kernels.sh.
fn minimal(version: &str) -> Option<Kernel> {
    let dir = assets_dir().join(format!("minimal-{version}"));
    let kernel = require_asset(dir.join("bzImage"), &format!("the minimal {version} kernel"))?;
    Some(Kernel {
        name: "minimal",
        kernel,
        release: asset_text(&format!("minimal-{version}/release"))?,
        fields: String::new(),
        guest_dir: None,
    })
}

#[test]
fn the_test_kernel_runs_the_core_scenarios() {
    let Some((kernel, release)) = test_kernel() else { return };
    run_scenario(&Kernel {
        name: "test-kernel",
        kernel,
        release,
        fields: String::new(),
        guest_dir: None,
    });
}

#[test]
fn a_minimal_6_1_kernel_without_devtmpfs_mount_runs_the_core_scenarios() {
    let Some(kernel) = minimal("6.1") else { return };
    let config = std::fs::read_to_string(assets_dir().join("minimal-6.1/config")).unwrap();
    assert!(
        config.contains("# CONFIG_DEVTMPFS_MOUNT is not set"),
        "the kernel mounts /dev itself"
    );
    run_scenario(&kernel);
}

#[test]
fn a_minimal_6_12_kernel_runs_the_core_scenarios() {
    let Some(kernel) = minimal("6.12") else { return };
    assert!(kernel.release.starts_with("6.12."), "{}", kernel.release);
    run_scenario(&kernel);
}

#[test]
fn debians_6_12_kernel_with_xz_modules_runs_the_core_scenarios() {
    let dir = assets_dir().join("debian-kernels");
    let Some(kernel) = require_asset(dir.join("6.12.vmlinuz"), "Debian's 6.12 kernel") else {
        return;
    };
    let Some(release) = asset_text("debian-kernels/6.12.release") else {
        return;
    };
    let modules = dir.join("6.12");
    run_scenario(&Kernel {
        name: "debian-6.12",
        kernel,
        release,
        fields: format!("modules = {}\n", toml_str(&modules.to_string_lossy())),
        guest_dir: None,
    });
}

/// Debian's arm64 kernel (linux-image-arm64, unpacked into the arm64 rootfs
/// by mmdebstrap's extract variant: no modules.dep).
fn debian_arm64() -> Option<(PathBuf, PathBuf, String)> {
    let assets = arm64_assets()?;
    let boot = assets.rootfs.join("boot");
    let vmlinuz = std::fs::read_dir(&boot).ok().and_then(|entries| {
        entries.flatten().map(|e| e.path()).find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
    });
    let vmlinuz = require_asset(vmlinuz.unwrap_or(boot.join("vmlinuz-*")), "Debian's arm64 kernel")?;
    let release = vmlinuz
        .file_name()?
        .to_string_lossy()
        .trim_start_matches("vmlinuz-")
        .to_string();
    Some((vmlinuz, assets.rootfs, release))
}

#[test]
fn debians_arm64_kernel_loads_its_modules_on_the_arm64_rootfs() {
    let Some((kernel, rootfs, release)) = debian_arm64() else {
        return;
    };
    assert!(
        !rootfs.join(format!("usr/lib/modules/{release}/modules.dep")).exists(),
        "the rootfs should hold the modules without modules.dep, as the extract variant leaves them"
    );
    run_scenario(&Kernel {
        name: "debian-arm64",
        kernel,
        release,
        fields: format!(
            "arch = \"aarch64\"\nrootfs = {}\nboot_timeout = 600\n",
            toml_str(&rootfs.to_string_lossy())
        ),
        guest_dir: Some("/mnt/vmtest".into()),
    });
}

#[test]
fn a_kernel_without_the_virtio_console_fails_at_once_naming_the_option() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    // The driver is built in; keeping its initcall from running leaves the
    // kernel as if built without CONFIG_VIRTIO_CONSOLE.
    let out = project.run(project.vmtest().arg("-k").arg(&kernel).args([
        "--kargs",
        "initcall_blacklist=virtio_console_init",
        "true",
    ]));
    out.assert_code(69)
        .assert_stdout_contains("error: the guest's init stopped: no virtio console port")
        .assert_stdout_contains("the kernel needs CONFIG_VIRTIO_CONSOLE");
    // Within moments of init, not at the 180 s boot timeout.
    assert!(out.elapsed < Duration::from_secs(90), "{out}");
}

#[test]
fn a_kernel_without_9p_says_what_the_root_needs() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    let out = project.run(
        project
            .vmtest()
            // The root over 9p, not virtiofs.
            .env("VMTEST_VIRTIOFSD", "none")
            .arg("-k")
            .arg(&kernel)
            .args(["--kargs", "initcall_blacklist=init_v9fs", "true"]),
    );
    out.assert_code(69)
        .assert_stdout_contains("Unable to mount root fs")
        .assert_stdout_contains("CONFIG_9P_FS");
}
