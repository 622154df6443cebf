/// The compiled flux-ebpf object.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flux-ebpf"));
