//! Named failpoints for the crash campaign (`scripts/campaign.sh`), compiled in only with the
//! `failpoints` feature; without it [`hit`] is an empty inline function.
//!
//! A binary that called [`setup`] reads `FAILPOINTS="name=actions;…"` (fail-rs syntax, e.g.
//! `ingest::after_commit=return` or `import::mid_batch=3*off->return`). Besides fail-rs's own
//! actions (`panic`, `sleep(ms)`, `pause`, …), `return` means: print
//! `failpoint NAME reached` on stderr and stop this thread there for good, so that the
//! campaign kills the process (SIGKILL) at exactly that point.

/// Evaluates the failpoint `name` (see the module documentation).
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    fail::eval(name, |arg| {
        use std::io::Write;
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "failpoint {name} reached ({})",
            arg.unwrap_or_default()
        );
        let _ = err.flush();
        drop(err);
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    });
}

/// Evaluates the failpoint `name`: nothing, without the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}

/// Keeps the failpoints of `FAILPOINTS` configured while it lives.
#[cfg(feature = "failpoints")]
pub struct Guard(#[allow(dead_code)] fail::FailScenario<'static>);

/// Keeps the failpoints of `FAILPOINTS` configured while it lives (nothing to keep here).
#[cfg(not(feature = "failpoints"))]
pub struct Guard;

/// Configures the failpoints named in `FAILPOINTS`; call it first thing in `main`.
pub fn setup() -> Guard {
    #[cfg(feature = "failpoints")]
    {
        Guard(fail::FailScenario::setup())
    }
    #[cfg(not(feature = "failpoints"))]
    {
        Guard
    }
}
