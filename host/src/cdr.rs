//! Call detail records: one row per call, written by the proxy when a call
//! ends, read by `sipfence cdr list` and the `cdrs.list` control command.
//!
//! - [`Cdr`] is the record; the proxy queues it with
//!   [`Write::InsertCdr`](crate::store::Write::InsertCdr).
//! - [`CdrFilter`] selects records; [`crate::store::load_cdrs`] and
//!   [`crate::store::read_cdrs`] run it against the database, newest first.
//! - [`to_csv`] renders records for a spreadsheet, [`render_table`] for a
//!   terminal.
//! - [`parse_when`] reads the times the CLI accepts.
//!
//! ## CSV
//!
//! RFC 4180: a header row, CRLF after every record, a field quoted when it
//! holds a comma, a double quote, CR or LF, and a quote inside doubled. The
//! columns, in order:
//!
//! | column | content |
//! | --- | --- |
//! | `start`, `answer`, `end` | RFC 3339 UTC with milliseconds (`2026-11-26T08:00:00.250Z`); `answer` is empty for an unanswered call. Sorts correctly as plain text. |
//! | `duration_s` | talk time in seconds with three decimals (`62.500`), `0.000` unanswered: a number any spreadsheet sums |
//! | `tenant` | the tenant's domain, empty for the default tenant |
//! | `caller`, `callee` | the calling extension and the number dialled |
//! | `disposition` | `answered`, `no-answer`, `busy`, `failed` or `cancelled` |
//! | `status` | the final SIP status sent to the caller |
//! | `route`, `answered_by` | the route taken, the contact that answered (empty if none) |
//! | `caller_source`, `caller_user_agent` | where the INVITE came from, and its User-Agent (empty if none) |
//! | `call_id` | the SIP Call-ID |
//! | `start_ms`, `answer_ms`, `end_ms`, `duration_ms` | the same times as Unix milliseconds, exact, for programs; in a spreadsheet `=O2/86400000+DATE(1970,1,1)` turns `start_ms` into a date-time cell (UTC) |
//!
//! Spreadsheets run a cell that starts with `=`, `+`, `-` or `@` as a
//! formula, and the caller controls several of these fields (User-Agent,
//! Call-ID, the number dialled). So a text field that starts with `=`, `@`,
//! tab or CR, or with `+`/`-` not followed by digits only, is written with a
//! leading `'` (the spreadsheet convention for "this is text"; OWASP's advice
//! against CSV injection). A number such as `+4930123456` is left as it is.
//! The JSON output and the control socket give every field unchanged.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How a call ended, as a CDR records it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Disposition {
    Answered,
    NoAnswer,
    Busy,
    Failed,
    Cancelled,
}

impl Disposition {
    /// Every disposition, in the order the docs list them.
    pub const ALL: [Disposition; 5] = [
        Disposition::Answered,
        Disposition::NoAnswer,
        Disposition::Busy,
        Disposition::Failed,
        Disposition::Cancelled,
    ];

    /// The name used in the database, JSON, CSV and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Answered => "answered",
            Disposition::NoAnswer => "no-answer",
            Disposition::Busy => "busy",
            Disposition::Failed => "failed",
            Disposition::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for Disposition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a [`Disposition`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown disposition {0:?} (expected one of: answered, no-answer, busy, failed, cancelled)"
)]
pub struct UnknownDisposition(pub String);

impl FromStr for Disposition {
    type Err = UnknownDisposition;

    /// [`Disposition::as_str`] back; case does not matter and `_` stands for `-`.
    fn from_str(s: &str) -> Result<Disposition, UnknownDisposition> {
        let wanted = s.trim().to_ascii_lowercase().replace('_', "-");
        Disposition::ALL
            .into_iter()
            .find(|d| d.as_str() == wanted)
            .ok_or_else(|| UnknownDisposition(s.to_owned()))
    }
}

/// One call, one row.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Cdr {
    pub call_id: String,
    /// Tenant domain, "" for the default tenant.
    pub tenant: String,
    /// Calling extension/number (From user).
    pub caller: String,
    /// Where the INVITE came from: "127.0.0.1:5062/UDP".
    pub caller_source: String,
    pub caller_user_agent: Option<String>,
    /// The number dialled (Request-URI user).
    pub callee: String,
    /// "extension:101", "ring-group:600", "none".
    pub route: String,
    /// The contact URI that answered.
    pub answered_by: Option<String>,
    /// Unix ms: INVITE received.
    pub start_ms: u64,
    /// Unix ms: 2xx relayed.
    pub answer_ms: Option<u64>,
    /// Unix ms: BYE, final failure, cancel or timeout.
    pub end_ms: u64,
    /// end - answer, 0 when unanswered.
    pub duration_ms: u64,
    pub disposition: Disposition,
    /// Final status sent to the caller.
    pub status: u16,
}

