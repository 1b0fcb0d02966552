#![no_main]
rbackup_fuzz::target!("tree_plain");
