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
//!
//! The programs themselves live here too, apart from host code: vmtest's own
//! init when it runs as PID 1 (`init`) and its initramfs stage, which loads
//! a modular kernel's drivers and switches to the real root
//! (`initramfs_init`); the system calls both share are in `sys`.

pub mod init;
pub mod initramfs_init;
pub mod sys;

use std::fmt::Write as _;
use std::path::Path;

pub use crate::quote::shell_quote;

use crate::config::Mount;
use serde::{Deserialize, Serialize};

// The names both sides agree on: QEMU is told them (`vm::qemu`), the
// guest finds its ports and shares by them.

/// Guest-side name of the guest agent's virtio-serial port.
pub const AGENT_PORT: &str = "org.qemu.guest_agent.0";
/// Name of the virtio-serial port the command's stdin comes from: vmtest's
/// own stdin, or end-of-file at once.
pub const STDIN_PORT: &str = "org.vmtest.stdin";
/// Guest-side name of the port the command's stdout is relayed through.
pub const STDOUT_PORT: &str = "org.vmtest.stdout";
/// Guest-side name of the port the command's stderr is relayed through.
pub const STDERR_PORT: &str = "org.vmtest.stderr";
/// 9p mount tag of the guest's root filesystem.
pub const ROOT_TAG: &str = "vmtest_root";
/// 9p mount tag of the directory shared at `/mnt/vmtest`.
pub const SHARE_TAG: &str = "vmtest_share";
/// 9p mount tag of a kernel's modules directory that lies outside the rootfs.
pub const MODULES_TAG: &str = "vmtest_modules";
/// Largest 9p message size a 6.1 guest accepts over virtio.
pub const MSIZE: u32 = 512_000;

/// Guest-side name of the shell's console port.
pub const SHELL_PORT: &str = "org.vmtest.shell";
/// The 9p mount tag of the `index`-th extra mount.
pub fn mount_tag(index: usize) -> String {
    format!("vmtest_m{index}")
}

/// Directory of the modules inside the archive, loaded in name order.
pub const MODULES_DIR: &str = "/vmtest/modules";
/// Where the guest's root is mounted before the switch.
pub const NEW_ROOT: &str = "/newroot";
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

/// When the init makes a mount.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum When {
    Always,
    /// Only when `/proc/filesystems` lists the filesystem: optional kernel
    /// filesystems (debugfs, tracefs, ...) that not every kernel has.
    Supported,
    /// Only when nothing is mounted on the target yet: `/dev`, which the
    /// kernel mounts itself with CONFIG_DEVTMPFS_MOUNT (or an initramfs did).
    Unmounted,
}

/// What a failed mount does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OnFailure {
    /// Nothing (debug output only).
    Quiet,
    /// A line on the console; the init carries on.
    Warn,
    /// The guest cannot work without it: the init says which kernel option
    /// is missing and exits, the kernel panics, and vmtest fails the target
    /// with that line within moments.
    Fatal { needs: String },
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
    pub when: When,
    pub on_failure: OnFailure,
}

/// The hostname of a kernel target's guest.
pub const HOSTNAME: &str = "vmtest";

/// What the init of a kernel target does, in order: mounts, symlinks, the
/// loopback interface and the hostname, then it becomes the guest agent.
/// Rendered as a shell script or run by vmtest itself as PID 1
/// (`guest_init.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitPlan {
    pub mounts: Vec<MountStep>,
    /// `(link, target)` pairs, e.g. `/dev/stderr -> /proc/self/fd/2`.
    pub symlinks: Vec<(String, String)>,
    pub hostname: String,
    /// Guest path of qemu-ga.
    pub agent: String,
    /// The end-of-output marker vmtest's own init writes after relaying the
    /// command's output from [`STDOUT_FIFO`] and [`STDERR_FIFO`] (the shell
    /// init leaves relaying to the shell wrapper).
    pub marker: String,
}

/// Where vmtest's init links the stdin port (or `/dev/null` if the guest
/// has none) for the command to read.
pub const STDIN_LINK: &str = "/run/vmtest/stdin";
/// FIFO in the guest whose contents vmtest's init relays to the stdout port.
pub const STDOUT_FIFO: &str = "/run/vmtest/stdout";
/// FIFO in the guest whose contents vmtest's init relays to the stderr port.
pub const STDERR_FIFO: &str = "/run/vmtest/stderr";

