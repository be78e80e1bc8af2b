//! An HL7 v2 message (or an MLLP stream, or an ACK) as bytes, as a receiver would send it:
//! reading it must never panic, and every message the parser accepts must re-encode to text
//! that parses to the same message (and encodes to the same text again).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut reader = hearth_hl7::FrameReader::new(4096);
    let half = data.len() / 2;
    let _ = reader
        .push(&data[..half])
        .and_then(|_| reader.push(&data[half..]));
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match hearth_hl7::parse(text) {
        Ok(m) => {
            let encoded = m.encode();
            let again = hearth_hl7::parse(&encoded).expect("a re-encoded message parses");
            assert_eq!(again, m, "re-encoding changed the message");
            assert_eq!(again.encode(), encoded, "encoding is not stable");
            if let Ok(ack) = hearth_hl7::ack::ack_of(&m) {
                assert!(!ack.control_id.is_empty());
            }
        }
        Err(e) => assert!(!e.to_string().is_empty() && e.code().starts_with("hl7.")),
    }
});
