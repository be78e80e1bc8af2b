//! MLLP, the minimal lower layer protocol (HL7 v2 transport, MLLP release 2, HL7 v2.5.1
//! Appendix C): each message is framed as `0x0B <message> 0x1C 0x0D` on a TCP stream.
//!
//! [`MllpClient`] opens one connection per message: connect (bounded), write the frame, read
//! one framed reply (bounded in time and size), close. A billing interface sends a handful of
//! messages a visit, so a pooled connection would buy nothing and a fresh one never finds a
//! half-closed socket. A receiver that dedupes on MSH-10 makes resending after a timeout safe.

use crate::{ack, message, Ack, Hl7Error};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Start of block.
pub const START: u8 = 0x0B;
/// End of block, then carriage return.
pub const END: [u8; 2] = [0x1C, 0x0D];

/// The message framed for the wire.
pub fn frame(message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 3);
    out.push(START);
    out.extend_from_slice(message.as_bytes());
    out.extend_from_slice(&END);
    out
}

/// What went wrong sending a message and waiting for its acknowledgment.
#[derive(Debug, thiserror::Error)]
pub enum MllpError {
    #[error("cannot connect to {addr}: {source}")]
    Unreachable {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no connection to {addr} within {timeout:?}")]
    ConnectTimeout { addr: String, timeout: Duration },
    #[error("no acknowledgment within {timeout:?}")]
    AckTimeout { timeout: Duration },
    #[error("connection failed: {0}")]
    Io(#[source] std::io::Error),
    #[error("the receiver closed the connection before a whole acknowledgment")]
    Closed,
    #[error("a frame is over {max} bytes")]
    FrameTooLarge { max: usize },
    #[error("a frame is not UTF-8")]
    NotUtf8,
    #[error("the acknowledgment is malformed: {0}")]
    BadAck(#[source] Hl7Error),
    #[error("the acknowledgment is for control id {got:?}, not {expected:?}")]
    ControlIdMismatch { expected: String, got: String },
    #[error("the message to send is not valid HL7: {0}")]
    BadMessage(#[source] Hl7Error),
}

impl MllpError {
    pub fn code(&self) -> &'static str {
        match self {
            MllpError::Unreachable { .. } => "mllp.unreachable",
            MllpError::ConnectTimeout { .. } => "mllp.connect_timeout",
            MllpError::AckTimeout { .. } => "mllp.ack_timeout",
            MllpError::Io(_) => "mllp.io",
            MllpError::Closed => "mllp.closed",
            MllpError::FrameTooLarge { .. } => "mllp.frame_too_large",
            MllpError::NotUtf8 => "mllp.not_utf8",
            MllpError::BadAck(_) => "mllp.bad_ack",
            MllpError::ControlIdMismatch { .. } => "mllp.control_id_mismatch",
            MllpError::BadMessage(_) => "mllp.bad_message",
        }
    }

    /// The receiver was down, slow or cut off: sending the same message again (same MSH-10)
    /// may succeed. The others are a broken peer or a broken message: retrying repeats them.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            MllpError::Unreachable { .. }
                | MllpError::ConnectTimeout { .. }
                | MllpError::AckTimeout { .. }
                | MllpError::Io(_)
                | MllpError::Closed
        )
    }
}

/// Reads frames from a byte stream fed in pieces. Bytes outside a frame (before a `0x0B`)
/// are skipped: MLLP release 2 says nothing may be there, and a receiver that resynchronises
/// on the next start byte recovers from a peer's stray bytes. A frame's content is bounded.
#[derive(Debug)]
pub struct FrameReader {
    buf: Vec<u8>,
    in_frame: bool,
    max_frame: usize,
}

impl FrameReader {
    pub fn new(max_frame: usize) -> Self {
        FrameReader {
            buf: Vec::new(),
            in_frame: false,
            max_frame,
        }
    }

    /// Takes more bytes; returns the frames they complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, MllpError> {
        let mut frames = Vec::new();
        for &b in bytes {
            if !self.in_frame {
                if b == START {
                    self.in_frame = true;
                    self.buf.clear();
                }
                continue;
            }
            if b == END[1] && self.buf.last() == Some(&END[0]) {
                self.buf.pop();
                self.in_frame = false;
                let content = std::mem::take(&mut self.buf);
                frames.push(String::from_utf8(content).map_err(|_| MllpError::NotUtf8)?);
                continue;
            }
            // `buf` may hold the content and the 0x1C of the end marker.
            if self.buf.len() > self.max_frame {
                self.buf.clear();
                self.in_frame = false;
                return Err(MllpError::FrameTooLarge {
                    max: self.max_frame,
                });
            }
            self.buf.push(b);
        }
        Ok(frames)
    }
}

