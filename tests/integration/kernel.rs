//! Kernel targets on real QEMU with the test kernel from tests/assets/build.sh:
//! the behaviour of vmtest's core (config, CLI, guest environment, exit codes).

use std::time::Duration;

use crate::util::{Project, kernel_target, test_kernel, toml_str};

#[test]
fn uname_shows_the_built_kernel_release() {
    let Some((kernel, release)) = test_kernel() else { return };
    let project = Project::for_vms();
    let out = project.run(project.vmtest().arg("-k").arg(&kernel).args(["uname", "-r"]));
    out.assert_code(0);
    assert_eq!(out.command_stdout(), format!("{release}\n"), "{out}");
    out.assert_stdout_contains("=== bzImage (kernel ")
        .assert_stdout_contains("--- PASS bzImage (")
        .assert_stdout_contains("Summary: 1 passed, 0 failed");
}

#[test]
fn a_single_target_exits_with_the_command_exit_code() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    let out = project.run(project.vmtest().arg("-k").arg(&kernel).arg("exit 12"));
    out.assert_code(12)
        .assert_stdout_contains("--- FAIL bzImage (")
        .assert_stdout_contains("): exit code 12");
}

#[test]
fn several_targets_exit_with_the_number_of_failures() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    let config = [
        kernel_target("passes", &kernel, "true", ""),
        kernel_target("fails", &kernel, "exit 3", ""),
        kernel_target("missing", &project.path().join("nope/bzImage"), "true", ""),
    ]
    .concat();
    project.write("vmtest.toml", &config);
    let out = project.run(&mut project.vmtest());
    out.assert_code(2)
        .assert_stdout_contains("--- PASS passes")
        .assert_stdout_contains("): exit code 3")
        .assert_stdout_contains("Summary: 1 passed, 2 failed");
}

#[test]
fn the_guest_sees_host_environment_cwd_and_share() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    std::fs::create_dir(project.path().join("sub")).unwrap();
    let script = "echo \"var=$VMTEST_TEST_VAR\"; echo \"cwd=$PWD\"; echo hello > /mnt/vmtest/from-guest.txt; \
                  cat <(echo process substitution works); ls /mnt/vmtest";
    let mut cmd = project.vmtest();
    cmd.current_dir(project.path().join("sub"))
        .env("VMTEST_TEST_VAR", "it's there")
        .arg("-k")
        .arg(&kernel)
        .arg(script);
    let out = project.run(&mut cmd);
    out.assert_code(0);
    // The one-liner shares the current directory, here sub/.
    let sub = project.path().join("sub");
    let expected = format!(
        "var=it's there\ncwd={}\nprocess substitution works\nfrom-guest.txt\n",
        sub.display()
    );
    assert_eq!(out.command_stdout(), expected, "{out}");
    assert_eq!(std::fs::read_to_string(sub.join("from-guest.txt")).unwrap(), "hello\n");
}

#[test]
fn config_runs_in_the_config_directory_and_shares_it() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    std::fs::create_dir(project.path().join("data")).unwrap();
    let config = kernel_target(
        "share",
        &kernel,
        "pwd; ls /mnt/vmtest; echo written > /mnt/vmtest/data/out.txt",
        "",
    );
    project.write("vmtest.toml", &config);
    let out = project.run(&mut project.vmtest());
    out.assert_code(0);
    assert_eq!(
        out.command_stdout(),
        format!(
            "{}\ndata\nvmtest.toml\n",
            project.path().canonicalize().unwrap().display()
        ),
        "{out}"
    );
    let written = project.path().join("data/out.txt");
    assert_eq!(std::fs::read_to_string(written).unwrap(), "written\n");
}

#[test]
fn kernel_args_ro_makes_the_root_read_only() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    let command = "awk '$2 == \"/\" { print $4 }' /proc/mounts | cut -d, -f1; \
                   if touch \"$PWD/on-root.txt\" 2>/dev/null; then echo root-writable; fi; \
                   touch /mnt/vmtest/on-share.txt && echo share-writable";
    project.write(
        "vmtest.toml",
        &kernel_target("ro", &kernel, command, "kernel_args = \"ro\""),
    );
    let out = project.run(&mut project.vmtest());
    out.assert_code(0);
    assert_eq!(out.command_stdout(), "ro\nshare-writable\n", "{out}");
    assert!(!project.path().join("on-root.txt").exists());
}

#[test]
fn num_cpus_and_memory_take_effect() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    let command = "nproc; awk '/^MemTotal/ { print int($2 / 1024) }' /proc/meminfo";
    let vm = "[target.vm]\nnum_cpus = 1\nmemory = \"256M\"";
    project.write("vmtest.toml", &kernel_target("small", &kernel, command, vm));
    let out = project.run(&mut project.vmtest());
    out.assert_code(0);
    let lines: Vec<String> = out.command_stdout().lines().map(str::to_string).collect();
    assert_eq!(lines[0], "1", "{out}");
    let mem_mib: u64 = lines[1].parse().unwrap();
    assert!((150..=256).contains(&mem_mib), "MemTotal {mem_mib} MiB\n{out}");
}

