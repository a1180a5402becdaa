//! SIP request methods (RFC 3261 7.1, 27.4 and the extension RFCs).

use std::fmt;

/// A request method. Method names are case-sensitive (RFC 3261 7.1): `invite`
/// is an unknown extension method, not INVITE.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Register,
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Info,
    Update,
    Prack,
    Subscribe,
    Notify,
    Message,
    Refer,
    Publish,
    /// Any other method token, spelled as received.
    Other(String),
}

impl Method {
    /// Maps a method token to a `Method`, case-sensitively (RFC 3261 7.1).
    /// Unknown tokens become `Other`; the caller checks token syntax.
    pub fn from_token(s: &str) -> Method {
        match s {
            "REGISTER" => Method::Register,
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "MESSAGE" => Method::Message,
            "REFER" => Method::Refer,
            "PUBLISH" => Method::Publish,
            other => Method::Other(other.to_owned()),
        }
    }

    /// The method token as written on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Register => "REGISTER",
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Message => "MESSAGE",
            Method::Refer => "REFER",
            Method::Publish => "PUBLISH",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_unknown_methods() {
        assert_eq!(Method::from_token("REGISTER"), Method::Register);
        assert_eq!(Method::from_token("PUBLISH"), Method::Publish);
        assert_eq!(
            Method::from_token("NEWMETHOD"),
            Method::Other("NEWMETHOD".into())
        );
        // RFC 3261 7.1: case-sensitive.
        assert_eq!(
            Method::from_token("register"),
            Method::Other("register".into())
        );
        for m in [
            "REGISTER",
            "INVITE",
            "ACK",
            "BYE",
            "CANCEL",
            "OPTIONS",
            "INFO",
            "UPDATE",
            "PRACK",
            "SUBSCRIBE",
            "NOTIFY",
            "MESSAGE",
            "REFER",
            "PUBLISH",
            "FOO",
        ] {
            assert_eq!(Method::from_token(m).as_str(), m);
            assert_eq!(Method::from_token(m).to_string(), m);
        }
    }
}
