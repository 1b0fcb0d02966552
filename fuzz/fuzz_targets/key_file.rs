#![no_main]
rbackup_fuzz::target!("key_file");
