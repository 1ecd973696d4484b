//! The command line as typed: clap's raw arguments, before validation.
//!
//! `main.rs` turns these into a list of targets through `config.rs`; nothing
//! here reads files or decides defaults beyond what clap shows in `--help`.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::config::debug::GdbStub;
use crate::config::partition::Partition;

const AFTER_HELP: &str = "\
Examples:
  vmtest                          run the targets of ./vmtest.toml
  vmtest -c ci/vmtest.toml -f arm run the targets of another file whose name matches 'arm'
  vmtest -k ./bzImage uname -r    boot a kernel on the host's root and run one command
  vmtest -k ./bzImage -           a login shell in that VM (also: command = \"-\", or --shell)

Environment:
  RUST_LOG=debug      debug logs on stderr (QEMU's argv, agent traffic, timings)
  VMTEST_ACCEL=tcg    never use KVM (or =kvm: skip the KVM self-test)
  TMPDIR              where private run directories are created
  GITHUB_ACTIONS=true GitHub Actions mode: ::group:: per target, ::error per failure
  GITHUB_STEP_SUMMARY in GitHub Actions mode: file the results table is appended to

Exit codes:
  0     every target passed
  N     one target: the command's own exit code (128+N if killed by signal N)
  N     several targets: the number of failed targets (at most 255)
  2     usage or config error; nothing was run
  69    one target that could not boot or run (infrastructure error)
  70    one target whose command passed while the guest kernel reported a splat
  74    every target passed but a report (--junit, --json, step summary) was not written
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

    /// Targets to run at once [default: the config's `jobs`, else as many as the host's CPUs and memory hold]
    #[arg(short, long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub jobs: Option<u64>,

    /// With several targets at once: each target's output in one piece when it ends, or its lines as they come, prefixed with its name
    #[arg(long, value_name = "HOW", value_enum, default_value_t = ParallelOutput::Block)]
    pub parallel_output: ParallelOutput,

    /// Seconds each command may run before its target fails (overrides the config)
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,

    /// Open an interactive login shell in the (single) selected target instead of running its command
    #[arg(long)]
    pub shell: bool,

    /// What a kernel splat (warning, BUG, oops, lockup...) on the guest console does (overrides the config) [default: fail]
    #[arg(long, value_name = "POLICY", value_enum)]
    pub kernel_splats: Option<crate::config::debug::SplatPolicy>,

    /// A regular expression for a known kernel splat, which is then not held against a target (repeatable; added to the config's)
    #[arg(long, value_name = "REGEX")]
    pub kernel_splat_allow: Vec<String>,

    /// Boot image targets from scratch: do not restore a saved state, and save none
    #[arg(long)]
    pub cold: bool,

    /// Write the guest's memory as an ELF vmcore beside the console log when its kernel panics
    #[arg(long)]
    pub dump_on_panic: bool,

    /// Start QEMU's gdb stub on [ADDR:]PORT (ADDR defaults to 127.0.0.1) in the (single) selected target; timeouts are off
    #[arg(long, value_name = "[ADDR:]PORT", value_parser = parse_gdb)]
    pub gdb: Option<GdbStub>,

    /// With --gdb: start the VM stopped until the debugger continues it
    #[arg(long, requires = "gdb")]
    pub gdb_wait: bool,

    /// Directory for each target's console log [default: .vmtest next to the config file]
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,

    /// Write a JUnit XML report to PATH (also when targets fail)
    #[arg(long, value_name = "PATH")]
    pub junit: Option<PathBuf>,

    /// Write a JSON report to PATH (schema: docs/reports.md)
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,

    /// stdout: the human report, or only the JSON report (the human report then goes to stderr)
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = Format::Human)]
    pub format: Format,

    /// Print the targets that would run (NAME, KIND, PATH; tab-separated) and exit without booting
    #[arg(long, conflicts_with_all = ["junit", "json", "format"])]
    pub list: bool,

    /// Run only slice I of N of the (filtered) targets, e.g. 2/3: N CI jobs run every target once
    #[arg(long, value_name = "I/N", value_parser = parse_partition)]
    pub partition: Option<Partition>,

    /// With --kernel: the command to run in the guest (joined with spaces, run by bash -c)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// How the output of targets running at once is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ParallelOutput {
    /// Each target's output as one block, when the target ends.
    Block,
    /// Each line as it arrives, prefixed with `[target] `.
    Lines,
}

