//! Untrusted text made safe to show a person: what agents, repositories and forges wrote
//! (questions, reasons, log output, issue titles, repository and branch names) cannot drive
//! the terminal it is printed on.
//!
//! A terminal obeys what it is sent: ESC starts sequences that move the cursor, clear the
//! screen, set the window title, write the clipboard (OSC 52) or draw a link whose target is
//! not its text (OSC 8); C1 controls (U+0080-U+009F) are the same sequences in one character
//! on many terminals; CR and backspace overwrite what was printed; bidi controls reorder what
//! follows them, so a line reads differently from what it holds. Here each of these becomes a
//! visible escape, and everything else (letters of any script, emoji, the tree and box
//! characters dispatch draws itself) is left as it is.
//!
//! What becomes visible:
//! - every C0 control (U+0000-U+001F) as `\xNN`, `\t`, `\n` or `\r`, except what a
//!   multi-line text keeps ([`shown_lines`]: newline, tab, and CR right before a newline);
//! - DEL and the C1 controls (U+007F-U+009F) as `\u{..}` (DEL as `\x7f`);
//! - the bidi controls U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069 and the
//!   invisible format characters that can hide or fake text: U+200B (zero width space),
//!   U+2028 and U+2029 (line and paragraph separators, a line break to some viewers),
//!   U+2060-U+2064 (word joiner, invisible operators), U+206A-U+206F (deprecated format
//!   controls), U+FEFF (zero width no-break space) and U+FFF9-U+FFFB (interlinear
//!   annotation), as `\u{..}`;
//! - in bytes that are not UTF-8 ([`shown_bytes`]), each invalid byte as `\xNN`.
//!
//! Left alone: U+200C and U+200D (zero width non-joiner and joiner), which Persian, Indic
//! scripts and emoji sequences need, and tag characters (U+E0000-U+E007F), which flag emoji
//! use; neither moves the cursor or reorders text. A backslash stays a backslash, so `\x1b`
//! in the output may have been those four characters; it never was an ESC.
//!
//! Invariants: the result holds none of the characters above (but what the variant keeps);
//! text without them is borrowed, not copied; showing shown text again changes nothing.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::IsTerminal;

/// `text` cut to at most `max` characters, with `…` when something was cut.
pub fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((at, _)) => format!("{}…", &text[..at]),
    }
}

/// `text` as one line of a report (a table cell, a reason, a name): every control, newline
/// and tab included, and every bidi or invisible format character made visible.
pub fn shown(text: &str) -> Cow<'_, str> {
    escape(text, Keep::Nothing)
}

/// `text` of many lines (a log, a prompt, a message): like [`shown`], but newlines, tabs and
/// a CR right before a newline stay as they are.
pub fn shown_lines(text: &str) -> Cow<'_, str> {
    escape(text, Keep::Lines)
}

/// `bytes` of many lines that may not be UTF-8 (a log as a container wrote it): like
/// [`shown_lines`], with each byte that is not part of valid UTF-8 as `\xNN`.
pub fn shown_bytes(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        return shown_lines(text);
    }
    let mut out = String::with_capacity(bytes.len() + 16);
    for chunk in bytes.utf8_chunks() {
        out.push_str(&shown_lines(chunk.valid()));
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    Cow::Owned(out)
}

/// `text`, a document a command prints whole (a prompt, a graph), as stdout should get it:
/// exact when stdout is a file or a pipe, so that what is saved is what dispatch uses, and
/// through [`shown_lines`] when it is a terminal.
pub fn on_stdout(text: &str) -> Cow<'_, str> {
    if std::io::stdout().is_terminal() {
        shown_lines(text)
    } else {
        Cow::Borrowed(text)
    }
}

/// How much of `bytes`, one piece of a stream that goes on, [`shown_bytes`] should show now:
/// all but a UTF-8 sequence or a CR at its end that the next piece may complete (a character
/// split between two reads, or the CR of a CR LF).
pub fn settled(bytes: &[u8]) -> usize {
    let mut end = bytes.len();
    if bytes.last() == Some(&b'\r') {
        end -= 1;
    }
    // A UTF-8 sequence is at most 4 bytes: look back at most 3 for its lead byte.
    for back in 1..=end.min(3) {
        let byte = bytes[end - back];
        if byte & 0b1100_0000 == 0b1000_0000 {
            continue; // a continuation byte: its lead byte is further back
        }
        let length = match byte {
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => 1,
        };
        return if length > back { end - back } else { end };
    }
    end
}

/// What a text may keep as it is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Nothing: the text is shown on one line.
    Nothing,
    /// Newlines, tabs and CR before a newline.
    Lines,
}

fn escape(text: &str, keep: Keep) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let shows = |at: usize, c: char| -> bool {
        match c {
            '\n' | '\t' => keep == Keep::Lines,
            '\r' => keep == Keep::Lines && bytes.get(at + 1) == Some(&b'\n'),
            c => !hidden(c),
        }
    };
    let Some(first) = text.char_indices().find(|&(at, c)| !shows(at, c)) else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len() + 16);
    out.push_str(&text[..first.0]);
    for (at, c) in text[first.0..].char_indices() {
        if shows(first.0 + at, c) {
            out.push(c);
            continue;
        }
        let _ = match c {
            '\t' => out.write_str("\\t"),
            '\n' => out.write_str("\\n"),
            '\r' => out.write_str("\\r"),
            '\0'..='\x7f' => write!(out, "\\x{:02x}", u32::from(c)),
            _ => write!(out, "\\u{{{:x}}}", u32::from(c)),
        };
    }
    Cow::Owned(out)
}

