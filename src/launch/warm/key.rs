//! The key of a saved state: what shapes it, hashed.
//!
//! A state is only valid for the QEMU, machine, devices, firmware and image
//! it was saved from, so its key covers the argv's shape (per-run paths
//! replaced by placeholders, which `launch::image` does) and the identity of
//! each file involved. Nothing here reads a file's contents.

use std::fs;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result};

/// Changes whenever the layout of a state or the way it is made changes.
const FORMAT: &str = "vmtest-warm-1";

/// What the key is made of, besides the argv's shape.
pub struct KeyInputs<'a> {
    /// QEMU's argv with every per-run path replaced by a fixed placeholder:
    /// machine, CPU, accelerator, memory, devices in order, extra args.
    pub shape: &'a [String],
    pub qemu: &'a Path,
    pub image: &'a Path,
    /// Firmware files (OVMF code and pristine variables, `vm.bios`).
    pub firmware: Vec<&'a Path>,
}

/// The key of a saved state: a hash of the argv's shape and of the
/// identity (path, device, inode, size, modification and change times) of
/// QEMU's binary, the image and the firmware.
pub fn key(inputs: &KeyInputs) -> Result<String> {
    let mut parts = vec![FORMAT.to_string()];
    parts.extend(inputs.shape.iter().cloned());
    parts.push(identity(inputs.qemu).context("QEMU's binary")?);
    parts.push(identity(inputs.image).context("the image")?);
    for file in &inputs.firmware {
        parts.push(identity(file).context("the firmware")?);
    }
    let hash = |salt: u64| {
        let mut h = std::hash::DefaultHasher::new();
        salt.hash(&mut h);
        parts.hash(&mut h);
        h.finish()
    };
    Ok(format!("{:016x}{:016x}", hash(1), hash(2)))
}

/// A file's identity: what changes when it is replaced or written.
fn identity(path: &Path) -> Result<String> {
    let real = fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))?;
    let m = fs::metadata(&real).with_context(|| format!("reading {}", real.display()))?;
    Ok(format!(
        "{} dev={} ino={} size={} mtime={}.{} ctime={}.{}",
        real.display(),
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    ))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

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
}