/// What vmtest prints on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Headers, the command's output, verdicts and a summary.
    Human,
    /// The JSON report (docs/reports.md), nothing else.
    Json,
}

/// The one-liner's command for `bash -c`: the words joined with spaces, or,
/// when `--` came right before them (`vmtest -k K -- PROG ARGS...`), each
/// word quoted so the guest runs exactly that argv (cargo's runner, `go test
/// -exec`). `raw` is the whole command line as given.
pub fn command_line(raw: &[OsString], command: &[String]) -> String {
    let exact = raw.len() > command.len() && raw[raw.len() - command.len() - 1] == "--";
    match exact {
        true => command
            .iter()
            .map(|w| crate::quote::shell_quote(w))
            .collect::<Vec<_>>()
            .join(" "),
        false => command.join(" "),
    }
}

fn parse_gdb(text: &str) -> Result<GdbStub, String> {
    GdbStub::parse(text, false)
}

fn parse_partition(text: &str) -> Result<Partition, String> {
    Partition::parse(text).map_err(|e| e.to_string())
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
    fn partition_errors_name_the_flag_and_value() {
        let error = Args::try_parse_from(["vmtest", "--partition", "4/3"])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("invalid value '4/3' for '--partition <I/N>': the slice must be between 1 and 3"),
            "{error}"
        );
        let args = Args::try_parse_from(["vmtest", "--partition", "2/3"]).unwrap();
        assert_eq!(args.partition, Some(Partition { index: 2, count: 3 }));
    }

    #[test]
    fn list_conflicts_with_reports() {
        assert!(Args::try_parse_from(["vmtest", "--list", "--junit", "j.xml"]).is_err());
        assert!(Args::try_parse_from(["vmtest", "--list", "--format", "json"]).is_err());
        let args = Args::try_parse_from(["vmtest", "--list", "-f", "arm"]).unwrap();
        assert!(args.list);
        assert_eq!(args.format, Format::Human);
    }

    #[test]
    fn a_double_dash_before_the_command_asks_for_an_exact_argv() {
        let raw = |words: &[&str]| -> (Vec<OsString>, Args) {
            let raw: Vec<OsString> = words.iter().map(OsString::from).collect();
            let args = Args::try_parse_from(&raw).unwrap();
            (raw, args)
        };
        let (words, args) = raw(&["vmtest", "-k", "bzImage", "--", "prog", "a b", "--x", "'q'"]);
        assert_eq!(args.command, ["prog", "a b", "--x", "'q'"]);
        assert_eq!(command_line(&words, &args.command), r#"'prog' 'a b' '--x' ''\''q'\'''"#);
        // A `--` inside the command belongs to it.
        let (words, args) = raw(&["vmtest", "-k", "bzImage", "git", "diff", "--", "f"]);
        assert_eq!(command_line(&words, &args.command), "git diff -- f");
        let (words, args) = raw(&["vmtest", "-k", "bzImage", "--", "--", "f"]);
        assert_eq!(command_line(&words, &args.command), "'--' 'f'");
        let (words, args) = raw(&["vmtest", "-k", "bzImage", "uname", "-r"]);
        assert_eq!(command_line(&words, &args.command), "uname -r");
    }

    #[test]
    fn gdb_takes_a_port_and_waits_only_with_it() {
        let args = Args::try_parse_from(["vmtest", "-k", "K", "--gdb", "1234", "--gdb-wait", "true"]).unwrap();
        assert_eq!(args.gdb, Some(GdbStub::parse("127.0.0.1:1234", false).unwrap()));
        assert!(args.gdb_wait);
        assert_eq!(args.command, ["true"]);
        assert!(Args::try_parse_from(["vmtest", "--gdb-wait"]).is_err());
        assert!(Args::try_parse_from(["vmtest", "-k", "K", "--gdb", "uname", "-r"]).is_err());
    }

    #[test]
    fn config_and_kernel_conflict() {
        assert!(Args::try_parse_from(["vmtest", "-c", "x.toml", "-k", "bzImage", "true"]).is_err());
    }
}
