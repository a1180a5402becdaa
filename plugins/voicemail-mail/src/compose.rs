//! The plugin's config and the mail it composes from a recorded voicemail.
//!
//! Config (`[plugin.config]`, every key optional):
//!
//! ```toml
//! subject = "Voicemail from {caller_name} ({duration})"
//! body = "..."                 # the default below
//! from = "pbx@example.com"     # default: the gateway's [mail] from
//! attach = true                # attach the WAV recording
//! fallback_to = "office@example.com"  # for mailboxes without an email
//! copy_to = ["archive@example.com"]   # every mail also goes here
//! ```
//!
//! Templates name facts in braces: `{caller}`, `{caller_name}` (the From
//! display name, else the caller), `{mailbox}`, `{tenant}`, `{time}` (UTC,
//! `2026-11-26 10:31:42 UTC`), `{duration}` (`m:ss`), `{seconds}`, `{file}`.
//! `{{` and `}}` are literal braces. An unknown name is a config error that
//! names the key, so a typo shows at load, not in every mail.

use plugin_kit::config::{self, ConfigError};
use serde::Deserialize;

const DEFAULT_SUBJECT: &str = "Voicemail from {caller_name} ({duration})";
const DEFAULT_BODY: &str = "You have a new voicemail message.\n\n\
From:     {caller_name} <{caller}>\n\
Mailbox:  {mailbox}\n\
Received: {time}\n\
Length:   {duration}\n\n\
The recording is attached ({file}).\n";

/// The config as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Raw {
    subject: Option<String>,
    body: Option<String>,
    from: Option<String>,
    attach: Option<bool>,
    fallback_to: Option<String>,
    copy_to: Vec<String>,
}

/// The checked config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    subject: Template,
    body: Template,
    from: Option<String>,
    /// Attach the recording to the mail.
    pub attach: bool,
    fallback_to: Option<String>,
    copy_to: Vec<String>,
}

/// What a template can name about one voicemail.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub tenant: &'a str,
    pub mailbox: &'a str,
    pub email: Option<&'a str>,
    pub caller: &'a str,
    pub caller_name: Option<&'a str>,
    pub received_ms: u64,
    pub duration_ms: u64,
    pub file_name: &'a str,
}

/// A mail ready for the host's `mail.send`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composed {
    pub to: Vec<String>,
    pub from: Option<String>,
    pub subject: String,
    pub body: String,
}

impl Settings {
    pub fn from_json(json: &str) -> Result<Settings, ConfigError> {
        let raw: Raw = config::from_json(json)?;
        let template = |key: &str, text: Option<String>, default: &str| {
            Template::parse(text.as_deref().unwrap_or(default))
                .map_err(|message| ConfigError::new(key, message))
        };
        let address = |key: String, text: &str| {
            if plausible_address(text) {
                Ok(())
            } else {
                Err(ConfigError::new(
                    key,
                    format!("{text:?} is not an e-mail address"),
                ))
            }
        };
        if let Some(from) = &raw.from {
            address("from".into(), from)?;
        }
        if let Some(to) = &raw.fallback_to {
            address("fallback_to".into(), to)?;
        }
        for (i, to) in raw.copy_to.iter().enumerate() {
            address(format!("copy_to[{i}]"), to)?;
        }
        Ok(Settings {
            subject: template("subject", raw.subject, DEFAULT_SUBJECT)?,
            body: template("body", raw.body, DEFAULT_BODY)?,
            from: raw.from,
            attach: raw.attach.unwrap_or(true),
            fallback_to: raw.fallback_to,
            copy_to: raw.copy_to,
        })
    }

    /// The mail for one voicemail; None when there is nobody to send it to.
    pub fn compose(&self, facts: &Facts<'_>) -> Option<Composed> {
        let owner = facts
            .email
            .filter(|e| !e.trim().is_empty())
            .or(self.fallback_to.as_deref());
        let mut to: Vec<String> = owner.into_iter().map(str::to_owned).collect();
        for copy in &self.copy_to {
            if !to.contains(copy) {
                to.push(copy.clone());
            }
        }
        if to.is_empty() {
            return None;
        }
        // A subject is one line, whatever a caller's display name holds.
        let subject = self.subject.render(facts).replace(['\r', '\n'], " ");
        Some(Composed {
            to,
            from: self.from.clone(),
            subject,
            body: self.body.render(facts),
        })
    }
}

/// Good enough to catch a typo at load; the host checks addresses properly.
fn plausible_address(text: &str) -> bool {
    match text.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !text.contains(char::is_whitespace)
        }
        None => false,
    }
}

/// A template: literal text and named facts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Template(Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Fact(Fact),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fact {
    Caller,
    CallerName,
    Mailbox,
    Tenant,
    Time,
    Duration,
    Seconds,
    File,
}

const FACTS: &str = "caller, caller_name, mailbox, tenant, time, duration, seconds, file";

impl Fact {
    fn named(name: &str) -> Option<Fact> {
        Some(match name {
            "caller" => Fact::Caller,
            "caller_name" => Fact::CallerName,
            "mailbox" => Fact::Mailbox,
            "tenant" => Fact::Tenant,
            "time" => Fact::Time,
            "duration" => Fact::Duration,
            "seconds" => Fact::Seconds,
            "file" => Fact::File,
            _ => return None,
        })
    }
}

