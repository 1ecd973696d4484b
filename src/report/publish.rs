//! A finished run's results beyond the terminal report.
//!
//! [`Publish`] gathers what the run should leave behind: the JUnit and JSON
//! report files (`--junit`, `--json`), the JSON document on stdout
//! (`--format json`), and under GitHub Actions the `::error` annotations and
//! the step summary table. [`Publish::prepare`] checks before anything boots
//! that each file can be written, so a mistyped path fails at once (exit 2)
//! rather than after an hour of VMs; [`Publish::publish`] writes everything
//! after the run, whatever the targets' verdicts, and returns the problems
//! instead of stopping at the first, so one unwritable file costs no other
//! report. The documents themselves come from `junit.rs`, `json_report.rs`
//! and `github.rs`.
//!
//! A report path may lie in the share, where the guest can plant a symlink:
//! the JUnit and JSON files are replaced whole (a temporary file renamed
//! over the name, which replaces a link instead of writing through it), and
//! the step summary, which is appended to, is refused if it is a link or not
//! a regular file (`safe_fs.rs`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::report::github;
use crate::report::json;
use crate::report::junit;
use crate::run::outcome::TargetResult;
use crate::safe_fs;

/// Where a run's results go once it ends.
#[derive(Debug, Clone, Default)]
pub struct Publish {
    pub junit: Option<PathBuf>,
    pub json: Option<PathBuf>,
    /// `--format json`: the JSON document is the whole of stdout.
    pub json_on_stdout: bool,
    /// Running as a GitHub Actions step: print `::error` annotations.
    pub github: bool,
    /// `$GITHUB_STEP_SUMMARY`, under GitHub Actions.
    pub step_summary: Option<PathBuf>,
    /// The JUnit test suite's name.
    pub suite: String,
}

impl Publish {
    /// Checks that every file can be written, creating missing parent
    /// directories; existing files keep their contents until the run ends.
    pub fn prepare(&self) -> Result<()> {
        for (report, path) in self.files() {
            let what = report.what();
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("{what} {}: creating its directory", path.display()))?;
            }
            let writable = match report {
                Report::Junit | Report::Json => safe_fs::check_replaceable(path),
                Report::StepSummary => safe_fs::open_append(path).map(drop),
            };
            writable.with_context(|| format!("{what} {}: cannot write", path.display()))?;
        }
        Ok(())
    }

    /// Writes the reports of `results` (out of `planned` targets). The JSON
    /// document goes to `stdout` with `--format json`; annotations go to
    /// `stdout`, or to `stderr` when stdout carries JSON (GitHub reads
    /// workflow commands from both). Returns one error per file not written.
    pub fn publish<'a>(
        &self,
        results: &[TargetResult],
        planned: usize,
        stdout: &'a mut dyn Write,
        stderr: &'a mut dyn Write,
    ) -> Vec<anyhow::Error> {
        let mut problems = Vec::new();
        if self.json_on_stdout {
            let written = stdout
                .write_all(json::render(results, planned).as_bytes())
                .and_then(|()| stdout.flush());
            if let Err(e) = written {
                problems.push(anyhow::anyhow!("JSON report on stdout: cannot write: {e}"));
            }
        }
        if self.github {
            let sink = if self.json_on_stdout { stderr } else { stdout };
            for annotation in results.iter().filter_map(github::error_annotation) {
                let _ = writeln!(sink, "{annotation}");
            }
            let _ = sink.flush();
        }
        for (report, path) in self.files() {
            let written = match report {
                Report::Junit => safe_fs::replace(path, junit::render(results, &self.suite).as_bytes()),
                Report::Json => safe_fs::replace(path, json::render(results, planned).as_bytes()),
                Report::StepSummary => append(path, &github::step_summary(results)),
            };
            if let Err(e) = written {
                problems.push(anyhow::anyhow!(
                    "{} {}: cannot write: {e}",
                    report.what(),
                    path.display()
                ));
            }
        }
        problems
    }

    /// The files this run writes, with what each holds.
    fn files(&self) -> Vec<(Report, &Path)> {
        [
            (Report::Junit, &self.junit),
            (Report::Json, &self.json),
            (Report::StepSummary, &self.step_summary),
        ]
        .into_iter()
        .filter_map(|(report, path)| Some((report, path.as_deref()?)))
        .collect()
    }
}

/// A report file.
#[derive(Debug, Clone, Copy)]
enum Report {
    Junit,
    Json,
    StepSummary,
}

