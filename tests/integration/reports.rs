//! CI-grade results on the built binary: JUnit and JSON reports (checked by
//! parsing them, the JUnit with a real consumer, Python's `junitparser`),
//! `--list`, `--partition`, `--format json` and GitHub Actions mode. Only
//! the report test and the unwritable-stdout test boot VMs; the rest use
//! targets whose kernel is missing, which fail fast as infrastructure errors.

use std::path::Path;
use std::process::Command;

use crate::util::{Project, kernel_target, test_kernel};

/// A config of `names`, each a target whose kernel does not exist.
fn missing_kernels(project: &Project, names: &[&str]) {
    let kernel = project.path().join("missing/bzImage");
    let config: String = names.iter().map(|n| kernel_target(n, &kernel, "true", "")).collect();
    project.write("vmtest.toml", &config);
}

/// vmtest in `project`, outside any GitHub Actions job this test runs in.
fn vmtest(project: &Project) -> Command {
    let mut cmd = project.vmtest();
    cmd.env_remove("GITHUB_ACTIONS").env_remove("GITHUB_STEP_SUMMARY");
    cmd
}

/// What `junitparser` reads from `path`: one line per suite and per case.
fn junitparser(path: &Path) -> String {
    let script = r#"
import sys
from junitparser import JUnitXml
xml = JUnitXml.fromfile(sys.argv[1])
for suite in xml:
    print(f"suite {suite.name}: tests={suite.tests} failures={suite.failures} errors={suite.errors}")
    for case in suite:
        results = [f"{type(r).__name__.lower()}({r.type}: {r.message})" for r in case.result] or ["pass"]
        assert case.time > 0 or case.name == "broken", (case.name, case.time)
        print(f"  {case.classname} {case.name}: {' '.join(results)}")
        print(f"    out={case.system_out!r} err={case.system_err!r}")
"#;
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .output()
        .expect("running python3");
    assert!(
        output.status.success(),
        "junitparser could not read {} (pip install junitparser; tests/assets/build.sh installs it):\n{}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn junit_and_json_for_a_pass_a_failure_and_an_error() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    let config = [
        kernel_target("pass", &kernel, "echo hello; echo note >&2", ""),
        kernel_target(
            "fail",
            &kernel,
            "echo 'a < b & \"c\"'; printf '\\033[31mred\\n'; exit 3",
            "",
        ),
        kernel_target("broken", &project.path().join("nope/bzImage"), "true", ""),
    ]
    .concat();
    project.write("vmtest.toml", &config);
    let out = project.run(vmtest(&project).args(["--junit", "reports/junit.xml", "--json", "reports/report.json"]));
    out.assert_code(2).assert_stdout_contains("Summary: 1 passed, 2 failed");

    let junit = project.path().join("reports/junit.xml");
    assert_eq!(
        junitparser(&junit),
        "suite vmtest: tests=3 failures=1 errors=1\n  \
         vmtest.kernel pass: pass\n    \
         out='hello\\n' err='note\\n'\n  \
         vmtest.kernel fail: failure(exit_code: exit code 3)\n    \
         out='a < b & \"c\"\\n[31mred\\n' err=None\n  \
         vmtest.kernel broken: error(infrastructure: kernel {missing} not found)\n    \
         out=None err=None\n"
            .replace("{missing}", &project.path().join("nope/bzImage").display().to_string()),
        "{out}"
    );

    let text = std::fs::read_to_string(project.path().join("reports/report.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["vmtest_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(json["schema_version"], 1);
    assert_eq!(
        json["totals"],
        serde_json::json!({"passed": 1, "failed": 2, "not_run": 0})
    );
    let targets = json["targets"].as_array().unwrap();
    let summary: Vec<(&str, &str, &str, serde_json::Value)> = targets
        .iter()
        .map(|t| {
            let s = |key: &str| t[key].as_str().unwrap_or("-");
            (s("name"), s("kind"), s("verdict"), t["exit_code"].clone())
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("pass", "kernel", "pass", 0.into()),
            ("fail", "kernel", "fail", 3.into()),
            ("broken", "kernel", "error", serde_json::Value::Null),
        ]
    );
    for booted in &targets[..2] {
        let d = &booted["durations"];
        let secs = |key: &str| d[key].as_f64().unwrap();
        assert!(secs("boot") > 0.0 && secs("command") > 0.0, "{text}");
        assert!(
            secs("total") >= secs("boot") + secs("setup") + secs("command") - 0.01,
            "{text}"
        );
        assert_eq!(booted["signal"], serde_json::Value::Null);
        assert_eq!(booted["error"], serde_json::Value::Null);
        let log = booted["console_log"].as_str().unwrap();
        assert!(Path::new(log).is_file(), "{log}");
    }
    let broken = &targets[2];
    assert!(
        broken["error"].as_str().unwrap().contains("nope/bzImage not found"),
        "{text}"
    );
    assert_eq!(broken["console_log"], serde_json::Value::Null);
    assert_eq!(broken["durations"]["boot"], 0.0);
}

#[test]
fn list_shows_the_filtered_targets_without_booting() {
    let project = Project::without_vms();
    missing_kernels(&project, &["x86-a", "arm-b", "x86-c"]);
    let kernel = project.path().join("missing/bzImage").display().to_string();
    let out = project.run(vmtest(&project).args(["--list", "-f", "^x86"]));
    out.assert_code(0);
    assert_eq!(
        out.stdout,
        format!("x86-a\tkernel\t{kernel}\nx86-c\tkernel\t{kernel}\n"),
        "{out}"
    );
    assert_eq!(out.stderr, "", "{out}");
    assert!(
        !project.path().join(".vmtest").exists(),
        "--list booted something\n{out}"
    );

    let out = project.run(vmtest(&project).args(["--list", "-f", "riscv"]));
    out.assert_code(2)
        .assert_stderr_contains("no target matches --filter 'riscv'");
}

/// The target names `--list --partition SPEC` prints.
fn listed(project: &Project, args: &[&str]) -> Vec<String> {
    let out = project.run(vmtest(project).arg("--list").args(args));
    out.assert_code(0);
    out.stdout
        .lines()
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect()
}

#[test]
fn partitions_cover_every_target_exactly_once() {
    let project = Project::without_vms();
    let names = ["t1", "t2", "t3", "t4", "t5", "t6", "t7"];
    missing_kernels(&project, &names);
    let slices: Vec<Vec<String>> = (1..=3)
        .map(|i| listed(&project, &["--partition", &format!("{i}/3")]))
        .collect();
    assert_eq!(slices, [vec!["t1", "t4", "t7"], vec!["t2", "t5"], vec!["t3", "t6"]]);
    let mut all: Vec<String> = slices.concat();
    all.sort();
    assert_eq!(all, names);

    // After the filter: t2..t6, dealt over two slices.
    let filtered: Vec<Vec<String>> = (1..=2)
        .map(|i| listed(&project, &["-f", "t[2-6]", "--partition", &format!("{i}/2")]))
        .collect();
    assert_eq!(filtered, [vec!["t2", "t4", "t6"], vec!["t3", "t5"]]);

    let out = project.run(vmtest(&project).args(["--list", "--partition", "8/3"]));
    out.assert_code(2)
        .assert_stderr_contains("invalid value '8/3' for '--partition <I/N>': the slice must be between 1 and 3");
}

#[test]
fn an_empty_slice_runs_nothing_and_passes() {
    let project = Project::without_vms();
    missing_kernels(&project, &["a", "b"]);
    let out = project.run(vmtest(&project).args(["--partition", "3/4", "--junit", "junit.xml", "--json", "r.json"]));
    out.assert_code(0)
        .assert_stderr_contains("vmtest: warning: --partition 3/4 selects none of the 2 targets; nothing to run")
        .assert_stdout_contains("Summary: 0 passed, 0 failed");
    assert_eq!(
        junitparser(&project.path().join("junit.xml")),
        "suite vmtest 3/4: tests=0 failures=0 errors=0\n"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(project.path().join("r.json")).unwrap()).unwrap();
    assert_eq!(json["targets"], serde_json::json!([]));

    let out = project.run(vmtest(&project).args(["--list", "--partition", "3/4"]));
    out.assert_code(0);
    assert_eq!(out.stdout, "", "{out}");
}

#[test]
fn format_json_leaves_stdout_to_the_document() {
    let project = Project::without_vms();
    missing_kernels(&project, &["only"]);
    let out = project.run(vmtest(&project).args(["--format", "json"]));
    out.assert_code(69)
        .assert_stderr_contains("=== only (kernel ")
        .assert_stderr_contains("--- FAIL only");
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(json["targets"][0]["verdict"], "error", "{out}");
    assert_eq!(json["totals"]["failed"], 1, "{out}");
}

#[test]
fn format_json_on_a_stdout_that_cannot_be_written_is_a_missing_report() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    let mut cmd = vmtest(&project);
    cmd.args(["--format", "json", "-k"]).arg(&kernel).arg("true");
    cmd.stdout(std::fs::File::create("/dev/full").unwrap());
    let out = project.run(&mut cmd);
    out.assert_code(74)
        .assert_stderr_contains("--- PASS bzImage")
        .assert_stderr_contains("vmtest: JSON report on stdout: cannot write: ");
    // A reader that went away: the same.
    let mut cmd = vmtest(&project);
    cmd.args(["--format", "json", "-k"]).arg(&kernel).arg("true");
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(74), "{stderr}");
    assert!(
        stderr.contains("vmtest: JSON report on stdout: cannot write: "),
        "{stderr}"
    );
}

