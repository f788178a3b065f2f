//! [`XdpMode`]: how the XDP program is attached (driver, generic SKB, or driver falling back).

use std::fmt;

/// How to attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XdpMode {
    /// In the driver (`XDP_FLAGS_DRV_MODE`).
    Native,
    /// Generic XDP in the kernel's network stack (`XDP_FLAGS_SKB_MODE`).
    Skb,
    /// Native, falling back to SKB if the driver refuses; [`Attached::mode`] tells which.
    ///
    /// [`Attached::mode`]: super::Attached::mode
    Auto,
}

impl XdpMode {
    /// `"native"`, `"skb"` or `"auto"`.
    pub fn as_str(self) -> &'static str {
        match self {
            XdpMode::Native => "native",
            XdpMode::Skb => "skb",
            XdpMode::Auto => "auto",
        }
    }
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
