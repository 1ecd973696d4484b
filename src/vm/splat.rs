//! Kernel splats: warnings and bugs the guest kernel prints on its console.
//!
//! A [`Scanner`] is fed the console line by line (by `console.rs`, from boot
//! on) and keeps each splat it recognises: the line that opens it (`WARNING:
//! CPU: 0 PID: 40 at ...`, `BUG: ...`, an oops, a sanitizer, lockdep, an RCU
//! stall, a hung task, a lockup) and the lines that follow, up to the end of
//! its trace. `run::splats` then applies the target's policy
//! (`kernel_splats`) and allowlist to the splats of a run once its command is
//! done. Nothing
//! here reads files or prints.

use regex::{Regex, RegexSet};

/// Lines that open a splat. Each names what the kernel prints, so a program
/// that merely says "warning" does not match.
const OPENERS: &[&str] = &[
    // WARN_ON() and friends.
    r"WARNING: CPU: \d+ PID: \d+ at ",
    // BUG_ON(), sleeping in atomic context, bad page state, soft lockups,
    // and the sanitizers' "BUG: KASAN: ..." lines.
    r"\bBUG: ",
    r"kernel BUG at ",
    // Oopses (x86 prints "Oops: 0002 [#1]", or names the exception instead).
    r"\bOops\b",
    r": [0-9a-f]{4} \[#\d+\]",
    r"\b(KASAN|UBSAN|KFENCE|KCSAN|KMSAN): ",
    // lockdep.
    r"WARNING: (possible circular locking dependency|possible recursive locking|inconsistent lock state|suspicious RCU usage|bad unlock balance|held lock freed|lock held when returning to user space)",
    // RCU stalls.
    r"rcu: INFO: rcu_\w+ (self-)?detected stall",
    r"rcu_\w+ detected stalls on CPUs",
    // Hung tasks.
    r"INFO: task .+ blocked for more than \d+ seconds",
    // Lockups ("watchdog: BUG: soft lockup" is a BUG: line).
    r"hard LOCKUP",
];

/// Openers of splats about time: a stall, a hung task, a lockup. Under
/// emulation (TCG) on a busy host the guest's CPUs can stop for seconds, so
/// these are warnings there, never failures.
const TIMING: &[&str] = &[
    r"rcu: INFO: rcu_\w+ (self-)?detected stall",
    r"rcu_\w+ detected stalls on CPUs",
    r"INFO: task .+ blocked for more than \d+ seconds",
    r"soft lockup",
    r"hard LOCKUP",
];

/// Lines of a splat kept after its first (enough to reach the call trace
/// of most, for the allowlist to match on).
const MAX_LINES: usize = 48;
/// Splats kept per run; later ones are only counted.
const MAX_SPLATS: usize = 16;
/// Lines of a splat shown in a verdict.
pub const SHOWN_LINES: usize = 6;

/// One splat: its first line and those after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Splat {
    pub lines: Vec<String>,
}

impl Splat {
    /// Its first [`SHOWN_LINES`] lines.
    pub fn head(&self) -> String {
        self.lines[..self.lines.len().min(SHOWN_LINES)].join("\n")
    }
}

/// Recognises splats in console lines.
pub struct Scanner {
    openers: RegexSet,
    splats: Vec<Splat>,
    /// Splats seen beyond [`MAX_SPLATS`].
    dropped: usize,
    /// Whether the last kept splat is still taking lines.
    open: bool,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            openers: RegexSet::new(OPENERS).expect("the splat patterns are valid"),
            splats: Vec::new(),
            dropped: 0,
            open: false,
        }
    }
}

impl Scanner {
    /// Takes the console's next line (without its newline or escapes).
    pub fn line(&mut self, line: &str) {
        // The trace's end line, and the opener lines inside a splat (an oops
        // after a BUG:, lockdep's second WARNING-style line) belong to it.
        if self.open {
            let last = self.splats.last_mut().expect("an open splat is kept");
            last.lines.push(line.to_string());
            if line.contains("---[ end trace") || last.lines.len() > MAX_LINES {
                self.open = false;
            }
            return;
        }
        if !self.openers.is_match(line) {
            return;
        }
        if self.splats.len() == MAX_SPLATS {
            self.dropped += 1;
            return;
        }
        self.splats.push(Splat {
            lines: vec![line.to_string()],
        });
        self.open = true;
    }

    /// The splats seen so far, and how many more were only counted.
    pub fn splats(&self) -> (Vec<Splat>, usize) {
        (self.splats.clone(), self.dropped)
    }
}

/// The splats of a run that are not allowlisted: the allowlist's patterns
/// are searched in a splat's whole kept text. `patterns` were checked when
/// the config was read.
pub fn unexpected(splats: Vec<Splat>, patterns: &[String]) -> Vec<Splat> {
    let allow: Vec<Regex> = patterns.iter().filter_map(|p| Regex::new(p).ok()).collect();
    splats
        .into_iter()
        .filter(|s| {
            let text = s.lines.join("\n");
            !allow.iter().any(|re| re.is_match(&text))
        })
        .collect()
}

/// The splat's description for a verdict: how many there were and the first
/// one's first lines.
pub fn describe(splats: &[Splat], dropped: usize) -> String {
    let count = splats.len() + dropped;
    let first = splats.first().map(Splat::head).unwrap_or_default();
    match count {
        1 => format!("the kernel reported a splat:\n{}", indent(&first)),
        n => format!("the kernel reported {n} splats; the first:\n{}", indent(&first)),
    }
}

