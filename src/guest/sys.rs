//! The system calls both of vmtest's guest programs make: vmtest's init
//! and its initramfs stage mount filesystems and look up the virtio ports
//! the host named.

use std::ffi::CString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Flag words of mount options; everything else is filesystem data.
const MOUNT_FLAGS: &[(&str, libc::c_ulong)] = &[
    ("ro", libc::MS_RDONLY),
    ("rw", 0),
    ("nosuid", libc::MS_NOSUID),
    ("nodev", libc::MS_NODEV),
    ("noexec", libc::MS_NOEXEC),
    ("relatime", libc::MS_RELATIME),
    ("noatime", libc::MS_NOATIME),
];

/// `mount(2)` with `options` as `mount -o` takes them: flag words become
/// flags, the rest the filesystem's data.
pub fn mount(source: &str, target: &str, fstype: &str, options: &str) -> io::Result<()> {
    let mut flags = 0;
    let mut data = Vec::new();
    for word in options.split(',').filter(|w| !w.is_empty()) {
        match MOUNT_FLAGS.iter().find(|(name, _)| *name == word) {
            Some((_, flag)) => flags |= flag,
            None => data.push(word),
        }
    }
    let c = |s: &str| CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let (source, target, fstype, data) = (c(source)?, c(target)?, c(fstype)?, c(&data.join(","))?);
    // SAFETY: all pointers are valid NUL-terminated strings for the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Longest wait for the virtio console's port names.
pub const PORT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Waits (at most [`PORT_WAIT`]) until the host has named these ports: it
/// announces them moments after the driver starts, and both inits look
/// them up by name as soon as they run.
pub fn wait_for_ports(names: &[&str]) {
    let deadline = std::time::Instant::now() + PORT_WAIT;
    loop {
        let named: Vec<String> = fs::read_dir("/sys/class/virtio-ports")
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| fs::read_to_string(e.path().join("name")).ok())
                    .map(|n| n.trim().to_string())
                    .collect()
            })
            .unwrap_or_default();
        if names.iter().all(|w| named.iter().any(|n| n == w)) || std::time::Instant::now() > deadline {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The device node of the virtio-serial port with this name.
pub fn find_port(name: &str) -> Option<PathBuf> {
    fs::read_dir("/sys/class/virtio-ports")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let port_name = fs::read_to_string(entry.path().join("name")).ok()?;
            (port_name.trim() == name).then(|| Path::new("/dev").join(entry.file_name()))
        })
}
