//! The lexer: byte-spanned tokens of the expression language.

use super::error::{ErrorKind, ExprError, Span};

#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    Int(i64),
    Float(f64),
    Ident(String),
    /// Operators and punctuation, as written: `+ - * / % == != < <= > >= && || ! ( ) [ ] { } , ; = :`.
    Punct(&'static str),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub span: Span,
}

/// Longest first, so `<=` wins over `<`.
const PUNCT: [&str; 24] = [
    "==", "!=", "<=", ">=", "&&", "||", "+", "-", "*", "/", "%", "<", ">", "!", "(", ")", "[", "]",
    "{", "}", ",", ";", "=", ":",
];

pub fn lex(text: &str) -> Result<Vec<Token>, ExprError> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c.is_ascii_digit() {
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let mut float = false;
            // `1.5`, `1.`, but not `1..` (no ranges in the language, so a lone dot is a float).
            if i < bytes.len() && bytes[i] == b'.' {
                float = true;
                i += 1;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
            }
            if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
                let mut j = i + 1;
                if j < bytes.len() && (bytes[j] == b'+' || bytes[j] == b'-') {
                    j += 1;
                }
                if j < bytes.len() && bytes[j].is_ascii_digit() {
                    float = true;
                    i = j;
                    while i < bytes.len() && bytes[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            // A Rust-style suffix (`1.0f32`, `2i32`) is part of the literal's token.
            if i < bytes.len() && (bytes[i].is_ascii_alphabetic() || bytes[i] == b'_') {
                let mut j = i;
                while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
                    j += 1;
                }
                return Err(ExprError::new(
                    ErrorKind::BadLiteral,
                    (start, j),
                    format!(
                        "`{}` is not a literal of the language (no suffixes; write 1 or 1.0)",
                        &text[start..j]
                    ),
                ));
            }
            let word = &text[start..i];
            let tok = if float {
                Tok::Float(word.parse().map_err(|_| {
                    ExprError::new(
                        ErrorKind::BadLiteral,
                        (start, i),
                        format!("`{word}` is not a number"),
                    )
                })?)
            } else {
                Tok::Int(word.parse().map_err(|_| {
                    ExprError::new(
                        ErrorKind::IntRange,
                        (start, i),
                        format!("`{word}` does not fit a 32-bit integer"),
                    )
                })?)
            };
            out.push(Token {
                tok,
                span: (start, i),
            });
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Ident(text[start..i].to_string()),
                span: (start, i),
            });
            continue;
        }
        match PUNCT.iter().find(|p| text[i..].starts_with(**p)) {
            Some(p) => {
                i += p.len();
                out.push(Token {
                    tok: Tok::Punct(p),
                    span: (start, i),
                });
            }
            None => {
                let ch = text[i..].chars().next().unwrap_or('?');
                let hint = match ch {
                    '?' => "; a conditional is written `if c { a } else { b }`",
                    '&' | '|' => "; the logical operators are `&&` and `||`",
                    _ => "",
                };
                return Err(ExprError::new(
                    ErrorKind::UnexpectedChar,
                    (start, start + ch.len_utf8()),
                    format!("unexpected character `{ch}`{hint}"),
                ));
            }
        }
    }
    Ok(out)
}
