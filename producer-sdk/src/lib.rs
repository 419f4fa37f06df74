//! placeholder: the producer SDK (issue 4) is being written.
