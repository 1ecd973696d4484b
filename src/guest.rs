//! What runs inside the guest: the generated init of kernel targets and the
//! wrapper every command runs under.
//!
//! Both are shell scripts built as strings by pure functions; `vm.rs` writes
//! the init to the VM's private directory and `runner.rs` hands the wrapper to
//! the guest agent. The init mounts what programs expect, then becomes the
//! guest agent. The wrapper enters the working directory, relays the
//! command's stdout and stderr to vmtest's virtio-serial ports through pipes
//! (a port can be opened only once, so a command's own `>/dev/stderr` would
//! otherwise fail), and marks the end of each stream.

use std::fmt::Write as _;
use std::path::Path;

use crate::config::Mount;
use serde::{Deserialize, Serialize};

use crate::qemu::{AGENT_PORT, MODULES_TAG, MSIZE, SHARE_TAG, STDERR_PORT, STDOUT_PORT, mount_tag};

/// Where the config directory appears in the guest.
pub const GUEST_SHARE: &str = "/mnt/vmtest";

/// Options of every 9p mount vmtest makes in the guest.
/// `cached` trades coherence with the host for speed (`cache=mmap`); only the
/// root uses it.
pub fn ninep_options(writable: bool, cached: bool) -> String {
    let mode = if writable { "rw" } else { "ro" };
    let cache = if cached { ",cache=mmap" } else { "" };
    format!("trans=virtio,version=9p2000.L,msize={MSIZE},access=any{cache},{mode}")
}

/// The PATH of processes vmtest starts in a guest: its inits (and so the
/// agent), and an image's command unless the target's `env` sets one (the
/// host's PATH may not fit the guest).
pub const GUEST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Single-quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// One mount the init makes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MountStep {
    pub source: String,
    pub target: String,
    pub fstype: String,
    /// Comma-separated options, flags (`ro`, `nosuid`) and data alike.
    pub options: String,
    /// Create the mount point first (only where it cannot touch the host).
    pub mkdir: bool,
    /// Stay quiet when this mount fails (the kernel may lack the filesystem).
    pub optional: bool,
}

/// What the init of a kernel target does, in order: mounts, symlinks, then
/// it becomes the guest agent. Rendered as a shell script or run by vmtest
/// itself as PID 1 (`guest_init.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitPlan {
    pub mounts: Vec<MountStep>,
    /// `(link, target)` pairs, e.g. `/dev/stderr -> /proc/self/fd/2`.
    pub symlinks: Vec<(String, String)>,
    /// Guest path of qemu-ga.
    pub agent: String,
    /// The end-of-output marker vmtest's own init writes after relaying the
    /// command's output from [`STDOUT_FIFO`] and [`STDERR_FIFO`] (the shell
    /// init leaves relaying to the shell wrapper).
    pub marker: String,
}

/// FIFO in the guest whose contents vmtest's init relays to the stdout port.
pub const STDOUT_FIFO: &str = "/run/vmtest/stdout";
/// FIFO in the guest whose contents vmtest's init relays to the stderr port.
pub const STDERR_FIFO: &str = "/run/vmtest/stderr";

fn step(source: &str, target: &str, fstype: &str, options: &str) -> MountStep {
    MountStep {
        source: source.into(),
        target: target.into(),
        fstype: fstype.into(),
        options: options.into(),
        mkdir: false,
        optional: false,
    }
}

/// The init plan of a kernel target. The guest's `/mnt` is a private tmpfs,
/// so `/mnt/vmtest` and mounts below `/mnt` never create directories in the
/// shared root.
pub fn init_plan(agent: &str, mounts: &[Mount], marker: &str) -> InitPlan {
    let mut steps = vec![
        step("proc", "/proc", "proc", "nosuid,nodev,noexec"),
        step("sysfs", "/sys", "sysfs", "nosuid,nodev,noexec"),
        step("tmpfs", "/run", "tmpfs", "nosuid,nodev,mode=0755"),
        step("tmpfs", "/mnt", "tmpfs", "mode=0755"),
        MountStep {
            mkdir: true,
            optional: true,
            ..step(
                "devpts",
                "/dev/pts",
                "devpts",
                "nosuid,noexec,gid=5,mode=620,ptmxmode=666",
            )
        },
        MountStep {
            mkdir: true,
            optional: true,
            ..step("tmpfs", "/dev/shm", "tmpfs", "nosuid,nodev,mode=1777")
        },
        MountStep {
            mkdir: true,
            ..step(SHARE_TAG, GUEST_SHARE, "9p", &ninep_options(true, false))
        },
    ];
    for (index, mount) in mounts.iter().enumerate() {
        steps.push(MountStep {
            mkdir: mount.guest_path.starts_with("/mnt/"),
            ..step(
                &mount_tag(index),
                &mount.guest_path,
                "9p",
                &ninep_options(mount.writable, false),
            )
        });
    }
    let symlinks = [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ];
    InitPlan {
        mounts: steps,
        symlinks: symlinks.iter().map(|(l, t)| (l.to_string(), t.to_string())).collect(),
        agent: agent.to_string(),
        marker: marker.to_string(),
    }
}

