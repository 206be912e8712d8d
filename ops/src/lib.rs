//! The `herald` binary's library half: configuration ([`config`]), the CLI's commands, and
//! the wiring that runs the whole pipeline in one process ([`serve`]). Kept as a library
//! so integration tests can start a server in-process and also drive the real binary.

pub mod accounts_cli;
pub mod config;
pub mod domains_cli;
pub mod feedback;
pub mod metrics;
pub mod replay;
pub mod reports;
pub mod serve;
pub mod ui;
