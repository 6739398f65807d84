//! What the service reports about itself, and in which form.
//!
//! The figures of an ingest cycle, of an enrichment batch or drain and of the stored state
//! (feed lag, enrichment backlog, suspected gaps) are built once, as [`Figure`]s, and written
//! twice:
//! - by the Lambda functions as one CloudWatch Embedded Metric Format document per invocation
//!   ([`Emf`], printed on stdout through a [`MetricSink`]), namespace [`NAMESPACE`];
//! - by `ghevents run` into the `metrics` facade, which the CLI exports for Prometheus.
//!
//! A figure's name is the EMF metric name (`NewEvents`); [`Figure::prometheus_name`] derives
//! the Prometheus one (`ghevents_new_events_total`). CloudWatch bills every metric name (with
//! its dimensions) each month, so figures nothing alarms on or graphs are [`Figure::detail`]s:
//! top-level EMF properties (searchable in Logs Insights, free), and Prometheus series.

use crate::enrich::DrainSummary;
use crate::ingest::{CycleSummary, Outcome};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "ghevents";
/// EMF accepts at most this many metrics in one document.
pub const MAX_METRICS: usize = 100;
/// And at most this many dimension keys in one dimension set.
pub const MAX_DIMENSIONS: usize = 30;

/// CloudWatch units the figures use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Unit {
    Count,
    Seconds,
    Milliseconds,
    Percent,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Seconds => "Seconds",
            Unit::Milliseconds => "Milliseconds",
            Unit::Percent => "Percent",
        }
    }
}

/// How a figure adds up over time: a counter is an amount of something that happened
/// (summed), a gauge a level measured now (its latest value counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One named number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figure {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Unit,
    pub value: f64,
    /// Written to EMF as a property, not a metric (see the module's note on cost).
    pub detail: bool,
}

impl Figure {
    pub fn counter(name: &'static str, value: u64) -> Self {
        Self {
            name,
            kind: Kind::Counter,
            unit: Unit::Count,
            value: value as f64,
            detail: false,
        }
    }

    pub fn gauge(name: &'static str, unit: Unit, value: f64) -> Self {
        Self {
            name,
            kind: Kind::Gauge,
            unit,
            value,
            detail: false,
        }
    }

    /// The same figure as a detail: an EMF property rather than a metric.
    pub fn detail(self) -> Self {
        Self {
            detail: true,
            ..self
        }
    }

