//! MAIL FROM: starts a transaction. Checks the order of commands, SIZE=, the sender's
//! syntax, fixes the owning account (authenticated user, else smart-host network), refuses
//! a suspended account (550 5.7.1) and takes one message from the account's rate budget.

use super::reply::{self, Reply};
use super::session::{Session, Transaction};
use crate::address::parse_mailbox;
use herald_engine::accounts::state::Status;
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
        let account = match &self.authenticated {
            Some((account, _)) => Some(account.clone()),
            None => self.server.relay_account(self.peer.ip()),
        };
        if let Some(a) = &account {
            let suspended = self.server.accounts.current().account(a).is_some_and(|x| x.status == Status::Suspended);
            if suspended {
                return Reply::refuse(550, "account_suspended", "5.7.1 This account is suspended and may not send");
            }
            if !self.server.rate.allow(a) {
                return Reply::refuse(451, "rate_limited", "4.7.1 Message rate exceeded, try again later");
            }
        }
        self.tx = Some(Transaction { sender, account, recipients: vec![], chunks: vec![], chunk_error: None });
        Reply::new(250, "2.1.0 Sender OK")
    }
}
