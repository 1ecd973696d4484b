//! Where a target's console log is kept, and making it there safely.
//!
//! By default the log is `.vmtest/<target>/console.log` in the config's
//! directory: inside the share, where the guest may have replaced any part
//! of it by a symlink or a FIFO during an earlier run. A [`LogPath`] keeps
//! apart the directory the user named (the config's directory, the current
//! one for a one-liner, or `--log-dir`), which is taken as named, and the
//! parts vmtest makes below it (`.vmtest`, the target's directory and the
//! file), which are created, entered and removed without following a
//! symlink (`safe_fs.rs`). Each target name maps to its own directory: a
//! name that is not already a plain file name (`a/b`, `a b`, `.x`) is
//! sanitised and gets a hash of the original name appended after a `+`
//! (`a_b+1d8e3f2c`), which a sanitised name never contains, so `a/b`, `a b`
//! and `a_b` never share a log. What is written into the log is
//! `console.rs`'s business.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::safe_fs;

/// Directory, below a log root, holding each target's logs.
pub const LOG_DIR: &str = ".vmtest";
/// The console log's file name in a target's log directory.
pub const FILE_NAME: &str = "console.log";

/// A target's console log: `root/<dirs...>/console.log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPath {
    /// A directory the user named; followed as it is.
    root: PathBuf,
    /// Made by vmtest below `root`; never followed if a symlink.
    dirs: Vec<String>,
}

impl LogPath {
    /// The default log of target `name`: `<share>/.vmtest/<name>/console.log`.
    pub fn in_share(share: &Path, name: &str) -> LogPath {
        LogPath {
            root: share.to_path_buf(),
            dirs: vec![LOG_DIR.to_string(), dir_name(name)],
        }
    }

    /// The log of target `name` below `--log-dir`: `<dir>/<name>/console.log`.
    pub fn in_dir(dir: &Path, name: &str) -> LogPath {
        LogPath {
            root: dir.to_path_buf(),
            dirs: vec![dir_name(name)],
        }
    }

    /// The log's whole path, for messages and reports.
    pub fn path(&self) -> PathBuf {
        let mut path = self.root.clone();
        path.extend(&self.dirs);
        path.push(FILE_NAME);
        path
    }

    /// Creates an empty log for this run, replacing an earlier run's; the
    /// directories below the root are created as needed. Fails, naming the
    /// problem, when one of them is a symlink or not a directory.
    pub fn create(&self) -> io::Result<File> {
        let dir = self.open_dir(true)?;
        safe_fs::create_fresh_in(&dir, FILE_NAME)
    }

    /// Creates `name` beside the log (a crash dump), as [`LogPath::create`]
    /// creates the log, and returns it with its path.
    pub fn create_beside(&self, name: &str) -> io::Result<(File, PathBuf)> {
        let dir = self.open_dir(true)?;
        let file = safe_fs::create_fresh_in(&dir, name)?;
        Ok((file, self.path().with_file_name(name)))
    }

