//! The farm.v1 gRPC API: generated messages, clients and servers, plus the descriptor set for reflection.

/// Package `farm.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("farm.v1");
}

/// Node feature (`NodeHello.features`): WebDriver request and response heads may carry the whole body.
pub const FEATURE_HTTP_WHOLE: &str = "http-whole";

/// The encoded FileDescriptorSet, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/farm_descriptor.bin"));

/// Converts between `SystemTime`-like millisecond instants and protobuf timestamps.
pub fn timestamp_from_millis(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// Milliseconds since the Unix epoch of a protobuf timestamp.
pub fn timestamp_to_millis(ts: &prost_types::Timestamp) -> i64 {
    ts.seconds * 1000 + i64::from(ts.nanos) / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_including_before_epoch() {
        for ms in [0, 1, 999, 1000, 1_764_864_000_123, -1, -1001] {
            assert_eq!(timestamp_to_millis(&timestamp_from_millis(ms)), ms);
        }
    }
}
