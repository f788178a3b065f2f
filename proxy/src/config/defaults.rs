//! The values serde gives absent fields (`#[serde(default = "defaults::...")]`).

pub fn frames_per_queue() -> u32 {
    16384
}
pub fn frame_size() -> u32 {
    2048
}
pub fn ring_size() -> u32 {
    2048
}
/// RX and fill rings: what the kernel can queue for a worker that is busy for a moment. A
/// frame that finds them full is dropped, and the client's retransmission timeout (200 ms
/// and more; 1 s for a SYN) turns a short stall into a long one: deep rings queue instead.
pub fn rx_ring_size() -> u32 {
    8192
}
pub fn admin_address() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 9090))
}
pub fn interval_log_secs() -> u64 {
    10
}
pub fn busy_poll_us() -> u64 {
    0
}
pub fn yes() -> bool {
    true
}
pub fn cooldown_ms() -> u64 {
    5_000
}
pub fn health_interval_ms() -> u64 {
    2_000
}
pub fn health_timeout_ms() -> u64 {
    1_000
}
