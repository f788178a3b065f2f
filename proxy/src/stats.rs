//! Turning the layers' counters into the admin endpoint's JSON.

use serde_json::{Map, Value, json};
use sluice_tcp::Stats;

/// The TCP stack's counters of one worker. Drop reasons are named after `DropReason`.
pub fn tcp_json(s: &Stats) -> Value {
    const DROP_NAMES: [&str; sluice_tcp::DropReason::COUNT] = [
        "invalid_sequence",
        "paws",
        "no_listener",
        "bad_ack",
        "no_ack",
        "rst_out_of_window",
        "syn_in_window",
        "syn_queue_full",
        "bad_cookie",
        "reassembly_full",
        "bad_flags",
        "after_fin",
    ];
    let drops: Map<String, Value> = DROP_NAMES.iter().zip(s.drops).map(|(n, v)| ((*n).to_owned(), v.into())).collect();
    json!({
        "segments_in": s.segments_in,
        "segments_out": s.segments_out,
        "bytes_in": s.bytes_in,
        "bytes_out": s.bytes_out,
        "retransmits_rto": s.retransmits_rto,
        "retransmits_fast": s.retransmits_fast,
        "retransmits_sack": s.retransmits_sack,
        "dup_acks": s.dup_acks,
        "syn_cookies_sent": s.syn_cookies_sent,
        "syn_cookies_validated": s.syn_cookies_validated,
        "challenge_acks": s.challenge_acks,
        "rsts_sent": s.rsts_sent,
        "rsts_received": s.rsts_received,
        "rsts_rate_limited": s.rsts_rate_limited,
        "zero_window_probes": s.zero_window_probes,
        "keepalives_sent": s.keepalives_sent,
        "sack_blocks_sent": s.sack_blocks_sent,
        "sack_blocks_received": s.sack_blocks_received,
        "negotiated_wscale": s.negotiated_wscale,
        "negotiated_sack": s.negotiated_sack,
        "negotiated_timestamps": s.negotiated_timestamps,
        "connections_opened": s.connections_opened,
        "connections_closed": s.connections_closed,
        "timeouts": s.timeouts,
        "drops": drops,
    })
}
