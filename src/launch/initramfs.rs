//! The initramfs of a kernel whose root drivers are modules, built on the
//! host and cached.
//!
//! The archive (newc cpio, uncompressed) holds the modules that
//! `modules.rs` chose, decompressed here (`.ko.xz`, `.ko.zst`, `.ko.gz`), as
//! `/vmtest/modules/NN-name.ko` in load order, and an [`InitProgram`]: for a
//! guest of the host's architecture vmtest's own binary as `/init` with the
//! shared libraries it needs (from `ldd`), which loads the modules and
//! switches to the 9p root (`initramfs_init.rs`); for another architecture
//! the rootfs's own static busybox and a shell script ([`FOREIGN_INIT`])
//! doing the same.
//! Archives are cached under `$XDG_CACHE_HOME/vmtest/initramfs/`, keyed by
//! the kernel, the modules, vmtest's version and the binary itself, and
//! written atomically, so a second run boots at once.

use std::hash::{Hash, Hasher};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use crate::launch::modules::{ModulesDir, decompressed, module_name};

/// Cached archives kept; older ones are removed when a new one is written.
const KEEP: usize = 6;

/// What runs as the initramfs's `/init`.
#[derive(Debug, Clone, PartialEq)]
pub enum InitProgram {
    /// vmtest's own binary (a guest of the host's architecture).
    Vmtest,
    /// This static busybox (a host path in the guest's rootfs) running
    /// [`FOREIGN_INIT`]: a guest of another architecture.
    Busybox(PathBuf),
}

