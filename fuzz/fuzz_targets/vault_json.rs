#![no_main]
rbackup_fuzz::target!("vault_json");
