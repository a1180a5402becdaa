//! The number-analysis rules, in plain Rust: no WIT types, no wasm.
//!
//! ```toml
//! # The rule set of every tenant that has none of its own.
//! [[plugin.config.rules]]
//! prefix = "2"              # called numbers starting with 2 ...
//! route = "trunk"           # ... go out through trunk 1
//! target = "1"
//!
//! # Tenant a.example's own set (it replaces the one above for that tenant;
//! # "" names the default tenant).
//! [[plugin.config.tenants."a.example".rules]]
//! prefix = "0"
//! strip = 1                 # 0301234 is sent as +49301234
//! prepend = "+49"
//! route = "trunk"
//! target = "carrier"
//! ```
//!
//! Each rule: `prefix` (of the called number; an exact number is a prefix
//! too; "" or absent matches every number: the default rule),
//! `caller_prefix` (optional: only for callers whose number starts so),
//! `route` (`extension`, `ring-group`, `trunk`, `voicemail`, `reject`),
//! `target` (the extension or group number, the trunk id, the mailbox's
//! extension; for all but `trunk` it defaults to the rewritten number),
//! `strip` (leading digits removed) and `prepend` (digits put in front):
//! the rewritten number is what a trunk is sent; `code` and `reason` for
//! `reject` (default 403 Forbidden); `allow_from_trunk` (trunk only,
//! default false: a call that came in from a trunk may leave through this
//! one; without it the gateway refuses such a call).
//!
//! The longest matching `prefix` wins; among those, a rule with the longer
//! matching `caller_prefix` (one without counts as the shortest). No rule
//! matching: no opinion, the gateway's built-in lookup decides.
//!
//! Bad rules are refused by `init` with their position and the reason:
//! `rules[3].route: "trunc" is not one of extension, ring-group, trunk,
//! voicemail, reject`.

use std::collections::BTreeMap;

use plugin_kit::config::{self, ConfigError};
use serde::Deserialize;

/// Where a call goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    NoOpinion,
    Extension(String),
    RingGroup(String),
    Trunk {
        id: String,
        number: String,
        allow_from_trunk: bool,
    },
    Voicemail(String),
    Reject {
        code: u16,
        reason: String,
    },
}

/// The plugin's config table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    rules: Vec<RawRule>,
    tenants: BTreeMap<String, TenantSettings>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct TenantSettings {
    rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    prefix: String,
    caller_prefix: Option<String>,
    route: String,
    target: Option<String>,
    #[serde(default)]
    strip: usize,
    #[serde(default)]
    prepend: String,
    code: Option<u16>,
    reason: Option<String>,
    #[serde(default)]
    allow_from_trunk: bool,
}

/// What a rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    /// `target`: None = the rewritten number.
    Extension(Option<String>),
    RingGroup(Option<String>),
    Trunk {
        id: String,
        allow_from_trunk: bool,
    },
    Voicemail(Option<String>),
    Reject {
        code: u16,
        reason: String,
    },
}

/// One checked rule.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    prefix: String,
    caller_prefix: Option<String>,
    strip: usize,
    prepend: String,
    action: Action,
}

/// The rule sets: the default one and each tenant's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    default: Vec<Rule>,
    tenants: BTreeMap<String, Vec<Rule>>,
}

const ROUTES: &str = "extension, ring-group, trunk, voicemail, reject";

impl Rules {
    /// Parses and checks the config table (JSON from the gateway).
    pub fn from_json(json: &str) -> Result<Rules, ConfigError> {
        let settings: Settings = config::from_json(json)?;
        let default = rule_set("rules", settings.rules)?;
        let mut tenants = BTreeMap::new();
        for (tenant, set) in settings.tenants {
            let path = format!("tenants.{tenant:?}.rules");
            tenants.insert(tenant, rule_set(&path, set.rules)?);
        }
        Ok(Rules { default, tenants })
    }

