#![no_main]
// The agent config (TOML, jobs, schedules, throttle): `rbackup_agent::exercise_config`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        rbackup_agent::exercise_config(text);
    }
});