/// Whether a splat is about time (a stall, a hung task, a lockup).
pub fn is_timing(splat: &Splat) -> bool {
    let first = splat.lines.first().map(String::as_str).unwrap_or_default();
    RegexSet::new(TIMING).is_ok_and(|set| set.is_match(first))
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn scan(text: &str) -> Vec<Splat> {
        let mut scanner = Scanner::default();
        text.lines().for_each(|l| scanner.line(l));
        scanner.splats().0
    }

    /// What the test kernel prints for `echo WARNING > .../DIRECT`, cut short.
    pub const LKDTM_WARNING: &str = "\
lkdtm: Performing direct entry WARNING
------------[ cut here ]------------
WARNING: CPU: 0 PID: 40 at drivers/misc/lkdtm/bugs.c:85 lkdtm_WARNING+0x8/0xb
CPU: 0 PID: 40 Comm: bash Not tainted 6.1.192-vmtest #1
RIP: 0010:lkdtm_WARNING+0x8/0xb
Call Trace:
 <TASK>
 ? direct_entry+0xa5/0xbb
 </TASK>
---[ end trace 0000000000000000 ]---
after";

    #[test]
    fn a_warning_is_kept_to_the_end_of_its_trace() {
        let splats = scan(LKDTM_WARNING);
        assert_eq!(splats.len(), 1);
        assert_eq!(splats[0].lines.len(), 8);
        assert!(splats[0].lines[0].starts_with("WARNING: CPU: 0 PID: 40 at drivers/misc/lkdtm"));
        assert_eq!(splats[0].lines[7], "---[ end trace 0000000000000000 ]---");
        assert_eq!(splats[0].head().lines().count(), SHOWN_LINES);
    }

    #[test]
    fn every_kind_of_splat_is_recognised() {
        let openers = [
            "[   12.3] BUG: kernel NULL pointer dereference, address: 0000000000000000",
            "kernel BUG at mm/slub.c:123!",
            "Oops: 0002 [#1] PREEMPT SMP",
            "invalid opcode: 0000 [#1] PREEMPT SMP NOPTI",
            "BUG: KASAN: slab-out-of-bounds in foo+0x1/0x2",
            "UBSAN: array-index-out-of-bounds in lib/x.c:3:4",
            "BUG: KFENCE: use-after-free read in bar",
            "WARNING: possible circular locking dependency detected",
            "WARNING: possible recursive locking detected",
            "rcu: INFO: rcu_sched self-detected stall on CPU",
            "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
            "INFO: task kworker/0:1:12 blocked for more than 120 seconds.",
            "watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [bash:40]",
            "NMI watchdog: Watchdog detected hard LOCKUP on cpu 1",
        ];
        for line in openers {
            assert_eq!(scan(line).len(), 1, "{line}");
        }
        for line in [
            "WARNING: the config file is old",
            "debug: no BUGS here",
            "rcu: Hierarchical RCU implementation.",
            "lkdtm: Performing direct entry WARNING",
        ] {
            assert!(scan(line).is_empty(), "{line}");
        }
    }

    #[test]
    fn splats_after_the_first_are_kept_apart_and_then_counted() {
        let text = format!("{LKDTM_WARNING}\nBUG: sleeping function called from invalid context\n");
        let splats = scan(&text);
        assert_eq!(splats.len(), 2);
        assert_eq!(splats[1].lines, ["BUG: sleeping function called from invalid context"]);
        let mut scanner = Scanner::default();
        for _ in 0..MAX_SPLATS + 3 {
            scanner.line("BUG: x");
            scanner.line("---[ end trace 1 ]---");
        }
        let (kept, dropped) = scanner.splats();
        assert_eq!((kept.len(), dropped), (MAX_SPLATS, 3));
    }

    #[test]
    fn the_allowlist_matches_anywhere_in_a_splat() {
        let splats = scan(&format!("{LKDTM_WARNING}\nBUG: other\n"));
        assert_eq!(unexpected(splats.clone(), &["lkdtm_WARNING".into()]).len(), 1);
        assert_eq!(
            unexpected(splats.clone(), &["direct_entry".into(), "^BUG: other".into()]).len(),
            0
        );
        assert_eq!(unexpected(splats, &[]).len(), 2);
        assert!(crate::config::debug::check_splat_pattern("(").is_err());
    }

    #[test]
    fn descriptions_count_and_quote_the_first() {
        let splats = scan(LKDTM_WARNING);
        assert_eq!(
            describe(&splats, 0),
            "the kernel reported a splat:\n  \
             WARNING: CPU: 0 PID: 40 at drivers/misc/lkdtm/bugs.c:85 lkdtm_WARNING+0x8/0xb\n  \
             CPU: 0 PID: 40 Comm: bash Not tainted 6.1.192-vmtest #1\n  \
             RIP: 0010:lkdtm_WARNING+0x8/0xb\n  \
             Call Trace:\n   \
             <TASK>\n   \
             ? direct_entry+0xa5/0xbb"
        );
        assert!(describe(&splats, 2).starts_with("the kernel reported 3 splats; the first:\n  WARNING: CPU"));
    }
}
