#![no_main]
rbackup_fuzz::target!("recovery_point_plain");
