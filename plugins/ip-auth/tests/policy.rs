//! The ip-auth rules, one test each, natively:
//! `cargo test --manifest-path plugins/Cargo.toml -p ip-auth`.

use std::cell::RefCell;
use std::net::IpAddr;

use ip_auth::policy::{Level, Log, Policy, RequestView, Transport, Verdict};

/// The log, recorded.
#[derive(Default)]
struct Logs(RefCell<Vec<(Level, String)>>);

impl Log for Logs {
    fn log(&self, level: Level, message: &str) {
        self.0.borrow_mut().push((level, message.to_owned()));
    }
}

/// A request whose getters record what the policy read.
struct Req {
    ip: &'static str,
    port: u16,
    transport: Transport,
    method: &'static str,
    from_user: Option<&'static str>,
    to_user: Option<&'static str>,
    tenant: &'static str,
    read: RefCell<Vec<&'static str>>,
}

impl Req {
    /// An INVITE from `ip` claiming `user` of the default tenant, over UDP
    /// from port 5060.
    fn invite(ip: &'static str, user: &'static str) -> Req {
        Req {
            ip,
            port: 5060,
            transport: Transport::Udp,
            method: "INVITE",
            from_user: Some(user),
            to_user: Some("200"),
            tenant: "",
            read: RefCell::default(),
        }
    }

    fn register(ip: &'static str, user: &'static str) -> Req {
        Req {
            method: "REGISTER",
            from_user: Some("someone-else"),
            to_user: Some(user),
            ..Req::invite(ip, "")
        }
    }

    fn reads(&self) -> Vec<&'static str> {
        self.read.borrow().clone()
    }
}

impl RequestView for Req {
    fn source_ip(&self) -> IpAddr {
        self.read.borrow_mut().push("source-ip");
        self.ip.parse().unwrap()
    }
    fn source_port(&self) -> u16 {
        self.read.borrow_mut().push("source-port");
        self.port
    }
    fn transport(&self) -> Transport {
        self.read.borrow_mut().push("transport");
        self.transport
    }
    fn method(&self) -> String {
        self.read.borrow_mut().push("method");
        self.method.into()
    }
    fn from_user(&self) -> Option<String> {
        self.read.borrow_mut().push("from-user");
        self.from_user.map(Into::into)
    }
    fn to_user(&self) -> Option<String> {
        self.read.borrow_mut().push("to-user");
        self.to_user.map(Into::into)
    }
    fn tenant(&self) -> String {
        self.read.borrow_mut().push("tenant");
        self.tenant.into()
    }
}

fn policy(json: &str) -> Policy {
    Policy::from_json(json).unwrap_or_else(|e| panic!("{e}"))
}

fn decide(p: &Policy, req: &Req) -> Verdict {
    p.on_request(&Logs::default(), req)
}

fn trust(tenant: &str, extension: &str) -> Verdict {
    Verdict::Trust {
        tenant: tenant.into(),
        extension: extension.into(),
    }
}

const DOOR: &str = r#"{"device": [{"extension": "150", "source": "127.0.0.3"}]}"#;

#[test]
fn a_device_is_trusted_from_its_address() {
    let p = policy(DOOR);
    assert_eq!(
        decide(&p, &Req::invite("127.0.0.3", "150")),
        trust("", "150")
    );
}

#[test]
fn another_address_goes_the_digest_way() {
    let p = policy(DOOR);
    let req = Req::invite("127.0.0.4", "150");
    assert_eq!(decide(&p, &req), Verdict::Continue);
    assert_eq!(
        req.reads(),
        ["source-ip"],
        "one getter for an address of no device"
    );
}

#[test]
fn another_extension_from_the_device_address_is_not_trusted() {
    let p = policy(DOOR);
    let logs = Logs::default();
    let req = Req::invite("127.0.0.3", "151");
    assert_eq!(p.on_request(&logs, &req), Verdict::Continue);
    let logs = logs.0.borrow();
    assert_eq!(
        logs[0],
        (
            Level::Debug,
            "not trusting INVITE from 127.0.0.3:5060: it claims user 151, the address trusts \
             150 (device[0])"
                .to_owned()
        )
    );
    let anonymous = Req {
        from_user: None,
        ..Req::invite("127.0.0.3", "")
    };
    assert_eq!(decide(&p, &anonymous), Verdict::Continue);
}

