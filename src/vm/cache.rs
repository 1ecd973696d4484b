//! Where vmtest keeps what it can reuse across runs.
//!
//! `$XDG_CACHE_HOME/vmtest/<name>` (a relative XDG_CACHE_HOME is ignored, as
//! the XDG spec says), else `~/.cache/vmtest/<name>`. The initramfs archives
//! and the KVM self-test's verdicts live there; each owner decides its keys.

use std::path::{Path, PathBuf};

/// vmtest's cache directory for `name`, if there is a home for it.
pub fn dir(name: &str) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
    Some(base.join("vmtest").join(name))
}
