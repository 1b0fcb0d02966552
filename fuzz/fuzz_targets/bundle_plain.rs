#![no_main]
rbackup_fuzz::target!("bundle_plain");
