//! Writing files where a guest may have been: without following its links.
//!
//! The shared directory (`/mnt/vmtest`) is the guest's to change, and a
//! symlink or FIFO it makes there is a real one on the host. The files vmtest
//! itself writes in such places (the console log under `.vmtest/`, reports,
//! the KVM verdict cache) go through these helpers: directories are created
//! and entered with `mkdirat`/`openat(O_NOFOLLOW)`, a fresh file is created
//! with `O_EXCL | O_NOFOLLOW` (so it is a new regular file vmtest made), a
//! file is appended to only if it is a regular file reached without a final
//! symlink, and a file is replaced by writing a temporary file beside it and
//! renaming it over the old name (which replaces a symlink rather than
//! writing through it). Opens never block on a FIFO. Which paths need this is
//! the callers' business.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Opens `name` inside the directory `parent` as a directory, creating it
/// first if `create`; fails if `name` is a symlink or not a directory.
pub fn open_dir_in(parent: &File, name: &str, create: bool) -> io::Result<File> {
    let c_name = c_name(name)?;
    if create {
        // SAFETY: a valid directory fd and a NUL-terminated name.
        let made = unsafe { libc::mkdirat(parent.as_raw_fd(), c_name.as_ptr(), 0o777) };
        if made != 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(e);
            }
        }
    }
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;
    // SAFETY: as above; the returned fd, if any, is ours alone.
    let fd = unsafe { libc::openat(parent.as_raw_fd(), c_name.as_ptr(), flags) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        // O_DIRECTORY says ENOTDIR for a link too: tell them apart.
        if kind_in(parent, &c_name) == Some(libc::S_IFLNK) {
            return Err(io::Error::new(e.kind(), SYMLINK_REFUSED));
        }
        return Err(not_followed(e));
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Whether `name` in `dir` is a regular file (a symlink is not followed).
pub fn is_file_in(dir: &File, name: &str) -> bool {
    c_name(name).is_ok_and(|name| kind_in(dir, &name) == Some(libc::S_IFREG))
}

/// The file type (`S_IFREG`, `S_IFLNK`, ...) of `name` in `dir`, not
/// following a symlink.
fn kind_in(dir: &File, name: &CString) -> Option<libc::mode_t> {
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: a valid fd, a NUL-terminated name and room for the result.
    let done = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            stat.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    // SAFETY: fstatat filled `stat` when it returned 0.
    (done == 0).then(|| unsafe { stat.assume_init() }.st_mode & libc::S_IFMT)
}

const SYMLINK_REFUSED: &str = "is a symbolic link, which vmtest does not follow here (the guest may have made it)";

/// Removes the entry `name` of `dir` (a file or a symlink itself, never what
/// a symlink points to); an entry that does not exist is not an error.
pub fn remove_in(dir: &File, name: &str) -> io::Result<()> {
    let c_name = c_name(name)?;
    // SAFETY: a valid directory fd and a NUL-terminated name.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), c_name.as_ptr(), 0) } != 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::NotFound {
            return Err(e);
        }
    }
    Ok(())
}

/// Creates `name` in `dir` as a new, empty regular file for writing, after
/// removing whatever entry had that name. `O_EXCL` guarantees the file is the
/// one just created, not a link or FIFO put there in between.
pub fn create_fresh_in(dir: &File, name: &str) -> io::Result<File> {
    remove_in(dir, name)?;
    let c_name = c_name(name)?;
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: a valid directory fd and a NUL-terminated name.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c_name.as_ptr(), flags, 0o666 as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Opens `path` for appending, creating it if missing, without following a
/// symlink at its last component and without blocking on a FIFO; anything
/// but a regular file is refused.
pub fn open_append(path: &Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(not_followed)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(file)
}

/// Checks that [`replace`] can write `path`: its directory takes a new file,
/// and `path` is not a directory. Nothing is left behind.
pub fn check_replaceable(path: &Path) -> io::Result<()> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(io::Error::other("is a directory"));
    }
    temp_beside(path).map(drop)
}

