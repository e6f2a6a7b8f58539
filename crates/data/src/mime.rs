//! A small, lenient reader of Internet messages (RFC 5322 / MIME): headers, `Subject` with
//! encoded words (RFC 2047), multipart walking, quoted-printable and base64, charsets, HTML.
//!
//! It never fails: malformed input gives the best text it can. Bytes that are not valid in the
//! charset they are read in are replaced by U+FFFD and counted ([`MessageText::replaced_bytes`]).
//!
//! Charset policy: a declared charset that the WHATWG Encoding Standard knows (via `encoding_rs`,
//! e.g. `iso-8859-1`, `windows-1252`, `koi8-r`, `gb2312`, `big5`, `euc-kr`, `shift_jis`) is
//! decoded as such; `us-ascii`, a missing, unknown or unsupported charset is read as UTF-8.

use encoding_rs::{DecoderResult, Encoding};

use crate::html::html_to_text;

/// How deep multiparts and attached messages may nest before the rest is ignored.
const MAX_DEPTH: usize = 32;

/// The text content of an e-mail message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageText {
    /// The decoded `Subject` header on one line (empty when there is none).
    pub subject: String,
    /// The text of the body: the text parts, decoded, HTML removed, parts separated by a blank
    /// line; line breaks normalised to `\n`, trailing spaces and repeated blank lines removed.
    pub body: String,
    /// Bytes that were not valid in their charset and were replaced by U+FFFD.
    pub replaced_bytes: usize,
}

impl MessageText {
    /// The example text of the spam task: the subject line, a blank line, then the body.
    pub fn example_text(&self) -> String {
        format!("{}\n\n{}", self.subject, self.body)
    }
}

/// Extracts the subject and the text body of a raw message (an mbox `From ` line first is
/// allowed).
pub fn extract_message(raw: &[u8]) -> MessageText {
    let mut replaced = 0;
    let (headers, body) = split_entity(raw);
    let subject = header(&headers, "subject")
        .map(|v| decode_header_value(v, &mut replaced))
        .unwrap_or_default();
    let text = entity_text(&headers, body, ContentType::text_plain(), 0, &mut replaced)
        .map(|p| p.text)
        .unwrap_or_default();
    MessageText {
        subject,
        body: normalize_text(&text),
        replaced_bytes: replaced,
    }
}

/// A header: lower-case name, unfolded raw value.
type Header = (String, Vec<u8>);

fn header<'h>(headers: &'h [Header], name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

/// Lines of `bytes` with their start offsets; each line without its `\n` (a `\r` is kept).
fn lines_with_offsets(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= bytes.len() {
            return None;
        }
        let end = bytes[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |p| start + p);
        let line = (start, &bytes[start..end]);
        start = end + 1;
        Some(line)
    })
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn is_header_name(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b) && b != b':')
}

/// Splits an entity into its headers (unfolded) and its body. The headers end at the first
/// blank line, or at the first line that is neither a header nor a continuation line (then the
/// body starts there). An mbox `From ` line before the headers is skipped.
fn split_entity(raw: &[u8]) -> (Vec<Header>, &[u8]) {
    let mut headers: Vec<Header> = Vec::new();
    for (n, (start, line)) in lines_with_offsets(raw).enumerate() {
        let line = strip_cr(line);
        if line.is_empty() {
            return (headers, &raw[(start + 1).min(raw.len())..]);
        }
        if matches!(line[0], b' ' | b'\t') {
            if let Some((_, value)) = headers.last_mut() {
                value.extend_from_slice(line);
                continue;
            }
        } else if let Some(colon) = line.iter().position(|&b| b == b':')
            && is_header_name(&line[..colon])
        {
            let name = String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase();
            headers.push((name, line[colon + 1..].to_vec()));
            continue;
        } else if n == 0 && line.starts_with(b"From ") {
            continue;
        }
        return (headers, &raw[start..]);
    }
    (headers, &raw[raw.len()..])
}

/// A parsed `Content-Type`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ContentType {
    main: String,
    sub: String,
    params: Vec<(String, String)>,
}

impl ContentType {
    fn text_plain() -> Self {
        ContentType {
            main: "text".into(),
            sub: "plain".into(),
            params: Vec::new(),
        }
    }

    fn message_rfc822() -> Self {
        ContentType {
            main: "message".into(),
            sub: "rfc822".into(),
            params: Vec::new(),
        }
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Parses a `Content-Type` value; `None` when it names no `type/subtype`.
    fn parse(value: &[u8]) -> Option<ContentType> {
        let value = String::from_utf8_lossy(value);
        let mut pieces = split_params(&value).into_iter();
        let mime = pieces.next()?.trim().to_ascii_lowercase();
        let (main, sub) = mime.split_once('/')?;
        let (main, sub) = (main.trim(), sub.trim());
        if main.is_empty() {
            return None;
        }
        let sub = sub
            .split(|c: char| c.is_whitespace() || c == '(')
            .next()
            .unwrap_or("");
        let params = pieces
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                let k = k.trim().to_ascii_lowercase();
                let v = v.trim();
                let v = if let Some(q) = v.strip_prefix('"') {
                    unquote(q)
                } else {
                    v.split(|c: char| c.is_whitespace() || c == '(')
                        .next()
                        .unwrap_or("")
                        .to_string()
                };
                // RFC 2231 `charset*=utf-8''...`: keep the charset part.
                match k.strip_suffix('*') {
                    Some(base) => Some((
                        base.to_string(),
                        v.split('\'').next().unwrap_or("").to_string(),
                    )),
                    None => Some((k, v)),
                }
            })
            .collect();
        Some(ContentType {
            main: main.to_string(),
            sub: sub.to_string(),
            params,
        })
    }
}

