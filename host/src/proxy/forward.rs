//! Message surgery of a proxy (RFC 3261 16.6, 9.1, 17.1.1.3): the copy of a
//! request sent on, the CANCEL and ACK it sends per branch. Pure functions
//! over [`Message`], so the rules are unit-tested without sockets.

use crate::sip::{Message, Method, NameAddr, StartLine, Uri};
use crate::transport::Transport;

/// The parameter marking our own Record-Route URI, so the Route entry that
/// names us is recognised without comparing host names.
pub const ROUTE_MARK: &str = "sipfence";

/// Our Via for a request we send (RFC 3261 16.6 step 8). `rport` asks the
/// next hop to answer to the port we really sent from.
pub fn via(transport: Transport, local: &str, branch: &str) -> String {
    format!("SIP/2.0/{transport} {local};branch={branch};rport")
}

/// Our Record-Route value (loose routing, RFC 3261 16.6 step 4).
pub fn record_route(local: &str, transport: Transport) -> String {
    match transport {
        Transport::Udp => format!("<sip:{local};lr;{ROUTE_MARK}>"),
        Transport::Tcp => format!("<sip:{local};transport=tcp;lr;{ROUTE_MARK}>"),
    }
}

/// The copy of `request` sent on to one target (RFC 3261 16.6): a new
/// Request-URI when given, Max-Forwards decremented (70 when absent), the
/// caller's credentials for us removed (they were for this hop only), and
/// `via` on top. The caller adds Record-Route for dialog-creating requests.
pub fn forward(request: &Message, uri: Option<&Uri>, via: &str) -> Message {
    let mut out = request.clone();
    if let (Some(uri), StartLine::Request { uri: target, .. }) = (uri, &mut out.start) {
        *target = uri.clone();
    }
    let hops = request.max_forwards().ok().flatten().unwrap_or(71);
    out.headers
        .set("Max-Forwards", hops.saturating_sub(1).to_string());
    out.headers.remove("Proxy-Authorization");
    out.headers.insert(0, "Via", via);
    out
}

/// Removes the Route entries that name us (RFC 3261 16.4): the dialog's
/// next hop is then found from the dialog, never from a header.
pub fn strip_own_routes(request: &mut Message) {
    while let Some(first) = request.headers.get("Route") {
        let first = crate::sip::split_list(first)
            .first()
            .map(|s| s.to_string())
            .unwrap_or_default();
        let ours = NameAddr::parse(&first)
            .is_ok_and(|route| route.uri.params.iter().any(|(n, _)| n == ROUTE_MARK));
        if !ours {
            break;
        }
        request.headers.pop_first_value("Route");
    }
}

/// The CANCEL of a request we sent (RFC 3261 9.1): same Request-URI,
/// Call-ID, From, To, CSeq number and top Via (so the same branch), Route
/// copied; optionally a Reason (RFC 3326).
pub fn cancel_for(sent: &Message, reason: Option<&str>) -> Message {
    let mut headers = crate::sip::Headers::with_capacity(9, sent.headers.text_len());
    if let Some(via) = sent.headers.get("Via") {
        let top = crate::sip::split_list(via)
            .first()
            .map(|s| s.to_string())
            .unwrap_or_default();
        headers.push("Via", top);
    }
    for name in ["Max-Forwards", "From", "To", "Call-ID"] {
        if let Some(v) = sent.headers.get(name) {
            headers.push(name, v);
        }
    }
    if let Ok(cseq) = sent.cseq() {
        headers.push("CSeq", format!("{} CANCEL", cseq.seq));
    }
    for route in sent.headers.get_all("Route") {
        headers.push("Route", route);
    }
    if let Some(reason) = reason {
        headers.push("Reason", reason);
    }
    Message {
        start: StartLine::Request {
            method: Method::Cancel,
            uri: request_uri(sent),
        },
        headers,
        body: Vec::new(),
    }
}

/// The ACK for a non-2xx final response to an INVITE we sent (RFC 3261
/// 17.1.1.3): as the CANCEL, but To from the response (it carries the tag).
pub fn ack_for(sent: &Message, response: &Message) -> Message {
    let mut ack = cancel_for(sent, None);
    ack.start = StartLine::Request {
        method: Method::Ack,
        uri: request_uri(sent),
    };
    if let Some(to) = response.headers.get("To") {
        ack.headers.set("To", to);
    }
    if let Ok(cseq) = sent.cseq() {
        ack.headers.set("CSeq", format!("{} ACK", cseq.seq));
    }
    ack
}

