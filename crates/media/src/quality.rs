//! Connection quality: what the pane's indicator shows, and the sender's step down and back up
//! the resolution / frame-rate ladder as RTCP receiver reports (RFC 3550 §6.4.1: fraction
//! lost, round-trip time from LSR/DLSR) say the path got worse or better.

use serde::Serialize;

/// The indicator in the pane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    /// No report yet.
    Unknown,
    Good,
    Fair,
    Poor,
}

/// One reading of the path to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PathReading {
    /// Share of our packets the peer lost since its last report, 0.0–1.0.
    pub loss: f64,
    /// Round-trip time in seconds, when known.
    pub rtt: Option<f64>,
}

impl PathReading {
    /// The indicator for this reading (thresholds of common practice: ≤ 2 % loss and
    /// ≤ 250 ms RTT is good; ≥ 8 % loss or ≥ 600 ms is poor).
    pub fn quality(&self) -> Quality {
        let rtt = self.rtt.unwrap_or(0.0);
        if self.loss >= 0.08 || rtt >= 0.6 {
            Quality::Poor
        } else if self.loss > 0.02 || rtt > 0.25 {
            Quality::Fair
        } else {
            Quality::Good
        }
    }
}

/// One rung of the video ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rung {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub kbps: u32,
}

/// From best to most frugal: 640×480@30 down to 320×240@15.
pub const LADDER: [Rung; 3] = [
    Rung {
        width: 640,
        height: 480,
        fps: 30,
        kbps: 900,
    },
    Rung {
        width: 480,
        height: 360,
        fps: 24,
        kbps: 500,
    },
    Rung {
        width: 320,
        height: 240,
        fps: 15,
        kbps: 250,
    },
];

/// Steps down at once on a fair-or-worse path (two readings in a row) and back up one rung
/// after `UP_AFTER` good readings in a row (hysteresis: no see-saw).
#[derive(Debug, Clone, Default)]
pub struct Adapter {
    rung: usize,
    bad: u32,
    good: u32,
}

/// Good readings in a row before stepping back up (readings come once a second).
pub const UP_AFTER: u32 = 5;

impl Adapter {
    pub fn rung(&self) -> usize {
        self.rung
    }

    /// Takes the worst reading across peers; returns the new rung when it changed.
    pub fn observe(&mut self, worst: Quality) -> Option<usize> {
        match worst {
            Quality::Unknown => None,
            Quality::Good => {
                self.bad = 0;
                self.good += 1;
                if self.good >= UP_AFTER && self.rung > 0 {
                    self.good = 0;
                    self.rung -= 1;
                    Some(self.rung)
                } else {
                    None
                }
            }
            Quality::Fair | Quality::Poor => {
                self.good = 0;
                self.bad += 1;
                let step = if worst == Quality::Poor { 1 } else { 2 };
                if self.bad >= step && self.rung + 1 < LADDER.len() {
                    self.bad = 0;
                    self.rung += 1;
                    Some(self.rung)
                } else {
                    None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_map_to_the_indicator() {
        let r = |loss, rtt| {
            PathReading {
                loss,
                rtt: Some(rtt),
            }
            .quality()
        };
        assert_eq!(r(0.0, 0.01), Quality::Good);
        assert_eq!(r(0.05, 0.2), Quality::Fair);
        assert_eq!(r(0.01, 0.3), Quality::Fair);
        assert_eq!(r(0.10, 0.01), Quality::Poor);
        assert_eq!(r(0.0, 0.7), Quality::Poor);
    }

    #[test]
    fn the_ladder_steps_down_on_loss_and_back_up_after_a_quiet_spell() {
        let mut a = Adapter::default();
        assert_eq!(a.observe(Quality::Poor), Some(1));
        assert_eq!(a.observe(Quality::Poor), Some(2));
        assert_eq!(a.observe(Quality::Poor), None, "no rung below the last");
        for _ in 0..UP_AFTER - 1 {
            assert_eq!(a.observe(Quality::Good), None);
        }
        assert_eq!(a.observe(Quality::Good), Some(1));
        // A fair path must persist for two readings before a step down.
        assert_eq!(a.observe(Quality::Fair), None);
        assert_eq!(a.observe(Quality::Fair), Some(2));
        assert_eq!(a.observe(Quality::Unknown), None);
    }
}