/// How many records a listing returns unless told otherwise.
pub const DEFAULT_LIMIT: usize = 100;

/// Which records to list. Every condition given must hold; records come
/// newest first (by `start_ms`, then by insertion), `offset` skipped, at most
/// `limit` returned.
///
/// As JSON (the `cdrs.list` control command) every field is optional:
/// `{"since_ms": 1764144000000, "extension": "101", "disposition": "no-answer"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CdrFilter {
    /// Calls that started at or after this Unix time (ms).
    pub since_ms: Option<u64>,
    /// Calls that started before this Unix time (ms), exclusive, so
    /// `since = day, until = next day` is exactly one day.
    pub until_ms: Option<u64>,
    /// Calls from or to this extension/number (caller OR callee).
    pub extension: Option<String>,
    pub disposition: Option<Disposition>,
    /// Calls of this tenant ("" is the default tenant).
    pub tenant: Option<String>,
    /// At most this many records; 0 means no limit. Default [`DEFAULT_LIMIT`].
    pub limit: usize,
    /// Skip this many records first (paging).
    pub offset: usize,
}

impl Default for CdrFilter {
    fn default() -> CdrFilter {
        CdrFilter {
            since_ms: None,
            until_ms: None,
            extension: None,
            disposition: None,
            tenant: None,
            limit: DEFAULT_LIMIT,
            offset: 0,
        }
    }
}

impl CdrFilter {
    /// Whether `cdr` meets the conditions (everything but limit and offset):
    /// the same test the database query makes.
    pub fn matches(&self, cdr: &Cdr) -> bool {
        self.since_ms.is_none_or(|t| cdr.start_ms >= t)
            && self.until_ms.is_none_or(|t| cdr.start_ms < t)
            && self
                .extension
                .as_deref()
                .is_none_or(|e| cdr.caller == e || cdr.callee == e)
            && self.disposition.is_none_or(|d| cdr.disposition == d)
            && self.tenant.as_deref().is_none_or(|t| cdr.tenant == t)
    }
}

// ---------------------------------------------------------------------------
// Times

const MS_PER_DAY: i64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 31,
    }
}

/// The parts of a Unix time in ms: (year, month, day, hour, minute, second, ms).
fn utc_parts(ms: u64) -> (i64, u32, u32, u64, u64, u64, u64) {
    let days = ms / MS_PER_DAY as u64;
    let (y, mo, d) = civil_from_days(days as i64);
    let rest = ms % MS_PER_DAY as u64;
    (
        y,
        mo,
        d,
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000,
    )
}

/// RFC 3339 in UTC with milliseconds: `2026-11-26T08:00:00.250Z`.
pub fn format_rfc3339_ms(ms: u64) -> String {
    let (y, mo, d, h, mi, s, milli) = utc_parts(ms);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
}

/// UTC to the second, for a terminal: `2026-11-26 08:00:00`.
pub fn format_utc_seconds(ms: u64) -> String {
    let (y, mo, d, h, mi, s, _) = utc_parts(ms);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
}

/// A time the CLI could not read; says what was wrong and what it accepts
/// (not the text itself: the caller names the argument and its value).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0}; expected RFC 3339 (2026-11-26T08:00:00Z), a date (2026-11-26, midnight UTC) \
     or an age (30s, 15m, 2h, 7d, 2w)"
)]
pub struct BadWhen(pub String);

/// Reads a point in time as the CLI takes it, as Unix ms:
/// - RFC 3339: `2026-11-26T08:00:00Z`, `2026-11-26T09:00:00.5+01:00`
///   (`t`, `z` and a space for `T` accepted too);
/// - a date: `2026-11-26`, midnight UTC;
/// - an age before `now_ms`: a whole number and a unit, `s`, `m`, `h`, `d` or
///   `w` (`15m`, `2h`, `7d`). An age longer than the time since 1970 is 1970.
pub fn parse_when(text: &str, now_ms: u64) -> Result<u64, BadWhen> {
    let text = text.trim();
    if text.is_empty() {
        return Err(BadWhen("empty time".into()));
    }
    if let Some(ms) = parse_age(text)? {
        return Ok(now_ms.saturating_sub(ms));
    }
    let ms = parse_timestamp(text)?;
    u64::try_from(ms).map_err(|_| BadWhen("before 1970".into()))
}

