//! Argon2id: passphrase → key-encryption key.

use argon2::{Algorithm, Argon2, Block, Params, Version};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{CryptoError, KdfError, KdfParam, Passphrase};

/// Largest memory cost [`KdfParams::validate`] accepts: 4 GiB. A key file is read from the
/// vault, which may be hostile; without a ceiling an edited file could make unlocking
/// allocate terabytes (the edit is caught by authentication only after Argon2id ran).
pub const MAX_M_COST_KIB: u32 = 4 * 1024 * 1024;

/// Largest time cost [`KdfParams::validate`] accepts, for the same reason as
/// [`MAX_M_COST_KIB`].
pub const MAX_T_COST: u32 = 64;

/// Largest parallelism [`KdfParams::validate`] accepts.
pub const MAX_P_COST: u32 = 64;

/// Argon2id cost parameters, stored in each key file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory cost in KiB.
    pub m_cost_kib: u32,
    /// Number of passes over memory.
    pub t_cost: u32,
    /// Degree of parallelism (lanes).
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// 256 MiB, 3 passes, 2 lanes: about half a second per unlock on the project's 2-core
    /// machine, in a release build.
    ///
    /// Measured with `cargo run --release -p rbackup-crypto --example kdf_timing` (median of
    /// 5 unlocks): **0.43–0.45 s** wall time in three runs while the machine was otherwise
    /// quiet, using 0.68–0.72 s of CPU (the two lanes run on both cores). While other builds
    /// kept the load average near 6 the same setting took 1.5–1.7 s wall (0.82–0.89 s of
    /// CPU), so expect unlocks during heavy work to be slower. Neighbours measured quiet: 256 MiB × 4 passes 0.55 s,
    /// 320 MiB × 3 passes 0.59 s; 128 MiB × 3 passes × 1 lane 0.31 s.
    ///
    /// Memory is what makes guessing expensive on GPUs and ASICs, so two lanes are used to
    /// fill twice the memory in the same wall time (argon2's `parallel` feature runs the lanes
    /// on two threads). 256 MiB rather than more keeps unlocking possible on small servers
    /// and NAS boxes; a key file records its parameters, so a vault can use others.
    fn default() -> Self {
        KdfParams {
            m_cost_kib: 256 * 1024,
            t_cost: 3,
            p_cost: 2,
        }
    }
}

impl KdfParams {
    /// Cheap parameters (8 MiB, one pass, one lane) so tests run fast. Never use them for a
    /// real key file: they make guessing the passphrase tens of times cheaper.
    pub fn fast_insecure_for_tests() -> KdfParams {
        KdfParams {
            m_cost_kib: 8 * 1024,
            t_cost: 1,
            p_cost: 1,
        }
    }

    /// Checks the parameters against Argon2's limits and this crate's ceilings
    /// ([`MAX_M_COST_KIB`], [`MAX_T_COST`], [`MAX_P_COST`]).
    ///
    /// # Errors
    ///
    /// [`CryptoError::Kdf`] naming the offending parameter.
    pub fn validate(&self) -> Result<(), CryptoError> {
        if self.m_cost_kib > MAX_M_COST_KIB {
            return Err(KdfError::TooLarge {
                param: KdfParam::MemoryKib,
                value: self.m_cost_kib,
                max: MAX_M_COST_KIB,
            }
            .into());
        }
        if self.t_cost > MAX_T_COST {
            return Err(KdfError::TooLarge {
                param: KdfParam::Time,
                value: self.t_cost,
                max: MAX_T_COST,
            }
            .into());
        }
        if self.p_cost > MAX_P_COST {
            return Err(KdfError::TooLarge {
                param: KdfParam::Parallelism,
                value: self.p_cost,
                max: MAX_P_COST,
            }
            .into());
        }
        self.argon2_params().map(drop)
    }

    /// The parameters as 12 little-endian bytes (m, t, p), bound into the key file's
    /// associated data.
    pub fn to_bytes(&self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[0..4].copy_from_slice(&self.m_cost_kib.to_le_bytes());
        out[4..8].copy_from_slice(&self.t_cost.to_le_bytes());
        out[8..12].copy_from_slice(&self.p_cost.to_le_bytes());
        out
    }

    fn argon2_params(&self) -> Result<Params, CryptoError> {
        Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(32))
            .map_err(|e| CryptoError::Kdf(KdfError::Argon2(e)))
    }

    /// Runs Argon2id over `passphrase` and `salt` and returns the 32-byte key, zeroized on
    /// drop. The working memory is ours, not Argon2's, so it is wiped too: it holds values
    /// from which the key can be recomputed cheaply.
    pub(crate) fn derive(
        &self,
        passphrase: &Passphrase,
        salt: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
        self.validate()?;
        let params = self.argon2_params()?;
        let mut memory = Zeroizing::new(vec![Block::new(); params.block_count()]);
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut key = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into_with_memory(
                passphrase.as_str().as_bytes(),
                salt,
                &mut key[..],
                &mut memory[..],
            )
            .map_err(|e| CryptoError::Kdf(KdfError::Argon2(e)))?;
        Ok(key)
    }
}

/// Raw Argon2id output, for known-answer tests and the timing example only.
#[doc(hidden)]
pub fn argon2id_for_tests(
    passphrase: &Passphrase,
    salt: &[u8],
    params: KdfParams,
) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    params.derive(passphrase, salt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(p: KdfParams) -> Option<(KdfParam, u32, u32)> {
        match p.validate() {
            Err(CryptoError::Kdf(KdfError::TooLarge { param, value, max })) => {
                Some((param, value, max))
            }
            _ => None,
        }
    }

    #[test]
    fn parameters_at_the_ceilings_pass_and_above_them_are_refused() {
        let base = KdfParams::default();
        let at = KdfParams {
            m_cost_kib: MAX_M_COST_KIB,
            t_cost: MAX_T_COST,
            p_cost: MAX_P_COST,
        };
        at.validate().unwrap();
        let tib = KdfParams {
            m_cost_kib: 1 << 30,
            ..base
        };
        assert_eq!(
            refused(tib),
            Some((KdfParam::MemoryKib, 1 << 30, MAX_M_COST_KIB))
        );
        let t = KdfParams {
            t_cost: MAX_T_COST + 1,
            ..base
        };
        assert_eq!(
            refused(t),
            Some((KdfParam::Time, MAX_T_COST + 1, MAX_T_COST))
        );
        let p = KdfParams {
            p_cost: MAX_P_COST + 1,
            ..base
        };
        assert_eq!(
            refused(p),
            Some((KdfParam::Parallelism, MAX_P_COST + 1, MAX_P_COST))
        );
    }

    #[test]
    fn derive_refuses_before_allocating() {
        // 1 TiB of Argon2 memory would abort the process if it were allocated.
        let tib = KdfParams {
            m_cost_kib: 1 << 30,
            ..KdfParams::fast_insecure_for_tests()
        };
        let pass = Passphrase::new("a passphrase long enough").unwrap();
        assert!(tib.derive(&pass, &[0u8; 16]).is_err());
    }
}
