//! One visit's state and the rules that change it. Pure: every operation takes the time and
//! returns the messages it causes ([`Out`]); where the state lives (memory or Redis) and how
//! messages travel is the [`crate::shared`] module's business.

use crate::error::Refusal;
use hearth_visit_protocol::{
    ErrorCode, Participant, Peer, Role, ServerMsg, Standing, MAX_MEDIA_PARTICIPANTS,
};
use serde::{Deserialize, Serialize};

/// A message for one participant, optionally only for one of their connections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Out {
    pub visit: String,
    pub to: String,
    /// Only this connection (e.g. to close a connection a resume replaced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<String>,
    pub msg: Delivery,
}

/// What reaches a connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Delivery {
    Msg(ServerMsg),
    /// Close the connection without a message (it was replaced by a newer one).
    Close,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Visit {
    pub id: String,
    pub ended: bool,
    pub members: Vec<Member>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub standing: Standing,
    pub media: bool,
    /// SHA-256 of the resume secret (the secret itself is only with the participant).
    pub resume_hash: String,
    pub joined_ms: u64,
    pub admitted_ms: Option<u64>,
    pub left_ms: Option<u64>,
    /// The connection serving them now (`<instance>:<n>`), if any.
    pub conn: Option<String>,
    /// When their last connection dropped.
    pub dropped_ms: Option<u64>,
    /// A clinician: when the access token they hosted with expires (Unix ms). They may not
    /// resume after it (they host again, with a fresh token, checked again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorized_until_ms: Option<u64>,
}

/// Who is joining, as [`Visit::add`] needs it.
pub struct Newcomer {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub media: bool,
    pub resume_hash: String,
    pub conn: String,
    /// See [`Member::authorized_until_ms`].
    pub authorized_until_ms: Option<u64>,
}

/// The longest display name kept (characters).
pub const MAX_NAME: usize = 80;

/// A display name as typed: characters that are invisible or change the text's direction
/// removed (see [`hidden`]), runs of spaces made one, trimmed, at most [`MAX_NAME`]. What the
/// clinician reads is what the patient typed that can be seen, in the order typed.
pub fn clean_name(typed: &str) -> Result<String, Refusal> {
    let mut name = String::new();
    for c in typed.chars().filter(|c| !hidden(*c)) {
        let c = if c.is_whitespace() { ' ' } else { c };
        if c == ' ' && (name.is_empty() || name.ends_with(' ')) {
            continue;
        }
        name.push(c);
    }
    let name: String = name.trim().chars().take(MAX_NAME).collect::<String>();
    let name = name.trim_end().to_owned();
    if name.is_empty() {
        return Err(Refusal::new(
            ErrorCode::BadMessage,
            "please type your name to join",
        ));
    }
    Ok(name)
}

/// The name a clinician is shown under: the one the host message typed, else the identity
/// provider's `name` claim, each cleaned like a patient's ([`clean_name`]); else "Clinician".
pub fn host_name(typed: Option<&str>, from_token: Option<&str>) -> String {
    typed
        .and_then(|n| clean_name(n).ok())
        .or_else(|| from_token.and_then(|n| clean_name(n).ok()))
        .unwrap_or_else(|| "Clinician".to_owned())
}

/// Controls (Unicode Cc), format characters (Cf: the bidirectional embeddings, overrides and
/// isolates, zero-width spaces and joiners, marks, the BOM, invisible operators, tags...),
/// line and paragraph separators, the Hangul fillers that render as nothing, private-use and
/// noncharacter code points.
fn hidden(c: char) -> bool {
    if c.is_control() {
        return true;
    }
    matches!(
        u32::from(c),
        // Cf, Unicode 15.1
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
            // Zl, Zp
            | 0x2028
            | 0x2029
            // Hangul fillers, combining grapheme joiner
            | 0x115F
            | 0x1160
            | 0x3164
            | 0xFFA0
            | 0x034F
            // private use
            | 0xE000..=0xF8FF
            | 0xF0000..=0x10FFFF
            // noncharacters
            | 0xFDD0..=0xFDEF
    ) || (u32::from(c) & 0xFFFE) == 0xFFFE
}

fn out(visit: &str, to: &str, msg: ServerMsg) -> Out {
    Out {
        visit: visit.to_owned(),
        to: to.to_owned(),
        conn: None,
        msg: Delivery::Msg(msg),
    }
}