/// The mounts that show a kernel's modules directory from outside the
/// rootfs at `/lib/modules/<release>`, so `modprobe` works in the guest: a
/// tmpfs over the rootfs's `/lib/modules` (which must exist) to hold the
/// mount point, then the read-only 9p share.
pub fn modules_mounts(release: &str) -> Vec<MountStep> {
    vec![
        step("tmpfs", "/lib/modules", "tmpfs", "mode=0755"),
        MountStep {
            mkdir: true,
            ..step(
                MODULES_TAG,
                &format!("/lib/modules/{release}"),
                "9p",
                &ninep_options(false, true),
            )
        },
    ]
}

/// The `bash -c` script of a command whose output vmtest's init relays: the
/// redirections and `cd` come first, then the command itself, run by this
/// very shell so `$$`, `exit` and signals are the command's own.
pub fn relayed_command(workdir: &str, command: &str) -> String {
    format!(
        "exec </dev/null >{STDOUT_FIFO} 2>{STDERR_FIFO}\n\
         cd -- {} || exit 125\n\
         {command}",
        shell_quote(workdir)
    )
}

/// The init plan as a POSIX shell script, for guests that cannot run the
/// host's vmtest binary (another rootfs or architecture).
pub fn init_script(plan: &InitPlan) -> String {
    let mut s = format!(
        "#!/bin/sh\n\
         # Generated by vmtest: the init of a kernel target. Deleted after the run.\n\
         export PATH={GUEST_PATH}\n\
         export HOME=/root TERM=linux\n",
    );
    for m in &plan.mounts {
        let target = shell_quote(&m.target);
        if m.mkdir {
            let _ = writeln!(s, "mkdir -p {target}");
        }
        let mount = format!(
            "mount -t {} -o {} {} {target}",
            m.fstype,
            shell_quote(&m.options),
            shell_quote(&m.source)
        );
        if m.optional {
            let _ = writeln!(s, "{mount} 2>/dev/null");
        } else {
            let _ = writeln!(s, "{mount} || echo 'vmtest init: mounting {} failed' >&2", m.target);
        }
    }
    for (link, target) in &plan.symlinks {
        let _ = writeln!(s, "[ -e {link} ] || ln -s {target} {link}");
    }
    // The agent's port, found by name; the device node comes from devtmpfs.
    let _ = write!(
        s,
        "for p in /sys/class/virtio-ports/*; do\n\
         \tread -r n < \"$p/name\"\n\
         \t[ \"$n\" = {AGENT_PORT} ] && port=/dev/${{p##*/}}\n\
         done\n\
         exec {} -m virtio-serial -p \"$port\" -t /run\n",
        plan.agent
    );
    s
}

/// The wrapper script run with `bash -c WRAPPER vmtest WORKDIR MARKER
/// COMMAND`. It runs COMMAND in its own `bash -c`, so `$$` and `exit` belong to
/// the command, and leaves with the command's status (re-raising a fatal
/// signal, so the agent reports it as one).
pub fn wrapper_script() -> String {
    format!(
        r#"o= e=
for p in /sys/class/virtio-ports/*; do
  read -r n < "$p/name"
  case $n in {STDOUT_PORT}) o=/dev/${{p##*/}} ;; {STDERR_PORT}) e=/dev/${{p##*/}} ;; esac
done
exec 3>"$o" 4>"$e" || exit 125
cd -- "$1" 2>&4 || {{ printf 'vmtest: cannot enter %s in the guest\n' "$1" >&4; printf %s "$2" >&3; printf %s "$2" >&4; exit 125; }}
( bash -c "$3" 2>&1 1>&5 5>&- 3>&- 4>&- </dev/null | cat >&4 3>&- 5>&-; exit "${{PIPESTATUS[0]}}" ) 5>&1 | cat >&3 4>&-
rc=${{PIPESTATUS[0]}}
printf %s "$2" >&3
printf %s "$2" >&4
case $((rc - 128)) in 1|2|3|4|6|7|8|9|10|11|12|13|14|15|16|24|25|26|27|29|30|31) exec 3>&- 4>&-; trap - "$((rc - 128))"; kill -"$((rc - 128))" $$ ;; esac
exit "$rc"
"#
    )
}