/// Splits a header value at `;` outside double quotes.
fn split_params(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                out.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&value[start..]);
    out
}

/// The content of a quoted string (after its opening quote), up to the closing quote.
fn unquote(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => out.extend(chars.next()),
            _ => out.push(c),
        }
    }
    out
}

/// The text of one entity (or nothing when it holds no text).
struct PartText {
    /// Whether it is plain text (preferred among alternatives).
    plain: bool,
    text: String,
}

fn entity_text(
    headers: &[Header],
    body: &[u8],
    default: ContentType,
    depth: usize,
    replaced: &mut usize,
) -> Option<PartText> {
    if depth > MAX_DEPTH {
        return None;
    }
    let ct = header(headers, "content-type")
        .and_then(ContentType::parse)
        .unwrap_or(default);
    let encoding = header(headers, "content-transfer-encoding")
        .map(|v| String::from_utf8_lossy(v).trim().to_ascii_lowercase())
        .unwrap_or_default();
    match ct.main.as_str() {
        "multipart" => {
            let Some(parts) = ct
                .param("boundary")
                .filter(|b| !b.is_empty())
                .map(|b| split_multipart(body, b.as_bytes()))
                .filter(|p| !p.is_empty())
            else {
                // No usable boundary: read the body as plain text.
                return text_part(&ContentType::text_plain(), &encoding, body, replaced);
            };
            let child_default = if ct.sub == "digest" {
                ContentType::message_rfc822()
            } else {
                ContentType::text_plain()
            };
            let children: Vec<PartText> = parts
                .into_iter()
                .filter_map(|part| {
                    let (h, b) = split_entity(part);
                    entity_text(&h, b, child_default.clone(), depth + 1, replaced)
                })
                .filter(|p| !p.text.trim().is_empty())
                .collect();
            if ct.sub == "alternative" {
                // The same content in several forms: the plain text if there is one.
                let pick = children
                    .iter()
                    .position(|p| p.plain)
                    .unwrap_or(children.len().saturating_sub(1));
                return children.into_iter().nth(pick);
            }
            if children.is_empty() {
                return None;
            }
            let plain = children.iter().all(|p| p.plain);
            let text = children
                .into_iter()
                .map(|p| p.text)
                .collect::<Vec<_>>()
                .join("\n\n");
            Some(PartText { plain, text })
        }
        "message" if matches!(ct.sub.as_str(), "rfc822" | "news" | "global") => {
            let inner = decode_transfer(&encoding, body);
            let (h, b) = split_entity(&inner);
            entity_text(&h, b, ContentType::text_plain(), depth + 1, replaced)
        }
        "text" => text_part(&ct, &encoding, body, replaced),
        _ => None,
    }
}

fn text_part(
    ct: &ContentType,
    encoding: &str,
    body: &[u8],
    replaced: &mut usize,
) -> Option<PartText> {
    let bytes = decode_transfer(encoding, body);
    let (text, bad) = decode_charset(&bytes, ct.param("charset"));
    *replaced += bad;
    if ct.sub == "html" || looks_like_html(&text) {
        Some(PartText {
            plain: false,
            text: html_to_text(&text),
        })
    } else {
        Some(PartText {
            plain: ct.sub == "plain",
            text,
        })
    }
}

/// Whether a part not declared as HTML is an HTML document all the same (common in spam sent
/// without, or with a wrong, `Content-Type`): its text starts with a tag and an `<html`, `<head`
/// or `<body` tag comes within its first 512 bytes.
pub fn looks_like_html(text: &str) -> bool {
    let t = text.trim_start().as_bytes();
    if t.first() != Some(&b'<') {
        return false;
    }
    let head = &t[..t.len().min(512)];
    head.windows(5).any(|w| {
        w[0] == b'<'
            && (w[1..].eq_ignore_ascii_case(b"html")
                || w[1..].eq_ignore_ascii_case(b"head")
                || w[1..].eq_ignore_ascii_case(b"body"))
    })
}

/// Undoes a `Content-Transfer-Encoding` (`quoted-printable`, `base64`; anything else is taken
/// as it is).
fn decode_transfer(encoding: &str, body: &[u8]) -> Vec<u8> {
    match encoding {
        "quoted-printable" => decode_quoted_printable(body),
        "base64" => decode_base64(body),
        _ => body.to_vec(),
    }
}

