//! RCPT TO: adds a recipient. Only an authenticated client or one from an account's
//! `relay_networks` may name recipients (530 otherwise): Herald is never an open relay.
//! A recipient named twice in one transaction is accepted and sent one copy.

use super::reply::{self, Reply};
use super::session::Session;
use crate::address::parse_mailbox;
use smtp_proto::RcptTo;

impl Session {
    pub(super) fn rcpt(&mut self, to: RcptTo<String>) -> Reply {
        let max = self.server.settings.max_recipients;
        let Some(tx) = self.tx.as_mut() else {
            return reply::bad_sequence("Need MAIL before RCPT");
        };
        if tx.account.is_none() {
            return reply::auth_required();
        }
        let m = match parse_mailbox(&to.address) {
            Ok(m) => m,
            Err(e) => return Reply::refuse(553, "invalid_address", format!("5.1.3 Recipient: {e}")),
        };
        // The domain is compared without case (it is lower-cased), the local part as is.
        if tx.recipients.iter().any(|r| r.address == m.address) {
            return Reply::new(250, "2.1.5 Duplicate recipient, it gets one copy");
        }
        if tx.recipients.len() >= max {
            return Reply::refuse(452, "too_many_recipients", format!("4.5.3 Too many recipients (at most {max})"));
        }
        tx.recipients.push(m);
        Reply::new(250, "2.1.5 Recipient OK")
    }
}