impl Report {
    fn what(self) -> &'static str {
        match self {
            Report::Junit => "JUnit report",
            Report::Json => "JSON report",
            Report::StepSummary => "GitHub step summary ($GITHUB_STEP_SUMMARY)",
        }
    }
}

fn append(path: &Path, text: &str) -> std::io::Result<()> {
    safe_fs::open_append(path)?.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::sample_results;

    #[test]
    fn writes_every_report_and_keeps_stdout_for_json() {
        let dir = tempfile::tempdir().unwrap();
        let summary = dir.path().join("summary.md");
        std::fs::write(&summary, "earlier step\n").unwrap();
        let publish = Publish {
            junit: Some(dir.path().join("new/dir/junit.xml")),
            json: Some(dir.path().join("report.json")),
            json_on_stdout: true,
            github: true,
            step_summary: Some(summary.clone()),
            suite: "vmtest".into(),
        };
        publish.prepare().unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let results = sample_results();
        let problems = publish.publish(&results, 3, &mut out, &mut err);
        assert!(problems.is_empty(), "{problems:?}");
        let json = json::render(&results, 3);
        assert_eq!(String::from_utf8(out).unwrap(), json);
        let annotations: Vec<String> = results.iter().filter_map(github::error_annotation).collect();
        assert_eq!(String::from_utf8(err).unwrap(), format!("{}\n", annotations.join("\n")));
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(publish.junit.as_ref().unwrap()), junit::render(&results, "vmtest"));
        assert_eq!(read(publish.json.as_ref().unwrap()), json);
        assert_eq!(
            read(&summary),
            format!("earlier step\n{}", github::step_summary(&results))
        );
    }

    #[test]
    fn unwritable_paths_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let publish = Publish {
            junit: Some(dir.path().to_path_buf()),
            ..Publish::default()
        };
        let error = format!("{:#}", publish.prepare().unwrap_err());
        assert!(
            error.starts_with(&format!("JUnit report {}: cannot write: ", dir.path().display())),
            "{error}"
        );
        let problems = publish.publish(&sample_results(), 3, &mut Vec::new(), &mut Vec::new());
        assert_eq!(problems.len(), 1);
        let problem = problems[0].to_string();
        assert!(
            problem.starts_with(&format!("JUnit report {}: cannot write: ", dir.path().display())),
            "{problem}"
        );
    }

    #[test]
    fn planted_links_are_replaced_or_refused_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let precious = dir.path().join("precious");
        std::fs::write(&precious, "precious").unwrap();
        let link = |name: &str| {
            let path = dir.path().join(name);
            std::os::unix::fs::symlink(&precious, &path).unwrap();
            path
        };
        let publish = Publish {
            junit: Some(link("junit.xml")),
            json: Some(link("report.json")),
            ..Publish::default()
        };
        publish.prepare().unwrap();
        let problems = publish.publish(&sample_results(), 3, &mut Vec::new(), &mut Vec::new());
        assert!(problems.is_empty(), "{problems:?}");
        for path in [publish.junit.as_ref().unwrap(), publish.json.as_ref().unwrap()] {
            assert!(std::fs::symlink_metadata(path).unwrap().is_file());
        }
        let summary = Publish {
            step_summary: Some(link("summary.md")),
            github: true,
            ..Publish::default()
        };
        let error = format!("{:#}", summary.prepare().unwrap_err());
        assert!(
            error.contains("summary.md: cannot write: is a symbolic link"),
            "{error}"
        );
        let problems = summary.publish(&sample_results(), 3, &mut Vec::new(), &mut Vec::new());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(std::fs::read_to_string(&precious).unwrap(), "precious");
    }

    #[test]
    fn json_on_a_stdout_that_cannot_be_written_is_a_problem() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let publish = Publish {
            json_on_stdout: true,
            ..Publish::default()
        };
        let problems = publish.publish(&sample_results(), 3, &mut Broken, &mut Vec::new());
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0]
                .to_string()
                .starts_with("JSON report on stdout: cannot write: "),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn annotations_go_to_stdout_without_json() {
        let publish = Publish {
            github: true,
            ..Publish::default()
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        publish.publish(&sample_results(), 3, &mut out, &mut err);
        assert!(
            String::from_utf8(out)
                .unwrap()
                .starts_with("::error title=vmtest fail::")
        );
        assert!(err.is_empty());
    }
}
