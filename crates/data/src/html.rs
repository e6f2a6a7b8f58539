//! HTML to plain text, for the HTML parts of e-mail: tags, comments, scripts and styles removed,
//! character references unescaped, whitespace collapsed as a browser would (block elements become
//! line breaks). A small, lenient scanner: it never fails, whatever the input.

/// Elements that start a new line.
const BLOCK: &[&str] = &[
    "address",
    "article",
    "blockquote",
    "body",
    "br",
    "center",
    "dd",
    "div",
    "dl",
    "dt",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "head",
    "header",
    "hr",
    "html",
    "li",
    "ol",
    "p",
    "pre",
    "section",
    "table",
    "title",
    "tr",
    "ul",
];

/// Elements that separate their content by a space.
const CELL: &[&str] = &["td", "th", "img", "input", "option"];

/// Elements whose content is not text.
const RAW_TEXT: &[&str] = &["script", "style"];

/// Named character references that are unescaped (others are left as written).
const ENTITIES: &[(&str, &str)] = &[
    ("amp", "&"),
    ("lt", "<"),
    ("gt", ">"),
    ("quot", "\""),
    ("apos", "'"),
    ("nbsp", " "),
    ("copy", "©"),
    ("reg", "®"),
    ("trade", "™"),
    ("hellip", "…"),
    ("mdash", "—"),
    ("ndash", "–"),
    ("lsquo", "‘"),
    ("rsquo", "’"),
    ("sbquo", "‚"),
    ("ldquo", "“"),
    ("rdquo", "”"),
    ("bdquo", "„"),
    ("bull", "•"),
    ("middot", "·"),
    ("laquo", "«"),
    ("raquo", "»"),
    ("euro", "€"),
    ("pound", "£"),
    ("yen", "¥"),
    ("cent", "¢"),
    ("sect", "§"),
    ("para", "¶"),
    ("deg", "°"),
    ("plusmn", "±"),
    ("times", "×"),
    ("divide", "÷"),
    ("frac12", "½"),
    ("frac14", "¼"),
    ("frac34", "¾"),
    ("iexcl", "¡"),
    ("iquest", "¿"),
    ("dagger", "†"),
    ("shy", ""),
    ("zwnj", ""),
    ("zwj", ""),
    ("aacute", "á"),
    ("agrave", "à"),
    ("acirc", "â"),
    ("auml", "ä"),
    ("atilde", "ã"),
    ("aring", "å"),
    ("aelig", "æ"),
    ("ccedil", "ç"),
    ("eacute", "é"),
    ("egrave", "è"),
    ("ecirc", "ê"),
    ("euml", "ë"),
    ("iacute", "í"),
    ("igrave", "ì"),
    ("icirc", "î"),
    ("iuml", "ï"),
    ("ntilde", "ñ"),
    ("oacute", "ó"),
    ("ograve", "ò"),
    ("ocirc", "ô"),
    ("ouml", "ö"),
    ("otilde", "õ"),
    ("oslash", "ø"),
    ("uacute", "ú"),
    ("ugrave", "ù"),
    ("ucirc", "û"),
    ("uuml", "ü"),
    ("yacute", "ý"),
    ("yuml", "ÿ"),
    ("szlig", "ß"),
    ("Aacute", "Á"),
    ("Agrave", "À"),
    ("Acirc", "Â"),
    ("Auml", "Ä"),
    ("Atilde", "Ã"),
    ("Aring", "Å"),
    ("AElig", "Æ"),
    ("Ccedil", "Ç"),
    ("Eacute", "É"),
    ("Egrave", "È"),
    ("Ecirc", "Ê"),
    ("Euml", "Ë"),
    ("Iacute", "Í"),
    ("Ntilde", "Ñ"),
    ("Oacute", "Ó"),
    ("Ouml", "Ö"),
    ("Oslash", "Ø"),
    ("Uacute", "Ú"),
    ("Uuml", "Ü"),
];

/// Output with HTML whitespace rules: runs of whitespace become one space, block elements a
/// line break, and no line starts or ends with a space.
struct Out {
    text: String,
    space: bool,
}

