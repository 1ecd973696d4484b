//! Running targets: the flow from a prepared launch to a result.
//!
//! `runner` takes each target through its phases (prepare, boot, setup,
//! command, finish) and sends [`events::Event`]s to a sink as things happen;
//! it never prints. What a target ended as is data (`outcome`), with the
//! command's output kept within bounds (`capture`). Ctrl-C and SIGTERM are
//! flags every wait checks (`interrupt`). Reporters consume the events and
//! results; nothing here depends on them.

pub mod capture;
pub mod events;
pub mod jobs;
pub mod outcome;
pub mod runner;
pub mod splats;
