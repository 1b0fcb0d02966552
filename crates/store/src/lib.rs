//! rbackup store (being written)