/// A mount made always, whose failure is reported and survived.
fn step(source: &str, target: &str, fstype: &str, options: &str) -> MountStep {
    MountStep {
        source: source.into(),
        target: target.into(),
        fstype: fstype.into(),
        options: options.into(),
        mkdir: false,
        when: When::Always,
        on_failure: OnFailure::Warn,
    }
}

/// A mount the guest cannot do without; it fails naming the kernel option.
fn required(source: &str, target: &str, fstype: &str, options: &str, needs: &str) -> MountStep {
    MountStep {
        on_failure: OnFailure::Fatal { needs: needs.into() },
        ..step(source, target, fstype, options)
    }
}

/// A kernel filesystem mounted where test suites expect it, when the kernel
/// has it.
fn if_supported(fstype: &str, target: &str, options: &str) -> MountStep {
    MountStep {
        when: When::Supported,
        on_failure: OnFailure::Quiet,
        ..step(fstype, target, fstype, options)
    }
}

/// The kernel filesystems a test machine has, where the tools expect them
/// (bpftool and libbpf: bpffs, debugfs, tracefs, cgroup2), each mounted
/// only when the kernel supports it.
fn kernel_filesystems() -> Vec<MountStep> {
    vec![
        if_supported("debugfs", "/sys/kernel/debug", "nosuid,nodev,noexec"),
        if_supported("tracefs", "/sys/kernel/tracing", "nosuid,nodev,noexec"),
        if_supported("securityfs", "/sys/kernel/security", "nosuid,nodev,noexec"),
        if_supported("configfs", "/sys/kernel/config", "nosuid,nodev,noexec"),
        if_supported("cgroup2", "/sys/fs/cgroup", "nosuid,nodev,noexec"),
        if_supported("bpf", "/sys/fs/bpf", "nosuid,nodev,noexec,mode=700"),
        if_supported("pstore", "/sys/fs/pstore", "nosuid,nodev,noexec"),
        MountStep {
            mkdir: true,
            ..if_supported("mqueue", "/dev/mqueue", "nosuid,nodev,noexec")
        },
    ]
}

/// The init plan of a kernel target. The guest's `/mnt` is a private tmpfs,
/// so `/mnt/vmtest` and mounts below `/mnt` never create directories in the
/// shared root. `/dev` gets a devtmpfs unless the kernel mounted one itself
/// (CONFIG_DEVTMPFS_MOUNT), as on the host's root `/dev` would otherwise
/// show the host's device nodes through 9p.
pub fn init_plan(agent: &str, mounts: &[Mount], marker: &str) -> InitPlan {
    let mut steps = vec![
        required("proc", "/proc", "proc", "nosuid,nodev,noexec", "CONFIG_PROC_FS"),
        required("sysfs", "/sys", "sysfs", "nosuid,nodev,noexec", "CONFIG_SYSFS"),
        MountStep {
            when: When::Unmounted,
            ..required("devtmpfs", "/dev", "devtmpfs", "nosuid,mode=0755", "CONFIG_DEVTMPFS")
        },
        required("tmpfs", "/run", "tmpfs", "nosuid,nodev,mode=0755", "CONFIG_TMPFS"),
        step("tmpfs", "/mnt", "tmpfs", "mode=0755"),
        MountStep {
            mkdir: true,
            ..if_supported("devpts", "/dev/pts", "nosuid,noexec,gid=5,mode=620,ptmxmode=666")
        },
        MountStep {
            mkdir: true,
            on_failure: OnFailure::Quiet,
            ..step("tmpfs", "/dev/shm", "tmpfs", "nosuid,nodev,mode=1777")
        },
    ];
    steps.extend(kernel_filesystems());
    steps.push(MountStep {
        mkdir: true,
        ..step(SHARE_TAG, GUEST_SHARE, "9p", &ninep_options(true, false))
    });
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
        hostname: HOSTNAME.to_string(),
        agent: agent.to_string(),
        marker: marker.to_string(),
    }
}

/// The message of a fatal init failure, the same from both inits.
pub fn fatal_message(what: &str, needs: &str) -> String {
    format!("vmtest init: fatal: {what}: the kernel needs {needs}")
}

/// The error when no virtio console port carries the agent's name.
pub const NO_PORTS_NEEDS: &str = "CONFIG_VIRTIO_CONSOLE (and CONFIG_VIRTIO_PCI)";

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
        "exec <{STDIN_LINK} >{STDOUT_FIFO} 2>{STDERR_FIFO}\n\
         cd -- {} || exit 125\n\
         {command}",
        shell_quote(workdir)
    )
}

