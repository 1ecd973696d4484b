//! A bounded copy of a command's output, kept for reports.
//!
//! The live output goes to the terminal as it arrives; reports (JUnit, JSON)
//! want it afterwards. A [`Captured`] keeps the last [`CAPTURE_LIMIT`] bytes
//! of a stream (a failure's cause is usually at the end) and counts the
//! rest, so a 20 MB output costs at most that much memory. The kept bytes
//! are a ring: once full, each chunk costs its own length, not a shift of
//! the whole megabyte.

use std::collections::VecDeque;

/// Bytes of each stream kept for reports.
pub const CAPTURE_LIMIT: usize = 1 << 20;

/// The tail of one output stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    /// The last bytes written, at most [`CAPTURE_LIMIT`].
    tail: VecDeque<u8>,
    /// Every byte written, kept or not.
    pub total: u64,
}

impl Captured {
    pub fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let bytes = &bytes[bytes.len().saturating_sub(CAPTURE_LIMIT)..];
        let overflow = (self.tail.len() + bytes.len()).saturating_sub(CAPTURE_LIMIT);
        self.tail.drain(..overflow);
        self.tail.extend(bytes);
    }

    /// Bytes dropped from the front.
    pub fn dropped(&self) -> u64 {
        self.total - self.tail.len() as u64
    }

    /// The kept bytes as text, with a note when the front was dropped.
    pub fn text(&self) -> String {
        let (front, back) = self.tail.as_slices();
        let text = String::from_utf8_lossy(&[front, back].concat()).into_owned();
        match self.dropped() {
            0 => text,
            n => format!("[vmtest: {n} earlier bytes not kept]\n{text}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_tail_and_counts_everything() {
        let mut c = Captured::default();
        c.push(b"hello ");
        c.push(b"world");
        assert_eq!(c.text(), "hello world");
        let big = vec![b'x'; CAPTURE_LIMIT];
        c.push(&big);
        c.push(b"end");
        assert_eq!(c.total, 11 + CAPTURE_LIMIT as u64 + 3);
        assert_eq!(c.tail.len(), CAPTURE_LIMIT);
        assert!(c.text().ends_with("xend"));
        assert_eq!(c.dropped(), 14);
        assert!(c.text().starts_with("[vmtest: 14 earlier bytes not kept]\nxxx"));
    }

    #[test]
    fn a_full_ring_keeps_order_across_its_wrap() {
        let mut c = Captured::default();
        for i in 0..CAPTURE_LIMIT / 1000 + 10 {
            c.push(format!("{:>999}\n", i).as_bytes());
        }
        let text = c.text();
        let kept = text.split_once('\n').unwrap().1;
        assert_eq!(kept.len(), CAPTURE_LIMIT);
        let last = CAPTURE_LIMIT / 1000 + 9;
        assert!(kept.ends_with(&format!("{last:>999}\n")), "the newest line is last");
        let numbers: Vec<usize> = kept.lines().skip(1).map(|l| l.trim().parse().unwrap()).collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "in order");
    }
}