/// `15m` -> Some(900_000); None when `text` is not shaped as an age.
fn parse_age(text: &str) -> Result<Option<u64>, BadWhen> {
    let Some(unit) = text.chars().last() else {
        return Ok(None);
    };
    let number = &text[..text.len() - unit.len_utf8()];
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    let unit_ms: u64 = match unit {
        's' => 1000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => MS_PER_DAY as u64,
        'w' => 7 * MS_PER_DAY as u64,
        other => {
            return Err(BadWhen(format!(
                "unknown unit {other:?} in an age (units: s, m, h, d, w)"
            )))
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_ms))
        .map(Some)
        .ok_or_else(|| BadWhen("the age is too long".into()))
}

/// A date or RFC 3339 date-time, as ms since 1970 (negative before).
fn parse_timestamp(text: &str) -> Result<i64, BadWhen> {
    let bad = |what: &str| BadWhen(what.to_owned());
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(range)?;
        if part.iter().all(u8::is_ascii_digit) {
            std::str::from_utf8(part).ok()?.parse().ok()
        } else {
            None
        }
    };
    // The date: YYYY-MM-DD.
    let (Some(year), Some(month), Some(day)) = (digits(0..4), digits(5..7), digits(8..10)) else {
        return Err(bad("not a time"));
    };
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return Err(bad("not a time"));
    }
    if !(1..=12).contains(&month) {
        return Err(bad(&format!("month {month} does not exist")));
    }
    let (month, day) = (month as u32, day as u32);
    if day == 0 || day > days_in_month(year, month) {
        return Err(bad(&format!(
            "day {day} does not exist in {year:04}-{month:02}"
        )));
    }
    let midnight = days_from_civil(year, month, day) * MS_PER_DAY;
    if b.len() == 10 {
        return Ok(midnight);
    }
    // The time: [T t space]HH:MM:SS[.frac](Z|z|+HH:MM|-HH:MM).
    if !matches!(b[10], b'T' | b't' | b' ') {
        return Err(bad("expected T between the date and the time"));
    }
    let (Some(hour), Some(minute), Some(second)) = (digits(11..13), digits(14..16), digits(17..19))
    else {
        return Err(bad("expected the time as HH:MM:SS"));
    };
    if b.get(13) != Some(&b':') || b.get(16) != Some(&b':') {
        return Err(bad("expected the time as HH:MM:SS"));
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err(bad(&format!(
            "{hour:02}:{minute:02}:{second:02} is not a time of day"
        )));
    }
    let mut at = 19;
    let mut millis = 0;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        if at == start {
            return Err(bad("expected digits after the decimal point"));
        }
        // Milliseconds: the first three digits, the rest truncated.
        let frac = &text[start..at.min(start + 3)];
        millis = frac.parse::<i64>().unwrap_or(0) * 10_i64.pow(3 - frac.len() as u32);
    }
    let offset_ms = match &b[at..] {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), ..] => {
            let (Some(oh), Some(om)) = (digits(at + 1..at + 3), digits(at + 4..at + 6)) else {
                return Err(bad("expected the offset as +HH:MM or -HH:MM"));
            };
            if b.len() != at + 6 || b[at + 3] != b':' || oh > 23 || om > 59 {
                return Err(bad("expected the offset as +HH:MM or -HH:MM"));
            }
            let offset = (oh * 60 + om) * 60_000;
            if *sign == b'+' {
                offset
            } else {
                -offset
            }
        }
        [] => return Err(bad("missing the time zone (Z or +HH:MM)")),
        _ => return Err(bad("expected Z or +HH:MM after the time")),
    };
    Ok(midnight + ((hour * 60 + minute) * 60 + second) * 1000 + millis - offset_ms)
}

// ---------------------------------------------------------------------------
// CSV