#[test]
fn register_is_judged_by_its_to_user() {
    let p = policy(DOOR);
    let req = Req::register("127.0.0.3", "150");
    assert_eq!(decide(&p, &req), trust("", "150"));
    assert!(req.reads().contains(&"to-user") && !req.reads().contains(&"from-user"));
    // From says 150, To says otherwise: a REGISTER for another extension.
    let other = Req {
        from_user: Some("150"),
        ..Req::register("127.0.0.3", "151")
    };
    assert_eq!(decide(&p, &other), Verdict::Continue);
}

#[test]
fn the_tenant_must_be_the_devices() {
    let p = policy(
        r#"{"device": [{"tenant": "A.example", "extension": "150", "source": "127.0.0.3"}]}"#,
    );
    let default = Req::invite("127.0.0.3", "150");
    assert_eq!(decide(&p, &default), Verdict::Continue);
    let other = Req {
        tenant: "b.example",
        ..Req::invite("127.0.0.3", "150")
    };
    assert_eq!(decide(&p, &other), Verdict::Continue);
    // Domains compare without case; the verdict names the host's spelling.
    let a = Req {
        tenant: "a.example",
        ..Req::invite("127.0.0.3", "150")
    };
    assert_eq!(decide(&p, &a), trust("a.example", "150"));
}

#[test]
fn one_address_can_carry_several_lines_and_tenants() {
    let p = policy(
        r#"{"device": [
            {"extension": "150", "source": "127.0.0.3"},
            {"extension": "151", "source": "127.0.0.3"},
            {"tenant": "a.example", "extension": "150", "source": "127.0.0.3"}
        ]}"#,
    );
    assert_eq!(
        decide(&p, &Req::invite("127.0.0.3", "150")),
        trust("", "150")
    );
    assert_eq!(
        decide(&p, &Req::invite("127.0.0.3", "151")),
        trust("", "151")
    );
    let a = Req {
        tenant: "a.example",
        ..Req::invite("127.0.0.3", "150")
    };
    assert_eq!(decide(&p, &a), trust("a.example", "150"));
}

#[test]
fn cidr_entries_cover_their_network() {
    let p = policy(r#"{"device": [{"extension": "160", "source": "127.0.0.0/29"}]}"#);
    for ip in ["127.0.0.0", "127.0.0.5", "127.0.0.7"] {
        assert_eq!(
            decide(&p, &Req::invite(ip, "160")),
            trust("", "160"),
            "{ip}"
        );
    }
    assert_eq!(
        decide(&p, &Req::invite("127.0.0.8", "160")),
        Verdict::Continue
    );
}

#[test]
fn the_most_specific_entry_owns_an_address() {
    let p = policy(
        r#"{"device": [
            {"extension": "160", "source": "127.0.0.0/24"},
            {"extension": "161", "source": "127.0.0.0/29"},
            {"extension": "150", "source": "127.0.0.3"}
        ]}"#,
    );
    // 127.0.0.3 is the door phone's: it cannot claim the networks' lines.
    assert_eq!(
        decide(&p, &Req::invite("127.0.0.3", "150")),
        trust("", "150")
    );
    assert_eq!(
        decide(&p, &Req::invite("127.0.0.3", "160")),
        Verdict::Continue
    );
    assert_eq!(
        decide(&p, &Req::invite("127.0.0.3", "161")),
        Verdict::Continue
    );
    // In the /29 but not .3: the /29's.
    assert_eq!(
        decide(&p, &Req::invite("127.0.0.4", "161")),
        trust("", "161")
    );
    assert_eq!(
        decide(&p, &Req::invite("127.0.0.4", "160")),
        Verdict::Continue
    );
    // In the /24 only.
    assert_eq!(
        decide(&p, &Req::invite("127.0.0.100", "160")),
        trust("", "160")
    );
}

