//! The command line as typed: clap's raw arguments, before validation.
//!
//! `main.rs` turns these into a list of targets through `config.rs`; nothing
//! here reads files or decides defaults beyond what clap shows in `--help`.

use std::path::PathBuf;

use clap::Parser;

const AFTER_HELP: &str = "\
Examples:
  vmtest                          run the targets of ./vmtest.toml
  vmtest -c ci/vmtest.toml -f arm run the targets of another file whose name matches 'arm'
  vmtest -k ./bzImage uname -r    boot a kernel on the host's root and run one command

Environment:
  RUST_LOG=debug      debug logs on stderr (QEMU's argv, agent traffic, timings)
  VMTEST_ACCEL=tcg    never use KVM (or =kvm: skip the KVM self-test)
  TMPDIR              where private run directories are created

Exit codes:
  0     every target passed
  N     one target: the command's own exit code (128+N if killed by signal N)
  N     several targets: the number of failed targets (at most 255)
  2     usage or config error; nothing was run
  69    one target that could not boot or run (infrastructure error)
  124   one target whose command timed out
  130   interrupted by Ctrl-C (143: by SIGTERM)";

/// Run a command inside a QEMU virtual machine and report the result.
#[derive(Debug, Parser)]
#[command(name = "vmtest", version, about, after_help = AFTER_HELP)]
pub struct Args {
    /// Config file to run [default: ./vmtest.toml]
    #[arg(short, long, value_name = "PATH", conflicts_with = "kernel")]
    pub config: Option<PathBuf>,

    /// Run only the targets whose name matches this regular expression
    #[arg(short, long, value_name = "REGEX")]
    pub filter: Option<String>,

    /// Kernel to boot for a one-off run of COMMAND (no config file)
    #[arg(short, long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,

    /// With --kernel: directory shared as the guest's root [default: /]
    #[arg(short, long, value_name = "DIR", requires = "kernel")]
    pub rootfs: Option<PathBuf>,

    /// With --kernel: guest architecture [default: the host's]
    #[arg(short, long, value_name = "ARCH", requires = "kernel")]
    pub arch: Option<String>,

    /// With --kernel: extra kernel command-line arguments
    #[arg(long, value_name = "ARGS", requires = "kernel", allow_hyphen_values = true)]
    pub kargs: Option<String>,

    /// With --kernel: the kernel's modules directory, holding modules.dep [default: lib/modules/RELEASE in the rootfs]
    #[arg(long, value_name = "DIR", requires = "kernel")]
    pub modules: Option<PathBuf>,

    /// With --kernel: QEMU binary to run [default: qemu-system-ARCH]
    #[arg(short, long, value_name = "CMD", requires = "kernel")]
    pub qemu_command: Option<String>,

    /// Seconds each command may run before its target fails (overrides the config)
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,

    /// Directory for each target's console log [default: .vmtest next to the config file]
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,

    /// With --kernel: the command to run in the guest (joined with spaces, run by bash -c)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn trailing_command_keeps_its_flags() {
        let args = Args::try_parse_from(["vmtest", "-k", "bzImage", "uname", "-r"]).unwrap();
        assert_eq!(args.command, ["uname", "-r"]);
        assert_eq!(args.kernel.as_deref(), Some(std::path::Path::new("bzImage")));
    }

    #[test]
    fn config_and_kernel_conflict() {
        assert!(Args::try_parse_from(["vmtest", "-c", "x.toml", "-k", "bzImage", "true"]).is_err());
    }
}
