//! Errors of the expression language: what went wrong, and the bytes of the source it points
//! at. `Display` shows the message, the source line and a caret under the offending token.

use std::fmt;
use thiserror::Error;

/// A byte range `[start, end)` of the source text.
pub type Span = (usize, usize);

/// What kind of mistake an expression holds; tests and tools match on it, people read the
/// message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A character that starts no token.
    UnexpectedChar,
    /// A token where the grammar wants another.
    UnexpectedToken,
    /// The text ends inside an expression.
    UnexpectedEnd,
    /// A malformed number (a suffix, an f32 overflow).
    BadLiteral,
    /// An integer literal outside the 32-bit range.
    IntRange,
    /// A name that is neither an index (`b h q k`), `s` nor a declared parameter.
    UnknownName,
    /// A function that does not exist.
    UnknownFunction,
    /// A function called with the wrong number of arguments.
    Arity,
    /// Operands or results of the wrong type.
    Type,
    /// Division or remainder by a constant zero.
    DivisionByZero,
    /// The score `s` used in a mask.
    ScoreInMask,
    /// A vector used without an index, or a scalar indexed.
    Indexing,
    /// A parameter declared twice, declared but unused, or with a bad type.
    Declaration,
}

/// An invalid expression, with the source it was found in.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub struct ExprError {
    pub kind: ErrorKind,
    pub span: Span,
    pub message: String,
    /// The text the span points into (filled in by the entry points).
    pub source_text: String,
}

impl ExprError {
    pub(crate) fn new(kind: ErrorKind, span: Span, message: impl Into<String>) -> Self {
        ExprError {
            kind,
            span,
            message: message.into(),
            source_text: String::new(),
        }
    }

    pub(crate) fn in_source(mut self, text: &str) -> Self {
        self.source_text = text.to_string();
        self
    }

    /// The offending text.
    pub fn token(&self) -> &str {
        let (a, b) = self.span;
        self.source_text.get(a..b).unwrap_or("")
    }
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        let text = &self.source_text;
        if text.is_empty() && self.span == (0, 0) {
            return Ok(());
        }
        let (start, end) = (self.span.0.min(text.len()), self.span.1.min(text.len()));
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let line = &text[line_start..line_end];
        let lead = text[line_start..start].chars().count();
        let width = text[start..end.max(start).min(line_end)]
            .chars()
            .count()
            .max(1);
        write!(f, "\n  {line}\n  {}{}", " ".repeat(lead), "^".repeat(width))
    }
}