#[test]
fn a_port_or_transport_makes_an_entry_more_specific() {
    let p = policy(
        r#"{"device": [
            {"extension": "150", "source": "127.0.0.3"},
            {"extension": "151", "source": "127.0.0.3", "port": 5062},
            {"extension": "152", "source": "127.0.0.3", "port": 5064, "transport": "tcp"}
        ]}"#,
    );
    assert_eq!(
        decide(&p, &Req::invite("127.0.0.3", "150")),
        trust("", "150")
    );
    let from_5062 = |user| Req {
        port: 5062,
        ..Req::invite("127.0.0.3", user)
    };
    assert_eq!(decide(&p, &from_5062("151")), trust("", "151"));
    assert_eq!(decide(&p, &from_5062("150")), Verdict::Continue);
    let tcp_5064 = Req {
        port: 5064,
        transport: Transport::Tcp,
        ..Req::invite("127.0.0.3", "152")
    };
    assert_eq!(decide(&p, &tcp_5064), trust("", "152"));
    // Over UDP from 5064 the tcp entry does not match: the plain entry does.
    let udp_5064 = |user| Req {
        port: 5064,
        ..Req::invite("127.0.0.3", user)
    };
    assert_eq!(decide(&p, &udp_5064("152")), Verdict::Continue);
    assert_eq!(decide(&p, &udp_5064("150")), trust("", "150"));
}

#[test]
fn port_and_transport_are_read_only_when_an_entry_asks() {
    let p = policy(DOOR);
    let req = Req::invite("127.0.0.3", "150");
    decide(&p, &req);
    // The port only for the log line.
    assert_eq!(
        req.reads(),
        ["source-ip", "method", "from-user", "tenant", "source-port"]
    );
    let p =
        policy(r#"{"device": [{"extension": "150", "source": "127.0.0.3", "transport": "tcp"}]}"#);
    let udp = Req::invite("127.0.0.3", "150");
    assert_eq!(decide(&p, &udp), Verdict::Continue);
    assert_eq!(udp.reads(), ["source-ip", "transport"]);
    let p = policy(r#"{"device": [{"extension": "150", "source": "127.0.0.3", "port": 5062}]}"#);
    let other_port = Req::invite("127.0.0.3", "150");
    assert_eq!(decide(&p, &other_port), Verdict::Continue);
    assert_eq!(other_port.reads(), ["source-ip", "source-port"]);
}

#[test]
fn ipv6_addresses_and_networks() {
    let p = policy(
        r#"{"device": [
            {"extension": "150", "source": "::1"},
            {"extension": "151", "source": "2001:db8:5::/48"},
            {"extension": "152", "source": "127.0.0.3"}
        ]}"#,
    );
    assert_eq!(decide(&p, &Req::invite("::1", "150")), trust("", "150"));
    assert_eq!(
        decide(&p, &Req::invite("2001:db8:5:1::9", "151")),
        trust("", "151")
    );
    assert_eq!(
        decide(&p, &Req::invite("2001:db8:6::9", "151")),
        Verdict::Continue
    );
    // An IPv4-mapped source is the IPv4 address.
    assert_eq!(
        decide(&p, &Req::invite("::ffff:127.0.0.3", "152")),
        trust("", "152")
    );
}

#[test]
fn trunks_get_no_device_trust() {
    let p = policy(
        r#"{"device": [{"extension": "160", "source": "127.0.2.0/24"}],
            "trunk": [{"id": "1", "source": "127.0.2.1"}, {"id": "2", "source": "127.0.3.1", "port": 5060}]}"#,
    );
    // The trunk's address is the trunk's, not the /24 devices'.
    assert_eq!(
        decide(&p, &Req::invite("127.0.2.1", "160")),
        Verdict::Continue
    );
    assert_eq!(
        decide(&p, &Req::invite("127.0.2.2", "160")),
        trust("", "160")
    );
    // And a trunk alone gives no verdict at all (trunk trust comes later).
    let trunk_only = policy(r#"{"trunk": [{"id": "1", "source": "127.0.2.1"}]}"#);
    let req = Req::invite("127.0.2.1", "160");
    assert_eq!(decide(&trunk_only, &req), Verdict::Continue);
    assert!(req.reads().is_empty(), "no device: nothing read");
}

