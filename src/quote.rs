//! Quoting for a POSIX shell, for the scripts and command lines vmtest
//! builds (the guest's init and wrapper, a command from several words).

/// Single-quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
