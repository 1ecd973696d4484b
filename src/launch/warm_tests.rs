//! Unit tests of the warm-start cache: keys, plans, pruning, the clock.

use std::io::Write;

use super::*;

#[test]
fn sizes_take_binary_suffixes() {
    assert_eq!(parse_size("123"), Some(123));
    assert_eq!(parse_size("4G"), Some(4 << 30));
    assert_eq!(parse_size("500m"), Some(500 << 20));
    assert_eq!(parse_size(" 2K "), Some(2048));
    assert_eq!(parse_size("G"), None);
    assert_eq!(parse_size("1.5G"), None);
    assert_eq!(parse_size(""), None);
}

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

fn inputs<'a>(shape: &'a [String], qemu: &'a Path, image: &'a Path) -> KeyInputs<'a> {
    KeyInputs {
        shape,
        qemu,
        image,
        firmware: Vec::new(),
    }
}

#[test]
fn the_key_changes_with_the_shape_and_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let (qemu, image) = (dir.path().join("qemu"), dir.path().join("disk.raw"));
    std::fs::write(&qemu, "qemu").unwrap();
    std::fs::write(&image, "disk").unwrap();
    let shape = vec!["-m".to_string(), "4G".to_string()];
    let first = key(&inputs(&shape, &qemu, &image)).unwrap();
    assert_eq!(first.len(), 32);
    assert_eq!(key(&inputs(&shape, &qemu, &image)).unwrap(), first);
    let other = vec!["-m".to_string(), "2G".to_string()];
    assert_ne!(key(&inputs(&other, &qemu, &image)).unwrap(), first);
    // Appending a byte to the image (size, times) makes another key.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&image)
        .unwrap()
        .write_all(b"x")
        .unwrap();
    assert_ne!(key(&inputs(&shape, &qemu, &image)).unwrap(), first);
    let missing = dir.path().join("nope");
    let err = format!("{:#}", key(&inputs(&shape, &qemu, &missing)).unwrap_err());
    assert!(err.starts_with("the image: resolving "), "{err}");
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

#[test]
fn pruning_keeps_the_newest_within_the_bound() {
    let root = tempfile::tempdir().unwrap();
    let make = |name: &str, age: u64| {
        let dir = root.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        let mut file = std::fs::File::create(dir.join(STATE)).unwrap();
        file.write_all(&[1u8; 8192]).unwrap();
        file.sync_all().unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(age)).unwrap();
        dir
    };
    let old = make("old", 300);
    let middle = make("middle", 200);
    let new = make("new", 100);
    let just_saved = make("saved", 400);
    let stale = root.path().join(".tmp-x");
    std::fs::create_dir(&stale).unwrap();
    std::fs::File::open(&stale)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(2 * 24 * 3600))
        .unwrap();
    let fresh = root.path().join(".tmp-y");
    std::fs::create_dir(&fresh).unwrap();
    let one = dir_size(&new);
    assert!(one >= 8192, "{one}");
    prune(root.path(), 2 * one, &just_saved);
    assert!(just_saved.exists() && new.exists());
    assert!(!middle.exists() && !old.exists());
    assert!(!stale.exists() && fresh.exists());
}
