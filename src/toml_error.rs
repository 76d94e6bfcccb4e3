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
    let before = &text[..line_start];
    let table = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    Some(match table {
        Some(table) if !table.is_empty() => in_array(before, &table, key),
        _ => key.to_string(),
    })
}

/// `table.key`, where a table inside an array of tables (`[[camera]]`, then `[camera.video]`)
/// names its element: by its `name` key when it has one (`camera "door": video.width`, as
/// the checks after parsing say it), else by its place (`camera[1].video.width`).
fn in_array(before: &str, table: &str, key: &str) -> String {
    let segments: Vec<&str> = table.split('.').collect();
    for n in (1..=segments.len()).rev() {
        let array = segments[..n].join(".");
        let header = format!("[[{array}]]");
        let Some(at) = before.rfind(&header) else {
            continue;
        };
        let rest: String = segments[n..].iter().map(|s| format!("{s}.")).collect();
        // The element runs from its header to the next header of that array (or the end).
        let element = &before[at + header.len()..];
        let named = element
            .lines()
            .map(str::trim)
            .take_while(|l| !l.starts_with('['))
            .find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == "name")
                    .then(|| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
            });
        return match named {
            Some(name) => format!("{array} \"{name}\": {rest}{key}"),
            None => {
                let index = before.matches(&header).count().saturating_sub(1);
                format!("{array}[{index}].{rest}{key}")
            }
        };
    }
    format!("{table}.{key}")
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

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Cameras {
        camera: Vec<Camera>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Camera {
        name: Option<String>,
        video: Option<Video>,
    }

    #[test]
    fn a_key_in_an_array_of_tables_names_its_element() {
        let error = |text: &str| match toml::from_str::<Cameras>(text) {
            Ok(doc) => panic!("{text:?} parsed as {doc:?}"),
            Err(e) => describe(text, &e),
        };
        let named = error(
            "[[camera]]\nname = \"door\"\n[camera.video]\nwidth = 1\n\
             [[camera]]\nname = \"parcel\"\n[camera.video]\nwidht = 2\n",
        );
        assert!(
            named.starts_with("camera \"parcel\": video.widht: unknown field"),
            "{named}"
        );
        let unnamed = error("[[camera]]\n[[camera]]\n[camera.video]\nwidth = \"x\"\n");
        assert!(unnamed.starts_with("camera[1].video.width: "), "{unnamed}");
        let own = error("[[camera]]\nname = \"door\"\nzoom = 2\n");
        assert!(
            own.starts_with("camera \"door\": zoom: unknown field"),
            "{own}"
        );
    }

    #[test]
    fn a_syntax_error_gets_its_line() {
        let syntax = error_of("top = 1\n[video\n");
        assert!(syntax.starts_with("line 2: "), "{syntax}");
    }
}
