//! Herald's ingestion. [`http`] serves the REST API and [`smtp`] the SMTP submission server
//! and smart host; both share [`accept`]. [`inbound`] is the bounce MX, on [`smtp`]'s
//! session machinery.
//! Ingestion validates and appends accepted messages to the log through
//! [`herald_engine::submit::Submitter`]; it never delivers.

pub mod accept;
pub mod address;
pub mod http;
pub mod inbound;
pub mod smtp;
