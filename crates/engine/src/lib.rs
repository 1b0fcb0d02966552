//! rbackup engine (being written)