    /// Removes an earlier run's log, if there is one where vmtest would
    /// have made it (a symlinked directory leads nowhere).
    pub fn remove(&self) -> io::Result<()> {
        match self.open_dir(false) {
            Ok(dir) => safe_fs::remove_in(&dir, FILE_NAME),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The log's path if a regular file is there: after a run, what the
    /// result points the user to (a symlink the guest left is not a log).
    pub fn kept(&self) -> Option<PathBuf> {
        let dir = self.open_dir(false).ok()?;
        safe_fs::is_file_in(&dir, FILE_NAME).then(|| self.path())
    }

    /// The log's directory, entered component by component below the root.
    fn open_dir(&self, create: bool) -> io::Result<File> {
        if create {
            std::fs::create_dir_all(&self.root)?;
        }
        let mut dir = File::open(&self.root)?;
        let mut at = self.root.clone();
        for name in &self.dirs {
            at.push(name);
            dir = safe_fs::open_dir_in(&dir, name, create)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", at.display())))?;
        }
        Ok(dir)
    }
}

/// The directory name of target `name`: the name itself when it is a plain
/// file name, else the name with every other character replaced by `_` (and
/// a leading `.` escaped), plus `+` and a hash of the original.
fn dir_name(name: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
    if !name.is_empty() && !name.starts_with('.') && name.chars().all(plain) {
        return name.to_string();
    }
    let safe: String = name.chars().map(|c| if plain(c) { c } else { '_' }).collect();
    let safe = if safe.starts_with('.') {
        format!("_{safe}")
    } else {
        safe
    };
    format!("{safe}+{:08x}", fnv1a(name.as_bytes()) as u32)
}

/// FNV-1a, 64 bits: stable across Rust versions and runs, unlike std's
/// hasher, so a target keeps its log directory.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn names_map_to_distinct_directories() {
        let p = |name: &str| LogPath::in_share(Path::new("/p"), name).path();
        assert_eq!(p("arm64-6.1_x.y"), Path::new("/p/.vmtest/arm64-6.1_x.y/console.log"));
        let names = ["a/b", "a b", "a_b", "a+b", "..", ".x", "_.x", ""];
        let dirs: Vec<String> = names.iter().map(|n| dir_name(n)).collect();
        for (i, dir) in dirs.iter().enumerate() {
            assert!(!dir.contains('/') && !dir.starts_with('.') && !dir.is_empty(), "{dir}");
            for other in &dirs[i + 1..] {
                assert_ne!(dir, other);
            }
        }
        assert_eq!(dirs[2], "a_b");
        assert!(dirs[0].starts_with("a_b+") && dirs[0].len() == 12, "{}", dirs[0]);
        assert!(dirs[4].starts_with("_..+"), "{}", dirs[4]);
        assert_eq!(dir_name("a/b"), dirs[0], "stable");
        assert_eq!(
            LogPath::in_dir(Path::new("/logs"), "k").path(),
            Path::new("/logs/k/console.log")
        );
    }

    #[test]
    fn create_replaces_an_earlier_log_and_remove_deletes_it() {
        let share = tempfile::tempdir().unwrap();
        let log = LogPath::in_share(share.path(), "t");
        std::io::Write::write_all(&mut log.create().unwrap(), b"old").unwrap();
        assert_eq!(log.kept(), Some(share.path().join(".vmtest/t/console.log")));
        log.create().unwrap();
        assert_eq!(std::fs::read(log.path()).unwrap(), b"");
        log.remove().unwrap();
        assert_eq!(log.kept(), None);
        log.remove().unwrap();
        LogPath::in_share(share.path(), "never").remove().unwrap();
    }

    #[test]
    fn a_planted_directory_link_is_neither_followed_nor_written() {
        let share = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(elsewhere.path().join(FILE_NAME), "precious").unwrap();
        std::fs::create_dir(share.path().join(LOG_DIR)).unwrap();
        symlink(elsewhere.path(), share.path().join(".vmtest/t")).unwrap();
        let log = LogPath::in_share(share.path(), "t");
        let err = log.remove().unwrap_err();
        assert!(err.to_string().contains(".vmtest/t: is a symbolic link"), "{err}");
        assert!(log.create().is_err());
        assert_eq!(log.kept(), None);
        // The same one level up: `.vmtest` itself a link.
        let share2 = tempfile::tempdir().unwrap();
        symlink(elsewhere.path(), share2.path().join(LOG_DIR)).unwrap();
        let log2 = LogPath::in_share(share2.path(), "t");
        assert!(log2.create().is_err());
        assert!(log2.remove().is_err());
        let left: Vec<_> = std::fs::read_dir(elsewhere.path()).unwrap().flatten().collect();
        assert_eq!(left.len(), 1);
        assert_eq!(
            std::fs::read_to_string(elsewhere.path().join(FILE_NAME)).unwrap(),
            "precious"
        );
    }

    #[test]
    fn a_planted_file_link_is_replaced_not_followed() {
        let share = tempfile::tempdir().unwrap();
        let secret = share.path().join("secret");
        std::fs::write(&secret, "secret").unwrap();
        let log = LogPath::in_share(share.path(), "t");
        log.create().unwrap();
        std::fs::remove_file(log.path()).unwrap();
        symlink(&secret, log.path()).unwrap();
        assert_eq!(log.kept(), None);
        log.remove().unwrap();
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "secret");
        assert!(!log.path().exists());
    }
}
