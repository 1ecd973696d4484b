//! The release of a kernel image (`6.1.0-56-amd64`), read from the image.
//!
//! An x86 bzImage (a distribution's `vmlinuz`) names its version in the
//! setup header: the u16 at 0x20E is the offset, minus 0x200, of a
//! NUL-terminated string whose first word is the release. Other images (an
//! ELF `vmlinux`, an arm64 `Image`, gzip-compressed as `Image.gz`) carry the
//! banner "Linux version RELEASE (...". This module only reads; what the
//! release is used for (finding the kernel's modules) lives in `modules.rs`.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};

/// Offset of the "HdrS" magic of an x86 boot protocol header.
const HDRS_OFFSET: usize = 0x202;
/// Offset of the u16 `kernel_version` pointer in the setup header.
const VERSION_PTR_OFFSET: usize = 0x20E;
/// Longest decompressed image searched for the banner.
const MAX_DECOMPRESSED: u64 = 256 << 20;

/// The kernel's release, or `None` when the image does not say.
pub fn read(image: &Path) -> Result<Option<String>> {
    let bytes = std::fs::read(image).with_context(|| format!("reading kernel {}", image.display()))?;
    Ok(from_bytes(&bytes))
}

/// The release in an image's bytes.
pub fn from_bytes(bytes: &[u8]) -> Option<String> {
    if let Some(release) = from_setup_header(bytes) {
        return Some(release);
    }
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut plain = Vec::new();
        let decoder = flate2::read::GzDecoder::new(bytes);
        decoder.take(MAX_DECOMPRESSED).read_to_end(&mut plain).ok()?;
        return from_banner(&plain);
    }
    from_banner(bytes)
}

/// The release in an x86 bzImage's setup header.
fn from_setup_header(bytes: &[u8]) -> Option<String> {
    if bytes.get(HDRS_OFFSET..HDRS_OFFSET + 4)? != b"HdrS" {
        return None;
    }
    let ptr = bytes.get(VERSION_PTR_OFFSET..VERSION_PTR_OFFSET + 2)?;
    let ptr = u16::from_le_bytes([ptr[0], ptr[1]]);
    if ptr == 0 {
        return None;
    }
    let start = usize::from(ptr) + 0x200;
    let text = bytes.get(start..)?;
    let end = text.iter().take(512).position(|&b| b == 0)?;
    first_word(&text[..end])
}

/// The release after the first "Linux version " that is followed by one.
fn from_banner(bytes: &[u8]) -> Option<String> {
    const BANNER: &[u8] = b"Linux version ";
    memchr::memmem::find_iter(bytes, BANNER).find_map(|at| {
        let rest = &bytes[at + BANNER.len()..];
        let rest = &rest[..rest.len().min(256)];
        let end = rest.iter().position(|&b| b == b' ' || b == 0)?;
        (rest.first().is_some_and(u8::is_ascii_digit) && rest[end] == b' ')
            .then(|| first_word(&rest[..end]))
            .flatten()
    })
}

/// The first whitespace-separated word, if it looks like a release.
fn first_word(text: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(text).ok()?;
    let word = text.split_whitespace().next()?;
    let plausible =
        word.starts_with(|c: char| c.is_ascii_digit()) && word.chars().all(|c| c.is_ascii_graphic() && c != '/');
    plausible.then(|| word.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake bzImage: boot header magic and a version string at 0x3000.
    fn bzimage(version: &str) -> Vec<u8> {
        let mut image = vec![0u8; 0x4000];
        image[HDRS_OFFSET..HDRS_OFFSET + 4].copy_from_slice(b"HdrS");
        let ptr = (0x3000u16 - 0x200).to_le_bytes();
        image[VERSION_PTR_OFFSET..VERSION_PTR_OFFSET + 2].copy_from_slice(&ptr);
        image[0x3000..0x3000 + version.len()].copy_from_slice(version.as_bytes());
        image
    }

    #[test]
    fn bzimage_setup_header() {
        let image = bzimage("6.1.0-56-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian");
        assert_eq!(from_bytes(&image).as_deref(), Some("6.1.0-56-amd64"));
    }

    #[test]
    fn banner_in_an_uncompressed_image() {
        let mut image = b"\x7fELF....Linux version %s (%s)\0....".to_vec();
        image.extend_from_slice(b"Linux version 6.8.0-rc1+ (me@host) (gcc 12) #3 SMP\n\0");
        assert_eq!(from_bytes(&image).as_deref(), Some("6.8.0-rc1+"));
    }

    #[test]
    fn banner_in_a_gzipped_image() {
        use std::io::Write;
        let mut plain = vec![0u8; 5000];
        plain.extend_from_slice(b"Linux version 6.1.0-56-arm64 (debian-kernel@lists.debian.org) (gcc-12)");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        assert_eq!(from_bytes(&gz.finish().unwrap()).as_deref(), Some("6.1.0-56-arm64"));
    }

    #[test]
    fn no_release_in_other_files() {
        assert_eq!(from_bytes(b"just some bytes"), None);
        assert_eq!(from_bytes(&bzimage("")), None);
    }

    #[test]
    fn a_truncated_bzimage_has_no_release() {
        let image = bzimage("6.1.0-56-amd64 #1");
        for len in [
            HDRS_OFFSET + 4,
            VERSION_PTR_OFFSET,
            VERSION_PTR_OFFSET + 1,
            0x300,
            0x3004,
        ] {
            assert_eq!(from_bytes(&image[..len]), None, "{len} bytes");
        }
    }
}
