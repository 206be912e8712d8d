//! Herald's ingestion. [`http`] serves the REST API and [`smtp`] the SMTP submission server
//! and smart host; both share [`message`] (the message checks), [`sender`] (which From
//! domains an account may use) and [`accept`] (building the events).
//! [`ui`] serves the dashboard's files.
//! Ingestion validates and appends accepted messages to the log through
//! [`herald_engine::submit::Submitter`]; it never delivers.

pub mod accept;
pub mod address;
pub mod http;
pub mod limits;
pub mod message;
pub mod sender;
pub mod smtp;
pub mod ui;
