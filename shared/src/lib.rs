//! ghevents core: the GitHub client, the PushEvent parser, the Postgres store, the shared
//! rate budget and the ingest cycle. Pure where it can be; clocks and clients come in as
//! parameters.

pub mod app;
pub mod archive;
#[cfg(feature = "aws")]
pub mod aws;
pub mod budget;
pub mod check;
pub mod clock;
pub mod config;
pub mod deadline;
pub mod enrich;
pub mod event;
pub mod failpoints;
pub mod github;
pub mod import;
pub mod ingest;
pub mod metrics;
pub mod outbox;
pub mod plan;
pub mod queue;
pub mod raw;
pub mod repair;
pub mod reparse;
pub mod sanitize;
pub mod store;

/// The cause an error of a port keeps (`#[source]`), whatever the adapter behind the port.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
