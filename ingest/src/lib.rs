//! Herald's ingestion. [`http`] serves the REST API; SMTP submission joins it in `smtp/`.
//! Ingestion validates and appends accepted messages to the log through
//! [`herald_engine::submit::Submitter`]; it never delivers.

pub mod address;
pub mod http;
