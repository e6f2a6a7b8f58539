//! A small, lenient reader of Internet messages (RFC 5322 / MIME): headers, `Subject` with
//! encoded words (RFC 2047), multipart walking, quoted-printable and base64, charsets, HTML.
//!
//! It never fails: malformed input gives the best text it can. Bytes that are not valid in the
//! charset they are read in are replaced by U+FFFD and counted ([`MessageText::replaced_bytes`]).
//!
//! Charset policy: a declared charset that the WHATWG Encoding Standard knows (via `encoding_rs`,
//! e.g. `iso-8859-1`, `windows-1252`, `koi8-r`, `gb2312`, `big5`, `euc-kr`, `shift_jis`) is
//! decoded as such; `us-ascii`, a missing, unknown or unsupported charset is read as UTF-8.

use crate::html::html_to_text;
use crate::mime_decode::decode_transfer;
use crate::mime_header::{ContentType, Header, header, lines_with_offsets, split_entity};

pub use crate::mime_decode::{
    decode_base64, decode_charset, decode_quoted_printable, decode_utf8_lenient,
};
pub use crate::mime_header::decode_header_value;

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

/// The text of one entity (or nothing when it holds no text).
struct PartText {
    /// Whether it is plain text (preferred among alternatives).
    plain: bool,
    text: String,
}

/// The text of an entity with the given headers and body (`default` is its type when it has no
/// usable `Content-Type`): multiparts walked, attached messages read, text parts decoded.
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

/// The text of a text part: transfer encoding and charset decoded, HTML (declared or detected)
/// turned into text.
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
