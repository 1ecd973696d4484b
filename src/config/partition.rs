//! `--partition I/N`: one of N slices of the target list, for CI matrices.
//!
//! A CI system that spreads a run over N jobs gives each job its number;
//! job I runs `vmtest --partition I/N` and together the jobs run every
//! (filtered) target exactly once. Slices are dealt round-robin by position
//! in the list (target j, counted from 0, goes to slice j % N + 1), so the
//! split depends only on the config file and the filter, never on the
//! machine, and neighbouring targets (often similar in cost) land in
//! different slices. A slice may be empty when N exceeds the number of
//! targets; what an empty slice means for the run is `main`'s decision.

use std::fmt;

use anyhow::{Result, bail};

/// Slice `index` (1-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    pub index: usize,
    pub count: usize,
}

impl Partition {
    /// Parses `I/N`, with 1 <= I <= N. Used as clap's value parser, which
    /// names the flag and the value in front of the message.
    pub fn parse(text: &str) -> Result<Partition> {
        let Some((index, count)) = text.split_once('/') else {
            bail!("expected I/N, e.g. 2/3 for the second of three slices");
        };
        let number = |part: &str, what: &str| -> Result<usize> {
            match part.trim().parse::<usize>() {
                Ok(n) => Ok(n),
                Err(_) => bail!("{what} '{part}' is not a whole number (expected I/N, e.g. 2/3)"),
            }
        };
        let index = number(index, "slice")?;
        let count = number(count, "slice count")?;
        if count == 0 {
            bail!("the slice count must be at least 1");
        }
        if index == 0 || index > count {
            bail!("the slice must be between 1 and {count} (slices are counted from 1)");
        }
        Ok(Partition { index, count })
    }

    /// The items of this slice, in their original order.
    pub fn select<T>(self, items: Vec<T>) -> Vec<T> {
        items
            .into_iter()
            .enumerate()
            .filter(|(j, _)| j % self.count + 1 == self.index)
            .map(|(_, item)| item)
            .collect()
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(spec: &str, items: &[&'static str]) -> Vec<&'static str> {
        Partition::parse(spec).unwrap().select(items.to_vec())
    }

    #[test]
    fn parses_valid_specs() {
        assert_eq!(Partition::parse("2/3").unwrap(), Partition { index: 2, count: 3 });
        assert_eq!(Partition::parse("1/1").unwrap(), Partition { index: 1, count: 1 });
        assert_eq!(Partition::parse("2/3").unwrap().to_string(), "2/3");
    }

    #[test]
    fn rejects_invalid_specs_with_a_reason() {
        let error = |spec: &str| Partition::parse(spec).unwrap_err().to_string();
        assert_eq!(error("3"), "expected I/N, e.g. 2/3 for the second of three slices");
        assert_eq!(
            error("0/3"),
            "the slice must be between 1 and 3 (slices are counted from 1)"
        );
        assert_eq!(
            error("4/3"),
            "the slice must be between 1 and 3 (slices are counted from 1)"
        );
        assert_eq!(error("1/0"), "the slice count must be at least 1");
        assert_eq!(error("a/3"), "slice 'a' is not a whole number (expected I/N, e.g. 2/3)");
        assert_eq!(
            error("1/-2"),
            "slice count '-2' is not a whole number (expected I/N, e.g. 2/3)"
        );
    }

    #[test]
    fn slices_cover_every_item_exactly_once() {
        let items = ["a", "b", "c", "d", "e", "f", "g"];
        assert_eq!(slice("1/3", &items), ["a", "d", "g"]);
        assert_eq!(slice("2/3", &items), ["b", "e"]);
        assert_eq!(slice("3/3", &items), ["c", "f"]);
        assert_eq!(slice("1/1", &items), items);
    }

    #[test]
    fn more_slices_than_items_leaves_some_empty() {
        let items = ["a", "b"];
        assert_eq!(slice("1/4", &items), ["a"]);
        assert_eq!(slice("2/4", &items), ["b"]);
        assert!(slice("3/4", &items).is_empty());
        assert!(slice("4/4", &items).is_empty());
    }
}
