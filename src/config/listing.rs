//! `--list`: the targets a run would boot, one per line, booting nothing.
//!
//! Each line is `NAME<TAB>KIND<TAB>PATH` (the kernel or image file), in run
//! order, after `--filter` and `--partition`, so scripts can split on tabs
//! and a CI job can show what its slice will run. Pure rendering; `main`
//! prints it.

use crate::config::{Kind, Target};

/// The listing of `targets`, one line each.
pub fn render(targets: &[Target]) -> String {
    targets
        .iter()
        .map(|t| {
            let path = match &t.kind {
                Kind::Kernel { kernel, .. } => kernel,
                Kind::Image { image, .. } => image,
            };
            format!("{}\t{}\t{}\n", t.name, t.kind.label(), path.display())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn one_tab_separated_line_per_target() {
        let text = "[[target]]\nname = \"a\"\nkernel = \"k/bzImage\"\ncommand = \"true\"\n\
                    [[target]]\nname = \"b\"\nimage = \"/i/disk.qcow2\"\ncommand = \"true\"\n";
        let targets = crate::config::parse(text, Path::new("/p/vmtest.toml"), Path::new("/p")).unwrap();
        assert_eq!(
            render(&targets),
            "a\tkernel\t/p/k/bzImage\n\
             b\timage\t/i/disk.qcow2\n"
        );
        assert_eq!(render(&[]), "");
    }
}
