//! The host ends of the guest's virtio-serial ports.
//!
//! Each VM has an agent port (`agent`: guest-sync, guest-exec,
//! guest-exec-status), one port per output stream read until its end marker
//! (`relay`), one that carries vmtest's stdin (`stdin`), and for `--shell` a
//! console relayed to the user's raw terminal (`shell`). These modules speak
//! the protocols; when to use them is the runner's business (`run/`).

pub mod agent;
pub mod relay;
pub mod shell;
pub mod stdin;
