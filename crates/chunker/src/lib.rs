//! rbackup chunker (being written)
