//! The billing stage: charges (HL7 v2.5.1 DFT^P03, built and stored when the note was
//! signed) sent to the billing system over MLLP, each as stored, so that a retry carries the
//! same bytes and the same MSH-10 and the receiver may drop a repeat (HL7 v2.5.1 §2.10.1:
//! the control id "uniquely identifies the message").
//!
//! - AA (or CA): accepted; the charge is done and the visit's `charge_acked_at` set.
//! - AE / AR (CE / CR): refused with billing's reason, kept for the user to correct and send
//!   again (a new message); never sent again as it is.
//! - No answer (unreachable, timed out, cut off) or a reply that is no acknowledgement of
//!   this message: tried again later with exponential backoff (5 s doubling to 5 minutes,
//!   full jitter), however often: billing down delays a charge, never loses it. The stage
//!   stops at the first such failure (the others would meet the same), and never stops the
//!   EHR's stages.

use super::{blocking, Engine, Round};
use crate::Result;
use std::time::Duration;

/// Charges sent in one round at most.
const PER_ROUND: u32 = 100;
/// No new charge is sent after this long in one round (the one in flight may take up to the
/// acknowledgement timeout): a slow billing system does not hold up the round's end.
const STAGE_BUDGET: Duration = Duration::from_secs(10);
/// Billing's words kept with a charge, at most (what a receiver says is shown, not trusted).
const REASON_CHARS: usize = 300;

/// Billing's (or the transport's) words as kept and shown: printable, one line, cut short.
fn shown(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut out: String = clean.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.chars().count() > REASON_CHARS {
        out = out.chars().take(REASON_CHARS).collect::<String>() + "…";
    }
    out
}
const FIRST_RETRY: Duration = Duration::from_secs(5);
const LONGEST_RETRY: Duration = Duration::from_secs(300);

/// When a charge that failed `attempts` times (this one included) is tried again.
fn retry_after(attempts: u32) -> Duration {
    let full = FIRST_RETRY
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(16))
        .min(LONGEST_RETRY);
    // Full jitter in [full / 2, full]: workstations that lost billing together do not all
    // come back at once.
    let mut b = [0u8; 2];
    let spread = if getrandom::fill(&mut b).is_ok() {
        f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX)
    } else {
        1.0
    };
    full.mul_f64(0.5 + spread / 2.0)
}

impl Engine {
    /// Sends the charges that are due (see the module's notes).
    pub async fn bill(&self, round: &mut Round) -> Result<()> {
        let Some(target) = self.config.billing.clone() else {
            return Ok(());
        };
        let client = hearth_hl7::MllpClient {
            connect_timeout: target.connect_timeout,
            ack_timeout: target.ack_timeout,
            // An acknowledgement is a few hundred bytes: a larger reply is refused early.
            max_reply: 64 * 1024,
            ..hearth_hl7::MllpClient::new(target.address.clone())
        };
        let now_ms = self.config.clock.now().timestamp_millis();
        let store = self.handle.store().clone();
        let due = blocking(move || store.due_charges(now_ms, PER_ROUND)).await?;
        let started = std::time::Instant::now();
        for charge in due {
            if started.elapsed() > STAGE_BUDGET {
                break;
            }
            // Counted before it goes: a crash from here on leaves the mark that billing may
            // have this message already.
            let store = self.handle.store().clone();
            let id = charge.charge_id.clone();
            let next_ms = (self.config.clock.now()
                + chrono::Duration::from_std(retry_after(charge.attempts + 1))
                    .unwrap_or_else(|_| chrono::Duration::minutes(5)))
            .timestamp_millis();
            blocking(move || store.charge_sending(&id, next_ms)).await?;
            let answer = client.send(&charge.message).await;
            let store = self.handle.store().clone();
            let at = self.now_rfc3339();
            match answer {
                Ok(ack) => {
                    let accepted = ack.code.is_accept();
                    let reason = (!accepted).then(|| {
                        let mut parts: Vec<String> = ack.text.into_iter().collect();
                        parts.extend(ack.errors);
                        parts.retain(|p| !p.trim().is_empty());
                        let said = if parts.is_empty() {
                            format!("billing answered {} without a reason", ack.code.as_str())
                        } else {
                            format!("{}: {}", ack.code.as_str(), shown(&parts.join("; ")))
                        };
                        // An earlier send of this very message went unanswered: billing may
                        // hold it already (many refuse a repeated control id), so correcting
                        // it blindly could bill twice.
                        if charge.attempts > 0 {
                            format!(
                                "{said} (after {} unanswered send(s): billing may already hold \
                                 this charge as control id {}; check with billing before \
                                 correcting it)",
                                charge.attempts, charge.control_id
                            )
                        } else {
                            said
                        }
                    });
                    let id = charge.charge_id.clone();
                    blocking(move || {
                        store.charge_acknowledged(&id, accepted, reason.as_deref(), &at)
                    })
                    .await?;
                    if accepted {
                        round.billed += 1;
                    } else {
                        round.billing_refused += 1;
                        // A reject (AR/CR) may be billing down for everyone: the others wait
                        // for the next round rather than all being refused at once.
                        if matches!(
                            ack.code,
                            hearth_hl7::AckCode::ApplicationReject
                                | hearth_hl7::AckCode::CommitReject
                        ) {
                            break;
                        }
                    }
                }
                Err(e) => {
                    let reason = shown(&format!("billing did not answer ({}): {e}", e.code()));
                    let id = charge.charge_id.clone();
                    blocking(move || store.charge_attempt_failed(&id, &reason, next_ms)).await?;
                    round.billing_retries += 1;
                    // Unreachable, slow or answering nonsense: the other charges would meet the
                    // same; they wait for the next round.
                    break;
                }
            }
            // The note's view shows the charge's state: it reloads on a records bump.
            self.handle.records_changed();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billings_words_are_shown_printable_and_short() {
        assert_eq!(shown("AE:\rbad\x0bcode\n  here"), "AE: bad code here");
        let long = "x".repeat(5000);
        assert_eq!(shown(&long).chars().count(), REASON_CHARS + 1);
    }

    #[test]
    fn retries_back_off_from_5_seconds_to_5_minutes_with_jitter() {
        for (attempts, full) in [(1, 5), (2, 10), (3, 20), (7, 300), (40, 300)] {
            let d = retry_after(attempts);
            assert!(d <= Duration::from_secs(full), "{attempts}: {d:?}");
            assert!(d >= Duration::from_secs(full) / 2, "{attempts}: {d:?}");
        }
    }
}
