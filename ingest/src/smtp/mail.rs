//! MAIL FROM: starts a transaction. Checks the order of commands, SIZE= and the sender's
//! syntax; the server's policy then decides (for submission: the owning account and its
//! rate budget).

use super::reply::{self, Reply};
use super::session::{Session, Transaction};
use crate::address::parse_mailbox;
use smtp_proto::MailFrom;

impl Session {
    pub(super) fn mail(&mut self, from: MailFrom<String>) -> Reply {
        if self.helo.is_none() {
            return reply::bad_sequence("Send EHLO/HELO first");
        }
        if self.tx.is_some() {
            return reply::bad_sequence("Nested MAIL command");
        }
        let limit = self.server.settings.max_message_bytes;
        if from.size > limit {
            return reply::too_large(limit);
        }
        let sender = if from.address.is_empty() {
            None
        } else {
            match parse_mailbox(&from.address) {
                Ok(m) => Some(m),
                Err(e) => return Reply::refuse(553, "invalid_address", format!("5.1.3 Sender: {e}")),
            }
        };
        let account = match self.server.policy.mail(&self.peer(), sender.as_ref()) {
            Ok(account) => account,
            Err(refusal) => return refusal,
        };
        self.tx = Some(Transaction { sender, account, recipients: vec![], chunks: vec![], chunk_error: None });
        Reply::new(250, "2.1.0 Sender OK")
    }
}
