//! Wiring of the bounce reporter (`herald_engine::reports`): its settings from `[reports]`,
//! the task on every node.

use crate::config::Config;
use herald_engine::accounts::AccountCache;
use herald_engine::reports::{Reporter, Settings};
use herald_engine::store::feedback::FeedbackStore;
use herald_engine::store::webhooks::WebhookStore;
use herald_engine::store::ProjectionStore;
use herald_engine::submit::Submitter;
use std::sync::Arc;
use std::time::Duration;

/// The reporter's settings.
pub fn settings(config: &Config) -> Settings {
    let r = &config.reports;
    let service_domain = r.from_domain.clone().unwrap_or_else(|| {
        if config.dns.enabled && !config.dns.zone.is_empty() {
            config.dns.zone.clone()
        } else {
            config.delivery.helo_name.clone()
        }
    });
    Settings {
        default_interval_secs: r.interval_secs,
        grace: Duration::from_millis(r.grace_ms),
        tick: r.tick(),
        local_part: r.from_local_part.clone(),
        service_domain: service_domain.trim_end_matches('.').to_ascii_lowercase(),
    }
}

/// The reporter, when `[reports] enabled`.
pub fn reporter(
    config: &Config,
    accounts: AccountCache,
    feedback: Arc<dyn FeedbackStore>,
    feed: Arc<dyn WebhookStore>,
    store: Arc<dyn ProjectionStore>,
    submitter: Submitter,
) -> Option<Arc<Reporter>> {
    config
        .reports
        .enabled
        .then(|| Arc::new(Reporter::new(accounts, feedback, feed, store, submitter, settings(config))))
}