/// The CSV columns, in order (see the module docs).
pub const CSV_COLUMNS: [&str; 18] = [
    "start",
    "answer",
    "end",
    "duration_s",
    "tenant",
    "caller",
    "callee",
    "disposition",
    "status",
    "route",
    "answered_by",
    "caller_source",
    "caller_user_agent",
    "call_id",
    "start_ms",
    "answer_ms",
    "end_ms",
    "duration_ms",
];

/// The header row and one record per CDR, RFC 4180 (CRLF line ends).
pub fn to_csv(cdrs: &[Cdr]) -> String {
    let mut out = String::with_capacity(256 * (cdrs.len() + 1));
    out.push_str(&CSV_COLUMNS.join(","));
    out.push_str("\r\n");
    for cdr in cdrs {
        push_csv_record(&mut out, cdr);
    }
    out
}

fn push_csv_record(out: &mut String, c: &Cdr) {
    let opt_time = |t: Option<u64>| t.map(format_rfc3339_ms).unwrap_or_default();
    let opt_num = |t: Option<u64>| t.map(|n| n.to_string()).unwrap_or_default();
    let fields: [Cow<'_, str>; 18] = [
        format_rfc3339_ms(c.start_ms).into(),
        opt_time(c.answer_ms).into(),
        format_rfc3339_ms(c.end_ms).into(),
        format!("{}.{:03}", c.duration_ms / 1000, c.duration_ms % 1000).into(),
        csv_text(&c.tenant),
        csv_text(&c.caller),
        csv_text(&c.callee),
        c.disposition.as_str().into(),
        c.status.to_string().into(),
        csv_text(&c.route),
        csv_text(c.answered_by.as_deref().unwrap_or("")),
        csv_text(&c.caller_source),
        csv_text(c.caller_user_agent.as_deref().unwrap_or("")),
        csv_text(&c.call_id),
        c.start_ms.to_string().into(),
        opt_num(c.answer_ms).into(),
        c.end_ms.to_string().into(),
        c.duration_ms.to_string().into(),
    ];
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(field);
    }
    out.push_str("\r\n");
}

/// A text field: defused against formula injection, then quoted if needed.
fn csv_text(value: &str) -> Cow<'_, str> {
    let value: Cow<'_, str> = if starts_like_formula(value) {
        format!("'{value}").into()
    } else {
        value.into()
    };
    if value.contains([',', '"', '\r', '\n']) {
        let mut quoted = String::with_capacity(value.len() + 2);
        quoted.push('"');
        for ch in value.chars() {
            if ch == '"' {
                quoted.push('"');
            }
            quoted.push(ch);
        }
        quoted.push('"');
        quoted.into()
    } else {
        value
    }
}

/// Whether a spreadsheet would take `value` for a formula (see module docs).
fn starts_like_formula(value: &str) -> bool {
    let mut chars = value.chars();
    match chars.next() {
        Some('=' | '@' | '\t' | '\r') => true,
        Some('+' | '-') => {
            let rest = chars.as_str();
            !rest.bytes().all(|b| b.is_ascii_digit())
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// Table

/// The records as a table for a terminal, a line per call, then a count.
/// An extension of a tenant shows as `101@a.example`. Control characters
/// (a hostile User-Agent or number) are shown escaped, never sent to the
/// terminal.
pub fn render_table(cdrs: &[Cdr]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<19}  {:<24} {:<24} {:<11} {:>6} {:>9}  ROUTE",
        "START (UTC)", "CALLER", "CALLEE", "DISPOSITION", "STATUS", "DURATION"
    );
    for c in cdrs {
        let party = |number: &str| {
            if c.tenant.is_empty() {
                printable(number).into_owned()
            } else {
                format!("{}@{}", printable(number), printable(&c.tenant))
            }
        };
        let secs = c.duration_ms / 1000;
        let _ = writeln!(
            out,
            "{:<19}  {:<24} {:<24} {:<11} {:>6} {:>9}  {}",
            format_utc_seconds(c.start_ms),
            party(&c.caller),
            party(&c.callee),
            c.disposition.as_str(),
            c.status,
            format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60),
            printable(&c.route),
        );
    }
    let _ = writeln!(out, "{} call(s)", cdrs.len());
    out
}

