//! vmtest: run a command inside a QEMU virtual machine and report the result.
//!
//! `main` wires the layers together, one folder each, in the order data
//! flows: `config` (arguments and vmtest.toml become validated targets) ->
//! `launch` (a target becomes a QEMU argv and a guest command) -> `run` (one
//! VM per target through `vm` and the `ports`, results as data, events as
//! they happen) -> `report` (the terminal, JUnit, JSON, GitHub) -> the exit
//! code (`exit_codes`). `guest` is the code and the scripts that run inside
//! the VM.

mod config;
mod exit_codes;
#[cfg(test)]
mod fixtures;
mod guest;
mod interrupt;
mod launch;
mod ports;
mod quote;
mod report;
mod run;
mod safe_fs;
mod vm;

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Parser;

use crate::config::debug::GdbStub;
use crate::config::log_path;
use crate::config::{Target, cli, listing};
use crate::ports::shell;
use crate::report::terminal::{Mode, Reporter};
use crate::report::{github, publish};
use crate::run::runner;

fn main() {
    let raw: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(code) = hidden_entry(&raw) {
        std::process::exit(code);
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp_millis()
        .init();
    let args = cli::Args::parse();
    let (list, partition, publish) = (args.list, args.partition, publish_for(&args));
    let (asked_jobs, parallel_output) = (args.jobs, args.parallel_output);
    let (all, file_jobs) = match targets(args) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("vmtest: {e:#}");
            std::process::exit(exit_codes::USAGE);
        }
    };
    let total = all.len();
    let targets = match partition {
        Some(partition) => partition.select(all),
        None => all,
    };
    // An empty slice is not an error: a CI matrix wider than the target
    // list has jobs with nothing to do, and they should pass.
    let empty_slice = partition
        .filter(|_| targets.is_empty())
        .map(|p| format!("--partition {p} selects none of the {total} targets; nothing to run"));
    if list {
        if let Some(message) = &empty_slice {
            eprintln!("vmtest: {message}");
        }
        print!("{}", listing::render(&targets));
        std::process::exit(exit_codes::SUCCESS);
    }
    if let Err(e) = publish.prepare() {
        eprintln!("vmtest: {e:#}");
        std::process::exit(exit_codes::USAGE);
    }
    let mut reporter = if publish.json_on_stdout {
        // stdout carries the JSON document alone.
        Reporter::new(Box::new(io::stderr()), Box::new(io::stderr()), Mode::detect())
    } else {
        Reporter::stdio()
    };
    if let Some(message) = &empty_slice {
        reporter.warning(message);
    }
    if let Err(e) = interrupt::install() {
        reporter.warning(&format!(
            "cannot catch Ctrl-C ({e}); interrupting may leave QEMU behind"
        ));
    }
    let jobs = run::jobs::jobs(asked_jobs.map(|n| n as usize).or(file_jobs), &targets);
    if jobs > 1 {
        reporter.run_at_once(parallel_output);
    }
    let results = runner::run_all(&targets, jobs, &mut reporter);
    reporter.summary(&results, targets.len());
    let problems = publish.publish(&results, targets.len(), &mut io::stdout(), &mut io::stderr());
    for problem in &problems {
        eprintln!("vmtest: {problem:#}");
    }
    let code = match interrupt::received() {
        Some(signal) => exit_codes::interrupted(signal),
        None => exit_codes::fold(&results),
    };
    std::process::exit(exit_codes::with_reports(code, problems.is_empty()));
}

/// Runs the hidden entry points of vmtest's binary: the guest's init
/// (`guest::init`), the initramfs stage (`guest::initramfs_init`) and the
/// janitor (`vm::janitor`); `None` for a normal command line.
fn hidden_entry(args: &[OsString]) -> Option<i32> {
    if crate::guest::initramfs_init::is_stage(args) {
        return Some(crate::guest::initramfs_init::run(args));
    }
    match (args.get(1)?.to_str()?, args.get(2)) {
        ("--guest-init", Some(plan)) => Some(guest::init::init(PathBuf::from(plan))),
        ("--janitor", None) => Some(crate::vm::janitor::run()),
        _ => None,
    }
}

/// Where the run's reports go, from the flags and the environment.
fn publish_for(args: &cli::Args) -> publish::Publish {
    let github = github::enabled();
    publish::Publish {
        junit: args.junit.clone(),
        json: args.json.clone(),
        json_on_stdout: args.format == cli::Format::Json,
        github,
        step_summary: std::env::var_os("GITHUB_STEP_SUMMARY")
            .filter(|path| github && !path.is_empty())
            .map(PathBuf::from),
        suite: match args.partition {
            Some(partition) => format!("vmtest {partition}"),
            None => "vmtest".to_string(),
        },
    }
}

