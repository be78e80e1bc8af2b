//! The types that cross Hearth's IPC boundary, shared by the Yew UI (wasm32) and the
//! Tauri shell (native). Serde-only: no I/O, no platform code, so it compiles everywhere.
//!
//! Every command's request and response lives here, together with [`IpcError`] and its
//! stable [`ErrorCode`]s that the UI branches on. Times cross as RFC 3339 strings and dates as
//! `YYYY-MM-DD`, with the local-time labels the UI shows computed by the core, so the UI never
//! needs a time-zone database.

pub mod call;
pub mod chart;
pub mod error;
pub mod note;
pub mod schedule;
pub mod status;
pub mod sync;
pub mod visit;

pub use call::*;
pub use chart::*;
pub use error::*;
pub use note::*;
pub use schedule::*;
pub use status::*;
pub use sync::*;
pub use visit::*;

/// The names of the commands the shell exposes. The UI invokes them by these names and the
/// shell's capability files grant them; a test checks that both agree.
pub mod command {
    pub const APP_STATUS: &str = "app_status";
    pub const SCHEDULE_DAY: &str = "schedule_day";
    pub const OPEN_CHART: &str = "open_chart";
    pub const SYNC_PANEL: &str = "sync_panel";
    pub const RESOLVE_CONFLICT: &str = "resolve_conflict";
    pub const SETTLE_FAILED_WRITE: &str = "settle_failed_write";
    pub const SIGN_IN: &str = "sign_in";
    pub const SIGN_OUT: &str = "sign_out";
    pub const ACTIVITY: &str = "activity";
    pub const LOCK_NOW: &str = "lock_now";
    pub const VISIT_ROOM: &str = "visit_room";
    pub const VISIT_INVITE: &str = "visit_invite";
    pub const VISIT_ADMIT: &str = "visit_admit";
    /// Subscribes the window to the status: the answer is nothing, then every change of the
    /// [`crate::AppStatus`] (the first at once) comes over the channel passed as `channel`.
    pub const WATCH_STATUS: &str = "watch_status";
    /// Subscribes the window to one visit's room (`request`: [`crate::VisitRoomRequest`]):
    /// every change of the [`crate::VisitRoom`] (the first at once) comes over `channel`. A
    /// new subscription replaces the window's previous one.
    pub const WATCH_VISIT_ROOM: &str = "watch_visit_room";
    /// Joins the visit with camera and microphone ([`crate::CallStartRequest`]).
    pub const CALL_START: &str = "call_start";
    /// The pre-call device check ([`crate::CallDevices`]).
    pub const CALL_DEVICES: &str = "call_devices";
    /// Lets a participant waiting for the call in ([`crate::CallAdmitRequest`]).
    pub const CALL_ADMIT: &str = "call_admit";
    /// The pane painted (or dropped) the frames up to this one ([`crate::CallFrameAck`]).
    pub const CALL_FRAME_ACK: &str = "call_frame_ack";
    pub const CALL_MUTE: &str = "call_mute";
    pub const CALL_CAMERA: &str = "call_camera";
    pub const CALL_CHAT: &str = "call_chat";
    /// Leaves the call; the others carry on.
    pub const CALL_LEAVE: &str = "call_leave";
    /// Ends the visit for everyone, then records its Encounter.
    pub const CALL_END: &str = "call_end";
    /// Subscribes the window to the call ([`crate::CallView`], on every change).
    pub const WATCH_CALL: &str = "watch_call";
    /// Subscribes the window to the call's video frames ([`crate::CallFramesRequest`]):
    /// binary messages, each a [`crate::FrameHeader`] and the picture.
    pub const WATCH_CALL_FRAMES: &str = "watch_call_frames";
    pub const NOTE_OPEN: &str = "note_open";
    pub const NOTE_SAVE: &str = "note_save";
    pub const NOTE_SIGN: &str = "note_sign";
    pub const NOTE_AMEND: &str = "note_amend";
    pub const CHARGE_CORRECT: &str = "charge_correct";
    pub const CODE_SEARCH: &str = "code_search";
    /// All commands, in the order they are registered.
    pub const ALL: &[&str] = &[
        APP_STATUS,
        SCHEDULE_DAY,
        OPEN_CHART,
        SYNC_PANEL,
        RESOLVE_CONFLICT,
        SETTLE_FAILED_WRITE,
        SIGN_IN,
        SIGN_OUT,
        ACTIVITY,
        LOCK_NOW,
        VISIT_ROOM,
        VISIT_INVITE,
        VISIT_ADMIT,
        WATCH_STATUS,
        WATCH_VISIT_ROOM,
        CALL_START,
        CALL_DEVICES,
        CALL_ADMIT,
        CALL_FRAME_ACK,
        CALL_MUTE,
        CALL_CAMERA,
        CALL_CHAT,
        CALL_LEAVE,
        CALL_END,
        WATCH_CALL,
        WATCH_CALL_FRAMES,
        NOTE_OPEN,
        NOTE_SAVE,
        NOTE_SIGN,
        NOTE_AMEND,
        CHARGE_CORRECT,
        CODE_SEARCH,
    ];
}
