//! Times one Argon2id unlock, to choose `KdfParams::default()`.
//!
//! ```text
//! cargo run --release -p rbackup-crypto --example kdf_timing            # the defaults
//! cargo run --release -p rbackup-crypto --example kdf_timing -- 262144 3 1   # m KiB, t, p
//! ```
//!
//! Prints the median of five runs, since one unlock is what a user waits for.

use std::time::{Duration, Instant};

use rbackup_crypto::{KdfParams, Passphrase, argon2id_for_tests};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<u32> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let params = match args.as_slice() {
        [] => KdfParams::default(),
        [m, t, p] => KdfParams {
            m_cost_kib: *m,
            t_cost: *t,
            p_cost: *p,
        },
        _ => return Err("usage: kdf_timing [M_COST_KIB T_COST P_COST]".into()),
    };
    let passphrase = Passphrase::new("correct horse battery staple")?;
    let salt = [7u8; 16];
    let mut times: Vec<Duration> = (0..5)
        .map(|_| {
            let start = Instant::now();
            let key = argon2id_for_tests(&passphrase, &salt, params);
            let elapsed = start.elapsed();
            key.map(|_| elapsed)
        })
        .collect::<Result<_, _>>()?;
    times.sort();
    println!(
        "m={} MiB t={} p={}: median {:.3} s (min {:.3} s, max {:.3} s)",
        params.m_cost_kib / 1024,
        params.t_cost,
        params.p_cost,
        times[2].as_secs_f64(),
        times[0].as_secs_f64(),
        times[4].as_secs_f64()
    );
    Ok(())
}