/// The init plan as a POSIX shell script, for guests that cannot run the
/// host's vmtest binary (another rootfs or architecture). It needs only
/// `sh`, `mount`, `mkdir`, `ln` and `cat` in the rootfs; `ip` (or
/// `ifconfig`) brings up the loopback interface when the rootfs has one.
pub fn init_script(plan: &InitPlan) -> String {
    let mut s = format!(
        "#!/bin/sh\n\
         # Generated by vmtest: the init of a kernel target. Deleted after the run.\n\
         export PATH={GUEST_PATH}\n\
         export HOME=/root TERM=linux\n",
    );
    for m in &plan.mounts {
        let target = shell_quote(&m.target);
        let mut line = String::new();
        if m.mkdir {
            let _ = write!(line, "mkdir -p {target} 2>/dev/null; ");
        }
        let _ = write!(
            line,
            "mount -t {} -o {} {} {target}",
            m.fstype,
            shell_quote(&m.options),
            shell_quote(&m.source)
        );
        match &m.on_failure {
            OnFailure::Quiet => line.push_str(" 2>/dev/null"),
            OnFailure::Warn => {
                let _ = write!(
                    line,
                    " || echo {} >&2",
                    shell_quote(&format!("vmtest init: mounting {} failed", m.target))
                );
            }
            OnFailure::Fatal { needs } => {
                let what = format!("mounting {} on {} failed", m.fstype, m.target);
                let _ = write!(
                    line,
                    " || {{ echo {} >&2; sleep 1; exit 1; }}",
                    shell_quote(&fatal_message(&what, needs))
                );
            }
        }
        match m.when {
            When::Always => {
                let _ = writeln!(s, "{line}");
            }
            When::Supported => {
                // Read once, after /proc is mounted (the first step).
                if !s.contains("\nfs=") {
                    s.push_str("fs=\" $(echo $(cat /proc/filesystems)) \"\n");
                }
                let _ = writeln!(s, "case $fs in *\" {} \"*) {line} ;; esac", m.fstype);
            }
            When::Unmounted => {
                let _ = writeln!(
                    s,
                    "case \"$(cat /proc/mounts)\" in *\" {} \"*) ;; *) {line} ;; esac",
                    m.target
                );
            }
        }
    }
    for (link, target) in &plan.symlinks {
        let _ = writeln!(s, "[ -e {link} ] || ln -s {target} {link}");
    }
    let _ = writeln!(
        s,
        "ip link set lo up 2>/dev/null || ifconfig lo up 2>/dev/null\n\
         echo {} 2>/dev/null >/proc/sys/kernel/hostname",
        shell_quote(&plan.hostname)
    );
    // The agent's port, found by name (the host names the ports moments
    // after the driver starts: wait up to 2 s); the device node comes from
    // devtmpfs.
    let _ = write!(
        s,
        "port= i=0\n\
         while [ -z \"$port\" ]; do\n\
         \tfor p in /sys/class/virtio-ports/*; do\n\
         \t\tread -r n 2>/dev/null < \"$p/name\"\n\
         \t\t[ \"$n\" = {AGENT_PORT} ] && port=/dev/${{p##*/}}\n\
         \tdone\n\
         \t[ -n \"$port\" ] && break\n\
         \ti=$((i + 1)); [ $i -gt 20 ] && {{ echo {} >&2; sleep 1; exit 1; }}\n\
         \tsleep 0.1\n\
         done\n\
         exec {} -m virtio-serial -p \"$port\" -t /run\n",
        shell_quote(&fatal_message(
            "no virtio console port for the guest agent",
            NO_PORTS_NEEDS
        )),
        plan.agent
    );
    s
}

