//! HL7 v2.5.1 for Hearth's billing interface.
//!
//! - [`message`]: the message model (segments, fields, repetitions, components,
//!   subcomponents), its encoder and its bounded parser (chapter 2).
//! - [`escape`]: escape sequences (§2.7).
//! - [`ack`]: acknowledgments (MSA, ERR).
//! - [`dft`]: DFT^P03 charges built from plain structs (chapter 6).
//! - [`mllp`]: the MLLP transport and a client that sends a message and reads its ACK.
//!
//! No value of a message appears in an error, a Debug or a log: a field may hold a
//! patient's name.

pub mod ack;
pub mod dft;
mod error;
pub mod escape;
pub mod message;
pub mod mllp;

pub use ack::{parse_ack, Ack, AckCode};
pub use dft::{
    ChargeLine, CodeSystem, DftP03, Diagnosis, Patient, PatientIdentifier, Provider, Visit,
};
pub use error::Hl7Error;
pub use escape::{escape, unescape};
pub use message::{
    parse, parse_with, Component, Delimiters, Field, Limits, Message, Path, Repetition, Segment,
};
pub use mllp::{frame, FrameReader, MllpClient, MllpError};