fn request_uri(request: &Message) -> Uri {
    match &request.start {
        StartLine::Request { uri, .. } => uri.clone(),
        StartLine::Response { .. } => unreachable!("only requests are sent on"),
    }
}

/// A BYE of our own (a call outlived its maximum duration): from `from` to
/// `to` (header values with tags), sent to `target` (the peer's Contact URI).
pub fn bye(target: &Uri, from: &str, to: &str, call_id: &str, cseq: u32, via: &str) -> Message {
    let method = Method::Bye;
    let mut headers = crate::sip::Headers::with_capacity(8, 256);
    headers.push("Via", via);
    headers.push("Max-Forwards", "70");
    headers.push("From", from);
    headers.push("To", to);
    headers.push("Call-ID", call_id);
    headers.push("CSeq", format!("{cseq} {method}"));
    Message {
        start: StartLine::Request {
            method,
            uri: target.clone(),
        },
        headers,
        body: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite() -> Message {
        Message::parse(
            b"INVITE sip:101@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.2:5062;branch=z9hG4bKcaller;rport=5062;received=127.0.0.2\r\n\
Max-Forwards: 70\r\n\
From: <sip:100@127.0.0.1>;tag=a\r\n\
To: <sip:101@127.0.0.1>\r\n\
Call-ID: c1\r\n\
CSeq: 2 INVITE\r\n\
Proxy-Authorization: Digest username=\"100\"\r\n\
Contact: <sip:100@127.0.0.2:5062>\r\n\
Content-Length: 0\r\n\r\n",
        )
        .unwrap()
    }

    #[test]
    fn forward_rewrites_uri_hops_credentials_and_via() {
        let target = Uri::parse("sip:101@127.0.0.3:5070").unwrap();
        let out = forward(
            &invite(),
            Some(&target),
            &via(Transport::Udp, "127.0.0.1:5060", "z9hG4bKsf1"),
        );
        assert_eq!(
            out.request_uri().unwrap().to_string(),
            "sip:101@127.0.0.3:5070"
        );
        assert_eq!(out.max_forwards().unwrap(), Some(69));
        assert!(out.headers.get("Proxy-Authorization").is_none());
        let vias = out.vias().unwrap();
        assert_eq!(vias.len(), 2);
        assert_eq!(vias[0].branch(), Some("z9hG4bKsf1"));
        assert_eq!(vias[1].branch(), Some("z9hG4bKcaller"));
    }

    #[test]
    fn cancel_and_ack_keep_the_branch_and_cseq_number() {
        let sent = forward(
            &invite(),
            None,
            &via(Transport::Udp, "127.0.0.1:5060", "z9hG4bKsf1"),
        );
        let cancel = cancel_for(
            &sent,
            Some("SIP;cause=200;text=\"Call completed elsewhere\""),
        );
        assert_eq!(cancel.method(), Some(&Method::Cancel));
        assert_eq!(cancel.vias().unwrap().len(), 1);
        assert_eq!(cancel.top_via().unwrap().branch(), Some("z9hG4bKsf1"));
        assert_eq!(cancel.cseq().unwrap().seq, 2);
        assert!(cancel.headers.get("Reason").unwrap().contains("cause=200"));
        let mut response = sent.response(486, "Busy Here", Some("callee"));
        response.headers.pop_first_value("Via");
        let ack = ack_for(&sent, &response);
        assert_eq!(ack.method(), Some(&Method::Ack));
        assert!(ack.headers.get("To").unwrap().contains("tag=callee"));
        assert_eq!(ack.headers.get("CSeq"), Some("2 ACK"));
        assert_eq!(ack.request_uri(), sent.request_uri());
    }

    #[test]
    fn only_our_own_routes_are_stripped() {
        let mut request = invite();
        request.headers.push(
            "Route",
            "<sip:127.0.0.1:5060;lr;sipfence>, <sip:other.example;lr>",
        );
        strip_own_routes(&mut request);
        assert_eq!(request.headers.get("Route"), Some("<sip:other.example;lr>"));
        strip_own_routes(&mut request);
        assert_eq!(request.headers.get("Route"), Some("<sip:other.example;lr>"));
    }
}