#[test]
fn no_entries_read_nothing() {
    for json in ["", "{}", r#"{"device": []}"#] {
        let req = Req::invite("127.0.0.3", "150");
        assert_eq!(decide(&policy(json), &req), Verdict::Continue);
        assert!(req.reads().is_empty());
    }
}

#[test]
fn trust_is_logged_at_debug() {
    let p = policy(DOOR);
    let logs = Logs::default();
    p.on_request(&logs, &Req::register("127.0.0.3", "150"));
    assert_eq!(
        *logs.0.borrow(),
        [(
            Level::Debug,
            "trusting REGISTER from 127.0.0.3:5060 as extension 150 of tenant (default) (device[0])"
                .to_owned()
        )]
    );
}

fn error(json: &str) -> String {
    Policy::from_json(json).unwrap_err().to_string()
}

#[test]
fn bad_entries_are_named_by_position_and_key() {
    assert_eq!(
        error(
            r#"{"device": [{"extension": "150", "source": "127.0.0.3"},
                           {"extension": "151", "source": "127.0.0.4"},
                           {"extension": "152", "source": "10.0.0/33"}]}"#
        ),
        r#"device[2].source: invalid address or CIDR "10.0.0/33""#
    );
    assert_eq!(
        error(r#"{"device": [{"extension": "150", "source": "127.0.0.3/29"}]}"#),
        r#"device[0].source: invalid address or CIDR "127.0.0.3/29" (host bits set: the network is 127.0.0.0/29)"#
    );
    assert_eq!(
        error(r#"{"device": [{"extension": "", "source": "127.0.0.3"}]}"#),
        "device[0].extension: must not be empty"
    );
    assert_eq!(
        error(r#"{"device": [{"extension": "1 50", "source": "127.0.0.3"}]}"#),
        r#"device[0].extension: "1 50" is not a SIP user (no spaces)"#
    );
    assert_eq!(
        error(r#"{"device": [{"source": "127.0.0.3"}]}"#),
        "device[0].extension: missing (it has no default)"
    );
    assert_eq!(
        error(
            r#"{"device": [{"extension": "150", "source": "127.0.0.3"},
                           {"tenant": "a.example", "extension": "150", "source": "127.0.0.4"},
                           {"extension": "150", "source": "127.0.0.5"}]}"#
        ),
        r#"device[2].extension: extension "150" of tenant (default) is already device[0]"#
    );
    assert_eq!(
        error(r#"{"device": [{"extension": "150", "source": "127.0.0.3", "port": 70000}]}"#),
        "device[0].port: invalid value: integer `70000`, expected u16"
    );
    assert_eq!(
        error(r#"{"device": [{"extension": "150", "source": "127.0.0.3", "transport": "sctp"}]}"#),
        "device[0].transport: unknown variant `sctp`, expected `udp` or `tcp`"
    );
    assert_eq!(
        error(r#"{"device": [{"extension": "150", "sourc": "127.0.0.3"}]}"#),
        "device[0].sourc: unknown key, expected one of `tenant`, `extension`, `source`, `port`, `transport`"
    );
    assert_eq!(
        error(r#"{"devices": []}"#),
        "devices: unknown key, expected `device` or `trunk`"
    );
}

#[test]
fn bad_trunks_are_named_too() {
    assert_eq!(
        error(
            r#"{"trunk": [{"id": "1", "source": "127.0.2.1"}, {"id": "1", "source": "127.0.2.2"}]}"#
        ),
        r#"trunk[1].id: "1" is already trunk[0]"#
    );
    assert_eq!(
        error(r#"{"trunk": [{"id": "", "source": "127.0.2.1"}]}"#),
        "trunk[0].id: must not be empty"
    );
    assert_eq!(
        error(r#"{"trunk": [{"id": "1", "source": "office-2"}]}"#),
        r#"trunk[0].source: invalid address or CIDR "office-2""#
    );
    assert_eq!(
        error(
            r#"{"device": [{"extension": "150", "source": "127.0.2.1"}],
                "trunk": [{"id": "1", "source": "127.0.2.1"}]}"#
        ),
        "trunk[0].source: 127.0.2.1 is also device[0]'s source: an address is a device's or a trunk's"
    );
}