#[test]
fn read_only_and_writable_mounts() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    project.write("ro/input.txt", "read me\n");
    std::fs::create_dir(project.path().join("rw")).unwrap();
    let command = "cat /mnt/ro/input.txt; \
                   if echo x > /mnt/ro/new.txt 2>/dev/null; then echo ro-was-writable; fi; \
                   echo result > /mnt/rw/out.txt && echo rw-ok";
    let vm = "[target.vm.mounts]\n\"/mnt/ro\" = { host_path = \"ro\" }\n\
              \"/mnt/rw\" = { host_path = \"rw\", writable = true }";
    project.write("vmtest.toml", &kernel_target("mounts", &kernel, command, vm));
    let out = project.run(&mut project.vmtest());
    out.assert_code(0);
    assert_eq!(out.command_stdout(), "read me\nrw-ok\n", "{out}");
    assert!(!project.path().join("ro/new.txt").exists());
    assert_eq!(
        std::fs::read_to_string(project.path().join("rw/out.txt")).unwrap(),
        "result\n"
    );
}

#[test]
fn a_missing_kernel_is_an_infrastructure_error_named_quickly() {
    let project = Project::without_vms();
    let out = project.run(project.vmtest().args(["-k", "does/not/exist/bzImage", "true"]));
    out.assert_code(69);
    let expected = format!(
        "kernel {} not found",
        project.path().join("does/not/exist/bzImage").display()
    );
    out.assert_stdout_contains(&expected);
    assert!(out.elapsed < Duration::from_secs(10), "{out}");
}

#[test]
fn a_bad_config_names_the_key_and_starts_nothing() {
    let project = Project::without_vms();
    project.write(
        "vmtest.toml",
        "[[target]]\nname = \"typo\"\nkernel = \"bzImage\"\ncomand = \"true\"\n",
    );
    let out = project.run(&mut project.vmtest());
    out.assert_code(2)
        .assert_stderr_contains("vmtest.toml:4: target 'typo': unknown field `comand`");
    assert!(!out.stdout.contains("==="), "{out}");
    assert!(out.elapsed < Duration::from_secs(5), "{out}");
}

#[test]
fn no_config_explains_how_to_start() {
    let project = Project::without_vms();
    let out = project.run(&mut project.vmtest());
    out.assert_code(2)
        .assert_stderr_contains("no vmtest.toml in")
        .assert_stderr_contains("vmtest -k")
        .assert_stderr_contains("vmtest.toml.example");
}

#[test]
fn the_filter_selects_targets() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    let config = [
        kernel_target("alpha", &kernel, "echo alpha ran", ""),
        kernel_target("beta", &kernel, "echo beta ran", ""),
    ]
    .concat();
    project.write("vmtest.toml", &config);
    let out = project.run(project.vmtest().args(["-f", "^be"]));
    out.assert_code(0);
    assert_eq!(out.command_stdout(), "beta ran\n", "{out}");
    assert!(!out.stdout.contains("alpha"), "{out}");
    let none = project.run(project.vmtest().args(["-f", "gamma"]));
    none.assert_code(2)
        .assert_stderr_contains("no target matches --filter 'gamma'");
}

#[test]
fn config_paths_resolve_against_the_config_file() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    std::fs::create_dir(project.path().join("sub")).unwrap();
    std::fs::copy(&kernel, project.path().join("sub/bzImage")).unwrap();
    project.write("sub/here.txt", "found\n");
    let config = format!(
        "[[target]]\nname = \"relative\"\nkernel = \"bzImage\"\ncommand = {}\n",
        toml_str("pwd; cat here.txt")
    );
    project.write("sub/other.toml", &config);
    let out = project.run(project.vmtest().args(["-c", "sub/other.toml"]));
    out.assert_code(0);
    let sub = project.path().join("sub").canonicalize().unwrap();
    assert_eq!(out.command_stdout(), format!("{}\nfound\n", sub.display()), "{out}");
}

#[test]
fn the_shell_init_behaves_like_the_native_one() {
    let Some((kernel, _)) = test_kernel() else { return };
    let project = Project::for_vms();
    project.write("ro/input.txt", "read me\n");
    let command = "echo to-stderr > /dev/stderr; echo \"var=$VMTEST_TEST_VAR\"; cat /mnt/ro/input.txt; \
                   echo x > /mnt/vmtest/shell.txt; exit 5";
    let vm = "[target.vm.mounts]\n\"/mnt/ro\" = { host_path = \"ro\" }";
    project.write("vmtest.toml", &kernel_target("shell", &kernel, command, vm));
    let mut cmd = project.vmtest();
    cmd.env("VMTEST_SHELL_INIT", "1").env("VMTEST_TEST_VAR", "v");
    let out = project.run(&mut cmd);
    out.assert_code(5).assert_stderr_contains("to-stderr\n");
    assert_eq!(out.command_stdout(), "var=v\nread me\n", "{out}");
    assert!(project.path().join("shell.txt").exists());
    let killed = project.run(
        project
            .vmtest()
            .env("VMTEST_SHELL_INIT", "1")
            .arg("-k")
            .arg(&kernel)
            .arg("kill -9 $$"),
    );
    killed.assert_code(137).assert_stdout_contains("killed by signal 9");
}
