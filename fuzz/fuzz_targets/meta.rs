#![no_main]
rbackup_fuzz::target!("meta");
