use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Monotonic time, injectable so that tests lock a session without waiting.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock a test moves by hand.
#[derive(Debug)]
pub struct ManualClock {
    base: Instant,
    offset: Mutex<Duration>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self {
            base: Instant::now(),
            offset: Mutex::new(Duration::ZERO),
        }
    }
}

impl ManualClock {
    pub fn advance(&self, by: Duration) {
        let mut o = self.offset.lock().unwrap_or_else(|p| p.into_inner());
        *o += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + *self.offset.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What [`IdleLock::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockState {
    Open,
    /// Locked by this check: the idle time ran out (audit it once).
    JustLocked,
    Locked,
}

/// The automatic lock after inactivity (ONC 170.315(d)(5)). Input keeps it open; once locked,
/// input does nothing: only [`IdleLock::unlock`], after the user authenticated again, opens it.
pub struct IdleLock {
    clock: Arc<dyn Clock>,
    timeout: Duration,
    state: Mutex<(Instant, bool)>,
}

impl std::fmt::Debug for IdleLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleLock")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl IdleLock {
    pub fn new(clock: Arc<dyn Clock>, timeout: Duration) -> Self {
        let now = clock.now();
        Self {
            clock,
            timeout,
            state: Mutex::new((now, false)),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, (Instant, bool)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The user did something: counts as input if the session is still open. Says the state as
    /// [`IdleLock::check`] does, so a lock that this very input found due is reported
    /// ([`LockState::JustLocked`]) once, like any other.
    pub fn touch(&self) -> LockState {
        let now = self.clock.now();
        let mut s = self.state();
        let state = Self::check_at(&mut s, now, self.timeout);
        if state == LockState::Open {
            s.0 = now;
        }
        state
    }

    /// Locks if the idle time has run out; says the state.
    pub fn check(&self) -> LockState {
        let now = self.clock.now();
        Self::check_at(&mut self.state(), now, self.timeout)
    }

    fn check_at(s: &mut (Instant, bool), now: Instant, timeout: Duration) -> LockState {
        if s.1 {
            return LockState::Locked;
        }
        if now.saturating_duration_since(s.0) >= timeout {
            s.1 = true;
            return LockState::JustLocked;
        }
        LockState::Open
    }

    /// Locks at once (the user chose "Lock").
    pub fn lock_now(&self) -> bool {
        let mut s = self.state();
        let was_open = !s.1;
        s.1 = true;
        was_open
    }

    /// Opens again, after the user authenticated.
    pub fn unlock(&self) {
        let now = self.clock.now();
        *self.state() = (now, false);
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How long until the idle time runs out without input; `None` once locked. (When to look
    /// again, for whoever shows the lock.)
    pub fn remaining(&self) -> Option<Duration> {
        let now = self.clock.now();
        let s = self.state();
        (!s.1).then(|| {
            self.timeout
                .saturating_sub(now.saturating_duration_since(s.0))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_the_idle_time_and_input_does_not_reopen_it() {
        let clock = Arc::new(ManualClock::default());
        let lock = IdleLock::new(clock.clone(), Duration::from_secs(600));
        clock.advance(Duration::from_secs(599));
        assert_eq!(lock.touch(), LockState::Open);
        clock.advance(Duration::from_secs(599));
        assert_eq!(lock.check(), LockState::Open);
        clock.advance(Duration::from_secs(1));
        assert_eq!(lock.check(), LockState::JustLocked);
        assert_eq!(lock.check(), LockState::Locked);
        assert_eq!(lock.touch(), LockState::Locked, "input does not unlock");
        lock.unlock();
        assert_eq!(lock.check(), LockState::Open);
        // Input that comes after the idle time is what finds the lock due.
        clock.advance(Duration::from_secs(600));
        assert_eq!(lock.touch(), LockState::JustLocked);
        assert_eq!(lock.check(), LockState::Locked);
        lock.unlock();
        assert!(lock.lock_now());
        assert_eq!(lock.check(), LockState::Locked);
    }

    #[test]
    fn the_time_left_counts_down_from_the_last_input_and_ends_with_the_lock() {
        let clock = Arc::new(ManualClock::default());
        let lock = IdleLock::new(clock.clone(), Duration::from_secs(600));
        clock.advance(Duration::from_secs(200));
        assert_eq!(lock.remaining(), Some(Duration::from_secs(400)));
        lock.touch();
        assert_eq!(lock.remaining(), Some(Duration::from_secs(600)));
        clock.advance(Duration::from_secs(700));
        assert_eq!(lock.remaining(), Some(Duration::ZERO));
        assert_eq!(lock.check(), LockState::JustLocked);
        assert_eq!(lock.remaining(), None);
    }
}
