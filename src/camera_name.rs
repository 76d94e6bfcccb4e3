//! A camera's name, as a profile gives it (`[[camera]] name`) and clients use it (a `call`'s
//! `camera`, `/api/cameras/{name}`, `rtsp://…/{name}`, the `camera` metric label): 1 to 32 of
//! `a-z`, `0-9`, `-` and `_`, so that it stands in a URL path, a file name and a label as it
//! is. A leaf: the profile (media) and the protocol both use it.

use serde::{Deserialize, Serialize};

/// The longest camera name, in characters.
pub const MAX_CAMERA_CHARS: usize = 32;

/// Whether `name` may name a camera.
pub fn check_camera(name: &str) -> Result<(), &'static str> {
    if !(1..=MAX_CAMERA_CHARS).contains(&name.len()) {
        return Err("a camera name is 1 to 32 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err("a camera name holds only a-z, 0-9, - and _");
    }
    Ok(())
}

/// A name that passed [`check_camera`] (or that this process made: [`CameraName::local`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CameraName(String);

impl CameraName {
    /// Checked, as one read from a file or a peer is.
    pub fn parse(text: impl Into<String>) -> Result<CameraName, &'static str> {
        let text = text.into();
        check_camera(&text)?;
        Ok(CameraName(text))
    }

    /// Made by this process (a default it chose), not read from anyone.
    pub fn local(text: impl Into<String>) -> CameraName {
        CameraName(text.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CameraName {
    type Error = &'static str;
    fn try_from(text: String) -> Result<CameraName, &'static str> {
        CameraName::parse(text)
    }
}

impl From<CameraName> for String {
    fn from(name: CameraName) -> String {
        name.0
    }
}

impl std::ops::Deref for CameraName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CameraName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for CameraName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for CameraName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}