    /// The decision for a call to `called` from `caller` in `tenant`.
    pub fn route(&self, tenant: &str, caller: &str, called: &str) -> Decision {
        let set = self.tenants.get(tenant).unwrap_or(&self.default);
        let best = set
            .iter()
            .filter(|r| called.starts_with(r.prefix.as_str()))
            .filter(|r| {
                r.caller_prefix
                    .as_deref()
                    .is_none_or(|p| caller.starts_with(p))
            })
            .max_by_key(|r| {
                (
                    r.prefix.len(),
                    r.caller_prefix.as_ref().map_or(0, |p| p.len() + 1),
                )
            });
        let Some(rule) = best else {
            return Decision::NoOpinion;
        };
        let rest = called.get(rule.strip.min(called.len())..).unwrap_or("");
        let number = format!("{}{rest}", rule.prepend);
        let or_number = |target: &Option<String>| target.clone().unwrap_or_else(|| number.clone());
        match &rule.action {
            Action::Extension(t) => Decision::Extension(or_number(t)),
            Action::RingGroup(t) => Decision::RingGroup(or_number(t)),
            Action::Voicemail(t) => Decision::Voicemail(or_number(t)),
            Action::Trunk {
                id,
                allow_from_trunk,
            } => Decision::Trunk {
                id: id.clone(),
                number,
                allow_from_trunk: *allow_from_trunk,
            },
            Action::Reject { code, reason } => Decision::Reject {
                code: *code,
                reason: reason.clone(),
            },
        }
    }
}

/// Digits and the other characters of a dialable number.
fn dialable(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'*' | b'_' | b'-'))
}

