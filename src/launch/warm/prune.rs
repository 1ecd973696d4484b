//! Keeping the saved states within a size bound.
//!
//! After each save the least recently used states (by the time their
//! stream was last restored) are removed until the rest fit in
//! `VMTEST_WARM_MAX`, and what killed runs left (staging and trash
//! directories older than a day) goes too.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use super::{Entry, STATE};

/// Environment variable bounding the saved states' total size (`4G`, `500M`).
pub const MAX_ENV: &str = "VMTEST_WARM_MAX";
/// The bound when [`MAX_ENV`] is unset.
const DEFAULT_MAX: u64 = 4 << 30;

/// The saved states' size bound, from [`MAX_ENV`].
pub(super) fn max_size() -> u64 {
    std::env::var(MAX_ENV)
        .ok()
        .and_then(|s| parse_size(&s))
        .unwrap_or(DEFAULT_MAX)
}

/// `4G`, `500M`, `123` (bytes).
fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, shift) = match text.char_indices().last()? {
        (i, 'K' | 'k') => (&text[..i], 10),
        (i, 'M' | 'm') => (&text[..i], 20),
        (i, 'G' | 'g') => (&text[..i], 30),
        (i, 'T' | 't') => (&text[..i], 40),
        _ => (text, 0),
    };
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// Removes the least recently used states until the rest fit in `max`
/// bytes (`keep` stays whatever its size), and leftovers of killed runs.
pub fn prune(root: &Path, max: u64, keep: &Path) {
    let Ok(entries) = fs::read_dir(root) else { return };
    let mut states = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            // A staging or trash directory a killed vmtest left (the janitor
            // usually removes them); a day is longer than any save.
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(24 * 3600));
            if old {
                let _ = fs::remove_dir_all(&path);
            }
            continue;
        }
        let used = fs::metadata(path.join(STATE))
            .and_then(|m| m.modified())
            .unwrap_or(UNIX_EPOCH);
        states.push((used, dir_size(&path), path));
    }
    states.sort_by_key(|s| std::cmp::Reverse(s.0));
    let mut total = states.iter().filter(|s| s.2 == keep).map(|s| s.1).sum::<u64>();
    for (_, size, path) in states {
        if path == keep {
            continue;
        }
        total += size;
        if total > max {
            log::debug!("pruning the saved state {}", path.display());
            Entry { dir: path }.discard();
        }
    }
}

/// Bytes a directory's files take on disk.
fn dir_size(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.blocks() * 512)
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::SystemTime;

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
}
