//! Log lag on the embedded log: the partitions' heads against a group's committed offsets.

use super::{storage, Shared, OFFSETS};
use crate::log::{Assignment, LogError, PartitionLag};
use redb::ReadableDatabase;

pub(super) fn lag(shared: &Shared, group: &str, assignments: &[Assignment]) -> Result<Vec<PartitionLag>, LogError> {
    let read = shared.db()?.begin_read().map_err(storage)?;
    let offsets = read.open_table(OFFSETS).map_err(storage)?;
    let mut out = Vec::with_capacity(assignments.len());
    for a in assignments {
        let Some(head) = shared.heads.get(&a.topic).and_then(|h| h.get(a.partition as usize)) else { continue };
        let committed =
            offsets.get((group, a.topic.as_str(), a.partition)).map_err(storage)?.map(|v| v.value()).unwrap_or(0);
        out.push(PartitionLag { topic: a.topic.clone(), partition: a.partition, end: *head.borrow(), committed });
    }
    Ok(out)
}
