//! Turning the layers' counters into the admin endpoint's JSON.

use serde_json::{Map, Value};
use sluice_tcp::Stats;

/// The TCP stack's counters of one worker: every counter at the top level, drops in `drops`
/// keyed by reason. Names come from `Stats::iter` and `DropReason::name`.
pub fn tcp_json(s: &Stats) -> Value {
    let drops: Map<String, Value> = s
        .drops_iter()
        .map(|(n, v)| (n.to_owned(), v.into()))
        .collect();
    let mut m: Map<String, Value> = s.iter().map(|(n, v)| (n.to_owned(), v.into())).collect();
    m.insert("drops".to_owned(), Value::Object(drops));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::tcp_json;
    use sluice_tcp::Stats;

    #[test]
    fn tcp_json_shape() {
        let s = Stats {
            retransmits_rto: 4,
            drops: [1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3],
            ..Stats::default()
        };
        let v = tcp_json(&s);
        assert_eq!(v["retransmits_rto"], 4);
        assert_eq!(v["segments_in"], 0);
        assert_eq!(v["drops"]["invalid_sequence"], 1);
        assert_eq!(v["drops"]["paws"], 2);
        assert_eq!(v["drops"]["after_fin"], 3);
        assert_eq!(v.as_object().unwrap().len(), s.iter().count() + 1);
        assert_eq!(
            v["drops"].as_object().unwrap().len(),
            sluice_tcp::DropReason::COUNT
        );
    }
}