/// Where the target's working directory appears under `/mnt/vmtest`, the
/// share of its config directory (the share's root if it lies outside).
pub fn workdir_in_share(target: &crate::config::Target) -> String {
    match target.workdir.strip_prefix(&target.share_dir) {
        Ok(rel) if !rel.as_os_str().is_empty() => format!("{GUEST_SHARE}/{}", rel.display()),
        _ => GUEST_SHARE.to_string(),
    }
}

/// The guest path of `host_path` when `rootfs` is shared as the guest's root.
pub fn guest_path_in_rootfs(rootfs: &Path, host_path: &Path) -> Option<String> {
    let relative = host_path.strip_prefix(rootfs).ok()?;
    Some(format!("/{}", relative.to_string_lossy()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn init_mounts_extra_shares_with_their_modes() {
        let mounts = vec![
            Mount {
                guest_path: "/mnt/ro".into(),
                host_path: "/srv/ro".into(),
                writable: false,
            },
            Mount {
                guest_path: "/opt/rw".into(),
                host_path: "/srv/rw".into(),
                writable: true,
            },
        ];
        let script = init_script(&init_plan("/usr/sbin/qemu-ga", &mounts, "M"));
        assert!(
            script.contains(
                "mkdir -p '/mnt/ro'\nmount -t 9p -o 'trans=virtio,version=9p2000.L,msize=512000,access=any,ro' \
             'vmtest_m0' '/mnt/ro' || echo 'vmtest init: mounting /mnt/ro failed' >&2\n"
            ),
            "{script}"
        );
        assert!(
            script.contains(
                "\nmount -t 9p -o 'trans=virtio,version=9p2000.L,msize=512000,access=any,rw' 'vmtest_m1' '/opt/rw' ||"
            ),
            "{script}"
        );
        assert!(script.contains(
            "mount -t devpts -o 'nosuid,noexec,gid=5,mode=620,ptmxmode=666' 'devpts' '/dev/pts' 2>/dev/null\n"
        ));
        assert!(script.contains("[ -e /dev/stderr ] || ln -s /proc/self/fd/2 /dev/stderr\n"));
        assert!(!script.contains("mkdir -p '/opt/rw'"));
        assert!(script.ends_with("exec /usr/sbin/qemu-ga -m virtio-serial -p \"$port\" -t /run\n"));
    }

    #[test]
    fn modules_from_elsewhere_are_mounted_over_lib_modules() {
        let mut plan = init_plan("/usr/sbin/qemu-ga", &[], "M");
        plan.mounts.extend(modules_mounts("6.1.0-9-amd64"));
        let script = init_script(&plan);
        assert!(
            script.contains(
                "mount -t tmpfs -o 'mode=0755' 'tmpfs' '/lib/modules' || echo 'vmtest init: mounting /lib/modules \
                 failed' >&2\nmkdir -p '/lib/modules/6.1.0-9-amd64'\nmount -t 9p -o \
                 'trans=virtio,version=9p2000.L,msize=512000,access=any,cache=mmap,ro' 'vmtest_modules' \
                 '/lib/modules/6.1.0-9-amd64' ||"
            ),
            "{script}"
        );
    }

    #[test]
    fn rootfs_paths_map_into_the_guest() {
        assert_eq!(
            guest_path_in_rootfs(Path::new("/"), Path::new("/tmp/x/init")).as_deref(),
            Some("/tmp/x/init")
        );
        assert_eq!(
            guest_path_in_rootfs(Path::new("/srv/root"), Path::new("/srv/root/tmp/init")).as_deref(),
            Some("/tmp/init")
        );
        assert_eq!(
            guest_path_in_rootfs(Path::new("/srv/root"), Path::new("/tmp/init")),
            None
        );
    }
}