/// Whether `c` is a control or a format character that a terminal would obey or hide rather
/// than show.
fn hidden(c: char) -> bool {
    matches!(
        c,
        '\0'..='\x1f'
            | '\x7f'..='\u{9f}'
            | '\u{061c}'
            | '\u{200b}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_text_is_borrowed_unchanged() {
        for text in [
            "",
            "fix/core/go-io:agent",
            "Grüße, 日本語, עברית, العربية",
            "emoji 🎉 and a family 👨\u{200d}👩\u{200d}👧 and a flag 🏴\u{e0067}\u{e0062}\u{e0073}\u{e0063}\u{e0074}\u{e007f}",
            "  │  ├─ └─ …",
            r"a backslash \x1b stays",
        ] {
            assert!(matches!(shown(text), Cow::Borrowed(t) if t == text), "{text:?}");
            assert!(matches!(shown_lines(text), Cow::Borrowed(t) if t == text), "{text:?}");
            assert!(
                matches!(shown_bytes(text.as_bytes()), Cow::Borrowed(t) if t == text),
                "{text:?}"
            );
        }
    }

    #[test]
    fn controls_escape_sequences_and_bidi_characters_become_visible() {
        for (text, want) in [
            // Escape sequences: clear screen, OSC 8 link, OSC 52 clipboard, window title.
            ("\x1b[2J\x1b[Hgone", r"\x1b[2J\x1b[Hgone"),
            (
                "\x1b]8;;https://evil.example\x07click\x1b]8;;\x07",
                r"\x1b]8;;https://evil.example\x07click\x1b]8;;\x07",
            ),
            (
                "\x1b]52;c;cm0gLXJmIH4=\x1b\\",
                r"\x1b]52;c;cm0gLXJmIH4=\x1b\",
            ),
            ("\x1b]0;title\x07", r"\x1b]0;title\x07"),
            // C0 (overwrites by CR and backspace among them), DEL and C1.
            ("ok\rFAIL", r"ok\rFAIL"),
            ("secret\x08\x08\x08public", r"secret\x08\x08\x08public"),
            ("\0\x01\x7f", r"\x00\x01\x7f"),
            (
                "\u{9b}2J \u{9d}0;t\u{9c} \u{80}",
                r"\u{9b}2J \u{9d}0;t\u{9c} \u{80}",
            ),
            ("a\tb\nc", r"a\tb\nc"),
            // Bidi controls and invisible format characters.
            ("abc\u{202e}fed", r"abc\u{202e}fed"),
            (
                "\u{2066}\u{2067}\u{2068}\u{2069}\u{202a}\u{202b}\u{202c}\u{202d}",
                r"\u{2066}\u{2067}\u{2068}\u{2069}\u{202a}\u{202b}\u{202c}\u{202d}",
            ),
            ("\u{61c}\u{200e}\u{200f}", r"\u{61c}\u{200e}\u{200f}"),
            (
                "a\u{200b}b\u{2028}c\u{2029}d\u{feff}e\u{2060}f",
                r"a\u{200b}b\u{2028}c\u{2029}d\u{feff}e\u{2060}f",
            ),
        ] {
            assert_eq!(shown(text), want, "{text:?}");
        }
    }

    #[test]
    fn many_lines_keep_newlines_tabs_and_crlf() {
        assert_eq!(
            shown_lines("one\n\ttwo\r\nthree\n"),
            "one\n\ttwo\r\nthree\n"
        );
        assert_eq!(
            shown_lines("progress 10%\rprogress 99%\n\x1b[31mred\x1b[0m\r"),
            "progress 10%\\rprogress 99%\n\\x1b[31mred\\x1b[0m\\r"
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_become_visible() {
        assert_eq!(shown_bytes(b"a\xffb\xc3"), r"a\xffb\xc3");
        assert_eq!(
            shown_bytes(b"\x1b]52;c;x\x07 \xe2\x80\xae"),
            r"\x1b]52;c;x\x07 \u{202e}"
        );
        // C1 controls as raw bytes are not UTF-8 either.
        assert_eq!(shown_bytes(b"\x9b2J\n"), "\\x9b2J\n");
    }

    #[test]
    fn showing_twice_changes_nothing() {
        let once = shown("\x1b]8;;x\x07\u{202e}\r\u{85}").into_owned();
        assert!(matches!(shown(&once), Cow::Borrowed(_)));
        assert!(matches!(shown_lines(&once), Cow::Borrowed(_)));
    }

    #[test]
    fn a_stream_is_shown_up_to_what_the_next_piece_cannot_change() {
        assert_eq!(settled(b""), 0);
        assert_eq!(settled(b"abc\n"), 4);
        assert_eq!(settled(b"abc\r"), 3, "the LF of CR LF may follow");
        let rlo = "\u{202e}".as_bytes(); // 3 bytes
        assert_eq!(settled(&[b"ab", &rlo[..1]].concat()), 2);
        assert_eq!(settled(&[b"ab", &rlo[..2]].concat()), 2);
        assert_eq!(settled(&[b"ab", rlo].concat()), 5);
        let party = "🎉".as_bytes(); // 4 bytes
        assert_eq!(settled(&party[..3]), 0);
        assert_eq!(settled(party), 4);
        // Bytes that no continuation can make valid are shown at once.
        assert_eq!(settled(b"a\xff"), 2);
        assert_eq!(settled(b"\x80\x80\x80\x80"), 4);
    }
}