/// Sends messages to an MLLP receiver and reads their acknowledgments.
#[derive(Debug, Clone)]
pub struct MllpClient {
    /// `host:port`.
    pub addr: String,
    pub connect_timeout: Duration,
    /// From the first byte written to the whole acknowledgment read.
    pub ack_timeout: Duration,
    /// The largest acknowledgment read.
    pub max_reply: usize,
}

impl MllpClient {
    /// A client with a 5 s connect timeout, a 30 s acknowledgment timeout and 1 MiB replies.
    pub fn new(addr: impl Into<String>) -> Self {
        MllpClient {
            addr: addr.into(),
            connect_timeout: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(30),
            max_reply: 1 << 20,
        }
    }

    /// Sends one message and returns its acknowledgment, whatever its code (AA, AE, AR, ...):
    /// the caller decides what an AE means. Fails when the acknowledgment's MSA-2 is not the
    /// message's MSH-10.
    pub async fn send(&self, message: &str) -> Result<Ack, MllpError> {
        let parsed = message::parse(message).map_err(MllpError::BadMessage)?;
        let control_id = parsed
            .control_id()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| MllpError::BadMessage(Hl7Error::field("MSH", 10, "no control id")))?
            .to_string();
        let mut stream = match tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect(&self.addr),
        )
        .await
        {
            Err(_) => {
                return Err(MllpError::ConnectTimeout {
                    addr: self.addr.clone(),
                    timeout: self.connect_timeout,
                })
            }
            Ok(Err(source)) => {
                return Err(MllpError::Unreachable {
                    addr: self.addr.clone(),
                    source,
                })
            }
            Ok(Ok(s)) => s,
        };
        let exchange = async {
            stream
                .write_all(&frame(message))
                .await
                .map_err(MllpError::Io)?;
            stream.flush().await.map_err(MllpError::Io)?;
            let mut reader = FrameReader::new(self.max_reply);
            let mut chunk = vec![0u8; 16 * 1024];
            loop {
                let n = stream.read(&mut chunk).await.map_err(MllpError::Io)?;
                if n == 0 {
                    return Err(MllpError::Closed);
                }
                if let Some(reply) = reader.push(&chunk[..n])?.into_iter().next() {
                    return Ok(reply);
                }
            }
        };
        let reply = tokio::time::timeout(self.ack_timeout, exchange)
            .await
            .map_err(|_| MllpError::AckTimeout {
                timeout: self.ack_timeout,
            })??;
        let _ = stream.shutdown().await;
        let ack = ack::parse_ack(&reply).map_err(MllpError::BadAck)?;
        if ack.control_id != control_id {
            return Err(MllpError::ControlIdMismatch {
                expected: control_id,
                got: ack.control_id,
            });
        }
        Ok(ack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_anywhere_and_garbage_between() {
        let mut wire = b"noise".to_vec();
        wire.extend(frame("MSH|one\r"));
        wire.extend(b"\r\n");
        wire.extend(frame("MSH|two\r"));
        wire.extend(frame(""));
        for step in 1..wire.len() {
            let mut r = FrameReader::new(64);
            let mut got = Vec::new();
            for piece in wire.chunks(step) {
                got.extend(r.push(piece).expect("frames"));
            }
            assert_eq!(got, vec!["MSH|one\r", "MSH|two\r", ""], "pieces of {step}");
        }
    }

    #[test]
    fn a_frame_over_the_limit_is_refused() {
        let mut r = FrameReader::new(8);
        assert_eq!(r.push(&frame("12345678")).expect("fits"), vec!["12345678"]);
        let e = r.push(&frame("123456789")).expect_err("over");
        assert_eq!(e.code(), "mllp.frame_too_large");
        let mut r = FrameReader::new(8);
        let mut got = Vec::new();
        let mut failed = false;
        for b in frame(&"x".repeat(100)) {
            match r.push(&[b]) {
                Ok(f) => got.extend(f),
                Err(e) => {
                    assert_eq!(e.code(), "mllp.frame_too_large");
                    failed = true;
                    break;
                }
            }
        }
        assert!(failed && got.is_empty());
        let e = FrameReader::new(8)
            .push(&[START, 0xFF, 0x1C, 0x0D])
            .expect_err("utf8");
        assert_eq!(e.code(), "mllp.not_utf8");
    }
}
