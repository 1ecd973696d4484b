//! How many targets run at once (`-j`, `--jobs`, `jobs` in vmtest.toml).
//!
//! The default fills the host without overcommitting it: as many VMs as the
//! host's CPUs hold the largest target's vCPUs (each vCPU is a host thread,
//! under TCG a busy one), and as many as the available memory holds the
//! largest target's memory, never more than there are targets. An
//! interactive shell or a gdb session runs alone.

use crate::config::Target;

/// The number of targets to run at once: `asked` if given (at most the
/// number of targets), else what the host holds.
pub fn jobs(asked: Option<usize>, targets: &[Target]) -> usize {
    let exclusive = targets
        .iter()
        .any(|t| crate::ports::shell::wants_shell(&t.command) || t.gdb.is_some());
    if exclusive {
        return 1;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory = available_memory();
    let limit = asked.unwrap_or_else(|| default_jobs(targets, cpus, memory));
    limit.clamp(1, targets.len().max(1))
}

/// What a host with `cpus` CPUs and `memory` bytes available holds.
pub fn default_jobs(targets: &[Target], cpus: usize, memory: Option<u64>) -> usize {
    let vcpus = targets.iter().map(|t| t.vm.num_cpus as usize).max().unwrap_or(1).max(1);
    let by_cpu = (cpus / vcpus).max(1);
    let largest = targets.iter().filter_map(|t| size_in_bytes(&t.vm.memory)).max();
    let by_memory = match (memory, largest) {
        (Some(available), Some(each)) if each > 0 => usize::try_from(available / each).unwrap_or(usize::MAX).max(1),
        _ => usize::MAX,
    };
    by_cpu.min(by_memory).min(targets.len()).max(1)
}

/// Bytes of a QEMU size (`512M`, `4G`; a bare number is MiB).
fn size_in_bytes(size: &str) -> Option<u64> {
    let digits = size.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let number: u64 = digits.parse().ok()?;
    let shift = match &size[digits.len()..] {
        "" | "m" | "M" => 20,
        "k" | "K" => 10,
        "g" | "G" => 30,
        "t" | "T" => 40,
        _ => return None,
    };
    number.checked_shl(shift)
}

/// `MemAvailable` from /proc/meminfo, in bytes.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(n: usize, cpus: u32, memory: &str) -> Vec<Target> {
        let args = crate::config::OneLiner {
            kernel: "bzImage".into(),
            command: "true".into(),
            ..Default::default()
        };
        let mut one = crate::config::one_liner(args, std::path::Path::new("/w")).unwrap();
        one.vm.num_cpus = cpus;
        one.vm.memory = memory.into();
        vec![one; n]
    }

    #[test]
    fn the_default_fills_cpus_and_memory_but_never_exceeds_the_targets() {
        const GIB: u64 = 1 << 30;
        assert_eq!(default_jobs(&targets(8, 1, "1G"), 2, Some(24 * GIB)), 2);
        assert_eq!(default_jobs(&targets(8, 2, "1G"), 2, Some(24 * GIB)), 1);
        assert_eq!(default_jobs(&targets(8, 2, "4G"), 16, Some(24 * GIB)), 6);
        assert_eq!(default_jobs(&targets(3, 1, "512M"), 16, None), 3);
        assert_eq!(default_jobs(&targets(4, 1, "8G"), 16, Some(4 * GIB)), 1);
    }

    #[test]
    fn asked_jobs_are_kept_within_the_targets() {
        assert_eq!(jobs(Some(8), &targets(3, 1, "1G")), 3);
        assert_eq!(jobs(Some(2), &targets(3, 1, "1G")), 2);
        let mut shell = targets(2, 1, "1G");
        shell[0].command = "-".into();
        assert_eq!(jobs(Some(2), &shell), 1);
    }

    #[test]
    fn sizes() {
        assert_eq!(size_in_bytes("512M"), Some(512 << 20));
        assert_eq!(size_in_bytes("4G"), Some(4 << 30));
        assert_eq!(size_in_bytes("2048"), Some(2048 << 20));
        assert_eq!(size_in_bytes("1X"), None);
    }
}
