//! Which store node holds a key: rendezvous (highest random weight) hashing.
//!
//! What it is: each node has a seed hashed from its name (its `host:port`, so every sluice of
//! a fleet that lists the same nodes agrees, whatever their order); a key goes to the node
//! whose `weight(seed, hash(key))` is highest among the nodes that are up (Thaler and Ravishankar,
//! "Using name-based mappings to increase hit rates", 1998). Losing one of N nodes moves only
//! the keys it held (about 1/N); the others stay where they were.
//!
//! What it is not: a health checker. The caller marks nodes down (its connection is broken
//! or backing off) and up again. The hash is FNV-1a 64 with a 64-bit finaliser: fixed by
//! this file, not by the Rust version, because sluices of different builds must agree; the
//! keys it hashes are already HMAC outputs ([`crate::seal`]), so no adversary picks them.

/// The store nodes and which are up.
#[derive(Clone, Debug)]
pub struct Rendezvous {
    nodes: Vec<Node>,
}

#[derive(Clone, Debug)]
struct Node {
    seed: u64,
    up: bool,
}

impl Rendezvous {
    /// Nodes by name, all up. Index `i` of the iterator is node `i` in every answer.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            nodes: names
                .into_iter()
                .map(|n| Node { seed: fmix64(fnv1a(FNV_OFFSET, n.as_bytes())), up: true })
                .collect(),
        }
    }

    /// How many nodes (up or down).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// No nodes at all.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Marks node `i` up or down; an index out of range is ignored.
    pub fn set_up(&mut self, i: usize, up: bool) {
        if let Some(n) = self.nodes.get_mut(i) {
            n.up = up;
        }
    }

    /// Whether node `i` is up.
    pub fn is_up(&self, i: usize) -> bool {
        self.nodes.get(i).is_some_and(|n| n.up)
    }

    /// The node for `key` among those up; `None` when every node is down.
    pub fn pick(&self, key: &[u8]) -> Option<usize> {
        let key_hash = fmix64(fnv1a(FNV_OFFSET, key));
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.up)
            // Ties (never seen in practice) go to the lower index: `max_by_key` keeps the last
            // maximum, so compare on (weight, reversed index).
            .max_by_key(|(i, n)| (weight(n.seed, key_hash), usize::MAX - i))
            .map(|(i, _)| i)
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// MurmurHash3's 64-bit finaliser: every input bit reaches every output bit.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The weight of a key (by its hash) on the node with `seed`.
fn weight(seed: u64, key_hash: u64) -> u64 {
    fmix64(seed ^ key_hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("sluice:{:064x}", (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).into_bytes()).collect()
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("192.0.2.{}:6379", i + 10)).collect()
    }

    #[test]
    fn no_nodes_or_all_down_picks_none() {
        let r = Rendezvous::new([]);
        assert!(r.is_empty());
        assert_eq!(r.pick(b"k"), None);
        let mut r = Rendezvous::new(["a:1", "b:1"]);
        r.set_up(0, false);
        r.set_up(1, false);
        assert_eq!(r.pick(b"k"), None);
        r.set_up(1, true);
        assert_eq!(r.pick(b"k"), Some(1));
        r.set_up(7, false); // out of range: ignored
        assert!(!r.is_up(7));
    }

    #[test]
    fn spread_is_roughly_even() {
        let n = 5;
        let names = names(n);
        let r = Rendezvous::new(names.iter().map(String::as_str));
        let mut count = vec![0usize; n];
        let ks = keys(20_000);
        for k in &ks {
            count[r.pick(k).unwrap()] += 1;
        }
        for c in count {
            // 4,000 expected each; ±15% is many standard deviations.
            assert!((3_400..=4_600).contains(&c), "uneven share {c}");
        }
    }

    #[test]
    fn order_of_names_does_not_matter() {
        let names = names(4);
        let a = Rendezvous::new(names.iter().map(String::as_str));
        let b = Rendezvous::new(names.iter().rev().map(String::as_str));
        for k in keys(1_000) {
            let ia = a.pick(&k).unwrap();
            let ib = b.pick(&k).unwrap();
            assert_eq!(names[ia], names[names.len() - 1 - ib]);
        }
    }

    #[test]
    fn losing_one_node_moves_only_its_share() {
        for n in [2usize, 3, 5, 8] {
            let names = names(n);
            let mut r = Rendezvous::new(names.iter().map(String::as_str));
            let ks = keys(10_000);
            let before: Vec<usize> = ks.iter().map(|k| r.pick(k).unwrap()).collect();
            let lost = n / 2;
            r.set_up(lost, false);
            let mut moved = 0usize;
            for (k, &b) in ks.iter().zip(&before) {
                let a = r.pick(k).unwrap();
                assert_ne!(a, lost);
                if b == lost {
                    moved += 1;
                } else {
                    // A key on a surviving node stays there.
                    assert_eq!(a, b);
                }
            }
            let expected = ks.len() / n;
            assert!(moved.abs_diff(expected) < expected / 5, "n={n}: moved {moved}, expected about {expected}");
            // Back up: every key returns home.
            r.set_up(lost, true);
            for (k, &b) in ks.iter().zip(&before) {
                assert_eq!(r.pick(k).unwrap(), b);
            }
        }
    }

    #[test]
    fn weights_are_fixed_by_this_file() {
        // Sluices of different builds must agree: pin the function.
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        let r = Rendezvous::new(["198.51.100.7:6379", "203.0.113.9:6379"]);
        let picks: Vec<usize> = (0..16u8).map(|i| r.pick(format!("sluice:{i:064x}").as_bytes()).unwrap()).collect();
        assert_eq!(picks, PINNED_PICKS);
    }

    /// Recorded from this implementation; a change here moves every session of a mixed fleet.
    const PINNED_PICKS: [usize; 16] = [0, 0, 0, 1, 1, 1, 0, 1, 0, 1, 1, 1, 0, 1, 1, 0];
}
