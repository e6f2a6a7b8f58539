//! Reading e-mail: headers, encoded words, quoted-printable, base64, multipart, charsets, HTML.

use dpselft_data::mime::{
    decode_base64, decode_charset, decode_header_value, decode_quoted_printable, extract_message,
    looks_like_html,
};

fn crlf(s: &str) -> Vec<u8> {
    s.replace('\n', "\r\n").into_bytes()
}

#[test]
fn plain_message_keeps_subject_and_body_and_drops_other_headers() {
    let raw = b"From someone@example.com  Thu Aug 22 13:17:22 2002\n\
Return-Path: <a@b.c>\n\
Received: from x\n\tby y with SMTP\n\
Subject: Hello\n there\n\
To: z@example.com\n\
\n\
First line.  \n\n\n\nSecond paragraph.\n\n";
    let m = extract_message(raw);
    assert_eq!(m.subject, "Hello there");
    assert_eq!(m.body, "First line.\n\nSecond paragraph.");
    assert_eq!(
        m.example_text(),
        "Hello there\n\nFirst line.\n\nSecond paragraph."
    );
    assert_eq!(m.replaced_bytes, 0);
}

#[test]
fn crlf_line_endings() {
    let m = extract_message(&crlf("Subject: CRLF\nX: y\n\nbody one\nbody two\n"));
    assert_eq!(m.subject, "CRLF");
    assert_eq!(m.body, "body one\nbody two");
}

#[test]
fn message_without_subject_or_body() {
    let m = extract_message(b"From: a@b.c\n\nonly body\n");
    assert_eq!(m.example_text(), "\n\nonly body");
    let m = extract_message(b"Subject: only subject\n");
    assert_eq!(m.example_text(), "only subject\n\n");
}

#[test]
fn quoted_printable_body() {
    let raw = b"Subject: qp\n\
Content-Type: text/plain; charset=\"iso-8859-1\"\n\
Content-Transfer-Encoding: quoted-printable\n\
\n\
caf=E9 cr=e8me, a soft=\nbreak, a soft with blanks=  \nbreak, 50=3D50, a=stray =\n";
    let m = extract_message(raw);
    assert_eq!(
        m.body,
        "café crème, a softbreak, a soft with blanksbreak, 50=50, a=stray"
    );
    assert_eq!(m.replaced_bytes, 0);
}

#[test]
fn quoted_printable_decoder() {
    assert_eq!(decode_quoted_printable(b"a=20b=\r\nc=4"), b"a bc=4");
    assert_eq!(decode_quoted_printable(b"=C3=A9="), "é".as_bytes());
}

#[test]
fn base64_body_in_utf8() {
    // "Grüße aus Köln\n" with ü as a Latin-1 byte (invalid UTF-8: replaced and counted), base64
    // with a line break inside.
    let raw = b"Subject: b64\n\
Content-Type: text/plain; charset=utf-8\n\
Content-Transfer-Encoding: BASE64\n\
\n\
R3L8w59lIGF1cyBL\nw7ZsbgoK\n";
    let m = extract_message(raw);
    assert_eq!(m.body, "Gr\u{FFFD}\u{df}e aus K\u{f6}ln");
    assert_eq!(m.replaced_bytes, 1);
}

#[test]
fn base64_decoder_is_lenient() {
    assert_eq!(decode_base64(b"aGVsbG8gd29ybGQ="), b"hello world");
    assert_eq!(decode_base64(b"aGVs\r\nbG8g d29y*bGQ"), b"hello world");
    assert_eq!(decode_base64(b"aGVsbA"), b"hell");
    assert_eq!(decode_base64(b""), b"");
}

const ALTERNATIVE: &str = "Subject: alt\n\
MIME-Version: 1.0\n\
Content-Type: multipart/alternative;\n\tboundary=\"----=_NextPart_000\"\n\
\n\
This is a multi-part message in MIME format.\n\
\n\
------=_NextPart_000\n\
Content-Type: text/plain; charset=us-ascii\n\
\n\
Plain version.\n\
------=_NextPart_000\n\
Content-Type: text/html; charset=us-ascii\n\
Content-Transfer-Encoding: quoted-printable\n\
\n\
<html><body><p>HTML =\nversion</p></body></html>\n\
------=_NextPart_000--\n\
epilogue\n";