fn rule_set(path: &str, raw: Vec<RawRule>) -> Result<Vec<Rule>, ConfigError> {
    let mut rules: Vec<Rule> = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let at = |key: &str| format!("{path}[{i}].{key}");
        let err = |key: &str, message: String| ConfigError::new(at(key), message);
        for (key, value) in [
            ("prefix", Some(&r.prefix)),
            ("caller_prefix", r.caller_prefix.as_ref()),
            ("prepend", Some(&r.prepend)),
        ] {
            if let Some(value) = value {
                if !dialable(value) || value.len() > 32 {
                    return Err(err(
                        key,
                        format!("{value:?} is not a number (up to 32 of 0-9 A-Z a-z . + * _ -)"),
                    ));
                }
            }
        }
        if r.caller_prefix.as_deref() == Some("") {
            return Err(err(
                "caller_prefix",
                "empty: leave it out to match every caller".to_owned(),
            ));
        }
        if let Some(target) = &r.target {
            if target.is_empty() || !dialable(target) || target.len() > 32 {
                return Err(err(
                    "target",
                    format!("{target:?} is not a number or trunk id"),
                ));
            }
        }
        let is_reject = r.route == "reject";
        if !is_reject {
            if r.code.is_some() {
                return Err(err("code", "only for route \"reject\"".to_owned()));
            }
            if r.reason.is_some() {
                return Err(err("reason", "only for route \"reject\"".to_owned()));
            }
        }
        if r.allow_from_trunk && r.route != "trunk" {
            return Err(err(
                "allow_from_trunk",
                "only for route \"trunk\"".to_owned(),
            ));
        }
        let action = match r.route.as_str() {
            "extension" => Action::Extension(r.target),
            "ring-group" => Action::RingGroup(r.target),
            "voicemail" => Action::Voicemail(r.target),
            "trunk" => Action::Trunk {
                id: r.target.ok_or_else(|| {
                    err("target", "route \"trunk\" needs the trunk id".to_owned())
                })?,
                allow_from_trunk: r.allow_from_trunk,
            },
            "reject" => {
                if r.target.is_some() {
                    return Err(err("target", "a rejected call goes nowhere".to_owned()));
                }
                let code = r.code.unwrap_or(403);
                if !(400..=699).contains(&code) {
                    return Err(err("code", format!("{code} is not a status 400-699")));
                }
                let reason = r.reason.unwrap_or_else(|| "Forbidden".to_owned());
                if reason.is_empty() || reason.chars().any(char::is_control) {
                    return Err(err("reason", "must be one line of text".to_owned()));
                }
                Action::Reject { code, reason }
            }
            other => return Err(err("route", format!("{other:?} is not one of {ROUTES}"))),
        };
        let rule = Rule {
            prefix: r.prefix,
            caller_prefix: r.caller_prefix,
            strip: r.strip,
            prepend: r.prepend,
            action,
        };
        if let Some(j) = rules
            .iter()
            .position(|o| o.prefix == rule.prefix && o.caller_prefix == rule.caller_prefix)
        {
            return Err(ConfigError::new(
                format!("{path}[{i}]"),
                format!(
                    "same prefix and caller_prefix as {path}[{j}]: one of them could never match"
                ),
            ));
        }
        rules.push(rule);
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(json: &str) -> Rules {
        Rules::from_json(json).unwrap_or_else(|e| panic!("{e}"))
    }

    fn trunk(id: &str, number: &str) -> Decision {
        Decision::Trunk {
            id: id.into(),
            number: number.into(),
            allow_from_trunk: false,
        }
    }

    fn error(json: &str) -> String {
        Rules::from_json(json).unwrap_err().to_string()
    }

    #[test]
    fn the_seed_example_prefix_2_to_trunk_1() {
        let r = rules(r#"{"rules": [{"prefix": "2", "route": "trunk", "target": "1"}]}"#);
        assert_eq!(r.route("", "101", "201"), trunk("1", "201"));
        assert_eq!(r.route("", "101", "101"), Decision::NoOpinion);
    }

    #[test]
    fn the_longest_prefix_wins_and_exact_numbers_are_prefixes() {
        let r = rules(
            r#"{"rules": [
                {"prefix": "2", "route": "trunk", "target": "1"},
                {"prefix": "20", "route": "trunk", "target": "2"},
                {"prefix": "205", "route": "extension", "target": "100"}
            ]}"#,
        );
        assert_eq!(r.route("", "100", "2999"), trunk("1", "2999"));
        assert_eq!(r.route("", "100", "2099"), trunk("2", "2099"));
        assert_eq!(r.route("", "100", "205"), Decision::Extension("100".into()));
    }

    #[test]
    fn a_caller_prefix_refines_a_rule() {
        let r = rules(
            r#"{"rules": [
                {"prefix": "0", "route": "trunk", "target": "carrier"},
                {"prefix": "0", "caller_prefix": "1", "route": "reject", "code": 403, "reason": "No outside line"},
                {"prefix": "0", "caller_prefix": "15", "route": "trunk", "target": "cheap"}
            ]}"#,
        );
        assert_eq!(r.route("", "200", "0301"), trunk("carrier", "0301"));
        assert_eq!(
            r.route("", "100", "0301"),
            Decision::Reject {
                code: 403,
                reason: "No outside line".into()
            }
        );
        assert_eq!(r.route("", "150", "0301"), trunk("cheap", "0301"));
        // A longer called prefix beats any caller prefix.
        let r = rules(
            r#"{"rules": [
                {"prefix": "0", "caller_prefix": "1", "route": "reject"},
                {"prefix": "00", "route": "trunk", "target": "intl"}
            ]}"#,
        );
        assert_eq!(r.route("", "100", "0049"), trunk("intl", "0049"));
    }

    #[test]
    fn strip_and_prepend_rewrite_the_number_sent_on() {
        let r = rules(
            r#"{"rules": [
                {"prefix": "0", "strip": 1, "prepend": "+49", "route": "trunk", "target": "carrier"},
                {"prefix": "9", "strip": 1, "route": "extension"},
                {"prefix": "8", "strip": 5, "route": "trunk", "target": "x"}
            ]}"#,
        );
        assert_eq!(r.route("", "100", "0301234"), trunk("carrier", "+49301234"));
        // Without a target, an extension is the rewritten number.
        assert_eq!(
            r.route("", "100", "9101"),
            Decision::Extension("101".into())
        );
        // Stripping more than there is leaves nothing, not a panic.
        assert_eq!(r.route("", "100", "81"), trunk("x", ""));
    }

    #[test]
    fn the_default_rule_matches_what_nothing_else_does() {
        let r = rules(
            r#"{"rules": [
                {"route": "reject", "code": 404, "reason": "Unknown number"},
                {"prefix": "1", "route": "extension"},
                {"prefix": "500", "route": "ring-group"},
                {"prefix": "6", "route": "voicemail", "strip": 1}
            ]}"#,
        );
        assert_eq!(
            r.route("", "100", "777"),
            Decision::Reject {
                code: 404,
                reason: "Unknown number".into()
            }
        );
        assert_eq!(r.route("", "100", "101"), Decision::Extension("101".into()));
        assert_eq!(r.route("", "100", "500"), Decision::RingGroup("500".into()));
        assert_eq!(
            r.route("", "100", "6101"),
            Decision::Voicemail("101".into())
        );
        // No default rule: no opinion.
        assert_eq!(
            Rules::default().route("", "100", "777"),
            Decision::NoOpinion
        );
    }

    #[test]
    fn tenants_have_their_own_rule_sets() {
        let r = rules(
            r#"{"rules": [{"prefix": "2", "route": "trunk", "target": "1"}],
                "tenants": {
                  "a.example": {"rules": [{"prefix": "2", "route": "trunk", "target": "a-out", "allow_from_trunk": true}]},
                  "b.example": {"rules": []}
                }}"#,
        );
        assert_eq!(r.route("", "100", "201"), trunk("1", "201"));
        assert_eq!(r.route("c.example", "100", "201"), trunk("1", "201"));
        assert_eq!(
            r.route("a.example", "100", "201"),
            Decision::Trunk {
                id: "a-out".into(),
                number: "201".into(),
                allow_from_trunk: true
            }
        );
        // An empty set of its own: no opinion for that tenant.
        assert_eq!(r.route("b.example", "100", "201"), Decision::NoOpinion);
    }

    #[test]
    fn no_config_no_opinion() {
        assert_eq!(rules("{}").route("", "1", "2"), Decision::NoOpinion);
    }

    // One test per kind of bad rule: each names the rule's position.

    #[test]
    fn bad_route() {
        assert_eq!(
            error(r#"{"rules": [{"prefix": "1", "route": "extension"}, {"prefix": "2", "route": "trunc", "target": "1"}]}"#),
            "rules[1].route: \"trunc\" is not one of extension, ring-group, trunk, voicemail, reject"
        );
    }

    #[test]
    fn trunk_without_target() {
        assert_eq!(
            error(r#"{"rules": [{"prefix": "2", "route": "trunk"}]}"#),
            "rules[0].target: route \"trunk\" needs the trunk id"
        );
    }

    #[test]
    fn bad_numbers() {
        assert_eq!(
            error(r#"{"rules": [{"prefix": "2 x", "route": "extension"}]}"#),
            "rules[0].prefix: \"2 x\" is not a number (up to 32 of 0-9 A-Z a-z . + * _ -)"
        );
        assert_eq!(
            error(r#"{"rules": [{"prefix": "2", "prepend": "<", "route": "extension"}]}"#),
            "rules[0].prepend: \"<\" is not a number (up to 32 of 0-9 A-Z a-z . + * _ -)"
        );
        assert_eq!(
            error(r#"{"rules": [{"prefix": "2", "caller_prefix": "", "route": "extension"}]}"#),
            "rules[0].caller_prefix: empty: leave it out to match every caller"
        );
        assert_eq!(
            error(r#"{"rules": [{"prefix": "2", "route": "extension", "target": "a@b"}]}"#),
            "rules[0].target: \"a@b\" is not a number or trunk id"
        );
    }

    #[test]
    fn bad_reject() {
        assert_eq!(
            error(r#"{"rules": [{"prefix": "9", "route": "reject", "code": 200}]}"#),
            "rules[0].code: 200 is not a status 400-699"
        );
        assert_eq!(
            error(r#"{"rules": [{"prefix": "9", "route": "reject", "target": "1"}]}"#),
            "rules[0].target: a rejected call goes nowhere"
        );
        assert_eq!(
            error(r#"{"rules": [{"prefix": "9", "route": "reject", "reason": ""}]}"#),
            "rules[0].reason: must be one line of text"
        );
    }

    #[test]
    fn keys_of_another_route() {
        assert_eq!(
            error(r#"{"rules": [{"prefix": "9", "route": "extension", "code": 403}]}"#),
            "rules[0].code: only for route \"reject\""
        );
        assert_eq!(
            error(
                r#"{"rules": [{"prefix": "9", "route": "extension", "allow_from_trunk": true}]}"#
            ),
            "rules[0].allow_from_trunk: only for route \"trunk\""
        );
    }

    #[test]
    fn duplicate_rule() {
        assert_eq!(
            error(
                r#"{"rules": [{"prefix": "9", "route": "extension"}, {"prefix": "9", "route": "voicemail"}]}"#
            ),
            "rules[1]: same prefix and caller_prefix as rules[0]: one of them could never match"
        );
    }

    #[test]
    fn tenant_rules_are_named_by_tenant() {
        assert_eq!(
            error(r#"{"tenants": {"a.example": {"rules": [{"prefix": "9", "route": "nowhere"}]}}}"#),
            "tenants.\"a.example\".rules[0].route: \"nowhere\" is not one of extension, ring-group, trunk, voicemail, reject"
        );
    }

    #[test]
    fn unknown_and_missing_keys() {
        assert_eq!(
            error(r#"{"rules": [{"prefix": "9", "rout": "extension"}]}"#),
            "rules[0].rout: unknown key, expected one of `prefix`, `caller_prefix`, `route`, `target`, `strip`, `prepend`, `code`, `reason`, `allow_from_trunk`"
        );
        assert_eq!(
            error(r#"{"rules": [{"prefix": "9"}]}"#),
            "rules[0].route: missing (it has no default)"
        );
    }
}
