//! Where raw event bytes go: inline in Postgres (JSONB, the default) or out of line (one
//! object per fetched page, see the S3 adapter). The rows keep a [`RawRef`] either way, and
//! [`read_raw`] reads an event back from either.
//!
//! Out of line, a page is one gzip NDJSON object (one event per line, each line the event's
//! bytes exactly as GitHub sent them, as in GH Archive) under a key partitioned by UTC date
//! and hour: `{prefix}events/YYYY/MM/DD/HH/{label}.json.gz`.

mod objects;
mod read;
mod store;

#[cfg(any(test, feature = "mocks"))]
pub use objects::MemoryObjects;
pub use objects::{encode_page, line_of, page_key, ObjectReader, ObjectWriter};
pub use read::{read_raw, ReadRawError};
pub use store::{InlineRaw, ObjectRaw, Page, RawRef, RawStore, RawStoreError};
