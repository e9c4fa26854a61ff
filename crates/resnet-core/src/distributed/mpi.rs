//! MPI through a plugin loaded at run time (filled in by the MPI work).
