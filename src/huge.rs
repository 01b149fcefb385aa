//! Where a large request body is gathered: an anonymous mapping the kernel is asked to back
//! with transparent huge pages. A fresh heap buffer of 100 MiB costs 25,600 page faults,
//! each zeroing 4 KiB, which was most of the host's CPU for a 100 MiB upload; a 2 MiB page
//! per fault removes nearly all of that. Only advice: where THP is off (or no huge page is
//! free) the mapping is served by small pages, as the heap would be.

use bytes::{Bytes, BytesMut};
use memmap2::MmapMut;

/// Bodies announced at least this large are gathered in a mapping; smaller ones on the heap.
pub const MIN: usize = 4 << 20;

/// A body being gathered from its chunks.
pub enum Gather {
    Heap(BytesMut),
    Mapped { map: MmapMut, len: usize },
}

impl Gather {
    /// Room for `capacity` bytes, mapped when that is at least [`MIN`] and the mapping
    /// succeeds, else on the heap.
    pub fn with_capacity(capacity: usize) -> Gather {
        if capacity >= MIN
            && let Ok(map) = MmapMut::map_anon(capacity)
        {
            #[cfg(target_os = "linux")]
            let _ = map.advise(memmap2::Advice::HugePage);
            return Gather::Mapped { map, len: 0 };
        }
        Gather::Heap(BytesMut::with_capacity(capacity))
    }

    pub fn extend(&mut self, data: &[u8]) {
        match self {
            Gather::Heap(buffer) => buffer.extend_from_slice(data),
            Gather::Mapped { map, len } if *len + data.len() <= map.len() => {
                map[*len..*len + data.len()].copy_from_slice(data);
                *len += data.len();
            }
            // More than the mapping holds (a body longer than announced): the heap takes over.
            Gather::Mapped { map, len } => {
                let mut buffer = BytesMut::with_capacity(*len + data.len());
                buffer.extend_from_slice(&map[..*len]);
                buffer.extend_from_slice(data);
                *self = Gather::Heap(buffer);
            }
        }
    }

    /// The gathered bytes, without a copy.
    pub fn freeze(self) -> Bytes {
        match self {
            Gather::Heap(buffer) => buffer.freeze(),
            Gather::Mapped { map, len } => Bytes::from_owner(map).slice(..len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_gathered_in_order_on_the_heap_and_in_a_mapping() {
        for capacity in [16, MIN] {
            let mut gather = Gather::with_capacity(capacity);
            assert_eq!(matches!(gather, Gather::Mapped { .. }), capacity >= MIN);
            gather.extend(b"hello, ");
            gather.extend(b"world");
            assert_eq!(gather.freeze(), Bytes::from_static(b"hello, world"));
        }
    }

    #[test]
    fn a_body_longer_than_its_mapping_moves_to_the_heap_whole() {
        let mut gather = Gather::with_capacity(MIN);
        let first = vec![1u8; MIN - 1];
        gather.extend(&first);
        gather.extend(&[2, 3]);
        assert!(matches!(gather, Gather::Heap(_)));
        let bytes = gather.freeze();
        assert_eq!(bytes.len(), MIN + 1);
        assert_eq!(&bytes[MIN - 2..], &[1, 2, 3]);
    }
}
