use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// The idle lock's time, injectable so that tests lock a session without waiting.
///
/// Idle time must count while the machine sleeps: a laptop closed for an hour comes back
/// locked. [`Clock::now`] is a monotonic clock that keeps counting in suspend where the OS has
/// one; [`IdleLock`] also compares the wall clock and takes the longer of the two, so a
/// platform whose monotonic clock stops in suspend still counts it (a wall clock set back
/// never shortens the idle time, one moved ahead only locks sooner).
pub trait Clock: Send + Sync {
    /// Time since a fixed origin, monotonic, counting suspend where the OS allows.
    fn now(&self) -> Duration;
    /// The wall clock.
    fn wall(&self) -> SystemTime;
}

/// The operating system's clocks: Linux `CLOCK_BOOTTIME` (counts suspend, unlike
/// `CLOCK_MONOTONIC` behind `std::time::Instant`), macOS `CLOCK_MONOTONIC` (counts sleep),
/// elsewhere `Instant` (Windows' performance counter); and the wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn now(&self) -> Duration {
        timespec(rustix::time::clock_gettime(rustix::time::ClockId::Boottime))
    }

    #[cfg(target_vendor = "apple")]
    fn now(&self) -> Duration {
        timespec(rustix::time::clock_gettime(
            rustix::time::ClockId::Monotonic,
        ))
    }

    #[cfg(not(any(target_os = "linux", target_os = "android", target_vendor = "apple")))]
    fn now(&self) -> Duration {
        static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        ORIGIN.get_or_init(std::time::Instant::now).elapsed()
    }

    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
}

#[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
fn timespec(t: rustix::time::Timespec) -> Duration {
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// A clock a test moves by hand.
#[derive(Debug)]
pub struct ManualClock {
    wall: SystemTime,
    /// (monotonic, wall) time gone by since the start.
    offset: Mutex<(Duration, Duration)>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self {
            wall: SystemTime::now(),
            offset: Mutex::new((Duration::ZERO, Duration::ZERO)),
        }
    }
}

impl ManualClock {
    /// A clock whose wall clock starts at `wall`.
    pub fn starting_at(wall: SystemTime) -> Self {
        Self {
            wall,
            ..Self::default()
        }
    }

    fn offset(&self) -> std::sync::MutexGuard<'_, (Duration, Duration)> {
        self.offset.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Time passes, for both clocks.
    pub fn advance(&self, by: Duration) {
        let mut o = self.offset();
        o.0 += by;
        o.1 += by;
    }

    /// The machine sleeps for `by`, on a platform whose monotonic clock stops meanwhile
    /// (`Instant` on Linux): only the wall clock moves.
    pub fn suspend(&self, by: Duration) {
        self.offset().1 += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        self.offset().0
    }

    fn wall(&self) -> SystemTime {
        self.wall + self.offset().1
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
    state: Mutex<State>,
}

/// A moment on both clocks.
#[derive(Debug, Clone, Copy)]
struct Moment {
    mono: Duration,
    wall: SystemTime,
}

impl Moment {
    fn now(clock: &dyn Clock) -> Self {
        Self {
            mono: clock.now(),
            wall: clock.wall(),
        }
    }

    /// Time from `earlier` to this moment: the longer of what the two clocks say.
    fn since(&self, earlier: &Moment) -> Duration {
        let mono = self.mono.saturating_sub(earlier.mono);
        let wall = self.wall.duration_since(earlier.wall).unwrap_or_default();
        mono.max(wall)
    }
}

struct State {
    /// The last input (or unlock).
    last: Moment,
    /// When the lock closed (wall clock), while locked.
    locked_at: Option<SystemTime>,
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
        let last = Moment::now(clock.as_ref());
        Self {
            clock,
            timeout,
            state: Mutex::new(State {
                last,
                locked_at: None,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The user did something: counts as input if the session is still open. Says the state as
    /// [`IdleLock::check`] does, so a lock that this very input found due is reported
    /// ([`LockState::JustLocked`]) once, like any other.
    pub fn touch(&self) -> LockState {
        let now = Moment::now(self.clock.as_ref());
        let mut s = self.state();
        let state = Self::check_at(&mut s, now, self.timeout);
        if state == LockState::Open {
            s.last = now;
        }
        state
    }

    /// Locks if the idle time has run out; says the state.
    pub fn check(&self) -> LockState {
        let now = Moment::now(self.clock.as_ref());
        Self::check_at(&mut self.state(), now, self.timeout)
    }

    fn check_at(s: &mut State, now: Moment, timeout: Duration) -> LockState {
        if s.locked_at.is_some() {
            return LockState::Locked;
        }
        if now.since(&s.last) >= timeout {
            // Locked when the idle time ran out, not when someone looked (after a suspend,
            // that is long before).
            let due = s.last.wall + timeout;
            s.locked_at = Some(due.min(now.wall));
            return LockState::JustLocked;
        }
        LockState::Open
    }

    /// Locks at once (the user chose "Lock", or the OS locked the screen or went to sleep).
    pub fn lock_now(&self) -> bool {
        let wall = self.clock.wall();
        let mut s = self.state();
        let was_open = s.locked_at.is_none();
        if was_open {
            s.locked_at = Some(wall);
        }
        was_open
    }

    /// When the lock closed (wall clock); `None` while open. An unlock must prove an
    /// authentication after it.
    pub fn locked_at(&self) -> Option<SystemTime> {
        self.state().locked_at
    }

    /// Opens again, after the user authenticated.
    pub fn unlock(&self) {
        let now = Moment::now(self.clock.as_ref());
        *self.state() = State {
            last: now,
            locked_at: None,
        };
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How long until the idle time runs out without input; `None` once locked. (When to look
    /// again, for whoever shows the lock.)
    pub fn remaining(&self) -> Option<Duration> {
        let now = Moment::now(self.clock.as_ref());
        let s = self.state();
        s.locked_at
            .is_none()
            .then(|| self.timeout.saturating_sub(now.since(&s.last)))
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
    fn time_asleep_counts_even_where_the_monotonic_clock_stops() {
        let clock = Arc::new(ManualClock::default());
        let lock = IdleLock::new(clock.clone(), Duration::from_secs(600));
        clock.advance(Duration::from_secs(60));
        // The lid closes for an hour: Linux's CLOCK_MONOTONIC (std's Instant) does not move.
        clock.suspend(Duration::from_secs(3600));
        assert_eq!(lock.remaining(), Some(Duration::ZERO));
        assert_eq!(lock.touch(), LockState::JustLocked, "input after the sleep");
        // Locked as of when the idle time ran out, not when the lid opened.
        let locked_at = lock.locked_at().unwrap();
        let expected = clock.wall() - Duration::from_secs(3600 + 60) + Duration::from_secs(600);
        assert_eq!(locked_at, expected);
    }

    #[test]
    fn the_system_clock_counts_like_the_os_boot_clock() {
        // On Linux it is CLOCK_BOOTTIME: never behind CLOCK_MONOTONIC (they differ by the
        // time spent suspended since boot).
        #[cfg(target_os = "linux")]
        {
            let mono = timespec(rustix::time::clock_gettime(
                rustix::time::ClockId::Monotonic,
            ));
            assert!(SystemClock.now() >= mono);
        }
        let a = SystemClock.now();
        let b = SystemClock.now();
        assert!(b >= a);
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