/// Writes `bytes` to `path` as a whole new file: a temporary file in the same
/// directory, renamed over `path`. A symlink at `path` is replaced, never
/// followed; the file gets the usual mode (0666 less the umask).
pub fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut temp = temp_beside(path)?;
    temp.write_all(bytes)?;
    temp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o666 & !umask()))?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

fn temp_beside(path: &Path) -> io::Result<tempfile::NamedTempFile> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let prefix = format!(
        ".{}.",
        path.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    );
    tempfile::Builder::new().prefix(&prefix).tempfile_in(dir)
}

/// The process's umask (read by setting it and putting it back).
fn umask() -> u32 {
    // SAFETY: umask cannot fail; the old mask is restored at once.
    unsafe {
        let mask = libc::umask(0o022);
        libc::umask(mask);
        mask as u32
    }
}

fn c_name(name: &str) -> io::Result<CString> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("'{name}' is not a single file name"),
        ));
    }
    CString::new(Path::new(name).as_os_str().as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// `ELOOP` from `O_NOFOLLOW`, said plainly.
fn not_followed(e: io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(libc::ELOOP) => io::Error::new(e.kind(), SYMLINK_REFUSED),
        Some(libc::ENOTDIR) => io::Error::new(e.kind(), "is not a directory"),
        _ => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn directories_are_created_and_links_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = File::open(dir.path()).unwrap();
        let made = open_dir_in(&root, "a", true).unwrap();
        open_dir_in(&made, "b", true).unwrap();
        assert!(dir.path().join("a/b").is_dir());
        symlink(outside.path(), dir.path().join("link")).unwrap();
        let err = open_dir_in(&root, "link", true).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        std::fs::write(dir.path().join("file"), "").unwrap();
        let err = open_dir_in(&root, "file", true).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
        assert!(open_dir_in(&root, "../x", true).is_err());
    }

    #[test]
    fn a_fresh_file_replaces_a_link_and_never_writes_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "secret").unwrap();
        let root = File::open(dir.path()).unwrap();
        symlink(&secret, dir.path().join("log")).unwrap();
        let mut log = create_fresh_in(&root, "log").unwrap();
        log.write_all(b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "secret");
        let meta = std::fs::symlink_metadata(dir.path().join("log")).unwrap();
        assert!(meta.is_file());
        assert_eq!(std::fs::read_to_string(dir.path().join("log")).unwrap(), "new");
    }

    #[test]
    fn a_fifo_is_removed_not_opened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("log");
        let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let root = File::open(dir.path()).unwrap();
        create_fresh_in(&root, "log").unwrap();
        assert!(std::fs::symlink_metadata(&fifo).unwrap().is_file());
        std::fs::remove_file(&fifo).unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let err = open_append(&fifo).unwrap_err();
        assert!(matches!(err.raw_os_error(), Some(libc::ENXIO)) || err.to_string().contains("regular"));
    }

    #[test]
    fn appending_refuses_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "kept").unwrap();
        let link = dir.path().join("summary.md");
        symlink(&target, &link).unwrap();
        let err = open_append(&link).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let plain = dir.path().join("plain.md");
        open_append(&plain).unwrap().write_all(b"a").unwrap();
        open_append(&plain).unwrap().write_all(b"b").unwrap();
        assert_eq!(std::fs::read_to_string(&plain).unwrap(), "ab");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "kept");
    }

    #[test]
    fn replacing_swaps_a_link_for_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "kept").unwrap();
        let report = dir.path().join("junit.xml");
        symlink(&target, &report).unwrap();
        check_replaceable(&report).unwrap();
        replace(&report, b"<xml/>").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "kept");
        assert!(std::fs::symlink_metadata(&report).unwrap().is_file());
        assert_eq!(std::fs::read_to_string(&report).unwrap(), "<xml/>");
        let mode = std::fs::metadata(&report).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666 & !umask());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "no temporary file left"
        );
        assert!(check_replaceable(dir.path()).is_err());
    }
}
