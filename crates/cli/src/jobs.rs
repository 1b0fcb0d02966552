//! Scheduled jobs: `rbackup job add|list|remove`, `rbackup schedule`, `rbackup run [--due]`.

use anyhow::{Result, bail};
use clap::{Args, Subcommand};

use crate::ui::Ctx;

#[derive(Subcommand, Debug)]
pub enum JobCmd {
    /// Add a job.
    Add { name: String },
    /// List jobs.
    List,
    /// Remove a job.
    Remove { name: String },
}

#[derive(Args, Debug)]
pub struct ScheduleArgs {
    #[arg(long)]
    pub systemd: bool,
    #[arg(long)]
    pub cron: bool,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    pub jobs: Vec<String>,
    #[arg(long)]
    pub due: bool,
}

pub fn job(_ctx: &Ctx, _cmd: JobCmd) -> Result<u8> {
    bail!("scheduled jobs are not available in this build yet")
}

pub fn schedule(_ctx: &Ctx, _args: ScheduleArgs) -> Result<u8> {
    bail!("scheduled jobs are not available in this build yet")
}

pub async fn run(_ctx: &Ctx, _args: RunArgs) -> Result<u8> {
    bail!("scheduled jobs are not available in this build yet")
}
