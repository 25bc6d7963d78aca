//! Token ids back to text: each id's bytes, and a streaming decoder that never
//! splits a UTF-8 character.

use std::collections::HashMap;

use super::{Tokenizer, SPACE_MARKER};
use crate::error::Result;

/// How token ids turn back into bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ByteDecoding {
    /// GPT-2 byte-level: each character of a token stands for one byte.
    ByteLevel,
    /// SentencePiece: `▁` is a space, `<0xAB>` pieces are raw bytes, and (when the
    /// encoder added a dummy prefix) the first space of the text is dropped.
    SentencePiece { strip_leading_space: bool },
}

/// Turns a stream of token ids into text, never splitting a UTF-8 character.
/// Concatenating every [`push`](Self::push) and the final [`finish`](Self::finish)
/// gives exactly [`Tokenizer::decode`] of all the ids.
pub struct StreamDecoder<'a> {
    pub(super) tokenizer: &'a Tokenizer,
    pub(super) pending: Vec<u8>,
    pub(super) at_start: bool,
}

impl StreamDecoder<'_> {
    /// Adds one token and returns the text it completes (possibly empty).
    pub fn push(&mut self, id: u32) -> Result<String> {
        let bytes = self.tokenizer.bytes_of(id)?;
        self.pending.extend_from_slice(bytes);
        if self.at_start && !self.pending.is_empty() {
            self.at_start = false;
            if self.tokenizer.strip_leading_space && self.pending[0] == b' ' {
                self.pending.remove(0);
            }
        }
        let mut text = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(valid) => {
                    text.push_str(valid);
                    self.pending.clear();
                    return Ok(text);
                }
                Err(error) => {
                    let valid = error.valid_up_to();
                    text.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match error.error_len() {
                        Some(invalid) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + invalid);
                        }
                        None => {
                            self.pending.drain(..valid);
                            return Ok(text);
                        }
                    }
                }
            }
        }
    }

    /// Ends the stream: bytes of an unfinished character become U+FFFD.
    pub fn finish(self) -> String {
        String::from_utf8_lossy(&self.pending).into_owned()
    }
}
/// The GPT-2 byte-to-character table: printable Latin-1 bytes map to themselves,
/// the rest to U+0100 onwards, so every byte has a visible, non-space character.
pub(super) fn byte_level_chars() -> [char; 256] {
    let mut chars = ['\0'; 256];
    let mut next_extra = 256u32;
    for byte in 0..=255u8 {
        let printable = matches!(byte, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        chars[byte as usize] = if printable {
            byte as char
        } else {
            let c = char::from_u32(next_extra).unwrap_or(char::REPLACEMENT_CHARACTER);
            next_extra += 1;
            c
        };
    }
    chars
}

/// The bytes a token decodes to, as Hugging Face's decoders produce them. A
/// byte-level token with a character outside the byte table (an added token such as
/// a Chinese control word) decodes to its own UTF-8, as in Hugging Face.
pub(super) fn token_to_bytes(
    token: &str,
    decoding: ByteDecoding,
    byte_of: &HashMap<char, u8>,
) -> Vec<u8> {
    match decoding {
        ByteDecoding::ByteLevel => token
            .chars()
            .map(|c| byte_of.get(&c).copied())
            .collect::<Option<Vec<u8>>>()
            .unwrap_or_else(|| token.as_bytes().to_vec()),
        ByteDecoding::SentencePiece { .. } => match parse_byte_piece(token) {
            Some(byte) => vec![byte],
            None => token.replace(SPACE_MARKER, " ").into_bytes(),
        },
    }
}

/// `<0xAB>` → 0xAB, SentencePiece's byte-fallback pieces.
fn parse_byte_piece(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}
