//! `herald replay`: rebuilds a projection from the log with the projector's own handler
//! (`herald_engine::replay`). With the embedded backends, stop `herald serve` first (one
//! process owns the files) and delete the projection file to rebuild from nothing; with
//! Kafka and CQL, replay into a new keyspace (`HERALD__BACKEND__CQL_KEYSPACE=...`) while the
//! nodes run, then point them at it (`docs/operations.md`, "Backup and replay").

use crate::config::Config;
use crate::serve;
use herald_engine::engagement::EngagementProjector;
use herald_engine::projector::Projector;
use herald_engine::replay::{replay, Report};
use std::sync::Arc;

/// A projection `herald replay` rebuilds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Projection {
    /// Message status, attempts and stats (`GET /v1/messages/{id}`, `/v1/stats`): the
    /// messages and attempts topics.
    Messages,
    /// Opens, clicks and unsubscribes (`/v1/stats/links`): the engagement topic.
    Engagement,
}

/// Records per chunk applied to the store.
const CHUNK: usize = 1024;

/// Replays `projection` from the log into the configured store.
pub async fn run(config: &Config, projection: Projection) -> anyhow::Result<Report> {
    serve::install_crypto();
    let log = serve::open_log(config).await?;
    let store = serve::open_stores(config).await?.projection;
    let topics = serve::topics(config);
    let millis = herald_schemas::Timestamp::now().millis();
    let group = topics.group(&format!("replay-{millis}"));
    let report = match projection {
        Projection::Messages => {
            let handler = Arc::new(Projector::new(log.clone(), store.clone(), topics.clone()));
            replay(log.clone(), &group, &[topics.messages(), topics.attempts()], handler, CHUNK).await
        }
        Projection::Engagement => {
            let handler = Arc::new(EngagementProjector::new(log.clone(), store.clone(), topics.clone()));
            replay(log.clone(), &group, &[topics.engagement()], handler, CHUNK).await
        }
    };
    serve::close(log, store).await;
    Ok(report?)
}
