//! placeholder: the compactor (issue 3) is being written.
