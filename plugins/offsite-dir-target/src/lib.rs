//! `offsite-dir-target`: a Larder storage target that keeps the repository in a directory the
//! host preopened for it, typically an NFS or SMB mount of the offsite site.
//!
//! Configuration (`config` table of the `[[targets]]` entry):
//! - `dir`: the directory as the plugin sees it (the `guest` side of a `dirs` grant).
//!
//! Objects are written to a temporary file and renamed into place (atomic); `flush` fsyncs the
//! new files and their directories before the host writes a manifest. The implementation is
//! `dir_store::DirTarget`; this crate makes it a component.

use dir_store::DirTarget;

dir_store::export!(DirTarget);
