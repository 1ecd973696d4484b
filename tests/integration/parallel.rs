//! Several targets at once (`-j`): output intact and attributed, the same
//! verdicts, summary and reports as a sequential run, and nothing left
//! behind after Ctrl-C.

use std::time::Duration;

use crate::util::{Project, Running, kernel_target, test_kernel};

/// One vCPU and little memory each, so two fit this host at once.
const SMALL: &str = "[target.vm]\nnum_cpus = 1\nmemory = \"512M\"\n";

/// Passing, failing, timing-out and missing-kernel targets.
fn four_targets(project: &Project, kernel: &std::path::Path) {
    let config = [
        kernel_target(
            "pass",
            kernel,
            "for i in 1 2 3 4 5; do echo pass-$i; sleep 0.2; done",
            SMALL,
        ),
        kernel_target(
            "fail",
            kernel,
            "for i in 1 2 3 4 5; do echo fail-$i; echo fail-err-$i >&2; sleep 0.2; done; exit 3",
            SMALL,
        ),
        kernel_target(
            "slow",
            kernel,
            "echo slow-started; sleep 600",
            &format!("timeout = 5\n{SMALL}"),
        ),
        kernel_target("missing", std::path::Path::new("/nonexistent/bzImage"), "true", ""),
    ]
    .concat();
    project.write("vmtest.toml", &config);
}

/// The lines of `text` between a target's header and its verdict.
fn section<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let start = text
        .lines()
        .position(|l| l.starts_with(&format!("=== {name} (")))
        .unwrap_or_else(|| panic!("no header for {name} in:\n{text}"));
    text.lines()
        .skip(start + 1)
        .take_while(|l| !l.starts_with("--- "))
        .collect()
}

/// The JSON report without timings.
fn json_without_times(path: &std::path::Path) -> serde_json::Value {
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for target in json["targets"].as_array_mut().unwrap() {
        target.as_object_mut().unwrap().remove("durations");
    }
    json
}

#[test]
fn two_at_once_keeps_each_targets_output_whole_and_reports_as_one_at_a_time() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    four_targets(&project, &kernel);
    let parallel = project.run(
        project
            .vmtest()
            .args(["-j", "2", "--json", "par.json", "--junit", "par.xml"]),
    );
    parallel.assert_code(3);
    let out = &parallel.stdout;
    let pass_lines: Vec<String> = (1..=5).map(|i| format!("pass-{i}")).collect();
    assert_eq!(section(out, "pass"), pass_lines, "{parallel}");
    let fail_lines: Vec<String> = (1..=5).map(|i| format!("fail-{i}")).collect();
    assert_eq!(section(out, "fail"), fail_lines, "{parallel}");
    assert_eq!(section(out, "slow"), ["slow-started"], "{parallel}");
    for i in 1..=5 {
        assert!(parallel.stderr.contains(&format!("fail-err-{i}\n")), "{parallel}");
    }
    parallel
        .assert_stdout_contains("--- PASS pass (")
        .assert_stdout_contains("): exit code 3")
        .assert_stdout_contains("): timed out after 5 s")
        .assert_stdout_contains("--- FAIL missing (0.00s): error: kernel /nonexistent/bzImage not found")
        .assert_stdout_contains("Summary: 1 passed, 3 failed");
    // The summary lists the targets in config order, as a sequential run does.
    let summary: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("  PASS ") || l.starts_with("  FAIL "))
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(summary, ["pass", "fail", "slow", "missing"], "{parallel}");

    let sequential = project.run(
        project
            .vmtest()
            .args(["-j", "1", "--json", "seq.json", "--junit", "seq.xml"]),
    );
    sequential.assert_code(3);
    assert_eq!(
        json_without_times(&project.path().join("par.json")),
        json_without_times(&project.path().join("seq.json"))
    );
    let junit_without_times = |name: &str| {
        let text = std::fs::read_to_string(project.path().join(name)).unwrap();
        regex::Regex::new(r#"time="[0-9.]+""#)
            .unwrap()
            .replace_all(&text, "")
            .into_owned()
    };
    assert_eq!(junit_without_times("par.xml"), junit_without_times("seq.xml"));
}

#[test]
fn lines_mode_prefixes_every_line_with_its_target() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    let config = [
        kernel_target("a", &kernel, "for i in 1 2 3; do echo a-$i; sleep 0.3; done", SMALL),
        kernel_target(
            "b",
            &kernel,
            "for i in 1 2 3; do echo b-$i; sleep 0.3; done; printf b-end",
            SMALL,
        ),
    ]
    .concat();
    project.write("vmtest.toml", &config);
    let out = project.run(project.vmtest().args(["-j", "2", "--parallel-output", "lines"]));
    out.assert_code(0).assert_stdout_contains("Summary: 2 passed, 0 failed");
    for line in [
        "[a] a-1",
        "[a] a-2",
        "[a] a-3",
        "[b] b-1",
        "[b] b-2",
        "[b] b-3",
        "[b] b-end",
    ] {
        assert!(out.stdout.lines().any(|l| l == line), "no line '{line}' in\n{out}");
    }
}

#[test]
fn ctrl_c_stops_every_running_vm_and_leaves_nothing() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    let config = [
        kernel_target("one", &kernel, "echo one-ready; sleep 1000", SMALL),
        kernel_target("two", &kernel, "echo two-ready; sleep 1000", SMALL),
        kernel_target("three", &kernel, "true", SMALL),
    ]
    .concat();
    project.write("vmtest.toml", &config);
    let mut cmd = project.vmtest();
    cmd.args(["-j", "2", "--parallel-output", "lines"]);
    let mut run = Running::start(&mut cmd);
    run.wait_for_lines(&["[one] one-ready", "[two] two-ready"], Duration::from_secs(300));
    run.signal(libc::SIGINT);
    let out = run.finish(Duration::from_secs(60));
    out.assert_code(130)
        .assert_stdout_contains("Summary: 0 passed, 2 failed, 1 not run");
    assert_eq!(out.stdout.matches("interrupted by SIGINT").count(), 4, "{out}");
    project.assert_nothing_left(&out);
}
