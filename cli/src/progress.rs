//! Progress of a long command, on stderr: a bar (rate, ETA) on a terminal, otherwise one plain
//! line every few seconds and a last line when done, so a log file or a pipe gets a few
//! readable lines instead of control characters.
//!
//! The work being measured updates atomic counters; a [`Meter`] reads them through closures
//! from a task of its own, so the work never waits for the display.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a plain line is written when stderr is not a terminal, unless
/// `PROGRESS_INTERVAL_SECS` says otherwise.
pub const PLAIN_EVERY: Duration = Duration::from_secs(10);

/// What the position and total count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Bytes of input (shown as MiB); `items` then counts what was read.
    Bytes,
    /// The same things `items` names.
    Items,
}

type Counter = Arc<dyn Fn() -> u64 + Send + Sync>;

/// What to show: `position` out of `total` (for the bar and the ETA), and `items` (what the
/// rate is given in, e.g. events).
pub struct Spec {
    pub label: String,
    pub total: Option<u64>,
    pub unit: Unit,
    pub position: Counter,
    /// The name of what `items` counts ("events") and its counter.
    pub items: (&'static str, Counter),
}

/// A running display; [`Meter::finish`] stops it (dropping it stops it too, silently).
pub struct Meter {
    task: Option<tokio::task::JoinHandle<()>>,
    bar: Option<indicatif::ProgressBar>,
    plain: Option<Arc<Spec>>,
    started: Instant,
}

/// The interval for plain lines: `PROGRESS_INTERVAL_SECS` (whole seconds, at least 1) or
/// [`PLAIN_EVERY`].
pub fn plain_interval() -> Duration {
    std::env::var("PROGRESS_INTERVAL_SECS")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or(PLAIN_EVERY, |s| Duration::from_secs(s.max(1)))
}

impl Meter {
    /// Starts showing `spec`: a bar when stderr is a terminal, plain lines otherwise.
    pub fn start(spec: Spec) -> Self {
        if std::io::stderr().is_terminal() {
            Self::bar(spec)
        } else {
            Self::plain(spec, plain_interval())
        }
    }