impl Out {
    fn push_str(&mut self, s: &str) {
        for c in s.chars() {
            self.push(c);
        }
    }

    fn push(&mut self, c: char) {
        if c.is_whitespace() {
            self.space = true;
            return;
        }
        if self.space && !self.text.is_empty() && !self.text.ends_with('\n') {
            self.text.push(' ');
        }
        self.space = false;
        self.text.push(c);
    }

    /// Ends the current line (a block boundary: nothing if the line is already ended), or with
    /// `br`, adds a line break (two in a row make a blank line, never more).
    fn newline(&mut self, br: bool) {
        self.space = false;
        let ended = self.text.is_empty() || self.text.ends_with('\n');
        if (br || !ended) && !self.text.ends_with("\n\n") {
            self.text.push('\n');
        }
    }
}

fn starts_with_ci(hay: &[u8], at: usize, needle: &[u8]) -> bool {
    hay.len() >= at + needle.len() && hay[at..at + needle.len()].eq_ignore_ascii_case(needle)
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    (from..=hay.len().saturating_sub(needle.len())).find(|&i| starts_with_ci(hay, i, needle))
}

/// The index of the `>` that ends a tag starting at `from` (just after `<`); quoted attribute
/// values (after `=`) may hold `>`.
fn tag_end(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < b.len() {
        match b[i] {
            b'>' => return Some(i),
            b'=' => {
                let mut j = i + 1;
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                if let Some(&q @ (b'"' | b'\'')) = b.get(j)
                    && let Some(close) = b[j + 1..].iter().position(|&c| c == q)
                {
                    i = j + 1 + close + 1;
                    continue;
                }
                i = j;
            }
            _ => i += 1,
        }
    }
    None
}

/// Decodes the character reference at the start of `s` (which starts with `&`): the text it
/// stands for and its length in bytes.
fn entity(s: &str) -> Option<(String, usize)> {
    let b = s.as_bytes();
    if b.get(1) == Some(&b'#') {
        let (hex, start) = match b.get(2) {
            Some(b'x' | b'X') => (true, 3),
            _ => (false, 2),
        };
        let digits = b[start..]
            .iter()
            .take_while(|c| {
                if hex {
                    c.is_ascii_hexdigit()
                } else {
                    c.is_ascii_digit()
                }
            })
            .count();
        if digits == 0 || digits > 8 {
            return None;
        }
        let num = &s[start..start + digits];
        let value = u32::from_str_radix(num, if hex { 16 } else { 10 }).ok()?;
        let mut len = start + digits;
        if b.get(len) == Some(&b';') {
            len += 1;
        }
        let text = if (0x80..0xA0).contains(&value) {
            // Browsers read these as windows-1252 bytes (&#150; is an en dash).
            let byte = [value as u8];
            let (t, _, _) = encoding_rs::WINDOWS_1252.decode(&byte);
            t.into_owned()
        } else {
            match char::from_u32(value) {
                Some(c) if value != 0 => c.to_string(),
                _ => '\u{FFFD}'.to_string(),
            }
        };
        return Some((text, len));
    }
    let name_len = b[1..]
        .iter()
        .take(10)
        .take_while(|c| c.is_ascii_alphanumeric())
        .count();
    if name_len == 0 {
        return None;
    }
    let name = &s[1..1 + name_len];
    let with_semicolon = b.get(1 + name_len) == Some(&b';');
    // Without `;`, only the legacy few are recognised (`&nbsp` is common in spam).
    if !with_semicolon && !matches!(name, "amp" | "lt" | "gt" | "quot" | "nbsp") {
        return None;
    }
    let (_, text) = ENTITIES.iter().find(|(n, _)| *n == name)?;
    Some((text.to_string(), 1 + name_len + usize::from(with_semicolon)))
}

