//! Header parsing of Internet messages: splitting an entity into its (unfolded) headers and its
//! body, `Content-Type` values, and header values with encoded words (RFC 2047).

use crate::mime_decode::{
    decode_base64, decode_charset, decode_quoted_printable, decode_utf8_lenient,
};

/// A header: lower-case name, unfolded raw value.
pub(crate) type Header = (String, Vec<u8>);

/// The raw value of the first header called `name` (lower case).
pub(crate) fn header<'h>(headers: &'h [Header], name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

/// Lines of `bytes` with their start offsets; each line without its `\n` (a `\r` is kept).
pub(crate) fn lines_with_offsets(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
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

/// `line` without a final `\r`.
fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Whether `name` is a valid header field name (printable ASCII, no colon).
fn is_header_name(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b) && b != b':')
}

/// Splits an entity into its headers (unfolded) and its body. The headers end at the first
/// blank line, or at the first line that is neither a header nor a continuation line (then the
/// body starts there). An mbox `From ` line before the headers is skipped.
pub(crate) fn split_entity(raw: &[u8]) -> (Vec<Header>, &[u8]) {
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
pub(crate) struct ContentType {
    /// The type (`text`, `multipart`, ...), lower case.
    pub(crate) main: String,
    /// The subtype (`plain`, `html`, `alternative`, ...), lower case.
    pub(crate) sub: String,
    /// The parameters: lower-case name, value.
    params: Vec<(String, String)>,
}

impl ContentType {
    /// `text/plain`, the default type of an entity.
    pub(crate) fn text_plain() -> Self {
        ContentType {
            main: "text".into(),
            sub: "plain".into(),
            params: Vec::new(),
        }
    }

    /// `message/rfc822`, the default type of a part of a `multipart/digest`.
    pub(crate) fn message_rfc822() -> Self {
        ContentType {
            main: "message".into(),
            sub: "rfc822".into(),
            params: Vec::new(),
        }
    }

    /// The value of the parameter `name` (lower case).
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Parses a `Content-Type` value; `None` when it names no `type/subtype`.
    pub(crate) fn parse(value: &[u8]) -> Option<ContentType> {
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