#[test]
fn multipart_alternative_prefers_plain_text() {
    let m = extract_message(ALTERNATIVE.as_bytes());
    assert_eq!(m.subject, "alt");
    assert_eq!(m.body, "Plain version.");
}

#[test]
fn multipart_alternative_with_html_only_is_stripped() {
    let raw = ALTERNATIVE.replace(
        "Content-Type: text/plain; charset=us-ascii\n\nPlain version.\n",
        "Content-Type: image/gif\n\nGIF89a\n",
    );
    let m = extract_message(raw.as_bytes());
    assert_eq!(m.body, "HTML version");
}

#[test]
fn multipart_mixed_keeps_text_parts_and_drops_attachments() {
    let raw = "Subject: mixed\n\
Content-Type: multipart/mixed; boundary=outer\n\
\n\
preamble\n\
--outer\n\
Content-Type: multipart/alternative; boundary=\"inner\"\n\
\n\
--inner\n\
Content-Type: text/plain\n\
\n\
Nested plain.\n\
--inner\n\
Content-Type: text/html\n\
\n\
<b>Nested html</b>\n\
--inner--\n\
--outer\n\
Content-Type: application/octet-stream; name=\"x.exe\"\n\
Content-Transfer-Encoding: base64\n\
\n\
TVqQAAMAAAAEAAAA\n\
--outer\n\
Content-Type: text/plain; name=\"notes.txt\"\n\
Content-Disposition: attachment\n\
\n\
Attached notes.\n\
--outer--\n";
    let m = extract_message(raw.as_bytes());
    assert_eq!(m.body, "Nested plain.\n\nAttached notes.");
}

#[test]
fn multipart_with_crlf_and_padding_after_delimiters() {
    let raw = crlf(
        "Subject: s\nContent-Type: multipart/mixed; boundary=b\n\n--b  \nContent-Type: text/plain\n\none\n--b\n\ntwo (no headers: text/plain)\n--b--  \n",
    );
    assert_eq!(
        extract_message(&raw).body,
        "one\n\ntwo (no headers: text/plain)"
    );
}

#[test]
fn multipart_cut_short_keeps_the_last_part() {
    let raw =
        "Content-Type: multipart/mixed; boundary=b\n\n--b\n\nfirst\n--b\n\nsecond, never closed\n";
    assert_eq!(
        extract_message(raw.as_bytes()).body,
        "first\n\nsecond, never closed"
    );
}

#[test]
fn multipart_without_boundary_is_read_as_text() {
    let raw = "Content-Type: multipart/mixed\n\nno boundary here\n";
    assert_eq!(extract_message(raw.as_bytes()).body, "no boundary here");
    let raw = "Content-Type: multipart/mixed; boundary=zzz\n\nboundary never used\n";
    assert_eq!(extract_message(raw.as_bytes()).body, "boundary never used");
}

#[test]
fn html_part_is_stripped_and_unescaped() {
    let raw = b"Subject: html\n\
Content-Type: text/html; charset=windows-1252\n\
\n\
<HTML><HEAD><STYLE>p {x: y}</STYLE></HEAD><BODY>\n\
<P>Save&nbsp;70% &amp; more &#8212; <A HREF=\"http://x\">click</A>!</P>\n\
<!-- invisible --><P>Bye\x93now\x94</P></BODY></HTML>\n";
    let m = extract_message(raw);
    assert_eq!(
        m.body,
        "Save 70% & more \u{2014} click!\nBye\u{201c}now\u{201d}"
    );
}

#[test]
fn undeclared_html_document_is_stripped() {
    let raw = "Subject: s\n\n<HTML>\n<BODY><FONT size=2>Buy <b>now</b></FONT></BODY></HTML>\n";
    assert_eq!(extract_message(raw.as_bytes()).body, "Buy now");
    assert!(looks_like_html("  <x-html>\n<html><body>"));
    assert!(!looks_like_html("Talking about <html> tags"));
    assert!(!looks_like_html("<nettime> a list name"));
}