/// The parts of a multipart body (preamble and epilogue dropped). A delimiter is a line
/// `--boundary` (the closing one `--boundary--`), possibly followed by whitespace; the line
/// break before it belongs to it. A body cut short (no closing delimiter) ends the last part.
fn split_multipart<'a>(body: &'a [u8], boundary: &[u8]) -> Vec<&'a [u8]> {
    let mut delimiter = b"--".to_vec();
    delimiter.extend_from_slice(boundary);
    let mut parts = Vec::new();
    let mut part_start: Option<usize> = None;
    for (start, line) in lines_with_offsets(body) {
        let Some(rest) = line.strip_prefix(delimiter.as_slice()) else {
            continue;
        };
        let (closing, rest) = match rest.strip_prefix(b"--") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        if !rest.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if let Some(s) = part_start {
            let mut end = start;
            if end > s && body[end - 1] == b'\n' {
                end -= 1;
                if end > s && body[end - 1] == b'\r' {
                    end -= 1;
                }
            }
            parts.push(&body[s..end.max(s)]);
        }
        if closing {
            return parts;
        }
        part_start = Some((start + line.len() + 1).min(body.len()));
    }
    if let Some(s) = part_start {
        parts.push(&body[s..]);
    }
    parts
}

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

/// Decodes `bytes` in a charset (see the module doc for the policy) and returns the text and
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

/// Decodes an unfolded header value: encoded words (`=?charset?Q|B?...?=`, RFC 2047) in their
/// charset, adjacent ones joined (a character may be split between them), the rest as UTF-8;
/// control characters become spaces and the ends are trimmed.
pub fn decode_header_value(raw: &[u8], replaced: &mut usize) -> String {
    let mut out = String::new();
    // Pending decoded bytes of consecutive encoded words in one charset.
    let mut pending: Option<(String, Vec<u8>)> = None;
    let flush =
        |pending: &mut Option<(String, Vec<u8>)>, out: &mut String, replaced: &mut usize| {
            if let Some((charset, bytes)) = pending.take() {
                let (text, bad) = decode_charset(&bytes, Some(&charset));
                *replaced += bad;
                out.push_str(&text);
            }
        };
    let mut i = 0;
    let mut literal_start = 0;
    while i < raw.len() {
        if let Some((charset, bytes, len)) = encoded_word(&raw[i..]) {
            let gap = &raw[literal_start..i];
            // Whitespace between two encoded words is dropped.
            let joins = pending.is_some() && gap.iter().all(u8::is_ascii_whitespace);
            if !joins {
                flush(&mut pending, &mut out, replaced);
                let (text, bad) = decode_utf8_lenient(gap);
                *replaced += bad;
                out.push_str(&text);
            }
            match &mut pending {
                Some((c, b)) if c.eq_ignore_ascii_case(&charset) => b.extend_from_slice(&bytes),
                _ => {
                    flush(&mut pending, &mut out, replaced);
                    pending = Some((charset, bytes));
                }
            }
            i += len;
            literal_start = i;
        } else {
            i += 1;
        }
    }
    flush(&mut pending, &mut out, replaced);
    let (text, bad) = decode_utf8_lenient(&raw[literal_start..]);
    *replaced += bad;
    out.push_str(&text);
    let out: String = out
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    out.trim().to_string()
}

/// An encoded word at the start of `s`: its charset (language suffix removed), decoded bytes
/// and length.
fn encoded_word(s: &[u8]) -> Option<(String, Vec<u8>, usize)> {
    let rest = s.strip_prefix(b"=?")?;
    let q1 = rest.iter().position(|&b| b == b'?')?;
    let charset = &rest[..q1];
    if charset.is_empty() || charset.iter().any(|b| b.is_ascii_whitespace()) {
        return None;
    }
    let enc = *rest.get(q1 + 1)?;
    if rest.get(q1 + 2) != Some(&b'?') {
        return None;
    }
    let text_start = q1 + 3;
    let text_len = rest[text_start..].windows(2).position(|w| w == b"?=")?;
    let text = &rest[text_start..text_start + text_len];
    if text.iter().any(|b| b.is_ascii_whitespace()) {
        return None;
    }
    let bytes = match enc.to_ascii_lowercase() {
        b'b' => decode_base64(text),
        b'q' => {
            let underscores: Vec<u8> = text
                .iter()
                .map(|&b| if b == b'_' { b' ' } else { b })
                .collect();
            decode_quoted_printable(&underscores)
        }
        _ => return None,
    };
    let charset = String::from_utf8_lossy(charset);
    let charset = charset.split('*').next().unwrap_or("").to_string();
    Some((charset, bytes, 2 + text_start + text_len + 2))
}

/// Line breaks to `\n`, trailing blanks removed from each line, at most one blank line in a row,
/// no blank lines at either end.
fn normalize_text(text: &str) -> String {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = String::with_capacity(text.len());
    let mut blank_run = 0;
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank_run += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank_run > 0 { "\n\n" } else { "\n" });
        }
        blank_run = 0;
        out.push_str(line);
    }
    out
}