impl Template {
    fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                    let fact = Fact::named(&name).ok_or_else(|| {
                        format!("{{{name}}} is not one of {FACTS} (write {{{{ for a brace)")
                    })?;
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Fact(fact));
                }
                '}' => return Err("a lone } (write }} for a brace)".to_owned()),
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template(pieces))
    }

    fn render(&self, facts: &Facts<'_>) -> String {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Fact(f) => match f {
                    Fact::Caller => out.push_str(facts.caller),
                    Fact::CallerName => out.push_str(
                        facts
                            .caller_name
                            .filter(|n| !n.is_empty())
                            .unwrap_or(facts.caller),
                    ),
                    Fact::Mailbox => out.push_str(facts.mailbox),
                    Fact::Tenant => out.push_str(facts.tenant),
                    Fact::Time => out.push_str(&utc_time(facts.received_ms)),
                    Fact::Duration => {
                        let s = facts.duration_ms.div_ceil(1000);
                        out.push_str(&format!("{}:{:02}", s / 60, s % 60));
                    }
                    Fact::Seconds => out.push_str(&facts.duration_ms.div_ceil(1000).to_string()),
                    Fact::File => out.push_str(facts.file_name),
                },
            }
        }
        out
    }
}

/// `2026-11-26 10:31:42 UTC` from Unix milliseconds (a plugin has no time
/// zone database; UTC is honest).
fn utc_time(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Days since 1970-01-01 to (year, month, day): Howard Hinnant's civil
/// calendar algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts<'static> {
        Facts {
            tenant: "",
            mailbox: "101",
            email: Some("alice@example.com"),
            caller: "102",
            caller_name: Some("Bob"),
            // 2026-11-26 10:31:42.500 UTC
            received_ms: 1_795_689_102_500,
            duration_ms: 65_200,
            file_name: "vm-1.wav",
        }
    }

    #[test]
    fn defaults_compose_a_mail_to_the_owner() {
        let s = Settings::from_json("").unwrap();
        let m = s.compose(&facts()).unwrap();
        assert_eq!(m.to, ["alice@example.com"]);
        assert_eq!(m.from, None);
        assert_eq!(m.subject, "Voicemail from Bob (1:06)");
        assert!(m.body.contains("From:     Bob <102>"), "{}", m.body);
        assert!(
            m.body.contains("Received: 2026-11-26 10:31:42 UTC"),
            "{}",
            m.body
        );
        assert!(m.body.contains("(vm-1.wav)"), "{}", m.body);
        assert!(s.attach);
    }

    #[test]
    fn templates_name_facts_and_escape_braces() {
        let s = Settings::from_json(
            r#"{"subject": "{{{mailbox}}} {seconds}s from {caller}", "body": "{tenant}|{file}|{time}", "attach": false}"#,
        )
        .unwrap();
        let mut f = facts();
        f.tenant = "a.example";
        let m = s.compose(&f).unwrap();
        assert_eq!(m.subject, "{101} 66s from 102");
        assert_eq!(m.body, "a.example|vm-1.wav|2026-11-26 10:31:42 UTC");
        assert!(!s.attach);
    }

    #[test]
    fn caller_name_falls_back_to_the_caller_and_subject_stays_one_line() {
        let s = Settings::from_json(r#"{"subject": "from {caller_name}"}"#).unwrap();
        let mut f = facts();
        f.caller_name = None;
        assert_eq!(s.compose(&f).unwrap().subject, "from 102");
        f.caller_name = Some("Evil\r\nBcc: x@y");
        assert_eq!(s.compose(&f).unwrap().subject, "from Evil  Bcc: x@y");
    }

    #[test]
    fn no_address_means_no_mail_unless_there_is_a_fallback() {
        let mut f = facts();
        f.email = None;
        assert_eq!(Settings::from_json("{}").unwrap().compose(&f), None);
        let s = Settings::from_json(
            r#"{"fallback_to": "office@example.com", "copy_to": ["archive@example.com", "office@example.com"]}"#,
        )
        .unwrap();
        assert_eq!(
            s.compose(&f).unwrap().to,
            ["office@example.com", "archive@example.com"]
        );
    }

    #[test]
    fn config_errors_name_the_key() {
        let err = |json: &str| Settings::from_json(json).unwrap_err().to_string();
        assert_eq!(
            err(r#"{"subject": "{calller}"}"#),
            "subject: {calller} is not one of caller, caller_name, mailbox, tenant, time, duration, seconds, file (write {{ for a brace)"
        );
        assert_eq!(
            err(r#"{"body": "a } b"}"#),
            "body: a lone } (write }} for a brace)"
        );
        assert_eq!(
            err(r#"{"copy_to": ["ok@x.org", "nope"]}"#),
            "copy_to[1]: \"nope\" is not an e-mail address"
        );
        assert!(err(r#"{"subjet": "x"}"#).starts_with("subjet: unknown key"));
    }

    #[test]
    fn utc_time_knows_the_calendar() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_time(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_time(4_107_542_399_000), "2100-02-28 23:59:59 UTC");
    }
}
