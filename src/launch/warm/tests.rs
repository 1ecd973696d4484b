//! Unit tests of the warm-start cache: keys, plans, pruning, the clock.

use super::*;

#[test]
fn the_clock_is_set_in_the_first_shell_step() {
    let step = SetupStep {
        what: "mounting /mnt/vmtest".into(),
        path: "/bin/sh".into(),
        args: vec!["-c".into(), "mount x".into()],
    };
    let now = UNIX_EPOCH + Duration::new(1_800_000_000, 5);
    let steps = with_clock(std::slice::from_ref(&step), now);
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].what, step.what);
    assert_eq!(
        steps[0].args,
        [
            "-c",
            "date -u -s @1800000000.000000005 >/dev/null 2>&1 || true\nmount x"
        ]
    );
    let steps = with_clock(&[], now);
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].what, "setting the guest's clock");
}

#[test]
fn a_complete_state_is_restored_and_an_incomplete_one_saved_again() {
    let root = tempfile::tempdir().unwrap();
    let cache = Cache {
        root: root.path().join("warm"),
    };
    let Warm::Save(staging) = cache.plan("k1").unwrap() else {
        panic!("nothing saved yet")
    };
    assert!(staging.disk().starts_with(root.path().join("warm")));
    assert!(
        staging
            .temp
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".tmp-")
    );
    drop(staging);
    // Dropping an unfinished staging directory removes it.
    assert_eq!(std::fs::read_dir(root.path().join("warm")).unwrap().count(), 0);
    let dir = root.path().join("warm/k1");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(STATE), "s").unwrap();
    assert!(matches!(cache.plan("k1").unwrap(), Warm::Save(_)), "no disk");
    std::fs::write(dir.join(DISK), "d").unwrap();
    let Warm::Restore(entry) = cache.plan("k1").unwrap() else {
        panic!("a complete state")
    };
    assert_eq!(entry.disk(), dir.join(DISK));
    assert_eq!(entry.vars(), None);
    let state = format!(
        "exec:cat {}",
        crate::quote::shell_quote(&dir.join(STATE).to_string_lossy())
    );
    assert_eq!(entry.incoming_args(), ["-incoming".to_string(), state]);
    entry.discard();
    assert!(!dir.exists());
    assert_eq!(std::fs::read_dir(root.path().join("warm")).unwrap().count(), 0);
}
