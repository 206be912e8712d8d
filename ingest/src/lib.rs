//! Herald's ingestion. [`http`] serves the REST API and [`smtp`] the SMTP submission server
//! and smart host; both share [`message`] (the message checks), [`sender`] (which From
//! domains an account may use), [`options`] (send options and account defaults) and
//! [`accept`] (building the events). [`track`] is the tracking server (clicks, opens,
//! one-click unsubscribe), which appends engagement events.
//! [`inbound`] is the bounce MX, on [`smtp`]'s session machinery. [`metrics`] lists every
//! metric they record.
//! [`limits`] enforces each account's sending limits on both.
//! Ingestion validates and appends accepted messages to the log through
//! [`herald_engine::submit::Submitter`]; it never delivers.

pub mod accept;
pub mod address;
pub mod http;
pub mod inbound;
pub mod limits;
pub mod message;
pub mod metrics;
pub mod options;
pub mod sender;
pub mod smtp;
pub mod track;
