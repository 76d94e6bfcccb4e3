//! `key: what is wrong (line N)` from a TOML error, for config and profile messages.
//!
//! The toml crate reports a byte span but not the key; a person fixing a file wants the key.
//! The key is read back from the line the span points into, under its `[table]` header.

/// Describes `err`, raised while reading `text`.
pub fn describe(text: &str, err: &toml::de::Error) -> String {
    // One line per problem: toml's messages may span several.
    let message = err
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let Some(span) = err.span() else {
        return message;
    };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    match key_at(text, start) {
        Some(key) => format!("{key}: {message} (line {line_no})"),
        None => format!("line {line_no}: {message}"),
    }
}

/// The dotted key whose `key = value` line holds byte `at`, if that line is one.
fn key_at(text: &str, at: usize) -> Option<String> {
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    let valid = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !valid {
        return None;
    }
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    Some(match table {
        Some(table) if !table.is_empty() => format!("{table}.{key}"),
        _ => key.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        top: Option<u32>,
        video: Option<Video>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Video {
        width: Option<u32>,
    }

    fn error_of(text: &str) -> String {
        match toml::from_str::<Doc>(text) {
            Ok(doc) => panic!("{text:?} parsed as {doc:?}"),
            Err(e) => describe(text, &e),
        }
    }

    #[test]
    fn names_the_key_of_a_bad_value_and_of_an_unknown_key() {
        let bad = error_of("top = 1\n[video]\nwidth = \"wide\"\n");
        assert!(bad.starts_with("video.width: "), "{bad}");
        assert!(bad.ends_with("(line 3)"), "{bad}");
        let unknown = error_of("top = 1\n[video]\nheight = 3\n");
        assert!(
            unknown.starts_with("video.height: unknown field"),
            "{unknown}"
        );
    }

    #[test]
    fn a_syntax_error_gets_its_line() {
        let syntax = error_of("top = 1\n[video\n");
        assert!(syntax.starts_with("line 2: "), "{syntax}");
    }
}
