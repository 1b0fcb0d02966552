#![no_main]
rbackup_fuzz::target!("pack_header_plain");
