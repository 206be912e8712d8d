//! What differs between Herald's SMTP servers. The session machinery (reading commands,
//! EHLO, STARTTLS, DATA/BDAT, limits, replies) is one; a [`Policy`] decides who may send
//! (MAIL), to whom (RCPT), and what a received message becomes (after DATA). The
//! submission server and smart host ([`super::submission`]) and the bounce MX
//! (`crate::inbound`) are the two policies.

use super::auth::Credentials;
use super::reply::Reply;
use super::session::Transaction;
use crate::address::Mailbox;
use async_trait::async_trait;
use herald_schemas::AccountId;
use std::net::SocketAddr;

/// What a policy may know about the session asking.
#[derive(Debug, Clone, Copy)]
pub struct Peer<'a> {
    pub addr: SocketAddr,
    pub tls: bool,
    /// The EHLO/HELO name and whether it was EHLO.
    pub helo: Option<&'a (String, bool)>,
    /// The account AUTH established, if any.
    pub authenticated: Option<&'a AccountId>,
}

/// The per-server decisions. Replies returned as refusals should be made with
/// [`Reply::refuse`] so they are counted.
#[async_trait]
pub trait Policy: Send + Sync + 'static {
    /// Users and failure tracking for AUTH; `None`: AUTH is neither offered nor accepted.
    fn credentials(&self) -> Option<&Credentials> {
        None
    }

    /// MAIL FROM (syntax and order already checked): the account that owns the
    /// transaction (`None`: none), or the refusal.
    fn mail(&self, peer: &Peer<'_>, sender: Option<&Mailbox>) -> Result<Option<AccountId>, Reply>;

    /// Whether this transaction may name recipients at all, asked before any check of the
    /// RCPT itself (submission: 530 without an account). `None` allows.
    fn may_name_recipients(&self, _peer: &Peer<'_>, _tx: &Transaction) -> Option<Reply> {
        None
    }

    /// RCPT TO (syntax, order and the recipient limit already checked): `None` accepts.
    fn rcpt(&self, peer: &Peer<'_>, tx: &Transaction, to: &Mailbox) -> Option<Reply>;

    /// A complete message (CRLF line endings, size, NUL and bare CR already checked):
    /// the final reply, sent only once whatever must be durable is.
    async fn data(&self, peer: &Peer<'_>, tx: Transaction, body: Vec<u8>) -> Reply;
}
