//! Arbitrary bytes read as a script of small choices.

/// Bytes read as choices. Reading past the end gives zeros, so every input is a script, and
/// the inputs a fuzzer mutates map to nearby scripts.
#[derive(Debug)]
pub(crate) struct Script<'a> {
    bytes: &'a [u8],
}

impl<'a> Script<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    /// Whether every byte has been read.
    pub(crate) fn is_done(&self) -> bool {
        self.bytes.is_empty()
    }

    pub(crate) fn byte(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((&first, rest)) => {
                self.bytes = rest;
                first
            }
            None => 0,
        }
    }

    /// A number below `n`.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n
    }

    /// One of `items`.
    pub(crate) fn choose<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }

    /// One of `items`, each as often as its weight. The weights add up to at most 256.
    pub(crate) fn weighted<T: Copy>(&mut self, items: &[(T, u8)]) -> T {
        let mut pick = self.below(total(items));
        for &(item, weight) in items {
            let weight = usize::from(weight);
            if pick < weight {
                return item;
            }
            pick -= weight;
        }
        unreachable!("the pick is below the total weight")
    }

    /// `true` with about `percent` in a hundred.
    pub(crate) fn chance(&mut self, percent: u8) -> bool {
        self.byte() % 100 < percent
    }

    /// A chunk of bytes: a length, then up to that many bytes. The length is one byte below
    /// 255, or 255 followed by a two-byte big-endian length, so that arbitrary bytes mostly
    /// make short chunks.
    pub(crate) fn chunk(&mut self) -> &'a [u8] {
        let len = match self.byte() {
            255 => usize::from(u16::from_be_bytes([self.byte(), self.byte()])),
            len => usize::from(len),
        };
        let (chunk, rest) = self.bytes.split_at(len.min(self.bytes.len()));
        self.bytes = rest;
        chunk
    }
}

fn total<T>(items: &[(T, u8)]) -> usize {
    let total = items.iter().map(|&(_, weight)| usize::from(weight)).sum();
    assert!(total <= 256, "weights beyond a byte");
    total
}

/// The byte that makes [`Script::weighted`] pick `wanted` from `items`.
pub(crate) fn weighted_byte<T: PartialEq>(items: &[(T, u8)], wanted: T) -> u8 {
    let mut start = 0;
    for (item, weight) in items {
        if *item == wanted {
            return u8::try_from(start).expect("weights within a byte");
        }
        start += usize::from(*weight);
    }
    panic!("not among the items")
}

/// Writes scripts, for the seeds of the fuzz corpus.
#[derive(Debug, Default)]
pub(crate) struct Writer(Vec<u8>);

impl Writer {
    pub(crate) fn byte(&mut self, byte: u8) -> &mut Self {
        self.0.push(byte);
        self
    }

    /// A chunk as [`Script::chunk`] reads it.
    pub(crate) fn chunk(&mut self, chunk: &[u8]) -> &mut Self {
        match u8::try_from(chunk.len()) {
            Ok(len) if len < 255 => self.0.push(len),
            _ => {
                let len = u16::try_from(chunk.len()).expect("a chunk holds at most 64 KiB");
                self.0.push(255);
                self.0.extend_from_slice(&len.to_be_bytes());
            }
        }
        self.0.extend_from_slice(chunk);
        self
    }

    pub(crate) fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_chunks_read_back() {
        let long = vec![1; 300];
        let bytes = Writer::default()
            .byte(7)
            .chunk(b"abc")
            .chunk(&long)
            .byte(9)
            .finish();
        let mut script = Script::new(&bytes);
        assert_eq!(script.byte(), 7);
        assert_eq!(script.chunk(), b"abc");
        assert_eq!(script.chunk(), long);
        assert_eq!(script.byte(), 9);
        assert!(script.is_done());
        assert_eq!(script.byte(), 0, "zeros past the end");
    }

    #[test]
    fn weighted_bytes_pick_their_item() {
        let items = [('a', 10), ('b', 1), ('c', 89)];
        for wanted in ['a', 'b', 'c'] {
            let byte = weighted_byte(&items, wanted);
            assert_eq!(Script::new(&[byte]).weighted(&items), wanted);
        }
    }
}