    fn bar(spec: Spec) -> Self {
        let bar = match spec.total {
            Some(total) => indicatif::ProgressBar::new(total),
            None => indicatif::ProgressBar::new_spinner(),
        };
        let position = match spec.unit {
            Unit::Bytes => "{bytes}/{total_bytes}",
            Unit::Items => "{human_pos}/{human_len}",
        };
        let template = match spec.total {
            Some(_) => format!("{{msg}} [{{bar:25}}] {position} ETA {{eta}}"),
            None => "{spinner} {msg} {elapsed}".to_owned(),
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(&template)
                .expect("valid template")
                .progress_chars("=> "),
        );
        let started = Instant::now();
        let spec = Arc::new(spec);
        let task = {
            let bar = bar.clone();
            let spec = spec.clone();
            tokio::spawn(async move {
                loop {
                    bar.set_position((spec.position)());
                    bar.set_message(format!(
                        "{}: {}",
                        spec.label,
                        items_and_rate(&spec, started.elapsed())
                    ));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        Self {
            task: Some(task),
            bar: Some(bar),
            plain: None,
            started,
        }
    }

    fn plain(spec: Spec, every: Duration) -> Self {
        let started = Instant::now();
        let spec = Arc::new(spec);
        let task = {
            let spec = spec.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                loop {
                    tick.tick().await;
                    eprintln!("{}", plain_line(&spec, started.elapsed()));
                }
            })
        };
        Self {
            task: Some(task),
            bar: None,
            plain: Some(spec),
            started,
        }
    }

    /// Stops the display; in plain mode writes a last line with the totals and the time taken.
    pub fn finish(mut self) {
        self.stop();
        if let Some(spec) = self.plain.take() {
            eprintln!(
                "{}: done, {}",
                spec.label,
                items_and_rate(&spec, self.started.elapsed())
            );
        }
    }

    fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// "123,456 events in 12.3s, 10,037 events/s".
fn items_and_rate(spec: &Spec, elapsed: Duration) -> String {
    let (name, count) = (&spec.items.0, (spec.items.1)());
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { count as f64 / secs } else { 0.0 };
    format!(
        "{} {name} in {secs:.1}s, {} {name}/s",
        thousands(count),
        thousands(rate.round() as u64)
    )
}

/// One plain progress line: where it stands, the rate, and an estimate of the time left.
fn plain_line(spec: &Spec, elapsed: Duration) -> String {
    let pos = (spec.position)();
    let mut line = format!("{}: ", spec.label);
    match (spec.unit, spec.total) {
        (Unit::Bytes, Some(total)) => line.push_str(&format!(
            "{:.1}/{:.1} MiB ({}%), ",
            mib(pos),
            mib(total),
            percent(pos, total)
        )),
        (Unit::Bytes, None) => line.push_str(&format!("{:.1} MiB, ", mib(pos))),
        (Unit::Items, Some(total)) => line.push_str(&format!(
            "{}/{} ({}%), ",
            thousands(pos),
            thousands(total),
            percent(pos, total)
        )),
        (Unit::Items, None) => {}
    }
    line.push_str(&items_and_rate(spec, elapsed));
    if let Some(eta) = spec.total.and_then(|t| eta(pos, t, elapsed)) {
        line.push_str(&format!(", ETA {}", duration_text(eta)));
    }
    line
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn percent(pos: u64, total: u64) -> u64 {
    (pos.min(total) * 100).checked_div(total).unwrap_or(100)
}

/// The time left at the average rate so far; `None` before anything was done.
pub fn eta(pos: u64, total: u64, elapsed: Duration) -> Option<Duration> {
    if pos == 0 || elapsed.is_zero() {
        return None;
    }
    let left = total.saturating_sub(pos) as f64;
    Some(Duration::from_secs_f64(
        left * elapsed.as_secs_f64() / pos as f64,
    ))
}

/// "45s", "3m05s", "2h07m".
pub fn duration_text(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// 1234567 → "1,234,567".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let groups: Vec<&str> = digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|g| std::str::from_utf8(g).expect("ASCII digits"))
        .collect();
    groups.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn numbers_and_durations_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(duration_text(Duration::from_secs(45)), "45s");
        assert_eq!(duration_text(Duration::from_secs(185)), "3m05s");
        assert_eq!(duration_text(Duration::from_secs(7620)), "2h07m");
    }

    #[test]
    fn the_eta_follows_the_average_rate() {
        assert_eq!(eta(0, 100, Duration::from_secs(5)), None);
        assert_eq!(
            eta(25, 100, Duration::from_secs(10)),
            Some(Duration::from_secs(30))
        );
        assert_eq!(eta(100, 100, Duration::from_secs(10)), Some(Duration::ZERO));
    }

    #[test]
    fn a_plain_line_says_where_it_stands_the_rate_and_the_time_left() {
        let bytes = Arc::new(AtomicU64::new(25 * 1024 * 1024));
        let events = Arc::new(AtomicU64::new(50_000));
        let (b, e) = (bytes.clone(), events.clone());
        let spec = Spec {
            label: "import big.json.gz".into(),
            total: Some(100 * 1024 * 1024),
            unit: Unit::Bytes,
            position: Arc::new(move || b.load(Ordering::Relaxed)),
            items: ("events", Arc::new(move || e.load(Ordering::Relaxed))),
        };
        assert_eq!(
            plain_line(&spec, Duration::from_secs(10)),
            "import big.json.gz: 25.0/100.0 MiB (25%), 50,000 events in 10.0s, 5,000 events/s, ETA 30s"
        );
        events.store(60_000, Ordering::Relaxed);
        assert!(plain_line(&spec, Duration::from_secs(10)).contains("60,000 events"));
    }
}
