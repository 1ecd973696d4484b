//! Everything vmtest shows or writes about a run; the only code that prints.
//!
//! `terminal` turns the runner's events into the live status lines or plain
//! (and GitHub-grouped) text, worded by `render`. Once the run ends,
//! `publish` writes the reports beyond the terminal: JUnit (`junit`), JSON
//! (`json`) and GitHub annotations and step summary (`github`), through
//! `safe_fs` where the guest could have planted a symlink. Reporters read
//! results and events (`run::outcome`, `run::events`); they never call the
//! runner.

pub mod at_once;
pub mod github;
pub mod json;
pub mod junit;
pub mod publish;
pub mod render;
pub mod terminal;
