//! Retention: `rbackup forget` and `rbackup prune`.

use anyhow::{Result, bail};
use clap::Args;

use crate::ui::Ctx;

#[derive(Args, Debug)]
pub struct ForgetArgs {
    #[arg(long)]
    pub job: Option<String>,
    #[arg(long)]
    pub prune: bool,
}

pub async fn forget(_ctx: &Ctx, _args: ForgetArgs) -> Result<u8> {
    bail!("retention is not available in this build yet")
}

pub async fn prune(_ctx: &Ctx) -> Result<u8> {
    bail!("prune is not available in this build yet")
}
