//! The agent config parser on arbitrary and mutated valid configs, for a bounded time (see
//! `rbackup_testenv::mutate`): the stable form of the fuzz target `agent_config`.

use std::path::Path;

#[test]
fn agent_config() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let seeds = std::fs::read_dir(root.join("fuzz/seeds/agent_config"))
        .expect("the agent_config seeds")
        .map(|e| std::fs::read(e.expect("seed entry").path()).expect("read a seed"))
        .collect();
    rbackup_testenv::mutate::exercise(&root, "agent_config", seeds, |input| {
        std::str::from_utf8(input).is_ok_and(rbackup_agent::exercise_config)
    });
}
