use chrono::{DateTime, FixedOffset, Local};
use std::sync::Mutex;

/// The source of "now". Everything whose behaviour depends on time takes a clock, so tests
/// set the time instead of sleeping.
pub trait Clock: Send + Sync {
    /// The current instant in the workstation's local offset.
    fn now(&self) -> DateTime<FixedOffset>;
}

/// The operating system's clock and time zone.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<FixedOffset> {
        Local::now().fixed_offset()
    }
}

/// A clock that stands still until moved; for tests.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<FixedOffset>>);

impl ManualClock {
    pub fn new(at: DateTime<FixedOffset>) -> Self {
        Self(Mutex::new(at))
    }

    pub fn set(&self, at: DateTime<FixedOffset>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }

    pub fn advance(&self, by: chrono::Duration) {
        let mut now = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<FixedOffset> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let t0 = DateTime::parse_from_rfc3339("2026-01-02T08:00:00+01:00").unwrap();
        let clock = ManualClock::new(t0);
        assert_eq!(clock.now(), t0);
        clock.advance(chrono::Duration::minutes(15));
        assert_eq!(clock.now(), t0 + chrono::Duration::minutes(15));
        clock.set(t0);
        assert_eq!(clock.now(), t0);
    }
}
