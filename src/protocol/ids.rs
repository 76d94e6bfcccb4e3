//! The names a peer gives: peer ids and session ids, checked once when a message is read so
//! that nothing in them can forge a log line or look like another id.

use serde::{Deserialize, Serialize};

/// The longest id, in characters.
pub const MAX_ID_CHARS: usize = 64;
/// The longest session id, in characters.
pub const MAX_SESSION_CHARS: usize = 128;

/// Whether `id` may name a peer: 1 to 64 characters, none of them a space, a control
/// character or an invisible one (bidi overrides such as U+202E, zero-width characters), so
/// that two ids that look the same are the same id.
pub fn check_id(id: &str) -> Result<(), &'static str> {
    check_name(
        id,
        MAX_ID_CHARS,
        "an id is 1 to 64 characters",
        "an id may not hold spaces, control characters or invisible characters",
    )
}

/// Whether `session` may name a call: 1 to 128 visible characters, no spaces.
pub fn check_session(session: &str) -> Result<(), &'static str> {
    check_name(
        session,
        MAX_SESSION_CHARS,
        "a session id is 1 to 128 characters",
        "a session id may not hold spaces, control characters or invisible characters",
    )
}

/// 1 to `max_chars` characters (else `length`), all visible (else `hidden`).
fn check_name(
    text: &str,
    max_chars: usize,
    length: &'static str,
    hidden: &'static str,
) -> Result<(), &'static str> {
    if !(1..=max_chars).contains(&text.chars().count()) {
        return Err(length);
    }
    if !all_visible(text) {
        return Err(hidden);
    }
    Ok(())
}

/// A string that passed `check` when it was read from a peer; [`local`] wraps one this
/// process made (an id it chose, a name for an HTTP player), which is not checked.
macro_rules! checked_name {
    ($(#[$doc:meta])* $name:ident, $check:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checked, as a peer's is.
            pub fn parse(text: impl Into<String>) -> Result<$name, &'static str> {
                let text = text.into();
                $check(&text)?;
                Ok($name(text))
            }

            /// Made by this process, not read from a peer.
            pub fn local(text: impl Into<String>) -> $name {
                $name(text.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = &'static str;
            fn try_from(text: String) -> Result<$name, &'static str> {
                $name::parse(text)
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

checked_name!(
    /// A peer's registered id (see [`check_id`]).
    PeerId,
    check_id
);
checked_name!(
    /// The id of a call, chosen by its caller (see [`check_session`]).
    SessionId,
    check_session
);

/// Peer-supplied text made safe for a log line: control characters escaped, length bounded.
pub fn escape_for_log(text: &str) -> String {
    const MAX_CHARS: usize = 200;
    let mut out: String = text
        .chars()
        .take(MAX_CHARS)
        .flat_map(|c| {
            // Control characters forge lines; format characters (bidi overrides, zero-width)
            // make text read as something it is not.
            let escaped: Vec<char> = if c.is_control() || invisible(c) {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect();
    if text.chars().nth(MAX_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// No space, control character or invisible character anywhere in `text`.
fn all_visible(text: &str) -> bool {
    !text
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || invisible(c))
}

/// Characters that show nothing, or change how the text around them shows.
fn invisible(c: char) -> bool {
    use unicode_properties::{GeneralCategory as G, UnicodeGeneralCategory};
    matches!(
        c.general_category(),
        G::Format
            | G::Control
            | G::SpaceSeparator
            | G::LineSeparator
            | G::ParagraphSeparator
            | G::PrivateUse
            | G::Surrogate
            | G::Unassigned
    )
}
