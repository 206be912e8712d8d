//! Identifier newtypes, so an account id is never passed where a message id is expected.

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A customer account (tenant). Every event belongs to exactly one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AccountId(pub String);

/// One message to one recipient. Time-ordered (UUIDv7), so ids sort by acceptance time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(pub String);

impl MessageId {
    /// A new, globally unique, time-ordered id.
    pub fn generate() -> Self {
        MessageId(uuid::Uuid::now_v7().simple().to_string())
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for AccountId {
    fn from(s: &str) -> Self {
        AccountId(s.to_owned())
    }
}