/// The `/init` of a foreign architecture's initramfs: load the modules,
/// mount the root the kernel command line names, switch to it and run its
/// `init=` (vmtest's shell init). Errors go to the console, where vmtest
/// shows them with the kernel's panic.
pub const FOREIGN_INIT: &str = r#"#!/bin/busybox sh
# vmtest's initramfs for a modular kernel of another architecture.
b=/bin/busybox
$b mount -t proc proc /proc
for m in /vmtest/modules/*.ko; do
  $b insmod "$m" || echo "vmtest initramfs: loading $m failed"
done
root= fstype= flags= mode=rw init=/sbin/init
for w in $($b cat /proc/cmdline); do
  case $w in
    --) break ;;
    root=*) root=${w#root=} ;;
    rootfstype=*) fstype=${w#rootfstype=} ;;
    rootflags=*) flags=${w#rootflags=} ;;
    init=*) init=${w#init=} ;;
    ro|rw) mode=$w ;;
  esac
done
$b mount -t "$fstype" -o "${flags:+$flags,}$mode" "$root" /newroot   || { echo "vmtest initramfs: mounting the root $root ($fstype) failed"; exit 1; }
$b mount -t devtmpfs devtmpfs /newroot/dev || echo "vmtest initramfs: mounting /dev failed"
$b umount /proc
exec $b switch_root /newroot "$init" "$@"
"#;

/// The initramfs for this kernel and these modules: from the cache, or
/// built into it (into `fallback`, a private directory, if the cache is not
/// writable).
pub fn get(kernel: &Path, dir: &ModulesDir, load: &[PathBuf], init: &InitProgram, fallback: &Path) -> Result<PathBuf> {
    let exe = match init {
        InitProgram::Vmtest => std::env::current_exe().context("finding vmtest's own binary")?,
        InitProgram::Busybox(busybox) => busybox.clone(),
    };
    let key = cache_key(kernel, dir, load, &exe)?;
    let name = format!("{key}.cpio");
    let cache = crate::vm::cache::dir("initramfs");
    if let Some(cache) = &cache {
        let cached = cache.join(&name);
        if cached.is_file() {
            log::debug!("initramfs: reusing {}", cached.display());
            return Ok(cached);
        }
    }
    let target = match cache.filter(|c| std::fs::create_dir_all(c).is_ok()) {
        Some(cache) => cache,
        None => {
            log::warn!("cannot create vmtest's cache directory; the initramfs will be built for every run");
            fallback.to_path_buf()
        }
    };
    let started = Instant::now();
    let mut temp = tempfile::Builder::new()
        .prefix(".building.")
        .tempfile_in(&target)
        .with_context(|| format!("creating a file in {}", target.display()))?;
    let size = write_archive(temp.as_file_mut(), init, &exe, load)?;
    let path = target.join(&name);
    temp.persist(&path)
        .with_context(|| format!("writing the initramfs {}", path.display()))?;
    log::debug!(
        "initramfs: built {} ({} modules, {} KiB) in {:?}",
        path.display(),
        load.len(),
        size / 1024,
        started.elapsed()
    );
    if path.parent() != Some(fallback) {
        prune(&target, &path);
    }
    Ok(path)
}

/// A hash of everything the archive is made of.
fn cache_key(kernel: &Path, dir: &ModulesDir, load: &[PathBuf], exe: &Path) -> Result<String> {
    let stamp = |path: &Path| -> Result<(u64, u128)> {
        let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
        let mtime = meta.modified()?.duration_since(UNIX_EPOCH).unwrap_or_default();
        Ok((meta.len(), mtime.as_nanos()))
    };
    let mut parts = vec![
        env!("CARGO_PKG_VERSION").to_string(),
        format!("{} {:?}", kernel.display(), stamp(kernel)?),
        format!("{} {:?}", dir.path.display(), stamp(&dir.path.join("modules.dep")).ok()),
        format!("{} {:?}", exe.display(), stamp(exe)?),
    ];
    parts.extend(load.iter().map(|p| p.display().to_string()));
    let hash = |salt: u8| {
        let mut h = std::hash::DefaultHasher::new();
        salt.hash(&mut h);
        parts.hash(&mut h);
        h.finish()
    };
    Ok(format!("{:016x}{:016x}", hash(1), hash(2)))
}

/// Removes all but the newest [`KEEP`] archives (never `current`), and
/// half-written ones an hour old (left by a vmtest that was killed).
fn prune(cache: &Path, current: &Path) {
    let Ok(entries) = std::fs::read_dir(cache) else { return };
    let mut archives: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
    for entry in entries.flatten() {
        let (path, name) = (entry.path(), entry.file_name());
        let Some(mtime) = entry.metadata().ok().and_then(|m| m.modified().ok()) else {
            continue;
        };
        let age = mtime.elapsed().unwrap_or_default();
        if name.to_string_lossy().starts_with(".building.") && age > std::time::Duration::from_secs(3600) {
            let _ = std::fs::remove_file(&path);
        } else if path.extension().is_some_and(|x| x == "cpio") && path != current {
            archives.push((mtime, path));
        }
    }
    archives.sort_by_key(|a| std::cmp::Reverse(a.0));
    for (_, old) in archives.into_iter().skip(KEEP - 1) {
        log::debug!("initramfs: removing old {}", old.display());
        let _ = std::fs::remove_file(old);
    }
}

/// Writes the whole archive; returns its size. `exe` is vmtest's binary or
/// the busybox, as `init` says.
fn write_archive(file: &mut std::fs::File, init: &InitProgram, exe: &Path, load: &[PathBuf]) -> Result<u64> {
    let mut cpio = Archive::new(BufWriter::new(file));
    for dir in ["dev", "proc", "sys", "newroot", "vmtest", "vmtest/modules"] {
        cpio.dir(dir)?;
    }
    cpio.device("dev/console", 0o600, (5, 1))?;
    cpio.device("dev/null", 0o666, (1, 3))?;
    match init {
        InitProgram::Vmtest => {
            cpio.file_from("init", 0o755, exe)?;
            for lib in shared_libraries(exe)? {
                let inside = lib.to_string_lossy().trim_start_matches('/').to_string();
                cpio.file_from(&inside, 0o755, &lib)?;
            }
            if Path::new("/etc/ld.so.cache").is_file() {
                cpio.file_from("etc/ld.so.cache", 0o644, Path::new("/etc/ld.so.cache"))?;
            }
        }
        InitProgram::Busybox(_) => {
            cpio.dir("bin")?;
            cpio.file_from("bin/busybox", 0o755, exe)?;
            cpio.file("init", 0o755, FOREIGN_INIT.as_bytes())?;
        }
    }
    for (index, module) in load.iter().enumerate() {
        let name = module_name(&module.to_string_lossy());
        let bytes = decompressed(module)?;
        cpio.file(&format!("vmtest/modules/{index:02}-{name}.ko"), 0o644, &bytes)?;
    }
    cpio.finish()
}

/// The shared libraries (and dynamic loader) `exe` needs, as `ldd` resolves
/// them on the host; none for a static binary.
fn shared_libraries(exe: &Path) -> Result<Vec<PathBuf>> {
    let output = std::process::Command::new("ldd")
        .arg(exe)
        .output()
        .context("running ldd to find the libraries vmtest's binary needs in the initramfs")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if text.contains("not a dynamic executable") || stderr.contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    if !output.status.success() {
        bail!("ldd {} failed: {}", exe.display(), stderr.trim());
    }
    parse_ldd(&text).with_context(|| format!("ldd {}", exe.display()))
}

/// The library paths in `ldd` output.
fn parse_ldd(text: &str) -> Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.contains("statically linked") {
            continue;
        }
        let target = match line.split_once(" => ") {
            Some((name, rest)) => {
                if rest.starts_with("not found") {
                    bail!("library {name} not found");
                }
                rest
            }
            None => line,
        };
        let path = target.split(" (").next().unwrap_or_default().trim();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// A newc archive being written: directories are created once, parents
/// before children.
struct Archive<W: Write> {
    out: Option<W>,
    dirs: std::collections::BTreeSet<String>,
    ino: u32,
    size: u64,
}

impl<W: Write> Archive<W> {
    fn new(out: W) -> Self {
        Archive {
            out: Some(out),
            dirs: Default::default(),
            ino: 0,
            size: 0,
        }
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &mut dyn Read,
        len: u64,
    ) -> Result<()> {
        if let Some((parent, _)) = name.rsplit_once('/') {
            self.dir(parent)?;
        }
        let len32 = u32::try_from(len).with_context(|| format!("{name} is too large for a cpio archive"))?;
        self.ino += 1;
        let header = cpio::NewcBuilder::new(name)
            .ino(self.ino)
            .mode(mode)
            .nlink(nlink)
            .rdev_major(rdev.0)
            .rdev_minor(rdev.1);
        let out = self.out.take().expect("archive already finished");
        let mut writer = header.write(out, len32);
        io::copy(data, &mut writer)?;
        self.out = Some(writer.finish()?);
        self.size += 110 + name.len() as u64 + 4 + len + 4;
        Ok(())
    }

    fn dir(&mut self, name: &str) -> Result<()> {
        if name.is_empty() || self.dirs.contains(name) {
            return Ok(());
        }
        self.dirs.insert(name.to_string());
        self.entry(name, 0o040_755, 2, (0, 0), &mut io::empty(), 0)
    }

    fn device(&mut self, name: &str, perm: u32, rdev: (u32, u32)) -> Result<()> {
        self.entry(name, 0o020_000 | perm, 1, rdev, &mut io::empty(), 0)
    }

    fn file(&mut self, name: &str, perm: u32, bytes: &[u8]) -> Result<()> {
        self.entry(name, 0o100_000 | perm, 1, (0, 0), &mut &bytes[..], bytes.len() as u64)
    }

    /// A regular file with the contents of `source` (symlinks followed).
    fn file_from(&mut self, name: &str, perm: u32, source: &Path) -> Result<()> {
        let mut file = std::fs::File::open(source).with_context(|| format!("reading {}", source.display()))?;
        let len = file.metadata()?.len();
        self.entry(name, 0o100_000 | perm, 1, (0, 0), &mut file, len)
    }

    /// Writes the trailer; returns the archive's approximate size.
    fn finish(mut self) -> Result<u64> {
        let out = self.out.take().expect("archive already finished");
        let mut out = cpio::newc::trailer(out)?;
        out.flush()?;
        Ok(self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_names_the_loader_and_libraries() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                "/lib/x86_64-linux-gnu/libc.so.6".into(),
                "/lib64/ld-linux-x86-64.so.2".into()
            ]
        );
        assert!(parse_ldd("\tlibfoo.so.1 => not found\n").is_err());
        assert!(parse_ldd("\tstatically linked\n").unwrap().is_empty());
    }

    #[test]
    fn archive_entries_are_newc_with_parents_first() {
        let mut out = Vec::new();
        let mut cpio = Archive::new(&mut out);
        cpio.file("lib/x/libc.so.6", 0o755, b"abc").unwrap();
        cpio.device("dev/console", 0o600, (5, 1)).unwrap();
        cpio.finish().unwrap();
        let mut names = Vec::new();
        let mut rest = &out[..];
        loop {
            let reader = cpio::NewcReader::new(rest).unwrap();
            if reader.entry().is_trailer() {
                break;
            }
            let e = reader.entry();
            names.push((e.name().to_string(), e.mode(), e.rdev_major(), e.file_size()));
            rest = reader.finish().unwrap();
        }
        assert_eq!(
            names,
            [
                ("lib".into(), 0o040_755, 0, 0),
                ("lib/x".into(), 0o040_755, 0, 0),
                ("lib/x/libc.so.6".into(), 0o100_755, 0, 3),
                ("dev".into(), 0o040_755, 0, 0),
                ("dev/console".into(), 0o020_600, 5, 0),
            ]
        );
    }
}
