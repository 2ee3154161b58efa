//! The audit trail's hash chains: linking records as a writer encodes them,
//! and verifying a whole topic's worth of them.
//!
//! Each writer (`<stage>/<instance>`, or a vault process) numbers its records
//! from 0 and puts the previous record's hash in each one. `hash` is the
//! Avro body's last field: an HMAC-SHA256, under the audit chain key, of
//! every body byte before it, so nothing of the record (including
//! `previous_hash`) can change without the hash failing, and a record cannot
//! be forged without the key. The MAC itself is the caller's (`mac`
//! closures), so this module holds no key material and stays pure.
//!
//! A broker that shows aborted transactions (tansu) leaves a retried batch's
//! first attempt in the topic: those records are well-formed and chained,
//! but no later record links to them. [`verify`] tolerates such dead-end
//! branches (counted as aborted attempts) and exact duplicates (retried
//! sends), and names everything else: modified, injected, missing and
//! reordered records, broken links, and chain heads named by a checkpoint
//! that are not in the topic (a truncated tail).
//!
//! `write` links records as a writer encodes them, `signed` is what a
//! checkpoint's and a head's signature cover, `verify` walks a topic's
//! chains, and `report` is what it finds.

mod report;
mod signed;
mod verify;
mod write;

pub use report::*;
pub use signed::*;
pub use verify::*;
pub use write::*;

#[cfg(test)]
mod tests;