impl Member {
    fn peer(&self) -> Peer {
        Peer {
            id: self.id.clone(),
            name: self.name.clone(),
            role: self.role,
        }
    }

    fn in_call(&self) -> bool {
        self.standing == Standing::Admitted && self.media && self.conn.is_some()
    }
}

impl Visit {
    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            ..Self::default()
        }
    }

    pub fn member(&self, id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    fn member_mut(&mut self, id: &str) -> Result<&mut Member, Refusal> {
        self.members.iter_mut().find(|m| m.id == id).ok_or_else(|| {
            Refusal::new(
                ErrorCode::UnknownParticipant,
                "no such participant in this visit",
            )
        })
    }

    fn open(&self) -> Result<(), Refusal> {
        if self.ended {
            return Err(Refusal::new(ErrorCode::VisitOver, "this visit is over"));
        }
        Ok(())
    }

    fn clinician(&self, by: &str) -> Result<(), Refusal> {
        match self.member(by) {
            Some(m) if m.role == Role::Clinician && m.standing != Standing::Left => Ok(()),
            _ => Err(Refusal::new(
                ErrorCode::NotClinician,
                "only a clinician can do this",
            )),
        }
    }

    /// Everyone in the visit, as clinicians see them.
    pub fn participants(&self) -> Vec<Participant> {
        self.members
            .iter()
            .map(|m| Participant {
                id: m.id.clone(),
                name: m.name.clone(),
                role: m.role,
                standing: m.standing,
                connected: m.conn.is_some(),
                media: m.media,
                joined_ms: m.joined_ms,
                admitted_ms: m.admitted_ms,
                left_ms: m.left_ms,
            })
            .collect()
    }

    /// The roster, to every connected clinician.
    pub(crate) fn roster(&self) -> Vec<Out> {
        let participants = self.participants();
        self.members
            .iter()
            .filter(|m| {
                m.role == Role::Clinician && m.conn.is_some() && m.standing != Standing::Left
            })
            .map(|m| {
                out(
                    &self.id,
                    &m.id,
                    ServerMsg::Roster {
                        visit: self.id.clone(),
                        participants: participants.clone(),
                    },
                )
            })
            .collect()
    }

    /// The peers `id` exchanges media with: admitted, with media, connected, not `id`.
    pub fn peers_of(&self, id: &str) -> Vec<Peer> {
        self.members
            .iter()
            .filter(|m| m.id != id && m.in_call())
            .map(Member::peer)
            .collect()
    }

    /// `id` is in the call now: it gets `admitted` with its peers, they get `peer_joined`.
    /// `peer_joined` goes first so that peers know the newcomer before its offer arrives.
    fn enter_call(&self, id: &str) -> Vec<Out> {
        let Some(member) = self.member(id) else {
            return Vec::new();
        };
        if member.conn.is_none() {
            return Vec::new();
        }
        let mut outs = Vec::new();
        if member.media {
            for peer in self.peers_of(id) {
                outs.push(out(
                    &self.id,
                    &peer.id,
                    ServerMsg::PeerJoined {
                        peer: member.peer(),
                    },
                ));
            }
        }
        let peers = if member.media {
            self.peers_of(id)
        } else {
            Vec::new()
        };
        outs.push(out(&self.id, id, ServerMsg::Admitted { peers, ice: None }));
        outs
    }

    /// `id` left the call (for now or for good): its peers drop their connection to it.
    fn leave_call(&self, id: &str) -> Vec<Out> {
        self.peers_of(id)
            .into_iter()
            .map(|p| {
                out(
                    &self.id,
                    &p.id,
                    ServerMsg::PeerLeft {
                        peer: id.to_owned(),
                    },
                )
            })
            .collect()
    }

    /// A patient, guest (waiting) or clinician (admitted at once) joins.
    /// A visit holds at most `max_members` (present or gone: a link cannot grow it forever).
    pub fn add(
        &mut self,
        who: Newcomer,
        now: u64,
        max_members: usize,
    ) -> Result<Vec<Out>, Refusal> {
        self.open()?;
        if self.members.len() >= max_members {
            return Err(Refusal::new(
                ErrorCode::VisitFull,
                format!("a visit has at most {max_members} participants"),
            ));
        }
        let clinician = who.role == Role::Clinician;
        if clinician && who.media && self.media_count() >= MAX_MEDIA_PARTICIPANTS {
            return Err(full());
        }
        let id = who.id.clone();
        self.members.push(Member {
            id: who.id,
            name: who.name,
            role: who.role,
            standing: if clinician {
                Standing::Admitted
            } else {
                Standing::Waiting
            },
            media: who.media,
            resume_hash: who.resume_hash,
            joined_ms: now,
            admitted_ms: clinician.then_some(now),
            left_ms: None,
            conn: Some(who.conn),
            dropped_ms: None,
            authorized_until_ms: who.authorized_until_ms,
        });
        let mut outs = if clinician {
            self.enter_call(&id)
        } else {
            vec![out(&self.id, &id, ServerMsg::Waiting)]
        };
        outs.extend(self.roster());
        Ok(outs)
    }

    fn media_count(&self) -> usize {
        self.members
            .iter()
            .filter(|m| m.standing == Standing::Admitted && m.media)
            .count()
    }

    /// A clinician lets a waiting participant in.
    pub fn admit(&mut self, by: &str, id: &str, now: u64) -> Result<Vec<Out>, Refusal> {
        self.open()?;
        self.clinician(by)?;
        let full_now = self.media_count() >= MAX_MEDIA_PARTICIPANTS;
        let member = self.member_mut(id)?;
        match member.standing {
            Standing::Waiting => {}
            Standing::Admitted => return Ok(Vec::new()),
            Standing::Left => {
                return Err(Refusal::new(
                    ErrorCode::UnknownParticipant,
                    "that participant has left",
                ))
            }
        }
        if member.media && full_now {
            return Err(full());
        }
        member.standing = Standing::Admitted;
        member.admitted_ms = Some(now);
        let mut outs = self.enter_call(id);
        outs.extend(self.roster());
        Ok(outs)
    }

    /// A clinician sends a participant away (`by == id` is a participant leaving).
    pub fn remove(&mut self, by: &str, id: &str, now: u64) -> Result<Vec<Out>, Refusal> {
        if by != id {
            self.clinician(by)?;
        }
        let member = self.member_mut(id)?;
        if member.standing == Standing::Left {
            return Ok(Vec::new());
        }
        let mut outs = self.leave_call(id);
        let member = self.member_mut(id)?;
        member.standing = Standing::Left;
        member.left_ms = Some(now);
        let connected = member.conn.take().is_some();
        if by != id && connected {
            outs.push(out(&self.id, id, ServerMsg::Removed));
        }
        outs.extend(self.roster());
        Ok(outs)
    }

    /// A clinician ends the visit: everyone gets `ended`, links stop working.
    pub fn end(&mut self, by: &str, now: u64) -> Result<Vec<Out>, Refusal> {
        self.clinician(by)?;
        if self.ended {
            return Ok(Vec::new());
        }
        self.ended = true;
        let mut outs = Vec::new();
        for m in &mut self.members {
            if m.standing != Standing::Left {
                m.standing = Standing::Left;
                m.left_ms = Some(now);
            }
            if m.conn.take().is_some() {
                outs.push(out(&self.id, &m.id, ServerMsg::Ended));
            }
        }
        Ok(outs)
    }

    /// A participant comes back on a new connection with their resume secret.
    pub fn resume(
        &mut self,
        id: &str,
        secret_ok: impl Fn(&str) -> bool,
        conn: &str,
        now: u64,
    ) -> Result<(Member, Vec<Out>), Refusal> {
        let refused = || {
            Refusal::new(
                ErrorCode::ResumeRefused,
                "your place in this visit has lapsed; open the link again to rejoin",
            )
        };
        self.open()?;
        let member = self
            .members
            .iter_mut()
            .find(|m| m.id == id)
            .ok_or_else(refused)?;
        if !secret_ok(&member.resume_hash) || member.standing == Standing::Left {
            return Err(refused());
        }
        if member.authorized_until_ms.is_some_and(|until| until <= now) {
            return Err(Refusal::new(
                ErrorCode::ResumeRefused,
                "your sign-in has expired since you joined; host the visit again",
            ));
        }
        let mut outs = Vec::new();
        let old = member.conn.replace(conn.to_owned());
        member.dropped_ms = None;
        let standing = member.standing;
        let snapshot = member.clone();
        if let Some(old) = old {
            // The old connection may still be open somewhere (a half-open socket): close it,
            // and peers drop their connection to the old one before the new offer.
            outs.push(Out {
                visit: self.id.clone(),
                to: id.to_owned(),
                conn: Some(old),
                msg: Delivery::Close,
            });
        }
        match standing {
            Standing::Waiting => outs.push(out(&self.id, id, ServerMsg::Waiting)),
            _ => outs.extend(self.enter_call(id)),
        }
        outs.extend(self.roster());
        Ok((snapshot, outs))
    }

    /// A connection dropped. Nothing happens if the participant already has a newer one.
    pub fn disconnect(&mut self, id: &str, conn: &str, now: u64) -> Vec<Out> {
        let Some(member) = self.members.iter().find(|m| m.id == id) else {
            return Vec::new();
        };
        if member.conn.as_deref() != Some(conn) {
            return Vec::new();
        }
        let mut outs = self.leave_call(id);
        if let Ok(member) = self.member_mut(id) {
            member.conn = None;
            member.dropped_ms = Some(now);
        }
        outs.extend(self.roster());
        outs
    }

    /// Housekeeping: connections of instances that are gone count as dropped; participants
    /// dropped longer than `grace_ms` have left (at the time they dropped).
    pub fn sweep(&mut self, now: u64, grace_ms: u64, alive: &dyn Fn(&str) -> bool) -> Vec<Out> {
        let mut outs = Vec::new();
        let dead: Vec<(String, String)> = self
            .members
            .iter()
            .filter_map(|m| {
                let conn = m.conn.as_ref()?;
                let instance = conn.split(':').next().unwrap_or_default();
                (!alive(instance)).then(|| (m.id.clone(), conn.clone()))
            })
            .collect();
        for (id, conn) in dead {
            outs.extend(self.disconnect(&id, &conn, now));
        }
        let mut lapsed = false;
        for m in &mut self.members {
            if let (None, Some(dropped), true) =
                (&m.conn, m.dropped_ms, m.standing != Standing::Left)
            {
                if now.saturating_sub(dropped) >= grace_ms {
                    m.standing = Standing::Left;
                    m.left_ms = Some(dropped);
                    lapsed = true;
                }
            }
        }
        if lapsed {
            outs.extend(self.roster());
        }
        outs
    }

    /// Whether [`Visit::sweep`] would change anything (so a sweep need not write).
    pub fn needs_sweep(&self, now: u64, grace_ms: u64, alive: &dyn Fn(&str) -> bool) -> bool {
        let mut swept = self.clone();
        swept.sweep(now, grace_ms, alive);
        swept != *self
    }

    /// Signaling from `from` to `to` is allowed only between admitted participants.
    pub fn check_signal(&self, from: &str, to: &str) -> Result<(), Refusal> {
        self.open()?;
        let not_admitted = |who: &str| {
            Refusal::new(
                ErrorCode::NotAdmitted,
                format!("{who} is not in the visit (waiting room or gone): no signaling"),
            )
        };
        match self.member(from) {
            Some(m) if m.standing == Standing::Admitted => {}
            _ => return Err(not_admitted("the sender")),
        }
        match self.member(to) {
            None => Err(Refusal::new(
                ErrorCode::UnknownParticipant,
                "no such participant in this visit",
            )),
            Some(m) if m.standing == Standing::Admitted && m.conn.is_some() => Ok(()),
            Some(_) => Err(not_admitted("the recipient")),
        }
    }

    /// Instances named by current connections.
    pub fn instances(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .members
            .iter()
            .filter_map(|m| m.conn.as_ref()?.split(':').next().map(str::to_owned))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

fn full() -> Refusal {
    Refusal::new(
        ErrorCode::VisitFull,
        format!("a visit has at most {MAX_MEDIA_PARTICIPANTS} participants with video"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn newcomer(id: &str, role: Role) -> Newcomer {
        Newcomer {
            id: id.into(),
            name: id.to_uppercase(),
            role,
            media: true,
            resume_hash: format!("hash-{id}"),
            conn: format!("i1:{id}"),
            authorized_until_ms: None,
        }
    }

    #[test]
    fn a_clinician_resumes_only_while_the_token_they_hosted_with_is_valid() {
        let mut v = Visit::new("v");
        let doc = Newcomer {
            authorized_until_ms: Some(5_000),
            ..newcomer("doc", Role::Clinician)
        };
        v.add(doc, 1_000, 10).unwrap();
        v.disconnect("doc", "i1:doc", 2_000);
        assert!(v.resume("doc", |_| true, "i1:2", 4_999).is_ok());
        v.disconnect("doc", "i1:2", 4_999);
        let e = v.resume("doc", |_| true, "i1:3", 5_000).unwrap_err();
        assert_eq!(e.code, ErrorCode::ResumeRefused);
        assert!(e.message.contains("host the visit again"), "{e:?}");
        // The refused connection took nothing over.
        assert_eq!(v.member("doc").and_then(|m| m.conn.as_deref()), None);
    }

    fn msgs_to<'a>(outs: &'a [Out], to: &str) -> Vec<&'a ServerMsg> {
        outs.iter()
            .filter(|o| o.to == to)
            .filter_map(|o| match &o.msg {
                Delivery::Msg(m) => Some(m),
                Delivery::Close => None,
            })
            .collect()
    }

    #[test]
    fn waiting_room_admit_and_signaling_rules() {
        let mut v = Visit::new("a1");
        let outs = v
            .add(newcomer("doc", Role::Clinician), 1, 50)
            .unwrap_or_default();
        assert_eq!(
            msgs_to(&outs, "doc")[0],
            &ServerMsg::Admitted {
                peers: vec![],
                ice: None
            }
        );
        let outs = v
            .add(newcomer("pat", Role::Patient), 2, 50)
            .unwrap_or_default();
        assert_eq!(msgs_to(&outs, "pat"), vec![&ServerMsg::Waiting]);
        assert!(matches!(msgs_to(&outs, "doc")[0], ServerMsg::Roster { .. }));
        // Nobody signals to or from the waiting room.
        assert_eq!(
            v.check_signal("doc", "pat").map_err(|e| e.code),
            Err(ErrorCode::NotAdmitted)
        );
        assert_eq!(
            v.check_signal("pat", "doc").map_err(|e| e.code),
            Err(ErrorCode::NotAdmitted)
        );
        // Only a clinician admits.
        assert_eq!(
            v.admit("pat", "pat", 3).map_err(|e| e.code),
            Err(ErrorCode::NotClinician)
        );
        let outs = v.admit("doc", "pat", 3).unwrap_or_default();
        // The clinician learns of the patient before the patient's offer can come.
        let first_doc = outs.iter().position(|o| o.to == "doc");
        let first_pat = outs.iter().position(|o| o.to == "pat");
        assert!(first_doc < first_pat);
        assert!(
            matches!(msgs_to(&outs, "pat")[0], ServerMsg::Admitted { peers, .. } if peers.len() == 1)
        );
        assert_eq!(v.check_signal("pat", "doc"), Ok(()));
        assert_eq!(v.member("pat").and_then(|m| m.admitted_ms), Some(3));
    }

    #[test]
    fn the_mesh_holds_four() {
        let mut v = Visit::new("a1");
        let _ = v.add(newcomer("doc", Role::Clinician), 1, 50);
        for g in ["g1", "g2", "g3", "g4"] {
            let _ = v.add(newcomer(g, Role::Guest), 1, 50);
        }
        for g in ["g1", "g2", "g3"] {
            assert!(v.admit("doc", g, 2).is_ok());
        }
        assert_eq!(
            v.admit("doc", "g4", 2).map_err(|e| e.code),
            Err(ErrorCode::VisitFull)
        );
    }

    #[test]
    fn a_dropped_participant_resumes_or_lapses_after_the_grace_period() {
        let mut v = Visit::new("a1");
        let _ = v.add(newcomer("doc", Role::Clinician), 1, 50);
        let _ = v.add(newcomer("pat", Role::Patient), 1, 50);
        let _ = v.admit("doc", "pat", 2);
        let outs = v.disconnect("pat", "i1:pat", 10);
        assert_eq!(
            msgs_to(&outs, "doc")[0],
            &ServerMsg::PeerLeft { peer: "pat".into() }
        );
        // A stale disconnect of an older connection changes nothing.
        assert!(v.disconnect("pat", "i1:old", 11).is_empty());
        let refused = v
            .resume("pat", |h| h == "wrong", "i2:1", 0)
            .map_err(|e| e.code);
        assert_eq!(refused.err(), Some(ErrorCode::ResumeRefused));
        let (m, outs) = v
            .resume("pat", |h| h == "hash-pat", "i2:1", 0)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.standing, Standing::Admitted);
        assert!(matches!(
            msgs_to(&outs, "pat")[0],
            ServerMsg::Admitted { .. }
        ));
        assert!(matches!(
            msgs_to(&outs, "doc")[0],
            ServerMsg::PeerJoined { .. }
        ));
        // Instance i2 dies: the sweep drops the patient, and after the grace period they left.
        let alive = |i: &str| i == "i1";
        assert!(v.needs_sweep(20, 60_000, &alive));
        let _ = v.sweep(20, 60_000, &alive);
        assert_eq!(v.member("pat").map(|m| m.conn.is_none()), Some(true));
        assert!(!v.needs_sweep(30, 60_000, &alive));
        let _ = v.sweep(60_020, 60_000, &alive);
        assert_eq!(
            v.member("pat").map(|m| (m.standing, m.left_ms)),
            Some((Standing::Left, Some(20)))
        );
        assert_eq!(
            v.resume("pat", |_| true, "i1:9", 0)
                .map(|_| ())
                .map_err(|e| e.code),
            Err(ErrorCode::ResumeRefused)
        );
    }

    #[test]
    fn removing_and_ending() {
        let mut v = Visit::new("a1");
        let _ = v.add(newcomer("doc", Role::Clinician), 1, 50);
        let _ = v.add(newcomer("pat", Role::Patient), 1, 50);
        let outs = v.remove("doc", "pat", 5).unwrap_or_default();
        assert_eq!(msgs_to(&outs, "pat"), vec![&ServerMsg::Removed]);
        let _ = v.add(newcomer("g", Role::Guest), 6, 50);
        let outs = v.end("doc", 7).unwrap_or_default();
        assert_eq!(msgs_to(&outs, "g"), vec![&ServerMsg::Ended]);
        assert!(v.members.iter().all(|m| m.standing == Standing::Left));
        assert_eq!(
            v.add(newcomer("late", Role::Patient), 8, 50)
                .map(|_| ())
                .map_err(|e| e.code),
            Err(ErrorCode::VisitOver)
        );
    }

    #[test]
    fn names_are_cleaned() {
        assert_eq!(
            clean_name("  Ana\u{7} Lopez \n").ok(),
            Some("Ana Lopez".into())
        );
        assert!(clean_name(" \t").is_err());
        assert_eq!(
            clean_name(&"x".repeat(500)).map(|n| n.len()).ok(),
            Some(MAX_NAME)
        );
    }

    #[test]
    fn a_clinicians_name_from_the_identity_provider_is_cleaned_too() {
        // The provider's `name` claim is the organisation's data, but still shown to patients.
        assert_eq!(
            host_name(None, Some("Dr \u{202E}ztiL\u{202C}\u{200B} Ana")),
            "Dr ztiL Ana"
        );
        assert_eq!(host_name(Some("\u{200B}"), Some("Dr Ana")), "Dr Ana");
        assert_eq!(host_name(Some(" Dr  Bo "), Some("Dr Ana")), "Dr Bo");
        assert_eq!(host_name(None, Some("\u{2066}\u{2069}")), "Clinician");
        assert_eq!(host_name(None, None), "Clinician");
    }

    #[test]
    fn names_lose_invisible_and_direction_changing_characters() {
        // Each of these would make a name read differently from what was typed, or hide text.
        let sneaky = [
            '\u{202A}',
            '\u{202B}',
            '\u{202C}',
            '\u{202D}',
            '\u{202E}', // embeddings, overrides
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}', // isolates
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{200E}',
            '\u{200F}', // zero widths, marks
            '\u{061C}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{2060}',
            '\u{2064}',
            '\u{180E}', //
            '\u{E0041}',
            '\u{2028}',
            '\u{2029}',
            '\u{3164}',
            '\u{0085}',
            '\u{001B}', //
            '\u{E000}',
            '\u{FFFF}',
        ];
        for c in sneaky {
            assert_eq!(
                clean_name(&format!("Ana{c}Lopez")).ok(),
                Some("AnaLopez".into()),
                "U+{:04X}",
                u32::from(c)
            );
            assert!(
                clean_name(&format!("{c}{c}")).is_err(),
                "U+{:04X}",
                u32::from(c)
            );
        }
        // "Dr Evil" shown as "Dr liveE" reversed by an override: the override goes, the
        // letters stay in the order typed.
        assert_eq!(
            clean_name("Dr \u{202E}liveE\u{202C}").ok(),
            Some("Dr liveE".into())
        );
        // Letters of every script, accents and ordinary spaces stay; runs of space are one.
        assert_eq!(
            clean_name("  José  Núñez\u{00A0}\u{3000}محمد 李  ").ok(),
            Some("José Núñez محمد 李".into())
        );
    }
}
