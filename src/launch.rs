//! What the runner needs to start a target, whatever its kind.
//!
//! `kernel.rs` (and the image support) turn a target into a [`Launch`]: the
//! QEMU argv and private directory, how the guest agent should start the
//! command, and any setup the guest needs once its agent answers (mounting
//! the shares inside an image, say). The runner only executes a `Launch`.

use std::path::PathBuf;

use crate::qemu::Accel;
use crate::vm::VmDir;
use crate::warm::Warm;

/// How the guest agent starts the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Helper {
    /// `bash -c` with its output redirected to the FIFOs that vmtest's own
    /// init relays to the output ports.
    InitRelay,
    /// `bash -c` with the shell wrapper, which relays the output itself.
    Shell,
}

/// A program the guest agent runs before the command; it must exit 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupStep {
    /// What the step does, for error messages ("mounting /mnt/vmtest").
    pub what: String,
    pub path: String,
    pub args: Vec<String>,
}

/// Everything needed to start a target's VM and run its command.
pub struct Launch {
    pub qemu: PathBuf,
    pub args: Vec<String>,
    pub dir: VmDir,
    /// Directories removed with the VM (an init inside a foreign rootfs).
    pub extra_dirs: Vec<tempfile::TempDir>,
    pub helper: Helper,
    /// Run in order once the agent answers, before the command.
    pub setup: Vec<SetupStep>,
    /// The command's working directory in the guest.
    pub workdir: String,
    pub env: Vec<String>,
    /// The end-of-output marker, known to the init in relay mode.
    pub marker: String,
    /// The accelerator QEMU was told to use.
    pub accel: Accel,
    /// An image target's warm start: save the state once the agent
    /// answers, or the state QEMU restores (`warm.rs`).
    pub warm: Option<Warm>,
}
