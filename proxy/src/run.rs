//! Starting and stopping sluice: attach, open sockets, spawn workers, serve admin, drain on signals.

use crate::config::Config;

pub fn run(config: Config) -> anyhow::Result<()> {
    anyhow::bail!("{}: the datapath is not wired into the binary yet", config.datapath.interface)
}
