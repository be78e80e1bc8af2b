//! Escape sequences in data fields (HL7 v2.5.1 §2.7).
//!
//! Written by [`escape`]: `\F\` field separator, `\S\` component separator, `\T\`
//! subcomponent separator, `\R\` repetition separator, `\E\` escape character (§2.7.1-2.7.4),
//! and a carriage return or line feed as hexadecimal data, `\X0D\` and `\X0A\` (§2.7.5), as
//! is every other control character (NUL, the MLLP framing bytes 0x0B and 0x1C, DEL, C1),
//! by its UTF-8 bytes.
//! CR and LF must be escaped: CR ends a segment, and the parser also accepts LF there. Hex
//! is chosen over the formatting command `\.br\` because formatting commands have meaning only
//! in FT fields (§2.7.6), while names, descriptions and identifiers are ST/ID/XPN.
//!
//! Read by [`unescape`]: the five delimiter sequences, and `\Xhh...\` whose bytes are UTF-8.
//! Anything else (highlighting `\H\`/`\N\`, `\.br\` and the other formatting commands,
//! character-set sequences, an unterminated escape) is kept as written, so no input is refused
//! and `unescape(escape(s)) == s` for every string.

use crate::Delimiters;

/// `text` with every delimiter, CR and LF written as its escape sequence.
pub fn escape(text: &str, d: &Delimiters) -> String {
    let mut out = String::with_capacity(text.len());
    let e = d.escape;
    for c in text.chars() {
        let code = if c == d.field {
            "F"
        } else if c == d.component {
            "S"
        } else if c == d.subcomponent {
            "T"
        } else if c == d.repetition {
            "R"
        } else if c == e {
            "E"
        } else if c == '\r' {
            "X0D"
        } else if c == '\n' {
            "X0A"
        } else if c.is_control() {
            // Any other control character (NUL, MLLP's 0x0B and 0x1C framing bytes, DEL, C1)
            // as hexadecimal data too: never raw inside a message or its frame.
            let mut buf = [0u8; 4];
            out.push(e);
            out.push('X');
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("{b:02X}"));
            }
            out.push(e);
            continue;
        } else {
            out.push(c);
            continue;
        };
        out.push(e);
        out.push_str(code);
        out.push(e);
    }
    out
}

/// The data `text` stands for: escape sequences replaced (see the module's notes).
pub fn unescape(text: &str, d: &Delimiters) -> String {
    let e = d.escape;
    if !text.contains(e) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(e) {
        out.push_str(&rest[..start]);
        let after = &rest[start + e.len_utf8()..];
        let Some(len) = after.find(e) else {
            // Unterminated: kept as written.
            out.push_str(&rest[start..]);
            return out;
        };
        let seq = &after[..len];
        match seq {
            "F" => out.push(d.field),
            "S" => out.push(d.component),
            "T" => out.push(d.subcomponent),
            "R" => out.push(d.repetition),
            "E" => out.push(e),
            _ => match hex_text(seq) {
                Some(s) => out.push_str(&s),
                None => {
                    out.push(e);
                    out.push_str(seq);
                    out.push(e);
                }
            },
        }
        rest = &after[len + e.len_utf8()..];
    }
    out.push_str(rest);
    out
}

/// `Xhhhh...` (an even number of hex digits) as UTF-8 text.
fn hex_text(seq: &str) -> Option<String> {
    let hex = seq.strip_prefix('X')?;
    if hex.is_empty() || hex.len() % 2 != 0 {
        return None;
    }
    let bytes = hex
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64: a small seeded generator, so a failure names its seed and replays.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            hearth_testkit::impair::splitmix64(&mut self.0)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    const ALPHABET: &[char] = &[
        '|', '^', '~', '\\', '&', '#', '!', '$', '\r', '\n', 'X', '0', 'D', 'A', 'F', 'S', 'T',
        'R', 'E', 'H', 'N', '.', 'b', 'r', 'a', ' ', 'é', '€', '\u{0}', '😀',
    ];

    fn delimiter_sets() -> Vec<Delimiters> {
        vec![
            Delimiters::default(),
            Delimiters::new('#', '!', '$', '%', '*').expect("legal set"),
            Delimiters::new('^', '|', '&', '~', '\\').expect("legal set"),
        ]
    }

    #[test]
    fn escape_round_trips_random_strings() {
        for d in delimiter_sets() {
            for seed in 0..3000u64 {
                let mut rng = Rng(seed);
                let len = rng.below(24);
                let s: String = (0..len)
                    .map(|_| ALPHABET[rng.below(ALPHABET.len())])
                    .collect();
                let escaped = escape(&s, &d);
                for c in [
                    d.field,
                    d.component,
                    d.repetition,
                    d.subcomponent,
                    '\r',
                    '\n',
                ] {
                    assert!(!escaped.contains(c), "seed {seed}: {c:?} left raw");
                }
                assert_eq!(unescape(&escaped, &d), s, "seed {seed}, delimiters {d:?}");
            }
        }
    }

    #[test]
    fn the_standard_sequences() {
        let d = Delimiters::default();
        assert_eq!(
            escape("O'Brien|Ann^B~C\\D&E", &d),
            "O'Brien\\F\\Ann\\S\\B\\R\\C\\E\\D\\T\\E"
        );
        assert_eq!(escape("a\r\nb", &d), "a\\X0D\\\\X0A\\b");
        // Every other control character as hex data: never raw in a message or its frame.
        let controls = "n\u{0}u\u{b}l\u{1c}\u{7f}\u{85}";
        let escaped = escape(controls, &d);
        assert_eq!(escaped, "n\\X00\\u\\X0B\\l\\X1C\\\\X7F\\\\XC285\\");
        assert!(!escaped.chars().any(char::is_control));
        assert_eq!(unescape(&escaped, &d), controls);
        assert_eq!(unescape("a\\X0D0A\\b", &d), "a\r\nb");
        assert_eq!(unescape("caf\\XC3A9\\", &d), "café");
        // Kept as written: formatting, highlighting, unterminated, odd or non-UTF-8 hex.
        for kept in [
            "a\\.br\\b",
            "\\H\\x\\N\\",
            "tail\\",
            "\\X0\\",
            "\\XFF\\",
            "\\\\",
        ] {
            assert_eq!(unescape(kept, &d), kept);
        }
    }
}
