//! The host names of a log, numbered in order of first sight.
//!
//! One syslog file may hold many hosts (a central log server), and the names
//! come from the log: a file naming a new host on every line must cost a hash
//! lookup per line, not a scan of every name seen so far (that was
//! quadratic: a million lines naming a million hosts made 5·10^11
//! comparisons). Names are looked up with SipHash under a random key, since a
//! chosen set of names could defeat the readers' Fx hash; the previous line's
//! host is tried first, so the common log of one host pays for no hashing.

use std::collections::HashMap;

/// Host names and their numbers.
#[derive(Debug, Default, Clone)]
pub struct Hosts {
    names: Vec<String>,
    ids: HashMap<Box<[u8]>, u32>,
    /// The previous line's host.
    last: Option<u32>,
}

impl Hosts {
    /// A table holding `names` as numbers 0, 1, … (a restored checkpoint).
    pub fn from_names(names: Vec<String>) -> Hosts {
        let ids = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_bytes().into(), i as u32))
            .collect();
        Hosts {
            names,
            ids,
            last: None,
        }
    }

    /// The number of `host`, given one if it is new.
    pub fn id(&mut self, host: &[u8]) -> u32 {
        if let Some(id) = self.last
            && self.name(id).as_bytes() == host
        {
            return id;
        }
        let id = match self.ids.get(host) {
            Some(&id) => id,
            None => {
                let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
                self.names.push(String::from_utf8_lossy(host).into_owned());
                self.ids.insert(host.into(), id);
                id
            }
        };
        self.last = Some(id);
        id
    }

    /// The name of number `id`.
    pub fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("", String::as_str)
    }

    /// Every name, in order of number.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_order_of_first_sight_and_survive_a_restore() {
        let mut h = Hosts::from_names(vec!["localhost".into()]);
        assert_eq!(h.id(b"a"), 1);
        assert_eq!(h.id(b"a"), 1);
        assert_eq!(h.id(b"localhost"), 0);
        assert_eq!(h.id(b"b\xff"), 2);
        assert_eq!(h.name(2), "b\u{fffd}");
        let mut again = Hosts::from_names(h.names().to_vec());
        assert_eq!(again.id(b"a"), 1);
        assert_eq!(again.id(b"c"), 3);
    }

    #[test]
    fn many_names_cost_a_lookup_each() {
        let mut h = Hosts::default();
        for i in 0..200_000u32 {
            assert_eq!(h.id(format!("host{i}").as_bytes()), i);
        }
        assert_eq!(h.id(b"host7"), 7);
    }
}
