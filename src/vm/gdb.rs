//! `--gdb`: QEMU's gdb stub, for debugging the guest kernel.
//!
//! The flag's value ([`GdbStub`], parsed from `[ADDR:]PORT`) is config's;
//! this module owns QEMU's arguments for the stub, and the command a user
//! types to attach, with the kernel's `vmlinux` found beside its image or in
//! its build tree. The runner adds the arguments and prints the command;
//! the kernel target adds `nokaslr`, so the symbols in `vmlinux` are where
//! the kernel runs.

use std::path::{Path, PathBuf};

use crate::config::debug::GdbStub;

impl GdbStub {
    /// QEMU's arguments: the stub, and `-S` to wait for the debugger.
    pub fn qemu_args(&self) -> Vec<String> {
        let mut args = vec!["-gdb".to_string(), format!("tcp:{}", self.endpoint())];
        if self.wait {
            args.push("-S".into());
        }
        args
    }

    /// What to tell the user: the command that attaches gdb, with the
    /// kernel's symbols when they were found.
    pub fn attach_hint(&self, vmlinux: Option<&Path>) -> String {
        let remote = format!("gdb -ex 'target remote {}'", self.endpoint());
        let command = match vmlinux {
            Some(path) => format!("{remote} {}", crate::quote::shell_quote(&path.to_string_lossy())),
            None => format!("{remote} VMLINUX (no vmlinux found beside the kernel or in its build tree)"),
        };
        let waiting = match self.wait {
            true => "; the VM waits for it to continue",
            false => "",
        };
        format!(
            "gdb stub on {}{waiting}; timeouts are off. Attach with:\n  {command}",
            self.endpoint()
        )
    }
}

/// The kernel's `vmlinux`: beside the image (`bzImage` and `vmlinux` in one
/// directory), or at the top of the build tree the image sits in
/// (`arch/x86/boot/bzImage`, `arch/arm64/boot/Image`).
pub fn find_vmlinux(kernel: &Path) -> Option<PathBuf> {
    kernel
        .ancestors()
        .skip(1)
        .take(4)
        .map(|dir| dir.join("vmlinux"))
        .find(|path| path.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_port_listens_on_localhost() {
        let stub = GdbStub::parse("1234", false).unwrap();
        assert_eq!(stub.qemu_args(), ["-gdb", "tcp:127.0.0.1:1234"]);
        let stub = GdbStub::parse("0.0.0.0:4000", true).unwrap();
        assert_eq!(stub.qemu_args(), ["-gdb", "tcp:0.0.0.0:4000", "-S"]);
        let stub = GdbStub::parse("[::1]:4000", false).unwrap();
        assert_eq!(stub.qemu_args(), ["-gdb", "tcp:[::1]:4000"]);
        for bad in ["", "0", "70000", "x", "host:", "a,b:12"] {
            assert!(GdbStub::parse(bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_hint_names_vmlinux() {
        let stub = GdbStub::parse("1234", true).unwrap();
        assert_eq!(
            stub.attach_hint(Some(Path::new("/k/vmlinux"))),
            "gdb stub on 127.0.0.1:1234; the VM waits for it to continue; timeouts are off. Attach with:\n  \
             gdb -ex 'target remote 127.0.0.1:1234' '/k/vmlinux'"
        );
    }

    #[test]
    fn vmlinux_is_found_beside_the_image_or_in_the_build_tree() {
        let tree = tempfile::tempdir().unwrap();
        let boot = tree.path().join("arch/x86/boot");
        std::fs::create_dir_all(&boot).unwrap();
        std::fs::write(boot.join("bzImage"), "").unwrap();
        assert_eq!(find_vmlinux(&boot.join("bzImage")), None);
        std::fs::write(tree.path().join("vmlinux"), "").unwrap();
        assert_eq!(find_vmlinux(&boot.join("bzImage")), Some(tree.path().join("vmlinux")));
        std::fs::write(boot.join("vmlinux"), "").unwrap();
        assert_eq!(find_vmlinux(&boot.join("bzImage")), Some(boot.join("vmlinux")));
    }
}