    /// `ghevents_` + the name in snake case, `_total` for a counter, the unit for a gauge
    /// measured in time (`FeedLagSeconds` → `ghevents_feed_lag_seconds`).
    pub fn prometheus_name(&self) -> String {
        let mut out = String::from("ghevents_");
        for (i, c) in self.name.chars().enumerate() {
            if c.is_ascii_uppercase() {
                if i > 0 {
                    out.push('_');
                }
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
        if self.kind == Kind::Counter {
            out.push_str("_total");
        }
        out
    }
}

/// Whether a cycle counts for `IngestCycleSuccess`: it reached GitHub and stored what there
/// was (`Completed`, or `NotModified`). `NotDue`, `Busy` and `RateLimited` are successful
/// invocations but count 0, so the stale-ingest alarm (no success for N minutes) also fires
/// when ingestion is stalled by an exhausted budget.
pub fn counts_as_success(outcome: Outcome) -> bool {
    matches!(outcome, Outcome::Completed | Outcome::NotModified)
}

/// An ingest cycle's figures. `GapSuspected` is 1 when the cycle read its last page without
/// meeting an event stored before it (see [`CycleSummary::gap_suspected`]).
pub fn cycle_figures(s: &CycleSummary) -> Vec<Figure> {
    let mut v = vec![
        Figure::counter(
            "IngestCycleSuccess",
            u64::from(counts_as_success(s.outcome)),
        ),
        Figure::counter("IngestCycleFailed", u64::from(s.outcome == Outcome::Failed)).detail(),
        Figure::counter("IngestRequests", s.requests).detail(),
        Figure::counter("EventsFetched", s.events_fetched),
        Figure::counter("NewEvents", s.new_events),
        Figure::counter("Duplicates", s.duplicates),
        Figure::counter("NewPushEvents", s.new_push_events).detail(),
        Figure::counter("Pages", u64::from(s.pages)),
        Figure::counter("NotModified", s.not_modified),
        Figure::counter("Rejected", s.rejected).detail(),
        Figure::counter("GapSuspected", u64::from(s.gap_suspected)),
        Figure::gauge(
            "IngestCycleDuration",
            Unit::Milliseconds,
            s.duration_ms as f64,
        ),
    ];
    if let Some(r) = s.rate_remaining {
        v.push(Figure::gauge("RateRemaining", Unit::Count, f64::from(r)));
    }
    v
}

/// An enrichment batch's (or drain's) figures.
pub fn enrich_figures(s: &DrainSummary) -> Vec<Figure> {
    vec![
        Figure::counter("EnrichCompleted", s.completed),
        Figure::counter("EnrichGone", s.gone),
        Figure::counter("EnrichFailed", s.failed_final),
        Figure::counter("EnrichFailedAttempts", s.failed_attempts).detail(),
        Figure::counter("EnrichDeferred", s.deferred),
        Figure::counter("EnrichRequests", s.requests),
        Figure::counter("EnrichCacheHits", s.cache_hits),
    ]
}

/// What the stored state says now: how fresh the feed is, how far enrichment is behind, how
/// many cycles suspected a gap lately.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Observed {
    pub at: DateTime<Utc>,
    /// The newest `created_at` of any stored event.
    pub newest_event_at: Option<DateTime<Utc>>,
    /// `at` − `newest_event_at`, in seconds (None before any event is stored).
    pub feed_lag_secs: Option<i64>,
    /// Push events `pending` or `in_progress`.
    pub enrich_backlog: i64,
    /// The oldest of them (its event's `created_at`).
    pub oldest_pending_push_at: Option<DateTime<Utc>>,
    /// `at` − `oldest_pending_push_at`, in seconds (None when nothing is pending).
    pub enrich_backlog_age_secs: Option<i64>,
    /// Poll cycles of the last 24 hours that suspected a gap.
    pub gaps_24h: i64,
}

impl Observed {
    /// Completes the ages from the times read.
    pub fn new(
        at: DateTime<Utc>,
        newest_event_at: Option<DateTime<Utc>>,
        enrich_backlog: i64,
        oldest_pending_push_at: Option<DateTime<Utc>>,
        gaps_24h: i64,
    ) -> Self {
        let age = |t: Option<DateTime<Utc>>| t.map(|t| (at - t).num_seconds().max(0));
        Self {
            at,
            newest_event_at,
            feed_lag_secs: age(newest_event_at),
            enrich_backlog,
            oldest_pending_push_at,
            enrich_backlog_age_secs: age(oldest_pending_push_at),
            gaps_24h,
        }
    }

    /// Its figures: lag and ages only when there is something to measure (a missing value is
    /// not a zero).
    pub fn figures(&self) -> Vec<Figure> {
        let mut v = vec![
            Figure::gauge("EnrichBacklog", Unit::Count, self.enrich_backlog as f64),
            Figure::gauge("GapsLast24h", Unit::Count, self.gaps_24h as f64).detail(),
        ];
        if let Some(s) = self.feed_lag_secs {
            v.push(Figure::gauge("FeedLagSeconds", Unit::Seconds, s as f64));
        }
        if let Some(s) = self.enrich_backlog_age_secs {
            v.push(Figure::gauge(
                "EnrichBacklogAgeSeconds",
                Unit::Seconds,
                s as f64,
            ));
        }
        v
    }
}

/// One CloudWatch Embedded Metric Format document: the `_aws` metadata (timestamp, namespace,
/// one dimension set, the metric definitions) and, at the top level, the dimension values,
/// the metric values and any other properties (searchable in Logs Insights, not metrics).
#[derive(Debug, Clone)]
pub struct Emf {
    namespace: String,
    dimensions: Vec<(String, String)>,
    metrics: Vec<(String, Unit, serde_json::Number)>,
    properties: serde_json::Map<String, serde_json::Value>,
}

impl Emf {
    pub fn new(namespace: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            dimensions: Vec::new(),
            metrics: Vec::new(),
            properties: serde_json::Map::new(),
        }
    }

