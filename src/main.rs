//! vmtest: run a command inside a QEMU virtual machine and report the result.
//!
//! `main` wires the layers together: raw CLI arguments (`cli`) become a
//! validated list of targets (`config`), narrowed by `--filter` and
//! `--partition` (`partition`) or shown by `--list` (`listing`). The runner
//! (`runner`) turns each target into a `launch` (`kernel` with `modules`,
//! `initramfs`, `kernel_release`; or `image`), boots it (`vm`, `qemu`,
//! `kvm` with its verdicts in `cache`, `console` with its kept log placed by
//! `log_path` and its kernel splats recognised by `splat`, `janitor`; for
//! kernel developers `gdb` and a crash `dump`), talks to the guest (`agent`, `guest`,
//! `guest_init`, `initramfs_init`, `relay`, `shell`) and returns results with
//! captured output (`capture`). The reporter prints as things happen
//! (`report`, words from `render`), reports beyond the terminal are written
//! (`publish`: `junit`, `json_report`, `github`; files the guest can reach
//! are written through `safe_fs`), Ctrl-C is caught
//! (`interrupt`), and the results fold into the exit code (`exit_codes`).

mod agent;
mod cache;
mod capture;
mod cli;
mod config;
mod console;
mod dump;
mod exit_codes;
mod gdb;
mod github;
mod guest;
mod guest_init;
mod image;
mod initramfs;
mod initramfs_init;
mod interrupt;
mod janitor;
mod json_report;
mod junit;
mod kernel;
mod kernel_release;
mod kvm;
mod launch;
mod listing;
mod log_path;
mod modules;
mod partition;
mod publish;
mod qemu;
mod relay;
mod render;
mod report;
mod runner;
mod safe_fs;
mod shell;
mod splat;
mod stdin;
mod vm;
mod warm;

use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Parser;

use crate::config::Target;
use crate::gdb::GdbStub;

fn main() {
    let raw: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(code) = guest_init::dispatch(&raw) {
        std::process::exit(code);
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp_millis()
        .init();
    let args = cli::Args::parse();
    let (list, partition, publish) = (args.list, args.partition, publish_for(&args));
    let all = match targets(args) {
        Ok(targets) => targets,
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
        report::Reporter::new(Box::new(io::stderr()), Box::new(io::stderr()), report::Mode::detect())
    } else {
        report::Reporter::stdio()
    };
    if let Some(message) = &empty_slice {
        reporter.warning(message);
    }
    if let Err(e) = interrupt::install() {
        reporter.warning(&format!(
            "cannot catch Ctrl-C ({e}); interrupting may leave QEMU behind"
        ));
    }
    let results = runner::run_all(&targets, &mut reporter);
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

/// The targets to run, from the one-liner or the config file, filtered.
fn targets(args: cli::Args) -> Result<Vec<Target>> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let mut targets = match &args.kernel {
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
            vec![config::one_liner(one, &cwd)?]
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
        splat::check_pattern(pattern).map_err(|e| anyhow::anyhow!("--kernel-splat-allow '{pattern}': {e}"))?;
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
    Ok(targets)
}

fn load_config(path: Option<&Path>, cwd: &Path) -> Result<Vec<Target>> {
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
    config::parse(&text, &path, &base)
}
