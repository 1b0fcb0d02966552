#![no_main]
rbackup_fuzz::target!("credentials");