/// The wrapper script run with `bash -c WRAPPER vmtest WORKDIR MARKER
/// COMMAND`. It runs COMMAND in its own `bash -c`, so `$$` and `exit` belong to
/// the command, with its output through two `cat` relays into the ports, and
/// leaves with the command's status (re-raising a fatal signal, so the agent
/// reports it as one) once the relays are done, or 2 s after the command
/// exited if a background process keeps its output open (or the relays are
/// slow). The end marker goes after the output: into a relay's own pipe
/// (through `/proc/PID/fd/0`) while the relay runs, so it follows whatever
/// the relay has still to copy, else straight into the port.
pub fn wrapper_script() -> String {
    format!(
        r#"i=/dev/null o= e=
for p in /sys/class/virtio-ports/*; do
  read -r n < "$p/name"
  case $n in {STDIN_PORT}) i=/dev/${{p##*/}} ;; {STDOUT_PORT}) o=/dev/${{p##*/}} ;; {STDERR_PORT}) e=/dev/${{p##*/}} ;; esac
done
exec 3>"$o" 4>"$e" || exit 125
cd -- "$1" 2>&4 || {{ printf 'vmtest: cannot enter %s in the guest\n' "$1" >&4; printf %s "$2" >&3; printf %s "$2" >&4; exit 125; }}
exec 5> >(exec cat >&3 4>&-)
p5=$!
exec 6> >(exec cat >&4 3>&-)
p6=$!
bash -c "$3" <"$i" >&5 2>&6 3>&- 4>&- 5>&- 6>&-
rc=$?
exec 5>&- 6>&-
# The relays end when the command's output closes; a background process it
# left may hold that open: wait at most 2 s (read -t on a pipe as a sleep).
exec 7<> <(:)
for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
  {{ kill -0 "$p5" || kill -0 "$p6"; }} 2>/dev/null || break
  read -r -t 0.1 -u 7
done
{{ printf %s "$2" >"/proc/$p5/fd/0"; }} 2>/dev/null || printf %s "$2" >&3
{{ printf %s "$2" >"/proc/$p6/fd/0"; }} 2>/dev/null || printf %s "$2" >&4
case $((rc - 128)) in 1|2|3|4|6|7|8|9|10|11|12|13|14|15|16|24|25|26|27|29|30|31) exec 3>&- 4>&-; trap - "$((rc - 128))"; kill -"$((rc - 128))" $$ ;; esac
exit "$rc"
"#
    )
}

/// The guest agent's arguments to `bash` for running `command` under the
/// wrapper, in the order the wrapper reads them.
pub fn wrapper_args(workdir: &str, marker: &str, command: &str) -> Vec<String> {
    vec![
        "-c".into(),
        wrapper_script(),
        "vmtest".into(),
        workdir.into(),
        marker.into(),
        command.into(),
    ]
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
    fn the_shell_init_is_whole() {
        let script = init_script(&init_plan("/usr/sbin/qemu-ga", &[], "M"));
        // VMTEST_BLESS=1 rewrites the golden file after a deliberate change.
        if std::env::var_os("VMTEST_BLESS").is_some() {
            std::fs::write(
                concat!(env!("CARGO_MANIFEST_DIR"), "/src/guest/testdata/init.sh"),
                &script,
            )
            .unwrap();
        }
        assert_eq!(script, include_str!("testdata/init.sh"));
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
                "\nmkdir -p '/mnt/ro' 2>/dev/null; mount -t 9p -o \
                 'trans=virtio,version=9p2000.L,msize=512000,access=any,ro' 'vmtest_m0' '/mnt/ro' || \
                 echo 'vmtest init: mounting /mnt/ro failed' >&2\n\
                 mount -t 9p -o 'trans=virtio,version=9p2000.L,msize=512000,access=any,rw' 'vmtest_m1' '/opt/rw' || \
                 echo 'vmtest init: mounting /opt/rw failed' >&2\n"
            ),
            "{script}"
        );
    }

    #[test]
    fn modules_from_elsewhere_are_mounted_over_lib_modules() {
        let mut plan = init_plan("/usr/sbin/qemu-ga", &[], "M");
        plan.mounts.extend(modules_mounts("6.1.0-9-amd64"));
        let script = init_script(&plan);
        assert!(
            script.contains(
                "\nmount -t tmpfs -o 'mode=0755' 'tmpfs' '/lib/modules' || echo 'vmtest init: mounting /lib/modules \
                 failed' >&2\nmkdir -p '/lib/modules/6.1.0-9-amd64' 2>/dev/null; mount -t 9p -o \
                 'trans=virtio,version=9p2000.L,msize=512000,access=any,cache=mmap,ro' 'vmtest_modules' \
                 '/lib/modules/6.1.0-9-amd64' ||"
            ),
            "{script}"
        );
    }

    #[test]
    fn the_plan_survives_json() {
        let plan = init_plan("/usr/sbin/qemu-ga", &[], "M");
        let json = serde_json::to_string(&plan).unwrap();
        assert_eq!(serde_json::from_str::<InitPlan>(&json).unwrap(), plan);
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
