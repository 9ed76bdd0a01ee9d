//! Who gets a session: at most `max_connections` at once over all clients, and at most
//! `max_connections_per_ip` from one client, so one client holding its connections
//! open (NOOP for ever, or silence) cannot take every slot from the others. An IPv6
//! client is counted by its /64, the block one host is usually given.

use super::Reply;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The connection caps of a listener.
#[derive(Debug)]
pub struct Admission {
    max_total: u32,
    max_per_ip: u32,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: u32,
    per_ip: HashMap<IpAddr, u32>,
}

/// A session's place; given back when dropped.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    key: IpAddr,
}

/// The address a client is counted under.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

impl Admission {
    pub fn new(max_total: u32, max_per_ip: u32) -> Arc<Admission> {
        Arc::new(Admission {
            max_total: max_total.max(1),
            max_per_ip: max_per_ip.max(1),
            open: Mutex::new(Open::default()),
        })
    }

    /// A place for a session from `ip`, or the 421 that turns it away (saying which
    /// cap it hit).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Reply> {
        let key = client_key(ip);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mine = open.per_ip.get(&key).copied().unwrap_or(0);
        if mine >= self.max_per_ip {
            return Err(Reply::new(
                421,
                format!(
                    "4.7.0 too many connections from your address (limit {}), try again later",
                    self.max_per_ip
                ),
            ));
        }
        if open.total >= self.max_total {
            return Err(Reply::new(
                421,
                "4.3.2 too many connections, try again later",
            ));
        }
        open.total += 1;
        open.per_ip.insert(key, mine + 1);
        Ok(Ticket {
            admission: self.clone(),
            key,
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut open = self
            .admission
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        // Forget a client with no session left, so the map holds only open ones.
        if let Some(n) = open.per_ip.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.per_ip.remove(&self.key);
            }
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
    fn one_client_is_capped_before_the_listener_is_full() {
        let a = Admission::new(4, 2);
        let t1 = a.admit(ip("127.0.0.2")).unwrap();
        let _t2 = a.admit(ip("127.0.0.2")).unwrap();
        let refused = a.admit(ip("127.0.0.2")).unwrap_err();
        assert_eq!(refused.code, 421);
        assert!(refused.text().contains("from your address (limit 2)"));
        let _t3 = a.admit(ip("127.0.0.3")).unwrap();
        let _t4 = a.admit(ip("127.0.0.4")).unwrap();
        let full = a.admit(ip("127.0.0.5")).unwrap_err();
        assert!(
            full.text().contains("too many connections, try"),
            "{full:?}"
        );
        drop(t1);
        assert!(a.admit(ip("127.0.0.2")).is_ok(), "a place given back");
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_64() {
        let a = Admission::new(10, 1);
        let _t = a.admit(ip("2001:db8:1:2::1")).unwrap();
        assert!(a.admit(ip("2001:db8:1:2:ffff::9")).is_err());
        assert!(a.admit(ip("2001:db8:1:3::1")).is_ok());
        let _m = a.admit(ip("::ffff:192.0.2.1")).unwrap();
        assert!(
            a.admit(ip("192.0.2.1")).is_err(),
            "v4-mapped is the v4 client"
        );
    }

    #[test]
    fn the_map_forgets_clients_without_sessions() {
        let a = Admission::new(10, 3);
        let t = a.admit(ip("10.0.0.1")).unwrap();
        drop(t);
        assert!(a.open.lock().unwrap().per_ip.is_empty());
        assert_eq!(a.open.lock().unwrap().total, 0);
    }
}