#[test]
fn an_unwritable_report_path_fails_before_anything_runs() {
    let project = Project::without_vms();
    missing_kernels(&project, &["a"]);
    project.write("taken", "a file, not a directory");
    let out = project.run(vmtest(&project).args(["--junit", "taken/junit.xml"]));
    out.assert_code(2).assert_stderr_contains(&format!(
        "vmtest: JUnit report {}: creating its directory",
        Path::new("taken/junit.xml").display()
    ));
    assert!(!out.stdout.contains("==="), "{out}");
}

#[test]
fn github_mode_groups_annotates_and_summarises() {
    let project = Project::without_vms();
    missing_kernels(&project, &["a", "b"]);
    let summary = project.write("step-summary.md", "earlier\n");
    let out = project.run(
        project
            .vmtest()
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_STEP_SUMMARY", &summary),
    );
    let missing = project.path().join("missing/bzImage").display().to_string();
    out.assert_code(2);
    let stdout = crate::util::without_stop_tokens(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "::group::=== a (kernel {missing})\n::stop-commands::TOKEN\n::TOKEN::\n::endgroup::\n"
        )),
        "{out}"
    );
    out.assert_stdout_contains(&format!(
        "::error title=vmtest a::kernel {missing} not found\n::error title=vmtest b::kernel {missing} not found\n"
    ));
    assert_eq!(
        std::fs::read_to_string(&summary).unwrap(),
        format!(
            "earlier\n### vmtest: 0 passed, 2 failed\n\n\
             | Target | Verdict | Exit code / error | Boot | Setup | Command | Total |\n\
             |---|---|---|--:|--:|--:|--:|\n\
             | a | ❌ error | kernel {missing} not found | – | – | – | 0.00 s |\n\
             | b | ❌ error | kernel {missing} not found | – | – | – | 0.00 s |\n"
        )
    );
}
