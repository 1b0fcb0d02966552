//! The agent's config file and job schedules, the parts of the `rbackup` binary that parse
//! files a user (or anyone who can write the config folder) controls. They are a library only
//! so that the fuzz targets in `fuzz/` and the property test `tests/config_input.rs` reach the
//! same parser the binary uses; this is not an API for embedders (that is `rbackup-engine`).

#[doc(hidden)]
pub mod config;
#[doc(hidden)]
pub mod schedule;

/// Everything the agent does with a config file's text before it acts on it: parse it, check
/// each job's name and schedule and when it is next due, read its throttle. Whether all of it
/// was accepted. For the fuzz target `agent_config` and `tests/config_input.rs`; a bad input
/// must give an error, never a panic or a hang.
#[doc(hidden)]
pub fn exercise_config(text: &str) -> bool {
    let Ok(cfg) = config::AgentConfig::parse(text) else {
        return false;
    };
    let mut ok = config::throttle(&cfg.throttle).is_ok();
    let now = jiff::Timestamp::from_second(1_764_590_400)
        .map(|t| t.to_zoned(jiff::tz::TimeZone::UTC))
        .ok();
    for job in &cfg.jobs {
        ok &= config::check_job_name(&job.name).is_ok();
        match job.schedule() {
            Ok(s) => {
                if let Some(now) = &now {
                    ok &= s.next_slot(now).is_some();
                    let _ = s.latest_slot(now);
                }
            }
            Err(_) => ok = false,
        }
        let _ = job.has_retention();
    }
    ok
}