/// `value` with control characters escaped (`\u{1b}`, `\n`).
fn printable(value: &str) -> Cow<'_, str> {
    if value.chars().any(char::is_control) {
        value
            .chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_debug().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect::<String>()
            .into()
    } else {
        value.into()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// 2026-11-26T08:00:00Z.
    const T0: u64 = 1_795_680_000_000;

    pub(crate) fn cdr(call_id: &str, start_ms: u64) -> Cdr {
        Cdr {
            call_id: call_id.into(),
            tenant: String::new(),
            caller: "101".into(),
            caller_source: "127.0.0.1:5062/UDP".into(),
            caller_user_agent: Some("SIPp".into()),
            callee: "102".into(),
            route: "extension:102".into(),
            answered_by: Some("sip:102@127.0.0.1:5070".into()),
            start_ms,
            answer_ms: Some(start_ms + 2_000),
            end_ms: start_ms + 64_500,
            duration_ms: 62_500,
            disposition: Disposition::Answered,
            status: 200,
        }
    }

    #[test]
    fn disposition_names_round_trip_through_str_and_serde() {
        for d in Disposition::ALL {
            assert_eq!(d.as_str().parse::<Disposition>(), Ok(d));
            assert_eq!(
                serde_json::to_string(&d).unwrap(),
                format!("\"{}\"", d.as_str())
            );
        }
        assert_eq!("No_Answer".parse(), Ok(Disposition::NoAnswer));
        let err = "rang".parse::<Disposition>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown disposition \"rang\" (expected one of: answered, no-answer, busy, failed, cancelled)"
        );
    }

    #[test]
    fn dates_convert_both_ways() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_rfc3339_ms(T0 + 250), "2026-11-26T08:00:00.250Z");
        assert_eq!(format_utc_seconds(951_825_600_999), "2000-02-29 12:00:00");
        // Every day from 1970 to 2100 maps back to itself.
        for days in 0..47_482 {
            let (y, m, d) = civil_from_days(days);
            assert!(d >= 1 && d <= days_in_month(y, m));
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn when_accepts_rfc3339_dates_and_ages() {
        let now = T0 + 123;
        let ok = |s: &str| parse_when(s, now).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(ok("2026-11-26T08:00:00Z"), T0);
        assert_eq!(ok("2026-11-26t08:00:00z"), T0);
        assert_eq!(ok("2026-11-26 08:00:00Z"), T0);
        assert_eq!(ok("2026-11-26T09:30:00+01:30"), T0);
        assert_eq!(ok("2026-11-26T07:00:00-01:00"), T0);
        assert_eq!(ok("2026-11-26T08:00:00.5Z"), T0 + 500);
        assert_eq!(ok("2026-11-26T08:00:00.0421999Z"), T0 + 42);
        assert_eq!(ok("2026-11-26"), T0 - 8 * 3_600_000);
        assert_eq!(ok(" 2024-02-29 "), 1_709_164_800_000);
        assert_eq!(ok("15m"), now - 15 * 60_000);
        assert_eq!(ok("2h"), now - 2 * 3_600_000);
        assert_eq!(ok("7d"), now - 7 * 86_400_000);
        assert_eq!(ok("30s"), now - 30_000);
        assert_eq!(ok("1w"), now - 7 * 86_400_000);
        assert_eq!(ok("0m"), now);
        assert_eq!(ok("100000w"), 0, "older than 1970 is 1970");
    }

    #[test]
    fn when_refuses_what_it_cannot_read_and_says_why() {
        let err = |s: &str| parse_when(s, T0).unwrap_err().0;
        assert_eq!(err(""), "empty time");
        assert_eq!(err("yesterday"), "not a time");
        assert_eq!(
            err("15x"),
            "unknown unit 'x' in an age (units: s, m, h, d, w)"
        );
        assert_eq!(err("m"), "not a time");
        assert_eq!(err("-5m"), "not a time");
        assert_eq!(err("99999999999999999999d"), "the age is too long");
        assert_eq!(err("2026-13-01"), "month 13 does not exist");
        assert_eq!(err("2025-02-29"), "day 29 does not exist in 2025-02");
        assert_eq!(err("2026-04-31"), "day 31 does not exist in 2026-04");
        assert_eq!(
            err("2026-11-26T08:00:00"),
            "missing the time zone (Z or +HH:MM)"
        );
        assert_eq!(err("2026-11-26T24:00:00Z"), "24:00:00 is not a time of day");
        assert_eq!(err("2026-11-26T08:00Z"), "expected the time as HH:MM:SS");
        assert_eq!(
            err("2026-11-26T08:00:00.Z"),
            "expected digits after the decimal point"
        );
        assert_eq!(
            err("2026-11-26T08:00:00+0100"),
            "expected the offset as +HH:MM or -HH:MM"
        );
        assert_eq!(
            err("2026-11-26T08:00:00Zjunk"),
            "expected Z or +HH:MM after the time"
        );
        assert_eq!(
            err("2026-11-26X08:00:00Z"),
            "expected T between the date and the time"
        );
        assert_eq!(err("1969-12-31"), "before 1970");
        assert_eq!(err("1970-01-01T00:30:00+01:00"), "before 1970");
        assert_eq!(err("2026-1-26"), "not a time");
        assert_eq!(err("\u{ff12}026-11-26"), "not a time");
        // The whole message says what is accepted.
        assert_eq!(
            parse_when("soon", T0).unwrap_err().to_string(),
            "not a time; expected RFC 3339 (2026-11-26T08:00:00Z), a date \
             (2026-11-26, midnight UTC) or an age (30s, 15m, 2h, 7d, 2w)"
        );
    }

    #[test]
    fn when_never_panics_on_cut_or_mangled_input() {
        let full = "2026-11-26T08:00:00.123+01:30";
        let odd = ['x', '9', ':', '-', '+', '.', 'Z', 'é', ' ', '\u{ff12}'];
        for end in 0..=full.len() {
            let _ = parse_when(&full[..end], T0);
            for at in 0..end {
                for ch in odd {
                    let mut s = full[..end].to_owned();
                    s.replace_range(at..at + 1, ch.encode_utf8(&mut [0; 4]));
                    let _ = parse_when(&s, T0);
                }
            }
        }
        assert_eq!(parse_when(full, T0), Ok(T0 - 90 * 60_000 + 123));
    }

    #[test]
    fn csv_has_a_header_and_exact_rows() {
        let mut missed = cdr("c2@host", T0 + 60_000);
        missed.tenant = "a.example".into();
        missed.caller_user_agent = None;
        missed.answered_by = None;
        missed.answer_ms = None;
        missed.end_ms = T0 + 90_000;
        missed.duration_ms = 0;
        missed.disposition = Disposition::NoAnswer;
        missed.status = 480;
        missed.route = "ring-group:600".into();
        assert_eq!(
            to_csv(&[cdr("c1@host", T0), missed]),
            "start,answer,end,duration_s,tenant,caller,callee,disposition,status,route,\
             answered_by,caller_source,caller_user_agent,call_id,start_ms,answer_ms,end_ms,duration_ms\r\n\
             2026-11-26T08:00:00.000Z,2026-11-26T08:00:02.000Z,2026-11-26T08:01:04.500Z,62.500,,101,102,\
             answered,200,extension:102,sip:102@127.0.0.1:5070,127.0.0.1:5062/UDP,SIPp,c1@host,\
             1795680000000,1795680002000,1795680064500,62500\r\n\
             2026-11-26T08:01:00.000Z,,2026-11-26T08:01:30.000Z,0.000,a.example,101,102,no-answer,480,\
             ring-group:600,,127.0.0.1:5062/UDP,,c2@host,1795680060000,,1795680090000,0\r\n"
        );
        assert_eq!(to_csv(&[]), format!("{}\r\n", CSV_COLUMNS.join(",")));
    }

    #[test]
    fn csv_quotes_commas_quotes_and_line_breaks() {
        assert_eq!(csv_text("plain"), "plain");
        assert_eq!(csv_text(""), "");
        assert_eq!(csv_text("Foo, Inc"), "\"Foo, Inc\"");
        assert_eq!(csv_text("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_text("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_text("cr\rlf"), "\"cr\rlf\"");
        assert_eq!(csv_text("\""), "\"\"\"\"");

        let mut c = cdr("c1", T0);
        c.caller_user_agent = Some("Evil \"UA\", v1\r\nline2".into());
        let csv = to_csv(&[c]);
        let record = csv.split_once("\r\n").unwrap().1;
        assert!(
            record.contains(",127.0.0.1:5062/UDP,\"Evil \"\"UA\"\", v1\r\nline2\",c1,"),
            "{record}"
        );
        assert_eq!(parse_csv(&csv)[1][12], "Evil \"UA\", v1\r\nline2");
    }

    #[test]
    fn csv_defuses_formulas_but_keeps_numbers() {
        assert_eq!(csv_text("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_text("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_text("+cmd|' /C calc'!A0"), "'+cmd|' /C calc'!A0");
        assert_eq!(csv_text("-2+3"), "'-2+3");
        assert_eq!(csv_text("\tx"), "'\tx");
        assert_eq!(csv_text("\rx"), "\"'\rx\"");
        assert_eq!(csv_text("+4930123456"), "+4930123456");
        assert_eq!(csv_text("-"), "-");
        assert_eq!(csv_text("101"), "101");
        assert_eq!(csv_text("a=b"), "a=b");
    }

    /// A strict RFC 4180 reader, to check that what we write reads back.
    fn parse_csv(text: &str) -> Vec<Vec<String>> {
        let mut records = Vec::new();
        let mut record = Vec::new();
        let mut field = String::new();
        let mut chars = text.chars().peekable();
        let mut quoted = false;
        while let Some(ch) = chars.next() {
            match (quoted, ch) {
                (true, '"') if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                (true, '"') => quoted = false,
                (true, c) => field.push(c),
                (false, '"') if field.is_empty() => quoted = true,
                (false, ',') => record.push(std::mem::take(&mut field)),
                (false, '\r') => {
                    assert_eq!(chars.next(), Some('\n'), "CR without LF");
                    record.push(std::mem::take(&mut field));
                    records.push(std::mem::take(&mut record));
                }
                (false, c) => {
                    assert!(c != '"' && c != '\n', "bare {c:?} in {text:?}");
                    field.push(c);
                }
            }
        }
        assert!(field.is_empty() && record.is_empty(), "no final CRLF");
        records
    }

    #[test]
    fn csv_reads_back_field_for_field() {
        let mut odd = cdr("id,\"1\"\n", T0);
        odd.caller_user_agent = Some(",\r\n\"".into());
        odd.route = "none".into();
        let records = parse_csv(&to_csv(&[cdr("c1", T0), odd]));
        assert_eq!(records.len(), 3);
        assert!(records.iter().all(|r| r.len() == CSV_COLUMNS.len()));
        assert_eq!(records[2][12], ",\r\n\"");
        assert_eq!(records[2][13], "id,\"1\"\n");
        assert_eq!(records[2][9], "none");
    }

    #[test]
    fn filter_matches_each_condition() {
        let c = cdr("c1", T0);
        let f = CdrFilter::default();
        assert!(f.matches(&c));
        assert_eq!(f.limit, DEFAULT_LIMIT);
        let with = |edit: fn(&mut CdrFilter)| {
            let mut f = CdrFilter::default();
            edit(&mut f);
            f.matches(&c)
        };
        assert!(with(|f| f.since_ms = Some(T0)));
        assert!(!with(|f| f.since_ms = Some(T0 + 1)));
        assert!(with(|f| f.until_ms = Some(T0 + 1)));
        assert!(!with(|f| f.until_ms = Some(T0)));
        assert!(with(|f| f.extension = Some("101".into())));
        assert!(with(|f| f.extension = Some("102".into())));
        assert!(!with(|f| f.extension = Some("10".into())));
        assert!(with(|f| f.disposition = Some(Disposition::Answered)));
        assert!(!with(|f| f.disposition = Some(Disposition::Busy)));
        assert!(with(|f| f.tenant = Some(String::new())));
        assert!(!with(|f| f.tenant = Some("a.example".into())));
    }

    #[test]
    fn filter_from_json_takes_defaults_and_refuses_unknown_keys() {
        let f: CdrFilter =
            serde_json::from_str(r#"{"extension":"101","disposition":"no-answer"}"#).unwrap();
        assert_eq!(
            f,
            CdrFilter {
                extension: Some("101".into()),
                disposition: Some(Disposition::NoAnswer),
                ..CdrFilter::default()
            }
        );
        let err = serde_json::from_str::<CdrFilter>(r#"{"extention":"101"}"#).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `extention`"),
            "{err}"
        );
    }

    #[test]
    fn table_escapes_control_characters() {
        let mut c = cdr("c1", T0);
        c.callee = "102\u{1b}[2J".into();
        c.tenant = "a.example".into();
        let table = render_table(&[c]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("START (UTC)          CALLER"));
        assert_eq!(
            lines[1],
            "2026-11-26 08:00:00  101@a.example            102\\u{1b}[2J@a.example   answered       200   0:01:02  extension:102"
        );
        assert_eq!(lines[2], "1 call(s)");
    }
}