    /// A dimension (`FunctionName`); at most [`MAX_DIMENSIONS`], a key given again replaces
    /// its value.
    pub fn dimension(mut self, key: &str, value: &str) -> Self {
        let full = self.dimensions.len() >= MAX_DIMENSIONS;
        match self.dimensions.iter_mut().find(|(k, _)| k == key) {
            Some(d) => d.1 = value.to_owned(),
            None if !full => self.dimensions.push((key.to_owned(), value.to_owned())),
            None => tracing::warn!(key, "EMF dimension dropped: at most 30"),
        }
        self
    }

    /// A metric. A value that is not finite is left out (JSON cannot hold it); a name given
    /// again replaces the value; beyond [`MAX_METRICS`] metrics the rest are dropped (logged).
    pub fn metric(&mut self, name: &str, unit: Unit, value: f64) -> &mut Self {
        let Some(n) = number(value) else {
            return self;
        };
        let full = self.metrics.len() >= MAX_METRICS;
        match self.metrics.iter_mut().find(|(k, ..)| k == name) {
            Some(m) => {
                m.1 = unit;
                m.2 = n;
            }
            None if !full => self.metrics.push((name.to_owned(), unit, n)),
            None => tracing::warn!(name, "EMF metric dropped: at most 100 per document"),
        }
        self
    }

    /// Figures as metrics, details as properties.
    pub fn figures(&mut self, figures: &[Figure]) -> &mut Self {
        for f in figures {
            if f.detail {
                if let Some(n) = number(f.value) {
                    self.property(f.name, n);
                }
            } else {
                self.metric(f.name, f.unit, f.value);
            }
        }
        self
    }

    /// A top-level property that is not a metric (an outcome, an error code). A name taken
    /// by a dimension or a metric is left to them.
    pub fn property(&mut self, key: &str, value: impl Serialize) -> &mut Self {
        if let Ok(v) = serde_json::to_value(value) {
            self.properties.insert(key.to_owned(), v);
        }
        self
    }

    /// The document as one JSON line, timestamped `at` (milliseconds since the epoch).
    pub fn to_line(&self, at: DateTime<Utc>) -> String {
        let mut doc = self.properties.clone();
        let keys: Vec<&str> = self.dimensions.iter().map(|(k, _)| k.as_str()).collect();
        let defs: Vec<serde_json::Value> = self
            .metrics
            .iter()
            .map(|(name, unit, _)| serde_json::json!({ "Name": name, "Unit": unit.as_str() }))
            .collect();
        for (k, v) in &self.dimensions {
            doc.insert(k.clone(), serde_json::Value::String(v.clone()));
        }
        for (name, _, value) in &self.metrics {
            doc.insert(name.clone(), serde_json::Value::Number(value.clone()));
        }
        doc.insert(
            "_aws".into(),
            serde_json::json!({
                "Timestamp": at.timestamp_millis(),
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": [keys],
                    "Metrics": defs,
                }],
            }),
        );
        serde_json::Value::Object(doc).to_string()
    }
}

/// An integer when the value is one (counts read as `3`, not `3.0`).
fn number(v: f64) -> Option<serde_json::Number> {
    if !v.is_finite() {
        return None;
    }
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        return Some(serde_json::Number::from(v as i64));
    }
    serde_json::Number::from_f64(v)
}

/// Where EMF lines go: stdout in Lambda (CloudWatch reads them from the log stream).
pub trait MetricSink: Send + Sync {
    fn emit(&self, line: &str);
}

