//! The start-up trace: when the process started, and milestones printed to stderr with
//! `PULMO_TRACE_STARTUP=1` (seconds since `main`), for the time-to-first-image breakdown.
//! The CLI records the start ([`record_process_start`]); the loader and the UI mark.

use std::sync::OnceLock;
use std::time::Instant;

static PROCESS_START: OnceLock<Instant> = OnceLock::new();

/// Records now as the process start (the first call wins; `main` calls it first).
pub fn record_process_start() {
    let _ = PROCESS_START.set(Instant::now());
}

/// Seconds since `main` started (0 when it was not recorded, as in tests).
pub fn seconds_since_start() -> f64 {
    PROCESS_START
        .get()
        .map_or(0.0, |t| t.elapsed().as_secs_f64())
}

/// With `PULMO_TRACE_STARTUP=1`, prints a start-up milestone to stderr.
pub fn mark(what: &str) {
    static ON: OnceLock<bool> = OnceLock::new();
    if *ON.get_or_init(|| std::env::var("PULMO_TRACE_STARTUP").is_ok_and(|v| v == "1")) {
        eprintln!("startup {:.3} s: {what}", seconds_since_start());
    }
}
