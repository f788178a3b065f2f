//! Scaffolding shared by the integration tests and the `echo_rate` example.

#![allow(dead_code)]

/// Test scaffolding: the smallest XDP program that feeds AF_XDP sockets,
/// `return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);`, assembled by hand and
/// loaded with raw bpf(2) calls, attached through a bpf link (detached when the link fd closes).
/// sluice's real program and loader live in `ebpf/` and the loader; this only lets the RX path
/// of this crate be tested on a real kernel.
pub mod xdp {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_LINK_CREATE: libc::c_long = 28;
    const BPF_MAP_TYPE_XSKMAP: u32 = 17;
    const BPF_PROG_TYPE_XDP: u32 = 6;
    const BPF_XDP: u32 = 37;
    const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
    const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
    const BPF_FUNC_REDIRECT_MAP: i32 = 51;
    const XDP_PASS: i32 = 2;

    /// `union bpf_attr`, as bytes.
    struct Attr([u8; 128]);

    impl Attr {
        fn new() -> Attr {
            Attr([0; 128])
        }
        fn u32(mut self, off: usize, v: u32) -> Attr {
            self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
            self
        }
        fn u64(mut self, off: usize, v: u64) -> Attr {
            self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
            self
        }
    }

    fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
        // SAFETY: `attr` is a 128-byte, zero-padded `union bpf_attr` whose pointer fields point
        // to buffers that outlive the call; the size passed is the buffer's.
        let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), attr.0.len()) };
        if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
    }

    fn fd(r: libc::c_long) -> OwnedFd {
        // SAFETY: `r` is a fresh descriptor returned by bpf(2) that nothing else owns.
        unsafe { OwnedFd::from_raw_fd(r as RawFd) }
    }

    /// One `struct bpf_insn`.
    fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = code;
        b[1] = (src << 4) | (dst & 0xf);
        b[2..4].copy_from_slice(&off.to_ne_bytes());
        b[4..8].copy_from_slice(&imm.to_ne_bytes());
        b
    }

    pub struct Redirect {
        _link: OwnedFd,
        _prog: OwnedFd,
        _map: OwnedFd,
    }

    impl Redirect {
        /// Loads the program, puts each `(queue, socket fd)` in its XSKMAP, attaches it to
        /// `ifindex` in SKB or native mode.
        pub fn attach(ifindex: u32, skb_mode: bool, socks: &[(u32, RawFd)]) -> io::Result<Redirect> {
            let map =
                fd(bpf(BPF_MAP_CREATE, &mut Attr::new().u32(0, BPF_MAP_TYPE_XSKMAP).u32(4, 4).u32(8, 4).u32(12, 64))?);
            for &(queue, sock) in socks {
                let (key, value) = (queue, sock as u32);
                bpf(
                    BPF_MAP_UPDATE_ELEM,
                    &mut Attr::new()
                        .u32(0, map.as_raw_fd() as u32)
                        .u64(8, &key as *const u32 as u64)
                        .u64(16, &value as *const u32 as u64),
                )?;
            }
            let prog: Vec<u8> = [
                insn(0x61, 2, 1, 16, 0),                    // r2 = ctx->rx_queue_index
                insn(0x18, 1, 1, 0, map.as_raw_fd()),       // r1 = &xsks (BPF_PSEUDO_MAP_FD)
                insn(0, 0, 0, 0, 0),                        //   (second half of ld_imm64)
                insn(0xb7, 3, 0, 0, XDP_PASS),              // r3 = XDP_PASS (fallback)
                insn(0x85, 0, 0, 0, BPF_FUNC_REDIRECT_MAP), // r0 = bpf_redirect_map(r1, r2, r3)
                insn(0x95, 0, 0, 0, 0),                     // return r0
            ]
            .concat();
            let license = c"GPL";
            let mut log = vec![0u8; 65536];
            let loaded = bpf(
                BPF_PROG_LOAD,
                &mut Attr::new()
                    .u32(0, BPF_PROG_TYPE_XDP)
                    .u32(4, (prog.len() / 8) as u32)
                    .u64(8, prog.as_ptr() as u64)
                    .u64(16, license.as_ptr() as u64)
                    .u32(24, 1)
                    .u32(28, log.len() as u32)
                    .u64(32, log.as_mut_ptr() as u64)
                    .u32(68, BPF_XDP),
            );
            let prog = match loaded {
                Ok(r) => fd(r),
                Err(e) => {
                    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                    return Err(io::Error::other(format!(
                        "BPF_PROG_LOAD: {e}: {}",
                        String::from_utf8_lossy(&log[..end])
                    )));
                }
            };
            let flags = if skb_mode { XDP_FLAGS_SKB_MODE } else { XDP_FLAGS_DRV_MODE };
            let link = fd(bpf(
                BPF_LINK_CREATE,
                &mut Attr::new().u32(0, prog.as_raw_fd() as u32).u32(4, ifindex).u32(8, BPF_XDP).u32(12, flags),
            )?);
            Ok(Redirect { _link: link, _prog: prog, _map: map })
        }
    }
}