/// The targets to run, from the one-liner or the config file, filtered, and
/// the config file's `jobs`.
fn targets(args: cli::Args) -> Result<(Vec<Target>, Option<usize>)> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let targets = match &args.kernel {
        Some(kernel) => {
            let one = config::OneLiner {
                kernel: kernel.clone(),
                rootfs: args.rootfs.clone(),
                modules: args.modules.clone(),
                arch: args.arch.clone(),
                kernel_args: args.kargs.clone(),
                qemu_command: args.qemu_command.clone(),
                command: cli::command_line(&std::env::args_os().collect::<Vec<_>>(), &args.command),
            };
            (vec![config::one_liner(one, &cwd)?], None)
        }
        None => {
            if !args.command.is_empty() {
                bail!(
                    "a command on the command line needs --kernel; with a config file, \
                     each target's command comes from the file"
                );
            }
            load_config(args.config.as_deref(), &cwd)?
        }
    };
    let (mut targets, jobs) = targets;
    if let Some(pattern) = &args.filter {
        let regex = regex::Regex::new(pattern).with_context(|| format!("--filter '{pattern}'"))?;
        let all: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
        targets.retain(|t| regex.is_match(&t.name));
        if targets.is_empty() {
            bail!("no target matches --filter '{pattern}' (targets: {})", all.join(", "));
        }
    }
    if args.shell {
        if targets.len() != 1 {
            let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
            bail!(
                "--shell needs exactly one target; {} selected ({}): pick one with -f",
                targets.len(),
                names.join(", ")
            );
        }
        targets[0].command = shell::SHELL_COMMAND.to_string();
    }
    if let Some(dir) = &args.log_dir {
        let dir = config::resolve(&cwd, dir);
        for target in &mut targets {
            target.console_log = log_path::LogPath::in_dir(&dir, &target.name);
        }
    }
    if let Some(timeout) = args.timeout {
        for target in &mut targets {
            target.timeout = Some(timeout);
        }
    }
    for target in &mut targets {
        if let Some(policy) = args.kernel_splats {
            target.kernel_splats = policy;
        }
        target
            .kernel_splat_allow
            .extend(args.kernel_splat_allow.iter().cloned());
        target.dump_on_panic |= args.dump_on_panic;
        if let config::Kind::Image { warm_start, .. } = &mut target.kind {
            *warm_start &= !args.cold;
        }
    }
    for pattern in &args.kernel_splat_allow {
        config::debug::check_splat_pattern(pattern)
            .map_err(|e| anyhow::anyhow!("--kernel-splat-allow '{pattern}': {e}"))?;
    }
    if let Some(stub) = &args.gdb {
        if targets.len() != 1 {
            let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
            bail!(
                "--gdb needs exactly one target; {} selected ({}): pick one with -f",
                targets.len(),
                names.join(", ")
            );
        }
        // A debugger may hold the VM for as long as it likes.
        targets[0].timeout = None;
        targets[0].gdb = Some(GdbStub {
            wait: args.gdb_wait,
            ..stub.clone()
        });
    }
    Ok((targets, jobs))
}

fn load_config(path: Option<&Path>, cwd: &Path) -> Result<(Vec<Target>, Option<usize>)> {
    let path = match path {
        Some(path) => config::resolve(cwd, path),
        None => {
            let default = cwd.join("vmtest.toml");
            if !default.exists() {
                bail!(
                    "no vmtest.toml in {}.\n\
                     To start:\n  \
                     vmtest -k PATH/TO/bzImage COMMAND...   run one command on a kernel\n  \
                     vmtest -c PATH/TO/vmtest.toml          use a config file elsewhere\n  \
                     or write ./vmtest.toml: see vmtest.toml.example in vmtest's sources",
                    cwd.display()
                );
            }
            default
        }
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading config {}", path.display()))?;
    let base: PathBuf = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| cwd.to_path_buf());
    let base = base.canonicalize().unwrap_or(base);
    config::parse_file(&text, &path, &base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_guest_arguments_are_left_alone() {
        let args: Vec<OsString> = vec!["vmtest".into(), "-k".into(), "bzImage".into()];
        assert_eq!(hidden_entry(&args), None);
        assert_eq!(hidden_entry(&["vmtest".into()]), None);
        assert_eq!(hidden_entry(&["vmtest".into(), "--guest-init".into()]), None);
    }
}
