#![no_main]
rbackup_fuzz::target!("index_plain");
