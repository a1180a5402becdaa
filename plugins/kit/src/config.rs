//! A plugin's `[plugin.config]` table, handed to `init` as JSON, into its
//! settings struct: every error names the key it is about.

use std::fmt;

use serde::de::DeserializeOwned;

/// A config that cannot be used, naming its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The offending key (e.g. `threshold`, `device[2].source`), or "" when
    /// the whole document is wrong.
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Parses the config JSON into `T`; empty text or `null` is `T::default()`.
/// Give `T` `#[serde(default, deny_unknown_fields)]`: every key optional,
/// an unknown key an error that names it.
pub fn from_json<T: DeserializeOwned + Default>(json: &str) -> Result<T, ConfigError> {
    let json = json.trim();
    if json.is_empty() || json == "null" {
        return Ok(T::default());
    }
    // serde would also take a list, its items in field order.
    if !json.starts_with('{') {
        return Err(ConfigError::new(
            "",
            "the config must be a table (a JSON object)",
        ));
    }
    let de = &mut serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(de).map_err(|e| {
        // "." is the document, "?" a place serde could not name.
        let path = match e.path().to_string() {
            p if p == "." || p == "?" => String::new(),
            p => p,
        };
        // The host makes this JSON from a TOML table: a JSON line and
        // column would only confuse.
        let text = without_position(&e.into_inner().to_string()).to_owned();
        // serde names an unknown or missing key in its message; the path is
        // the table that holds it (or, for an unknown key, the key itself).
        if let Some((name, expected)) = quoted_after(&text, "unknown field `") {
            let key = if path == name || path.ends_with(&format!(".{name}")) {
                path.clone()
            } else {
                join(&path, name)
            };
            return ConfigError::new(key, format!("unknown key, {expected}"));
        }
        if let Some((name, _)) = quoted_after(&text, "missing field `") {
            return ConfigError::new(join(&path, name), "missing (it has no default)");
        }
        ConfigError::new(path, text)
    })
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// The name and the rest of a serde message such as "unknown field `x`,
/// expected ...".
fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    let rest = message.strip_prefix(prefix)?;
    let (name, rest) = rest.split_once('`')?;
    Some((name, rest.trim_start_matches(", ")))
}

/// serde_json's message without its " at line N column M".
fn without_position(message: &str) -> &str {
    let Some(at) = message.rfind(" at line ") else {
        return message;
    };
    let position = &message[at + " at line ".len()..];
    let numbers = position.replacen(" column ", "", 1);
    if !numbers.is_empty() && numbers.bytes().all(|b| b.is_ascii_digit()) {
        &message[..at]
    } else {
        message
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Default, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Top {
        limit: u32,
        entry: Vec<Entry>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Entry {
        #[allow(dead_code)]
        name: String,
    }

    fn err(json: &str) -> String {
        from_json::<Top>(json).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(
            err(r#"{"limt": 1}"#),
            "limt: unknown key, expected `limit` or `entry`"
        );
        assert_eq!(
            err(r#"{"limit": "1"}"#),
            "limit: invalid type: string \"1\", expected u32"
        );
        assert_eq!(
            err(r#"{"entry": [{"name": "a"}, {"nme": "b"}]}"#),
            "entry[1].nme: unknown key, expected `name`"
        );
        assert_eq!(
            err(r#"{"entry": [{"name": "a"}, {}]}"#),
            "entry[1].name: missing (it has no default)"
        );
        assert_eq!(err("[1]"), "the config must be a table (a JSON object)");
    }

    #[test]
    fn nothing_is_the_defaults() {
        for json in ["", "null", "{}", "  "] {
            assert_eq!(from_json::<Top>(json).unwrap().limit, 0);
        }
    }
}
