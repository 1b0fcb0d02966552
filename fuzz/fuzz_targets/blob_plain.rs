#![no_main]
rbackup_fuzz::target!("blob_plain");