pub struct Stdout;

impl MetricSink for Stdout {
    fn emit(&self, line: &str) {
        println!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_document_declares_each_metric_and_carries_its_value_at_the_top() {
        let at = Utc.with_ymd_and_hms(2026, 11, 27, 17, 0, 0).unwrap();
        let mut emf = Emf::new(NAMESPACE).dimension("FunctionName", "f");
        emf.metric("NewEvents", Unit::Count, 300.0)
            .metric("FeedLagSeconds", Unit::Seconds, 1.5)
            .metric("NaN", Unit::Count, f64::NAN)
            .property("outcome", "completed");
        let line = emf.to_line(at);
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["_aws"]["Timestamp"], at.timestamp_millis());
        let m = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(m["Namespace"], "ghevents");
        assert_eq!(m["Dimensions"], serde_json::json!([["FunctionName"]]));
        assert_eq!(
            m["Metrics"],
            serde_json::json!([
                {"Name": "NewEvents", "Unit": "Count"},
                {"Name": "FeedLagSeconds", "Unit": "Seconds"}
            ])
        );
        assert_eq!(v["NewEvents"], 300, "an integer stays one");
        assert_eq!(v["FeedLagSeconds"], 1.5);
        assert_eq!(v["FunctionName"], "f");
        assert_eq!(v["outcome"], "completed");
        assert!(v.get("NaN").is_none());
    }

    #[test]
    fn a_document_holds_at_most_100_metrics_and_30_dimensions() {
        let names: Vec<String> = (0..120).map(|i| format!("M{i}")).collect();
        let mut emf = Emf::new(NAMESPACE);
        for i in 0..40 {
            emf = emf.dimension(&format!("D{i}"), "x");
        }
        for n in &names {
            emf.metric(n, Unit::Count, 1.0);
        }
        emf.metric("M0", Unit::Count, 7.0);
        let v: serde_json::Value = serde_json::from_str(&emf.to_line(Utc::now())).unwrap();
        let m = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(m["Metrics"].as_array().unwrap().len(), MAX_METRICS);
        assert_eq!(m["Dimensions"][0].as_array().unwrap().len(), MAX_DIMENSIONS);
        assert_eq!(v["M0"], 7, "a name given again replaces its value");
    }

    #[test]
    fn prometheus_names_are_snake_case_with_total_on_counters() {
        assert_eq!(
            Figure::counter("NewEvents", 1).prometheus_name(),
            "ghevents_new_events_total"
        );
        assert_eq!(
            Figure::gauge("FeedLagSeconds", Unit::Seconds, 1.0).prometheus_name(),
            "ghevents_feed_lag_seconds"
        );
    }

    #[test]
    fn observed_ages_are_measured_from_its_time_and_missing_ones_are_not_zero() {
        let at = Utc.with_ymd_and_hms(2026, 11, 27, 17, 0, 0).unwrap();
        let o = Observed::new(at, Some(at - chrono::Duration::seconds(42)), 0, None, 2);
        assert_eq!(o.feed_lag_secs, Some(42));
        assert_eq!(o.enrich_backlog_age_secs, None);
        let names: Vec<&str> = o.figures().iter().map(|f| f.name).collect();
        assert_eq!(names, ["EnrichBacklog", "GapsLast24h", "FeedLagSeconds"]);
    }

    #[test]
    fn a_cycle_counts_as_a_success_only_when_it_polled() {
        for (outcome, value) in [
            (Outcome::Completed, 1.0),
            (Outcome::NotModified, 1.0),
            (Outcome::NotDue, 0.0),
            (Outcome::Busy, 0.0),
            (Outcome::RateLimited, 0.0),
            (Outcome::Failed, 0.0),
        ] {
            let f = cycle_figures(&CycleSummary::new(outcome));
            assert_eq!(f[0].name, "IngestCycleSuccess");
            assert_eq!(f[0].value, value, "{outcome:?}");
        }
    }
}
