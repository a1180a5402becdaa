//! Addresses and networks, without extra crates.
//!
//! - [`source_key`]: the key a source is counted by: IPv4 as is (an
//!   IPv4-mapped IPv6 address too), IPv6 by its prefix, the way the gateway
//!   bans (`[bans] ipv6_prefix_len`, /64 by default).
//! - [`Net`]: an address or CIDR network from config (`127.0.0.3`,
//!   `127.0.0.0/29`, `::1`, `2001:db8::/48`) and whether an address is in it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::text::key_part;

/// `src:<address>` for IPv4 (IPv4-mapped IPv6 included) and
/// `src:<network>/<prefix>` for IPv6. Text that is no address (the host never
/// sends one) is kept, made safe for a key.
pub fn source_key(ip: &str, ipv6_prefix_len: u8) -> String {
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    match ip.parse::<IpAddr>() {
        Ok(ip) => source_key_of(ip, ipv6_prefix_len),
        Err(_) => format!("src:{}", key_part(ip)),
    }
}

/// [`source_key`] of an address already parsed.
pub fn source_key_of(ip: IpAddr, ipv6_prefix_len: u8) -> String {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            // By hand: this runs for every request of a counting plugin.
            let mut key = String::with_capacity(19);
            key.push_str("src:");
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    key.push('.');
                }
                if octet >= 100 {
                    key.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    key.push(char::from(b'0' + octet / 10 % 10));
                }
                key.push(char::from(b'0' + octet % 10));
            }
            key
        }
        IpAddr::V6(v6) if ipv6_prefix_len >= 128 => format!("src:{v6}"),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let mask = u128::MAX << (128 - u32::from(ipv6_prefix_len.max(1)));
            format!("src:{}/{ipv6_prefix_len}", Ipv6Addr::from(bits & mask))
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is; others unchanged.
#[inline]
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// An IP network: an address and a prefix length (a single address is a
/// /32 or /128). IPv4-mapped IPv6 networks (`::ffff:10.0.0.0/104`) are
/// kept as the IPv4 network they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Net {
    /// The network address: host bits zero.
    addr: IpAddr,
    prefix: u8,
}

/// Why a network text was refused; shown after `invalid address or CIDR "…"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetError {
    /// Not an address, or a prefix that is not a number in range.
    Invalid,
    /// `192.0.2.7/24`: host bits set; most likely a typo for the network.
    HostBits { network: String },
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::Invalid => Ok(()),
            NetError::HostBits { network } => {
                write!(f, " (host bits set: the network is {network})")
            }
        }
    }
}

impl Net {
    /// `ADDRESS` or `ADDRESS/PREFIX`, IPv4 or IPv6 (no brackets, no zone).
    pub fn parse(text: &str) -> Result<Net, NetError> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| NetError::Invalid)?;
        let max = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let prefix = match prefix {
            None => max,
            // Digits only: `u8::from_str` would take "+24".
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| NetError::Invalid)?
            }
            Some(_) => return Err(NetError::Invalid),
        };
        if prefix > max {
            return Err(NetError::Invalid);
        }
        let net = Net { addr, prefix };
        let masked = net.masked();
        if masked.addr != addr {
            return Err(NetError::HostBits {
                network: masked.to_string(),
            });
        }
        Ok(match addr {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => Net {
                    addr: IpAddr::V4(v4),
                    prefix: prefix - 96,
                },
                None => net,
            },
            _ => net,
        })
    }

    /// The prefix length: the larger, the more specific.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// A single address (/32, /128)?
    pub fn is_host(&self) -> bool {
        self.prefix == self.max_prefix()
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    fn max_prefix(&self) -> u8 {
        match self.addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        }
    }

    fn masked(&self) -> Net {
        let addr = match self.addr {
            IpAddr::V4(v4) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        };
        Net {
            addr,
            prefix: self.prefix,
        }
    }

    /// Whether `ip` is in this network (an IPv4-mapped IPv6 `ip` as IPv4).
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(ip) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(ip) & mask == u128::from(net)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_is_kept_whole() {
        assert_eq!(source_key("192.0.2.7", 64), "src:192.0.2.7");
    }

    #[test]
    fn ipv6_is_keyed_by_its_prefix() {
        assert_eq!(
            source_key("2001:db8:1:2:a:b:c:d", 64),
            "src:2001:db8:1:2::/64"
        );
        assert_eq!(
            source_key("[2001:db8:1:2::1]", 64),
            source_key("2001:db8:1:2:ffff::9", 64)
        );
        assert_eq!(
            source_key("2001:db8:1:2ff::1", 56),
            "src:2001:db8:1:200::/56"
        );
        assert_eq!(source_key("2001:db8::1", 128), "src:2001:db8::1");
    }

    #[test]
    fn ipv4_keys_are_written_by_hand_like_display() {
        for ip in ["0.0.0.0", "9.10.99.100", "255.255.255.255", "192.0.2.7"] {
            assert_eq!(source_key_of(ip.parse().unwrap(), 64), format!("src:{ip}"));
        }
    }

    #[test]
    fn ipv4_mapped_ipv6_is_ipv4() {
        assert_eq!(source_key("::ffff:192.0.2.7", 64), "src:192.0.2.7");
    }

    #[test]
    fn odd_source_text_is_made_safe() {
        assert_eq!(source_key("not/an ip", 64), "src:not%2Fan ip");
    }

    #[test]
    fn networks_parse_and_contain() {
        let n = Net::parse("127.0.0.0/29").unwrap();
        assert!(n.contains(ip("127.0.0.7")) && !n.contains(ip("127.0.0.8")));
        assert!(n.contains(ip("::ffff:127.0.0.3")));
        assert!(!n.contains(ip("::1")));
        let h = Net::parse("127.0.0.3").unwrap();
        assert!(h.is_host() && h.contains(ip("127.0.0.3")) && !h.contains(ip("127.0.0.4")));
        assert_eq!(h.to_string(), "127.0.0.3");
        let v6 = Net::parse("2001:db8:1::/48").unwrap();
        assert!(v6.contains(ip("2001:db8:1:ffff::1")) && !v6.contains(ip("2001:db8:2::1")));
        assert_eq!(v6.to_string(), "2001:db8:1::/48");
        let all = Net::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("203.0.113.9")) && !all.contains(ip("2001:db8::1")));
        assert!(Net::parse("::/0").unwrap().contains(ip("::1")));
        let mapped = Net::parse("::ffff:127.0.0.0/104").unwrap();
        assert_eq!(mapped, Net::parse("127.0.0.0/8").unwrap());
        assert!(Net::parse("::1").unwrap().contains(ip("::1")));
    }

    #[test]
    fn bad_networks_are_refused() {
        for bad in [
            "10.0.0/33",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/ 8",
            "10.0.0.0/8/8",
            "localhost",
            "",
            "[::1]",
            "fe80::1%eth0",
            "10.0.0.256",
        ] {
            assert_eq!(Net::parse(bad), Err(NetError::Invalid), "{bad}");
        }
        assert_eq!(
            Net::parse("192.0.2.7/24"),
            Err(NetError::HostBits {
                network: "192.0.2.0/24".into()
            })
        );
    }
}
