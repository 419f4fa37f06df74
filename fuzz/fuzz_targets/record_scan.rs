//! The compactor's zero-copy reader of a Kafka record against prost as the
//! oracle: whatever prost rejects the reader rejects, and whatever the reader
//! accepts prost decodes to the same stream and the same events, each
//! event's byte range decoding to exactly prost's event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tlake_proto::contract::DEFAULT_STREAM;
use tlake_proto::v1::{LogBatch, LogEvent};
use tlake_record_reader::decode::{Origin, scan};

fuzz_target!(|data: &[u8]| {
    let mut keys = Vec::new();
    let origin = Origin {
        partition: 1,
        offset: 7,
    };
    let scanned = scan(data, origin, &mut keys);
    let Ok(batch) = LogBatch::decode(data) else {
        assert!(
            scanned.is_err(),
            "the reader accepted a record prost rejects"
        );
        return;
    };
    let Ok(scanned) = scanned else {
        return; // prost decodes it, but it maps to no rows: a dead letter
    };
    let stream = if batch.stream.is_empty() {
        DEFAULT_STREAM
    } else {
        &batch.stream
    };
    assert_eq!(scanned.stream, stream);
    assert_eq!(scanned.info.partition, 1);
    assert_eq!(scanned.info.offset, 7);
    assert_eq!(keys.len(), batch.events.len(), "events read vs prost's");
    for (key, event) in keys.iter().zip(&batch.events) {
        assert_eq!(&key.id[..], &event.event_id[..]);
        let range = key.start as usize..(key.start + key.len) as usize;
        let read = LogEvent::decode(&scanned.bytes[range]).expect("an event range prost decodes");
        // Compared as prost encodes them, not as values: a NaN double is not
        // equal to itself, its bits are.
        assert_eq!(
            read.encode_to_vec(),
            event.encode_to_vec(),
            "the event's bytes are prost's event"
        );
    }
});
