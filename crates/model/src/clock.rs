//! Time: the injected clock (the present instant) and the clinic's time zone (wall-clock
//! times and day boundaries, from the IANA database compiled into Hearth).

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use std::sync::Mutex;

/// The source of "now". Everything whose behaviour depends on time takes a clock, so tests
/// set the time instead of sleeping. It gives instants; [`Zone`] turns them into wall-clock
/// times.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that stands still until moved; for tests.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new<Z: TimeZone>(at: DateTime<Z>) -> Self {
        Self(Mutex::new(at.with_timezone(&Utc)))
    }

    pub fn set<Z: TimeZone>(&self, at: DateTime<Z>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = at.with_timezone(&Utc);
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The clinic's time zone (`[clinic] time_zone`, else the operating system's): wall-clock
/// times and calendar days, daylight saving included, from the IANA time-zone database
/// compiled into Hearth (the same on every platform, no OS zone files needed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zone(Tz);

impl Zone {
    pub const UTC: Zone = Zone(Tz::UTC);

    /// A zone by its IANA name (`America/New_York`), exactly as the database spells it.
    pub fn named(name: &str) -> Option<Self> {
        name.parse::<Tz>().ok().map(Self)
    }

    /// The operating system's zone; UTC when it cannot be told (then IT sets
    /// `[clinic] time_zone`).
    pub fn system() -> Self {
        iana_time_zone::get_timezone()
            .ok()
            .and_then(|name| Self::named(&name))
            .unwrap_or(Self::UTC)
    }

    /// The IANA name.
    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    /// `instant` on this zone's wall clock.
    pub fn local<Z: TimeZone>(&self, instant: &DateTime<Z>) -> DateTime<Tz> {
        instant.with_timezone(&self.0)
    }

    /// The calendar date here at `instant`.
    pub fn date_at<Z: TimeZone>(&self, instant: &DateTime<Z>) -> NaiveDate {
        self.local(instant).date_naive()
    }

    /// Today's date here, by `clock`.
    pub fn today(&self, clock: &dyn Clock) -> NaiveDate {
        self.date_at(&clock.now())
    }

    /// The first instant of `date` here: its midnight, or (where a change of offset skips
    /// midnight) the first wall-clock minute that exists.
    pub fn start_of_day(&self, date: NaiveDate) -> DateTime<Utc> {
        let midnight = date.and_time(chrono::NaiveTime::MIN);
        // Offset changes skip at most a few hours, on whole minutes.
        (0..=24 * 60)
            .find_map(|m| {
                self.0
                    .from_local_datetime(&(midnight + Duration::minutes(m)))
                    .earliest()
            })
            .map_or_else(|| midnight.and_utc(), |t| t.with_timezone(&Utc))
    }

    /// The instants of calendar day `date` here: from its first instant up to (not
    /// including) the next day's. 23 or 25 hours long on a daylight-saving change.
    pub fn day(&self, date: NaiveDate) -> std::ops::Range<DateTime<Utc>> {
        let next = date.succ_opt().unwrap_or(date);
        self.start_of_day(date)..self.start_of_day(next)
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
        clock.advance(Duration::minutes(15));
        assert_eq!(clock.now(), t0 + Duration::minutes(15));
        clock.set(t0);
        assert_eq!(clock.now(), t0);
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    // Expected instants written by hand from the US rules (EST = UTC-5, EDT = UTC-4; clocks
    // go forward at 02:00 on 2026-03-08 and back at 02:00 on 2026-11-01).
    #[test]
    fn days_across_daylight_saving_changes_are_23_and_25_hours() {
        let ny = Zone::named("America/New_York").unwrap();
        let spring = ny.day(date(2026, 3, 8));
        assert_eq!(spring.start, utc("2026-03-08T05:00:00Z"));
        assert_eq!(spring.end, utc("2026-03-09T04:00:00Z"));
        assert_eq!(spring.end - spring.start, Duration::hours(23));
        let autumn = ny.day(date(2026, 11, 1));
        assert_eq!(autumn.start, utc("2026-11-01T04:00:00Z"));
        assert_eq!(autumn.end, utc("2026-11-02T05:00:00Z"));
        assert_eq!(autumn.end - autumn.start, Duration::hours(25));
        let plain = ny.day(date(2026, 3, 10));
        assert_eq!(plain.end - plain.start, Duration::hours(24));
    }

    #[test]
    fn wall_clock_times_follow_the_zone_rules() {
        let ny = Zone::named("America/New_York").unwrap();
        let wall = |s: &str| ny.local(&utc(s)).format("%Y-%m-%d %H:%M %:z").to_string();
        assert_eq!(wall("2026-03-08T06:59:00Z"), "2026-03-08 01:59 -05:00");
        assert_eq!(wall("2026-03-08T07:00:00Z"), "2026-03-08 03:00 -04:00");
        assert_eq!(wall("2026-11-01T05:30:00Z"), "2026-11-01 01:30 -04:00");
        assert_eq!(wall("2026-11-01T06:30:00Z"), "2026-11-01 01:30 -05:00");
        assert_eq!(ny.date_at(&utc("2026-03-08T04:59:59Z")), date(2026, 3, 7));
    }

    #[test]
    fn a_day_whose_midnight_is_skipped_starts_at_its_first_minute() {
        // Chile moved its clocks from 24:00 to 01:00 on 2022-09-11 (UTC-4 -> UTC-3): that day
        // has no 00:00 and starts at 01:00 -03:00 = 04:00 UTC; it lasts 23 hours.
        let santiago = Zone::named("America/Santiago").unwrap();
        let day = santiago.day(date(2022, 9, 11));
        assert_eq!(day.start, utc("2022-09-11T04:00:00Z"));
        assert_eq!(day.end, utc("2022-09-12T03:00:00Z"));
    }

    #[test]
    fn zones_are_named_exactly() {
        assert_eq!(
            Zone::named("America/New_York").unwrap().name(),
            "America/New_York"
        );
        assert!(Zone::named("Eastern").is_none());
        assert!(Zone::named("america/new_york").is_none());
        assert!(Zone::named("").is_none());
        // Whatever the machine says, the default is a zone from the database.
        assert!(Zone::named(Zone::system().name()).is_some());
    }
}
