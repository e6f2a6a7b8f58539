//! Body decoding of Internet messages: transfer encodings (quoted-printable, base64) and
//! charsets (see the [`mime`](crate::mime) module docs for the charset policy).

use encoding_rs::{DecoderResult, Encoding};

/// Undoes a `Content-Transfer-Encoding` (`quoted-printable`, `base64`; anything else is taken
/// as it is).
pub(crate) fn decode_transfer(encoding: &str, body: &[u8]) -> Vec<u8> {
    match encoding {
        "quoted-printable" => decode_quoted_printable(body),
        "base64" => decode_base64(body),
        _ => body.to_vec(),
    }
}

/// The value of a hexadecimal digit (either case).
fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes quoted-printable leniently: `=XX` (either case) is a byte, `=` at the end of a line
/// (possibly followed by spaces) is a soft line break, any other `=` is kept as it is.
pub fn decode_quoted_printable(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if b != b'=' {
            out.push(b);
            i += 1;
            continue;
        }
        if let (Some(h), Some(l)) = (
            input.get(i + 1).copied().and_then(hex_value),
            input.get(i + 2).copied().and_then(hex_value),
        ) {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        // Soft line break: "=" then optional blanks then a line end (or the end of input).
        let mut j = i + 1;
        while j < input.len() && matches!(input[j], b' ' | b'\t') {
            j += 1;
        }
        match input.get(j) {
            None => i = j,
            Some(b'\n') => i = j + 1,
            Some(b'\r') if input.get(j + 1) == Some(&b'\n') => i = j + 2,
            _ => {
                out.push(b'=');
                i += 1;
            }
        }
    }
    out
}

/// The value of a base64 character (`None` outside the alphabet).
fn base64_value(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Decodes base64 leniently: characters outside the alphabet (line breaks, padding, junk) are
/// skipped, and a final incomplete group gives the bytes it holds.
pub fn decode_base64(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for v in input.iter().filter_map(|&b| base64_value(b)) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Decodes `bytes` in a charset (see the [`mime`](crate::mime) module doc for the policy) and returns the text and
/// the number of bytes replaced by U+FFFD because they were not valid in it.
pub fn decode_charset(bytes: &[u8], charset: Option<&str>) -> (String, usize) {
    let encoding = charset
        .map(|c| c.trim().trim_matches('"').to_ascii_lowercase())
        .filter(|c| !is_ascii_label(c))
        .and_then(|c| Encoding::for_label(c.as_bytes()))
        .filter(|e| *e != encoding_rs::REPLACEMENT && *e != encoding_rs::UTF_8);
    match encoding {
        Some(e) => decode_with(e, bytes),
        None => decode_utf8_lenient(bytes),
    }
}

/// Labels of US-ASCII (which the Encoding Standard reads as windows-1252; here, as UTF-8, its
/// superset, so that 8-bit bytes in a message declared ASCII count as replaced unless UTF-8).
fn is_ascii_label(label: &str) -> bool {
    matches!(
        label,
        "us-ascii" | "ascii" | "ansi_x3.4-1968" | "iso646-us" | "us" | "iso-ir-6" | "cp367"
    )
}

/// UTF-8, each maximal invalid sequence replaced by U+FFFD; returns the text and the number of
/// invalid bytes.
pub fn decode_utf8_lenient(bytes: &[u8]) -> (String, usize) {
    let mut out = String::with_capacity(bytes.len());
    let mut bad = 0;
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        if !chunk.invalid().is_empty() {
            bad += chunk.invalid().len();
            out.push('\u{FFFD}');
        }
    }
    (out, bad)
}

/// Decodes `bytes` in `encoding`, each malformed sequence replaced by U+FFFD; returns the text and
/// the number of malformed bytes.
fn decode_with(encoding: &'static Encoding, bytes: &[u8]) -> (String, usize) {
    let mut decoder = encoding.new_decoder_without_bom_handling();
    let mut out = String::with_capacity(bytes.len() + 16);
    let mut src = bytes;
    let mut bad = 0;
    loop {
        let needed = decoder
            .max_utf8_buffer_length_without_replacement(src.len())
            .unwrap_or(src.len() * 4 + 16);
        out.reserve(needed);
        let (result, read) = decoder.decode_to_string_without_replacement(src, &mut out, true);
        src = &src[read..];
        match result {
            DecoderResult::InputEmpty => break,
            DecoderResult::OutputFull => {}
            DecoderResult::Malformed(len, _) => {
                bad += usize::from(len);
                out.push('\u{FFFD}');
            }
        }
    }
    (out, bad)
}
