//! Weighing a run's kernel splats (found by `vm::splat` in the console)
//! into its target's outcome, by the target's `kernel_splats` policy.

use crate::config::Target;
use crate::config::debug::SplatPolicy;
use crate::run::outcome::Outcome;
use crate::vm::splat::{self, Splat};

/// A target's outcome once its splats are weighed, and a warning to print.
/// Under [`SplatPolicy::Fail`] a passing command with an unexpected splat fails
/// ([`Outcome::KernelSplat`]); a target that failed anyway keeps its reason
/// and its splats become a warning, as they do under [`SplatPolicy::Warn`]. When
/// the guest was `emulated` (TCG), stalls, hung tasks and lockups are only
/// warnings: they say more about the host's load than about the kernel.
pub fn judge(
    outcome: Outcome,
    splats: Vec<Splat>,
    dropped: usize,
    target: &Target,
    emulated: bool,
) -> (Outcome, Option<String>) {
    if target.kernel_splats == SplatPolicy::Ignore {
        return (outcome, None);
    }
    let (timing, failing): (Vec<Splat>, Vec<Splat>) = splat::unexpected(splats, &target.kernel_splat_allow)
        .into_iter()
        .partition(|s| emulated && splat::is_timing(s));
    let warn = |splats: &[Splat], dropped: usize, why: &str| {
        format!(
            "{}{why}\n(console log: {})",
            splat::describe(splats, dropped),
            target.console_log.path().display()
        )
    };
    let timing_warning = (!timing.is_empty()).then(|| {
        warn(
            &timing,
            0,
            "\n(a stall or lockup under emulation: a warning, not a failure)",
        )
    });
    if failing.is_empty() {
        return (outcome, timing_warning);
    }
    match (target.kernel_splats, &outcome) {
        (SplatPolicy::Fail, Outcome::Passed) => (
            Outcome::KernelSplat {
                description: splat::describe(&failing, dropped),
            },
            timing_warning,
        ),
        _ => {
            let mut text = warn(&failing, dropped, "");
            if let Some(more) = timing_warning {
                text = format!("{text}\n{more}");
            }
            (outcome, Some(text))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::splat::tests::{LKDTM_WARNING, scan};

    #[test]
    fn stalls_and_lockups_only_warn_under_emulation() {
        let args = crate::config::OneLiner {
            kernel: "bzImage".into(),
            command: "true".into(),
            ..Default::default()
        };
        let target = crate::config::one_liner(args, std::path::Path::new("/w")).unwrap();
        let stall = scan("rcu: INFO: rcu_preempt self-detected stall on CPU\n\t0-....: (21000 ticks this GP)\n");
        let lockup = scan("watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [kworker/1:1:30]\n");
        for splats in [stall, lockup] {
            let (outcome, warning) = judge(Outcome::Passed, splats.clone(), 0, &target, true);
            assert_eq!(outcome, Outcome::Passed);
            assert!(warning.unwrap().contains("under emulation"));
            let (outcome, _) = judge(Outcome::Passed, splats, 0, &target, false);
            assert!(matches!(outcome, Outcome::KernelSplat { .. }));
        }
        // A warning fails under emulation too.
        let (outcome, _) = judge(Outcome::Passed, scan(LKDTM_WARNING), 0, &target, true);
        assert!(matches!(outcome, Outcome::KernelSplat { .. }));
    }

    #[test]
    fn a_splat_fails_a_passing_command_under_fail_only() {
        let args = crate::config::OneLiner {
            kernel: "bzImage".into(),
            command: "true".into(),
            ..Default::default()
        };
        let mut target = crate::config::one_liner(args, std::path::Path::new("/w")).unwrap();
        let splats = scan(LKDTM_WARNING);
        let judged = |target: &Target, outcome: Outcome| judge(outcome, splats.clone(), 0, target, false);
        assert_eq!(
            judged(&target, Outcome::Passed),
            (
                Outcome::KernelSplat {
                    description: splat::describe(&splats, 0)
                },
                None
            )
        );
        let (outcome, warning) = judged(&target, Outcome::Failed { code: 3 });
        assert_eq!(outcome, Outcome::Failed { code: 3 });
        assert!(
            warning
                .unwrap()
                .ends_with("\n(console log: /w/.vmtest/bzImage/console.log)")
        );
        assert_eq!(
            judge(Outcome::Passed, Vec::new(), 0, &target, false),
            (Outcome::Passed, None)
        );
        target.kernel_splat_allow = vec!["lkdtm_WARNING\\+".into()];
        assert_eq!(judged(&target, Outcome::Passed), (Outcome::Passed, None));
        target.kernel_splat_allow.clear();
        target.kernel_splats = SplatPolicy::Warn;
        let (outcome, warning) = judged(&target, Outcome::Passed);
        assert_eq!(outcome, Outcome::Passed);
        assert!(
            warning
                .unwrap()
                .starts_with("the kernel reported a splat:\n  WARNING: CPU: 0")
        );
        target.kernel_splats = SplatPolicy::Ignore;
        assert_eq!(judged(&target, Outcome::Passed), (Outcome::Passed, None));
    }
}
