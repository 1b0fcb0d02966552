//! rbackup crypto (being written)