#[test]
fn declared_charsets_are_decoded() {
    let raw = b"Subject: s\nContent-Type: text/plain; charset=koi8-r\n\n\xf0\xd2\xc9\xd7\xc5\xd4\n";
    let m = extract_message(raw);
    assert_eq!(m.body, "Привет");
    assert_eq!(m.replaced_bytes, 0);
    assert_eq!(
        decode_charset(b"caf\xe9", Some("ISO-8859-1")),
        ("café".to_string(), 0)
    );
    assert_eq!(
        decode_charset(b"\xb0\xa1", Some("gb2312")),
        ("啊".to_string(), 0)
    );
}

#[test]
fn non_utf8_bytes_without_a_usable_charset_are_replaced_and_counted() {
    // Undeclared, declared ASCII, and an unknown charset: read as UTF-8, invalid bytes replaced.
    for ct in [
        "",
        "Content-Type: text/plain; charset=us-ascii\n",
        "Content-Type: text/plain; charset=x-unknown\n",
    ] {
        let raw = [
            format!("Subject: s\n{ct}\n").as_bytes(),
            b"world\x92s best \xff\xfe\n",
        ]
        .concat();
        let m = extract_message(&raw);
        // Each of 0xff and 0xfe is a maximal invalid sequence of its own.
        assert_eq!(m.body, "world\u{FFFD}s best \u{FFFD}\u{FFFD}", "{ct}");
        assert_eq!(m.replaced_bytes, 3, "{ct}");
    }
    // Bytes invalid in a declared multi-byte charset are counted too.
    let (text, bad) = decode_charset(b"ok\xff", Some("shift_jis"));
    assert_eq!((text.as_str(), bad), ("ok\u{FFFD}", 1));
}

#[test]
fn encoded_word_subjects() {
    let mut replaced = 0;
    assert_eq!(
        decode_header_value(
            b" =?iso-8859-1?Q?Caf=E9_cr=E8me?= and =?UTF-8?B?w6k=?=",
            &mut replaced
        ),
        "Café crème and é"
    );
    // Adjacent words are joined, even when a UTF-8 character is split between them.
    assert_eq!(
        decode_header_value(
            b"=?utf-8?B?4oKs?= =?utf-8?B?4g==?=\r\n =?utf-8?B?gqw=?=",
            &mut replaced
        ),
        "€€"
    );
    assert_eq!(
        decode_header_value(b"=?bogus?X?abc?= plain", &mut replaced),
        "=?bogus?X?abc?= plain"
    );
    assert_eq!(replaced, 0);
    assert_eq!(
        decode_header_value(b"raw \xe9", &mut replaced),
        "raw \u{FFFD}"
    );
    assert_eq!(replaced, 1);
    let m = extract_message(b"Subject: =?koi8-r?B?8NLJ18XU?=\n\nbody\n");
    assert_eq!(m.subject, "Привет");
}

#[test]
fn attached_message_body_is_included() {
    let raw = "Subject: fwd\n\
Content-Type: multipart/mixed; boundary=b\n\
\n\
--b\n\
\n\
See below.\n\
--b\n\
Content-Type: message/rfc822\n\
\n\
Subject: inner\n\
Content-Type: text/plain\n\
\n\
Inner body.\n\
--b--\n";
    assert_eq!(
        extract_message(raw.as_bytes()).body,
        "See below.\n\nInner body."
    );
}

#[test]
fn hostile_input_does_not_panic() {
    // Deep nesting.
    let mut raw = String::new();
    for i in 0..200 {
        raw.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n"
        ));
    }
    raw.push_str("\ndeep\n");
    let _ = extract_message(raw.as_bytes());
    // Garbage and truncations.
    for raw in [
        &b""[..],
        b"\n",
        b"Subject",
        b"Subject:",
        b"Content-Type: multipart/alternative; boundary=\"",
        b"Content-Type: ;;;==\"\n\n\xff\xfe",
        b"Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\n=",
        b"Content-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n=",
        b"Subject: =?utf-8?Q?",
        b"Subject: =?",
        b"Content-Type: text/html\n\n<a href=\"unterminated",
        b"Content-Type: text/html\n\n<script>never closed",
        b"Content-Type: text/html\n\n&#x; &#; & &;",
    ] {
        let _ = extract_message(raw);
    }
}