/// Converts HTML to plain text: removes tags, comments, `<script>` and `<style>` elements;
/// unescapes character references (named ones for the common entities, all numeric ones);
/// collapses whitespace; puts line breaks at block elements (`p`, `br`, `div`, `tr`, `li`, ...),
/// at most one blank line in a row. A `<` that does not open a tag is kept as text.
pub fn html_to_text(html: &str) -> String {
    let b = html.as_bytes();
    let mut out = Out {
        text: String::with_capacity(html.len() / 2),
        space: false,
    };
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'<' => {
                if starts_with_ci(b, i, b"<!--") {
                    i = find(b, i + 4, b"-->").map_or(b.len(), |p| p + 3);
                    continue;
                }
                let opens_tag = b
                    .get(i + 1)
                    .is_some_and(|&c| c.is_ascii_alphabetic() || matches!(c, b'/' | b'!' | b'?'));
                if let Some(end) = opens_tag.then(|| tag_end(b, i + 1)).flatten() {
                    let inner = &html[i + 1..end];
                    let closing = inner.starts_with('/');
                    let name: String = inner
                        .trim_start_matches('/')
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric())
                        .map(|c| c.to_ascii_lowercase())
                        .collect();
                    i = end + 1;
                    if !closing && RAW_TEXT.contains(&name.as_str()) && !inner.ends_with('/') {
                        let close = format!("</{name}");
                        i = match find(b, i, close.as_bytes()) {
                            Some(p) => tag_end(b, p + 1).map_or(b.len(), |e| e + 1),
                            None => b.len(),
                        };
                    } else if BLOCK.contains(&name.as_str()) {
                        out.newline(name == "br");
                    } else if CELL.contains(&name.as_str()) {
                        out.space = true;
                    }
                    continue;
                }
                out.push('<');
                i += 1;
            }
            b'&' => match entity(&html[i..]) {
                Some((text, len)) => {
                    out.push_str(&text);
                    i += len;
                }
                None => {
                    out.push('&');
                    i += 1;
                }
            },
            _ => {
                let c = html[i..].chars().next().unwrap_or('\u{FFFD}');
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out.text.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_tags_and_keeps_text() {
        assert_eq!(
            html_to_text("<html><body><b>Hello</b> <i>world</i>!</body></html>"),
            "Hello world!"
        );
    }

    #[test]
    fn block_elements_break_lines_and_whitespace_collapses() {
        let html = "<p>One\n   two</p><p>three<br>four</p>\n\n<div>five</div>";
        assert_eq!(html_to_text(html), "One two\nthree\nfour\nfive");
        let html = "a<br><br><br><br>b<br/>c<p><p><p>d";
        assert_eq!(html_to_text(html), "a\n\nb\nc\nd");
        assert_eq!(
            html_to_text("<table><tr><td>a</td><td>b</td></tr></table>"),
            "a b"
        );
    }

    #[test]
    fn drops_comments_scripts_styles_and_doctype() {
        let html = "<!DOCTYPE html><!-- hidden <b>x</b> --><style>p {color: red}</style>\
                    <script type=\"x\">if (a < b) alert('x');</script>Visible";
        assert_eq!(html_to_text(html), "Visible");
    }

    #[test]
    fn unescapes_entities() {
        assert_eq!(
            html_to_text("a &amp; b &lt;c&gt; &quot;d&quot; &#39;e&#39; &#x41;&nbsp;&copy; &#150;"),
            "a & b <c> \"d\" 'e' A © –"
        );
        assert_eq!(html_to_text("R&D &unknown; &nbsp x"), "R&D &unknown; x");
        assert_eq!(html_to_text("&#0; &#99999999;"), "\u{FFFD} \u{FFFD}");
    }

    #[test]
    fn quoted_attributes_may_hold_angle_brackets() {
        assert_eq!(
            html_to_text("<a href=\"x>y\" title='1>0'>link</a> text"),
            "link text"
        );
    }

    #[test]
    fn a_lone_less_than_is_text() {
        assert_eq!(html_to_text("1 < 2 and 3 <4"), "1 < 2 and 3 <4");
        assert_eq!(html_to_text("<b unclosed"), "<b unclosed");
        assert_eq!(html_to_text("é <b>ü</b>"), "é ü");
    }
}
